"""Plan a deployment: read AWS, change nothing, return the actions that apply would take.

Each action is a small frozen dataclass that can ``describe()`` itself, so ``--dry-run`` prints
exactly what apply would do. Secret values ride along in fields hidden from ``repr`` and are never
part of a description.

"Nothing changed" is decided here from what is already deployed: the zip is stored under its hash
(HeadObject), the secret holds the same JSON (GetSecretValue), and the stack's template body and
parameters equal the new ones (GetTemplate, DescribeStacks). A second deploy with the same inputs
therefore plans nothing, and apply makes no call that changes anything.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from botocore.exceptions import ClientError

from gdtrustar.deploy.package import LambdaPackage
from gdtrustar.errors import DeployError

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.type_defs import StackTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

#: Stands for the ARN of a secret this same plan creates; apply substitutes the real one.
NEW_SECRET_ARN = "<arn of the secret created above>"
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "ResourceNotFoundException"}
_BUSY_SUFFIX = "_IN_PROGRESS"


@dataclasses.dataclass(frozen=True)
class CreateBucket:
    """Create the private, encrypted artifacts bucket."""

    bucket: str
    region: str

    def describe(self) -> str:
        """One line for people."""
        return f"create S3 bucket {self.bucket} (public access blocked, SSE-S3 encryption)"


@dataclasses.dataclass(frozen=True)
class UploadCode:
    """Store the zip under its content hash."""

    bucket: str
    key: str
    package: LambdaPackage

    def describe(self) -> str:
        """One line for people."""
        return f"upload s3://{self.bucket}/{self.key} ({self.package.size / 1e6:.2f} MB)"


@dataclasses.dataclass(frozen=True)
class PutSecret:
    """Create the credentials secret, or store a new value in the existing one."""

    name: str
    value: str = dataclasses.field(repr=False)
    arn: Optional[str] = None  # None: the secret does not exist yet

    def describe(self) -> str:
        """One line for people (never the value)."""
        verb = "create secret" if self.arn is None else "update the value of secret"
        return f"{verb} {self.name} (TruSTAR API key and secret)"


@dataclasses.dataclass(frozen=True)
class CreateStack:
    """Create the CloudFormation stack."""

    stack_name: str
    template_body: str = dataclasses.field(repr=False)
    parameters: Mapping[str, str]
    resources: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line per resource."""
        lines = [f"create stack {self.stack_name}:"] + [f"  + {r}" for r in self.resources]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class UpdateStack:
    """Update the stack in place through a change set."""

    stack_name: str
    template_body: str = dataclasses.field(repr=False)
    parameters: Mapping[str, str]
    changes: tuple[str, ...] = ()

    def describe(self) -> str:
        """The differences that make an update necessary."""
        lines = [f"update stack {self.stack_name} (change set):"] + [f"  ~ {c}" for c in self.changes]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class DeleteStack:
    """Delete the stack and everything in it."""

    stack_name: str
    reason: str = ""

    def describe(self) -> str:
        """One line for people."""
        return f"delete stack {self.stack_name}" + (f" ({self.reason})" if self.reason else "")


@dataclasses.dataclass(frozen=True)
class DeleteSecret:
    """Delete the credentials secret gdtrustar created (immediately, without a recovery window)."""

    secret_id: str

    def describe(self) -> str:
        """One line for people."""
        return f"delete secret {self.secret_id}"


Action = Union[CreateBucket, UploadCode, PutSecret, CreateStack, UpdateStack, DeleteStack, DeleteSecret]


@dataclasses.dataclass(frozen=True)
class SecretSpec:
    """Where the function's credentials come from: an existing ARN, or a secret gdtrustar manages."""

    name: str
    existing_arn: Optional[str] = None
    value: Optional[str] = dataclasses.field(default=None, repr=False)

    @classmethod
    def managed(cls, name: str, api_key: str, api_secret: str) -> SecretSpec:
        """A secret named ``name`` holding the JSON the handler reads."""
        value = json.dumps({"api_key": api_key, "api_secret": api_secret}, sort_keys=True)
        return cls(name=name, value=value)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing_stack(exc: ClientError) -> bool:
    return _error_code(exc) == "ValidationError" and "does not exist" in str(exc)


class Planner:
    """Reads S3, Secrets Manager and CloudFormation through the clients it is given."""

    def __init__(self, s3: S3Client, secrets: SecretsManagerClient, cloudformation: CloudFormationClient) -> None:
        self._s3 = s3
        self._secrets = secrets
        self._cfn = cloudformation

    def plan_code(self, bucket: str, region: str, key: str, package: LambdaPackage) -> list[Action]:
        """Bucket and object, each only if missing (the key is the content hash)."""
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND:
                raise DeployError(f"artifacts bucket {bucket} is not usable: {exc}") from exc
            return [CreateBucket(bucket, region), UploadCode(bucket, key, package)]
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) not in _NOT_FOUND:
                raise DeployError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
            return [UploadCode(bucket, key, package)]
        return []

    def plan_secret(self, spec: SecretSpec) -> tuple[list[Action], str]:
        """The secret's action (if any) and the ARN the stack should reference."""
        if spec.existing_arn:
            return [], spec.existing_arn
        try:
            described = self._secrets.describe_secret(SecretId=spec.name)
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise DeployError(f"cannot read secret {spec.name}: {exc}") from exc
            return [PutSecret(spec.name, spec.value or "")], NEW_SECRET_ARN
        if described.get("DeletedDate"):
            raise DeployError(
                f"secret {spec.name} is scheduled for deletion; restore it or pass --secret-arn"
            )
        current = self._secrets.get_secret_value(SecretId=described["ARN"]).get("SecretString")
        if _same_json(current, spec.value):
            return [], described["ARN"]
        return [PutSecret(spec.name, spec.value or "", arn=described["ARN"])], described["ARN"]

    def plan_stack(self, stack_name: str, template_body: str, parameters: Mapping[str, str]) -> list[Action]:
        """Create, update (with the reasons) or nothing, from the deployed template and parameters."""
        stack = self._describe_stack(stack_name)
        if stack is None:
            return [CreateStack(stack_name, template_body, dict(parameters), _resource_lines(template_body))]
        status = stack["StackStatus"]
        if status.endswith(_BUSY_SUFFIX) and status != "REVIEW_IN_PROGRESS":
            raise DeployError(f"stack {stack_name} is busy ({status}); try again when it has finished")
        if status in ("ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS"):
            # A stack whose creation failed can only be deleted; start again from scratch.
            create = CreateStack(stack_name, template_body, dict(parameters), _resource_lines(template_body))
            return [DeleteStack(stack_name, reason=f"it is {status}"), create]
        deployed = self._cfn.get_template(StackName=stack_name, TemplateStage="Original")["TemplateBody"]
        old_params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
        changes = _differences(deployed, template_body, old_params, parameters)
        if not changes:
            return []
        return [UpdateStack(stack_name, template_body, dict(parameters), tuple(changes))]

    def plan_delete(self, stack_name: str, secret_name: Optional[str]) -> list[Action]:
        """Delete the stack if it exists and, when asked, the managed secret."""
        actions: list[Action] = []
        if self._describe_stack(stack_name) is not None:
            actions.append(DeleteStack(stack_name))
        if secret_name:
            try:
                described = self._secrets.describe_secret(SecretId=secret_name)
            except ClientError as exc:
                if _error_code(exc) != "ResourceNotFoundException":
                    raise DeployError(f"cannot read secret {secret_name}: {exc}") from exc
            else:
                actions.append(DeleteSecret(described["ARN"]))
        return actions

    def _describe_stack(self, stack_name: str) -> Optional[StackTypeDef]:
        try:
            stacks = self._cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            if _is_missing_stack(exc):
                return None
            raise DeployError(f"cannot describe stack {stack_name}: {exc}") from exc
        live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
        return live[0] if live else None


def _same_json(current: Optional[str], new: Optional[str]) -> bool:
    try:
        before: object = json.loads(current or "null")
        after: object = json.loads(new or "null")
    except ValueError:
        return False
    return before == after


def _resource_lines(template_body: str) -> tuple[str, ...]:
    resources = json.loads(template_body)["Resources"]
    return tuple(f"{name} ({res['Type']})" for name, res in resources.items())


def _differences(
    old_body: Any, new_body: str, old_params: Mapping[str, str], new_params: Mapping[str, str]
) -> list[str]:
    """What differs between the deployed stack and the new inputs, for people to read."""
    old = old_body if isinstance(old_body, dict) else json.loads(old_body)
    new = json.loads(new_body)
    changes = []
    old_res, new_res = old.get("Resources", {}), new.get("Resources", {})
    for name in sorted(set(old_res) | set(new_res)):
        if old_res.get(name) != new_res.get(name):
            verb = "add" if name not in old_res else "remove" if name not in new_res else "modify"
            changes.append(f"{verb} resource {name}")
    if not changes and old != new:
        changes.append("template metadata (parameters, outputs or description)")
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            changes.append(f"parameter {key}: {old_params.get(key)!r} -> {new_params.get(key)!r}")
    return changes
