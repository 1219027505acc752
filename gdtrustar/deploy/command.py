"""``gdtrustar deploy-lambda``: the click door to build → plan → apply, and the composition root.

This module parses flags, resolves settings, makes the boto3 clients and hands them to the
planner and applier. It prints the plan to stderr and the stack outputs to stdout, never a secret.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import click

from gdtrustar.budget import key_fingerprint
from gdtrustar.deploy.apply import Applier, DisplayOnlyApplier, stack_outputs
from gdtrustar.deploy.package import PLATFORMS, RUNTIMES, BuildTarget, DependencyBuilder, build_package
from gdtrustar.deploy.plan import Planner, SecretSpec
from gdtrustar.deploy.queues import MAX_CONCURRENCY
from gdtrustar.deploy.template import TOPIC_ARN_PATTERN, StackSpec, build_template, template_body
from gdtrustar.errors import ConfigError, DeployError
from gdtrustar.options import SEVERITY, settings_from, station_options, verbosity_options
from gdtrustar.settings import Settings
from gdtrustar.text import printable_lines

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient


def _echo(message: str) -> None:
    click.echo(printable_lines(message), err=True)  # stack events and names come from AWS


def _session(profile: Optional[str], region: Optional[str]) -> Session:
    from gdtrustar.aws import build_session  # deferred: boto3 is slow to import and --template-out does not need it

    session = build_session(profile, region)
    if not session.region_name:
        raise ConfigError("no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
    return session


def _stack_parameters(settings: Settings, secret_arn: Optional[str], bucket: str, key: str,
                      alarm_topic: Optional[str] = None) -> dict[str, str]:
    params = {
        "CodeS3Bucket": bucket,
        "CodeS3Key": key,
        "EnclaveIds": ",".join(settings.enclave_ids),
        "ApiEndpoint": settings.api_endpoint,
        "AuthEndpoint": settings.auth_endpoint,
        "StationUrl": settings.station_url,
        "MaxRate": f"{settings.max_rate:g}",
    }
    if secret_arn:
        params["SecretArn"] = secret_arn
    params = {k: v for k, v in params.items() if v}
    # Always passed, even empty, so a redeploy compares equal to what the stack holds.
    params["KeyFingerprint"] = key_fingerprint(settings.api_endpoint, settings.api_key)
    params["AlarmTopicArn"] = alarm_topic or ""
    return params


def _secret_spec(settings: Settings, secret_arn: Optional[str], function_name: str) -> SecretSpec:
    """An existing secret (--secret-arn, else TRUSTAR_SECRET_ARN) or one made from the credentials."""
    name = f"gdtrustar/{function_name}"
    existing = secret_arn or settings.secret_arn
    if existing:
        return SecretSpec(name=name, existing_arn=existing)
    settings.require_credentials()
    return SecretSpec.managed(name, settings.api_key or "", settings.api_secret or "")


def write_template(spec: StackSpec, settings: Settings, secret_arn: Optional[str], out: Path,
                   builder: DependencyBuilder, alarm_topic: Optional[str] = None) -> Path:
    """Write the template and, beside it, the zip it names; deploy nothing.

    The parameters default to what this machine knows (the zip's name, the enclaves, endpoints and
    the secret ARN if given), so a pipeline only supplies the bucket it uploads the zip to.
    """
    package = build_package(BuildTarget(spec.runtime, spec.architecture), builder)
    zip_path = out.parent / package.filename
    zip_path.write_bytes(package.data)
    defaults = _stack_parameters(settings, secret_arn or settings.secret_arn, "", package.filename, alarm_topic)
    out.write_text(template_body(build_template(spec, defaults)) + "\n")
    _echo(f"wrote {out} and {zip_path} ({package.size / 1e6:.2f} MB); nothing was deployed")
    _echo(f"upload {zip_path.name} to your bucket and deploy the template with CodeS3Bucket=<bucket>")
    return zip_path


def _clients(session: Session) -> tuple[S3Client, SecretsManagerClient, CloudFormationClient]:
    """What the planner and applier call: the artifact bucket, the API secret, the stack."""
    return session.client("s3"), session.client("secretsmanager"), session.client("cloudformation")


def deploy(spec: StackSpec, settings: Settings, session: Session, *, secret_arn: Optional[str],
           bucket: Optional[str], dry_run: bool, builder: DependencyBuilder,
           alarm_topic: Optional[str] = None) -> dict[str, str]:
    """Build, plan and apply (or only display) one deployment; return the stack outputs."""
    settings.require_enclaves()
    secret = _secret_spec(settings, secret_arn, spec.function_name)
    s3, secrets, cfn = _clients(session)
    if not bucket:
        account = session.client("sts").get_caller_identity()["Account"]
        bucket = f"gdtrustar-artifacts-{account}-{session.region_name}"
    package = build_package(BuildTarget(spec.runtime, spec.architecture), builder)
    key = f"gdtrustar/{package.sha256}.zip"
    _echo(f"built {package.filename} ({package.size / 1e6:.2f} MB, sha256 {package.sha256[:12]})")
    planner = Planner(s3, secrets, cfn)
    plan = planner.plan_code(bucket, session.region_name, key, package)
    secret_actions, arn = planner.plan_secret(secret)
    plan += secret_actions
    params = _stack_parameters(settings, arn, bucket, key, alarm_topic)
    plan += planner.plan_stack(spec.stack_name, template_body(build_template(spec)), params)
    applier = DisplayOnlyApplier(_echo) if dry_run else Applier(s3, secrets, cfn, _echo)
    applier.apply(plan)
    return {} if dry_run else stack_outputs(cfn, spec.stack_name)


def delete(spec: StackSpec, session: Session, *, delete_secret: bool, dry_run: bool) -> None:
    """Remove the stack and, only when asked, the secret gdtrustar created (never a --secret-arn one)."""
    s3, secrets, cfn = _clients(session)
    secret_name = f"gdtrustar/{spec.function_name}" if delete_secret else None
    plan = Planner(s3, secrets, cfn).plan_delete(spec.stack_name, secret_name)
    applier = DisplayOnlyApplier(_echo) if dry_run else Applier(s3, secrets, cfn, _echo)
    applier.apply(plan)
    if not delete_secret:
        _echo(f"kept secret gdtrustar/{spec.function_name} (if any); pass --delete-secret to remove it")


@click.command("deploy-lambda")
@click.option("--function-name", default="gdtrustar-guardduty", show_default=True,
              help="Lambda function name; also names the stack, rule, queue and secret.")
@click.option("--region", metavar="REGION", help="AWS Region (default: the AWS configuration's).")
@click.option("--profile", metavar="NAME", help="AWS profile to deploy with.")
@station_options
@click.option("--min-severity", type=SEVERITY, metavar="N|LABEL",
              help="Only findings at or above this severity (number or low/medium/high/critical).")
@click.option("--runtime", type=click.Choice(sorted(RUNTIMES, reverse=True)), default="python3.13",
              show_default=True, help="Lambda Python runtime.")
@click.option("--architecture", type=click.Choice(sorted(PLATFORMS)), default="x86_64", show_default=True)
@click.option("--secret-arn", metavar="ARN",
              help="Use this existing secret ({\"api_key\",\"api_secret\"}) instead of storing one.")
@click.option("--alarm-topic", metavar="ARN", callback=lambda ctx, param, value: _topic_arn(value),
              help="SNS topic notified by the dead-letter and queue-age alarms.")
@click.option("--artifacts-bucket", metavar="BUCKET",
              help="Bucket for the zip (default gdtrustar-artifacts-<account>-<region>, created if missing).")
@click.option("--template-out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the CloudFormation template (and the zip beside it); deploy nothing.")
@click.option("--dry-run", is_flag=True, help="Print what would be created or changed; change nothing.")
@click.option("--delete", "delete_stack", is_flag=True, help="Remove the stack.")
@click.option("--delete-secret", is_flag=True,
              help="With --delete: also remove the secret gdtrustar created.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True,
              help="Where built dependencies are cached (default ~/.cache/gdtrustar).")
@verbosity_options
def deploy_lambda(**kwargs: Any) -> None:
    """Deploy the GuardDuty → TruSTAR Lambda with CloudFormation (idempotent).

    EventBridge → encrypted SQS buffer queue → the function (at most 2 copies) → Station; what
    cannot be delivered ends in the dead-letter queue (`gdtrustar redrive` brings it back). The API
    key and secret go to Secrets Manager, never into the function's environment. --max-rate is
    this stack's share of the key's quota; a CLI run on the same key uses another share.
    """
    settings = settings_from(kwargs)
    spec = StackSpec(function_name=kwargs["function_name"], runtime=kwargs["runtime"],
                     architecture=kwargs["architecture"], min_severity=kwargs["min_severity"])
    if kwargs["delete_secret"] and not kwargs["delete_stack"]:
        raise click.UsageError("--delete-secret only goes with --delete")
    builder = DependencyBuilder(kwargs["cache_dir"])
    if kwargs["template_out"]:
        write_template(spec, settings, kwargs["secret_arn"], kwargs["template_out"], builder,
                       kwargs["alarm_topic"])
        return
    with _aws_errors():
        session = _session(kwargs["profile"], kwargs["region"])
        if kwargs["delete_stack"]:
            delete(spec, session, delete_secret=kwargs["delete_secret"], dry_run=kwargs["dry_run"])
            return
        outputs = deploy(spec, settings, session, secret_arn=kwargs["secret_arn"],
                         bucket=kwargs["artifacts_bucket"], dry_run=kwargs["dry_run"], builder=builder,
                         alarm_topic=kwargs["alarm_topic"])
    if outputs:
        click.echo(json.dumps(outputs, indent=2, sort_keys=True))


for _param in deploy_lambda.params:
    if _param.name == "max_rate":
        _param.help = ("This stack's share of the API key's Station quota, calls/min, shared by the function's "
                       f"{MAX_CONCURRENCY} copies (default 60; a CLI run on the same key needs its own share).")


def _topic_arn(value: Optional[str]) -> Optional[str]:
    if value and not re.match(TOPIC_ARN_PATTERN, value):
        raise click.BadParameter(f"{value!r} is not an SNS topic ARN", param_hint="--alarm-topic")
    return value


@contextlib.contextmanager
def _aws_errors() -> Iterator[None]:
    """Turn botocore's credential / network / API errors into gdtrustar's one-line errors."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    try:
        yield
    except (NoCredentialsError, NoRegionError) as exc:
        raise ConfigError(f"AWS: {exc}") from exc
    except (BotoCoreError, ClientError) as exc:
        raise DeployError(f"AWS: {exc}") from exc
