"""The CloudFormation template, built as a dict so tests can read it like data.

What varies per deployment (code location, secret, enclaves, endpoints) is a template *parameter*,
so a user deploying through their own pipeline (``--template-out``) can override it. What decides
the shape of the resources (function name, runtime, architecture, severity filter) is written into
the template: a numeric EventBridge match needs a JSON number, and a ``Number`` parameter would
arrive as a string.

The live path is EventBridge rule → encrypted SQS buffer queue → event source mapping (at most
``MAX_CONCURRENCY`` copies, batches of 10, partial batch responses) → function; the buffer queue
redrives to the dead-letter queue, which also catches what EventBridge cannot deliver. See
:mod:`~gdtrustar.deploy.queues` for those resources and their sizes.

Least privilege, resource by resource:

* the execution role may write to its own log group, read its one secret, read and delete on its
  one buffer queue, and decrypt with its one queue key;
* each queue policy admits one sender: EventBridge on behalf of this rule (``aws:SourceArn``);
* nothing may invoke the function directly: the event source mapping polls as the role.

Migrating a stack made before the queue (rule → function, asynchronous invoke) loses no event:
the rule ``DependsOn`` the queue policies and the event source mapping, so CloudFormation creates
the key, the queues, their policies and the mapping (and updates role and function) before it
switches the rule's target; the target keeps its id, so EventBridge replaces it in place rather
than removing one and adding another. The old invoke permission and on-failure configuration are
removed resources, which CloudFormation deletes only in the cleanup phase, after every update.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional

from gdtrustar.deploy.queues import MAX_CONCURRENCY, TIMEOUT_SECONDS, arn, queue_resources, role_statements

HANDLER = "gdtrustar.lambda_handler.handler"
MEMORY_MB = 256
LOG_RETENTION_DAYS = 90
# Kept from stacks made before the buffer queue: with the same id, EventBridge replaces the target
# in place (PutTargets) instead of removing the function and adding the queue as two steps.
TARGET_ID = "gdtrustar-function"
PARAMETER_ENV = {  # template parameter -> the environment variable the handler reads
    "EnclaveIds": "TRUSTAR_ENCLAVE_IDS",
    "ApiEndpoint": "TRUSTAR_API_ENDPOINT",
    "AuthEndpoint": "TRUSTAR_AUTH_ENDPOINT",
    "StationUrl": "TRUSTAR_STATION_URL",
    "MaxRate": "TRUSTAR_MAX_RATE",
    "SecretArn": "TRUSTAR_SECRET_ARN",
}
CONCURRENCY_ENV = "GDTRUSTAR_MAX_CONCURRENCY"  # each copy paces at TRUSTAR_MAX_RATE / this
SECRET_ARN_PATTERN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$"
TOPIC_ARN_PATTERN = r"^$|^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$"
_PARAMETER_DOCS = {
    "CodeS3Bucket": "S3 bucket holding the Lambda zip.",
    "CodeS3Key": "S3 key of the Lambda zip (named by its SHA-256).",
    "SecretArn": "Secrets Manager secret with JSON {\"api_key\", \"api_secret\"} for TruSTAR.",
    "EnclaveIds": "Comma-separated TruSTAR enclave ids to write reports to.",
    "ApiEndpoint": "TruSTAR API base URL.",
    "AuthEndpoint": "TruSTAR OAuth token URL.",
    "StationUrl": "TruSTAR Station web URL (for links in reports).",
    "MaxRate": "This stack's share of the API key's Station quota, in calls per minute, shared by all "
               "copies of the function; the CLI's --max-rate is another share of the same quota.",
    "KeyFingerprint": "HMAC-SHA256 fingerprint of the API key (never the key), so gdtrustar backfill can "
                      "tell that it shares this stack's quota; empty if unknown.",
    "AlarmTopicArn": "SNS topic for the queue alarms (empty: alarms without notifications).",
}
OPTIONAL_PARAMETERS = ("KeyFingerprint", "AlarmTopicArn")


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """What shapes the resources; changing any of these changes the template."""

    function_name: str = "gdtrustar-guardduty"
    runtime: str = "python3.13"
    architecture: str = "x86_64"
    min_severity: Optional[float] = None
    log_retention_days: int = LOG_RETENTION_DAYS

    @property
    def stack_name(self) -> str:
        """One stack per function name (and region)."""
        return self.function_name

    @property
    def log_group_name(self) -> str:
        """The log group Lambda writes to by convention."""
        return f"/aws/lambda/{self.function_name}"


def event_pattern(min_severity: Optional[float]) -> dict[str, Any]:
    """GuardDuty findings, optionally only those at or above ``min_severity``."""
    pattern: dict[str, Any] = {"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]}
    if min_severity is not None:
        number: float | int = int(min_severity) if float(min_severity).is_integer() else min_severity
        pattern["detail"] = {"severity": [{"numeric": [">=", number]}]}
    return pattern


def _role(spec: StackSpec) -> dict[str, Any]:
    account = "${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
    log_arn = f"arn:{account}:log-group:{spec.log_group_name}"
    statements = [
        {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": {"Fn::Sub": f"{log_arn}:*"}},
        {"Sid": "OwnSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": {"Ref": "SecretArn"}},
        *role_statements(),
    ]
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": f"Execution role of the {spec.function_name} GuardDuty to TruSTAR function",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": "gdtrustar-function",
                          "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


def _function(spec: StackSpec) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "DependsOn": "LogGroup",  # else Lambda creates the group itself, without a retention
        "Properties": {
            "FunctionName": spec.function_name,
            "Description": "GuardDuty findings to TruSTAR Station reports (gdtrustar)",
            "Handler": HANDLER,
            "Runtime": spec.runtime,
            "Architectures": [spec.architecture],
            "Timeout": TIMEOUT_SECONDS,
            "MemorySize": MEMORY_MB,
            "Role": arn("ExecutionRole"),
            "Code": {"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}},
            "Environment": {"Variables": {**{env: {"Ref": name} for name, env in PARAMETER_ENV.items()},
                                          CONCURRENCY_ENV: str(MAX_CONCURRENCY)}},
        },
    }


def rule_name(spec: StackSpec) -> str:
    """The rule's name (its ARN is built from it, see :func:`~gdtrustar.deploy.queues.rule_arn`)."""
    return f"{spec.function_name}-findings"


def _rule(spec: StackSpec) -> dict[str, Any]:
    target = {
        "Id": TARGET_ID,
        "Arn": arn("BufferQueue"),
        "DeadLetterConfig": {"Arn": arn("DeadLetterQueue")},
        "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
    }
    return {
        "Type": "AWS::Events::Rule",
        # Switch targets last: everything the queue path needs must exist before the first event.
        "DependsOn": ["BufferQueuePolicy", "DeadLetterQueuePolicy", "QueueEventSource"],
        "Properties": {"Name": rule_name(spec),
                       "Description": "GuardDuty findings to the gdtrustar buffer queue",
                       "EventPattern": event_pattern(spec.min_severity), "State": "ENABLED",
                       "Targets": [target]},
    }


def _resources(spec: StackSpec) -> dict[str, Any]:
    return {
        **queue_resources(spec.function_name, rule_name(spec)),
        "LogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": spec.log_group_name, "RetentionInDays": spec.log_retention_days}},
        "ExecutionRole": _role(spec),
        "Function": _function(spec),
        "FindingsRule": _rule(spec),
    }


_OUTPUTS = {
    "FunctionName": ({"Ref": "Function"}, "The Lambda function"),
    "FunctionArn": (arn("Function"), "The Lambda function's ARN"),
    "RuleArn": (arn("FindingsRule"), "The EventBridge rule sending GuardDuty findings"),
    "BufferQueueUrl": ({"Ref": "BufferQueue"}, "Findings waiting for the function (backfill --via-queue sends here)"),
    "BufferQueueArn": (arn("BufferQueue"), "ARN of the buffer queue"),
    "DeadLetterQueueUrl": ({"Ref": "DeadLetterQueue"}, "Findings that could not be delivered (gdtrustar redrive)"),
    "DeadLetterQueueArn": (arn("DeadLetterQueue"), "ARN of the dead-letter queue"),
    "QueueKeyArn": (arn("QueueKey"), "KMS key encrypting both queues"),
    "EventSourceMappingId": ({"Ref": "QueueEventSource"}, "The buffer queue's event source mapping"),
    "KeyFingerprint": ({"Ref": "KeyFingerprint"}, "Fingerprint of the API key this stack uses (not the key)"),
    "ExecutionRoleArn": (arn("ExecutionRole"), "The function's execution role"),
    "LogGroupName": ({"Ref": "LogGroup"}, "The function's log group"),
}


def build_template(spec: StackSpec, defaults: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Return the template for ``spec``; ``defaults`` become parameter defaults (for --template-out)."""
    defaults = defaults or {}
    parameters: dict[str, Any] = {}
    for name, doc in _PARAMETER_DOCS.items():
        parameters[name] = {"Type": "String", "Description": doc}
        if name in defaults:
            parameters[name]["Default"] = defaults[name]
    parameters["SecretArn"]["AllowedPattern"] = SECRET_ARN_PATTERN
    parameters["AlarmTopicArn"]["AllowedPattern"] = TOPIC_ARN_PATTERN
    for name in OPTIONAL_PARAMETERS:
        parameters[name].setdefault("Default", "")
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"gdtrustar: GuardDuty findings to TruSTAR Station ({spec.function_name})",
        "Parameters": parameters,
        "Conditions": {"HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}},
        "Resources": _resources(spec),
        "Outputs": {key: {"Value": value, "Description": doc} for key, (value, doc) in _OUTPUTS.items()},
    }


def template_body(template: Mapping[str, Any]) -> str:
    """Serialise deterministically, so the deployed body can be compared byte for byte."""
    return json.dumps(template, indent=1, sort_keys=True)
