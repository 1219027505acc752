"""Deploy the gdtrustar Lambda: build → plan → apply, where the plan is data.

1. **Build** (local only, :mod:`~gdtrustar.deploy.package`, :mod:`~gdtrustar.deploy.template`):
   the zip (gdtrustar from the source tree plus the TruSTAR SDK and its dependencies installed for
   the Lambda's runtime and architecture, byte-reproducible and named by its SHA-256) and the
   CloudFormation template (a dict: role, function, log group, EventBridge rule, invoke permission,
   dead-letter queue and its policy, outputs).
2. **Plan** (:mod:`~gdtrustar.deploy.plan`): only *describes* AWS (HeadBucket, HeadObject,
   GetSecretValue, DescribeStacks, GetTemplate) and returns a list of actions: create the artifacts
   bucket, upload the zip, create or update the secret, create the stack / update it through a change
   set / nothing. Identical template and parameters, an object already stored under its hash and an
   unchanged secret give an empty plan: a second deploy changes nothing.
3. **Apply** (:mod:`~gdtrustar.deploy.apply`): the only code that changes AWS. ``--dry-run`` swaps in
   :class:`~gdtrustar.deploy.apply.DisplayOnlyApplier`, which prints the same plan and calls nothing.

:mod:`~gdtrustar.deploy.command` is the click door (``gdtrustar deploy-lambda``); it parses flags,
wires the boto3 clients (the one composition root) and hands over.
"""
