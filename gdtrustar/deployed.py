"""What the CLI reads of a deployed stack: its outputs (queue names) and parameters (budget).

``redrive`` and ``backfill --via-queue`` work on the stack ``deploy-lambda`` made, found by its
function name in one region, and say how long the buffer queue takes to drain at the stack's
budget: each message costs one Station call per enclave.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Optional

from gdtrustar.errors import ConfigError

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_sqs import SQSClient

DEFAULT_FUNCTION_NAME = "gdtrustar-guardduty"


@dataclass(frozen=True)
class DeployedStack:
    """One gdtrustar stack as CloudFormation describes it."""

    name: str
    region: str
    outputs: Mapping[str, str]
    parameters: Mapping[str, str]

    def output(self, key: str) -> str:
        """A stack output; a stack made before the queue lacks the queue outputs."""
        value = self.outputs.get(key)
        if not value:
            raise ConfigError(f"stack {self.name} ({self.region}) has no {key}: it predates the buffer queue; "
                              f"update it with: gdtrustar deploy-lambda --function-name {self.name}")
        return value

    @property
    def max_rate(self) -> float:
        """The stack's share of the key's quota, calls per minute (deploy-lambda --max-rate)."""
        try:
            return float(self.parameters.get("MaxRate") or 60)
        except ValueError:
            return 60.0

    @property
    def enclaves(self) -> int:
        """Station calls per message: one per enclave the function writes to."""
        return max(1, len([e for e in self.parameters.get("EnclaveIds", "").split(",") if e.strip()]))


def find_stack(session: Session, function_name: str, region: Optional[str]) -> DeployedStack:
    """The stack ``deploy-lambda --function-name`` made, or a one-line configuration error."""
    from botocore.exceptions import BotoCoreError, ClientError

    region = region or session.region_name
    if not region:
        raise ConfigError("no AWS region for the stack: pass --region or set AWS_REGION")
    try:
        stacks = session.client("cloudformation", region_name=region).describe_stacks(
            StackName=function_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            raise ConfigError(f"no stack {function_name} in {region}: deploy it with gdtrustar deploy-lambda "
                              "(or pass --function-name / --region)") from exc
        raise ConfigError(f"cannot read stack {function_name} in {region}: {exc}") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"cannot read stack {function_name} in {region}: {exc}") from exc
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    if not live:
        raise ConfigError(f"no stack {function_name} in {region}")
    stack = live[0]
    return DeployedStack(
        name=function_name, region=region,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])},
    )


def queue_depth(sqs: SQSClient, queue_url: str) -> int:
    """Messages in a queue, visible or in flight (SQS's approximate counts)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + \
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


def drain_time(messages: int, stack: DeployedStack) -> str:
    """How long ``messages`` take at the stack's budget, for people ("about 27 h 47 min")."""
    minutes = messages * stack.enclaves / stack.max_rate
    enclaves = f", {stack.enclaves} calls each" if stack.enclaves > 1 else ""
    if minutes < 1:
        span = "under a minute"
    elif minutes < 60:
        span = f"about {minutes:.0f} min"
    else:
        span = f"about {int(minutes // 60)} h {int(minutes % 60)} min"
    return f"{span} at the stack's budget of {stack.max_rate:g} calls/min{enclaves}"


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """AWS refusals (access, KMS, a missing queue) and network errors as one configuration line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"{what}: {exc}") from exc
