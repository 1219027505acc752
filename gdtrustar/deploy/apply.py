"""Apply a plan: the only code in :mod:`gdtrustar.deploy` that changes anything in AWS.

:class:`Applier` runs the actions in order and waits for CloudFormation. Stack updates go through a
change set; if CloudFormation finds the change set empty ("didn't contain changes") it is deleted
and nothing happens, so even a plan made against a stale reading cannot cause a pointless update.
:class:`DisplayOnlyApplier` has the same interface and only prints (``--dry-run``).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Optional, Sequence

from botocore.exceptions import ClientError, WaiterError

from gdtrustar.deploy.plan import (
    NEW_SECRET_ARN,
    Action,
    CreateBucket,
    CreateStack,
    DeleteSecret,
    DeleteStack,
    PutSecret,
    UpdateStack,
    UploadCode,
)
from gdtrustar.errors import DeployError

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.literals import CapabilityType
    from mypy_boto3_cloudformation.type_defs import ParameterTypeDef, WaiterConfigTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

Echo = Callable[[str], None]
StackWaiter = Literal["stack_create_complete", "stack_update_complete", "stack_delete_complete"]
CAPABILITIES: list[CapabilityType] = ["CAPABILITY_IAM"]
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


@dataclasses.dataclass
class ApplyResult:
    """What apply did: one line per action taken, and the secret's ARN if it made one."""

    done: list[str] = dataclasses.field(default_factory=list)
    secret_arn: Optional[str] = None


class DisplayOnlyApplier:
    """Prints the plan and touches nothing: the ``--dry-run`` applier."""

    def __init__(self, echo: Echo) -> None:
        self._echo = echo

    def apply(self, plan: Sequence[Action]) -> ApplyResult:
        """Describe every action as one that would be taken."""
        if not plan:
            self._echo("dry run: nothing to do, everything is up to date")
        for action in plan:
            self._echo(f"dry run: would {action.describe()}")
        return ApplyResult()


class Applier:
    """Carries out plan actions with the clients it is given."""

    def __init__(
        self, s3: S3Client, secrets: SecretsManagerClient, cloudformation: CloudFormationClient, echo: Echo,
        waiter_delay: int = 5, max_wait_seconds: int = 1800,
    ) -> None:
        self._s3 = s3
        self._secrets = secrets
        self._cfn = cloudformation
        self._echo = echo
        self._waiter_config: WaiterConfigTypeDef = {"Delay": waiter_delay,
                                                    "MaxAttempts": max(1, max_wait_seconds // waiter_delay)}
        self._result = ApplyResult()

    def apply(self, plan: Sequence[Action]) -> ApplyResult:
        """Run ``plan`` in order; AWS errors come back as :class:`DeployError` naming the step."""
        self._result = ApplyResult()
        if not plan:
            self._echo("nothing to do: everything is up to date")
        for action in plan:
            self._echo(action.describe())
            try:
                self._dispatch(action)
            except ClientError as exc:
                raise DeployError(f"{action.describe().splitlines()[0]}: {exc}") from exc
            self._result.done.append(action.describe().splitlines()[0])
        return self._result

    def _dispatch(self, action: Action) -> None:
        handlers: Mapping[type, Callable[[Any], None]] = {
            CreateBucket: self._create_bucket, UploadCode: self._upload, PutSecret: self._put_secret,
            CreateStack: self._create_stack, UpdateStack: self._update_stack,
            DeleteStack: self._delete_stack, DeleteSecret: self._delete_secret,
        }
        handlers[type(action)](action)

    def _create_bucket(self, action: CreateBucket) -> None:
        kwargs: dict[str, Any] = {"Bucket": action.bucket}
        if action.region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": action.region}
        self._s3.create_bucket(**kwargs)
        self._s3.put_public_access_block(Bucket=action.bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        self._s3.put_bucket_encryption(Bucket=action.bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                       "BucketKeyEnabled": True}]})

    def _upload(self, action: UploadCode) -> None:
        self._s3.put_object(Bucket=action.bucket, Key=action.key, Body=action.package.data,
                            ContentType="application/zip", Metadata={"sha256": action.package.sha256})

    def _put_secret(self, action: PutSecret) -> None:
        if action.arn is None:
            created = self._secrets.create_secret(
                Name=action.name, SecretString=action.value,
                Description="TruSTAR API credentials for the gdtrustar Lambda")
            self._result.secret_arn = created["ARN"]
        else:
            self._secrets.put_secret_value(SecretId=action.arn, SecretString=action.value)
            self._result.secret_arn = action.arn

    def _parameters(self, parameters: Mapping[str, str]) -> list[ParameterTypeDef]:
        resolved: list[ParameterTypeDef] = []
        for key, value in sorted(parameters.items()):
            if value == NEW_SECRET_ARN:
                if not self._result.secret_arn:
                    raise DeployError("the plan refers to a new secret that was not created")
                value = self._result.secret_arn
            resolved.append({"ParameterKey": key, "ParameterValue": value})
        return resolved

    def _create_stack(self, action: CreateStack) -> None:
        self._cfn.create_stack(StackName=action.stack_name, TemplateBody=action.template_body,
                               Parameters=self._parameters(action.parameters), Capabilities=CAPABILITIES,
                               Tags=[{"Key": "gdtrustar", "Value": "lambda"}])
        self._wait("stack_create_complete", action.stack_name)

    def _update_stack(self, action: UpdateStack) -> None:
        name = f"gdtrustar-{uuid.uuid4().hex[:12]}"
        self._cfn.create_change_set(
            StackName=action.stack_name, ChangeSetName=name, ChangeSetType="UPDATE",
            TemplateBody=action.template_body, Parameters=self._parameters(action.parameters),
            Capabilities=CAPABILITIES)
        try:
            self._cfn.get_waiter("change_set_create_complete").wait(
                StackName=action.stack_name, ChangeSetName=name, WaiterConfig=self._waiter_config)
        except WaiterError as exc:
            failed = self._cfn.describe_change_set(StackName=action.stack_name, ChangeSetName=name)
            reason = failed.get("StatusReason", "")
            if any(marker in reason for marker in _NO_CHANGES):
                self._cfn.delete_change_set(StackName=action.stack_name, ChangeSetName=name)
                self._echo("  CloudFormation found no changes; nothing updated")
                return
            raise DeployError(f"change set for {action.stack_name} failed: {reason}") from exc
        described = self._cfn.describe_change_set(StackName=action.stack_name, ChangeSetName=name)
        for change in described.get("Changes", []):
            rc = change.get("ResourceChange", {})
            self._echo(f"  {rc.get('Action', '?')} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')})")
        self._cfn.execute_change_set(StackName=action.stack_name, ChangeSetName=name)
        self._wait("stack_update_complete", action.stack_name)

    def _delete_stack(self, action: DeleteStack) -> None:
        self._cfn.delete_stack(StackName=action.stack_name)
        self._wait("stack_delete_complete", action.stack_name)

    def _delete_secret(self, action: DeleteSecret) -> None:
        self._secrets.delete_secret(SecretId=action.secret_id, ForceDeleteWithoutRecovery=True)

    def _wait(self, waiter: StackWaiter, stack_name: str) -> None:
        try:
            self._cfn.get_waiter(waiter).wait(StackName=stack_name, WaiterConfig=self._waiter_config)
        except WaiterError as exc:
            reasons = self._failure_reasons(stack_name)
            raise DeployError(f"stack {stack_name}: {waiter} failed: {reasons}") from exc

    def _failure_reasons(self, stack_name: str) -> str:
        try:
            events = self._cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
        except ClientError:
            return "no stack events available"
        failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                  for e in events if e.get("ResourceStatus", "").endswith("FAILED")]
        return "; ".join(failed[:3]) or "see the stack's events"


def stack_outputs(cloudformation: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """The stack's outputs as a dict (empty when the stack is gone)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError:
        return {}
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return {o["OutputKey"]: o["OutputValue"] for o in (live[0].get("Outputs", []) if live else [])}
