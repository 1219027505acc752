"""The CloudFormation template, built as a dict so tests can read it like data.

What varies per deployment (code location, secret, enclaves, endpoints) is a template *parameter*,
so a user deploying through their own pipeline (``--template-out``) can override it. What decides
the shape of the resources (function name, runtime, architecture, severity filter) is written into
the template: a numeric EventBridge match needs a JSON number, and a ``Number`` parameter would
arrive as a string.

Least privilege, resource by resource:

* the execution role may write to its own log group, read its one secret, and send to its one
  dead-letter queue; the last is needed because Lambda delivers on-failure destination records
  *as the function's execution role*;
* the queue policy admits exactly two senders: EventBridge on behalf of this rule
  (``aws:SourceArn``) and the function's execution role;
* EventBridge may invoke the function only from this rule.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional

HANDLER = "gdtrustar.lambda_handler.handler"
TIMEOUT_SECONDS = 120
MEMORY_MB = 256
LOG_RETENTION_DAYS = 90
ASYNC_RETRIES = 2  # Lambda's own retries of an async invoke that raised (0-2)
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # SQS maximum: two weeks to notice and replay
PARAMETER_ENV = {  # template parameter -> the environment variable the handler reads
    "EnclaveIds": "TRUSTAR_ENCLAVE_IDS",
    "ApiEndpoint": "TRUSTAR_API_ENDPOINT",
    "AuthEndpoint": "TRUSTAR_AUTH_ENDPOINT",
    "StationUrl": "TRUSTAR_STATION_URL",
    "MaxRate": "TRUSTAR_MAX_RATE",
    "SecretArn": "TRUSTAR_SECRET_ARN",
}
SECRET_ARN_PATTERN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$"
_PARAMETER_DOCS = {
    "CodeS3Bucket": "S3 bucket holding the Lambda zip.",
    "CodeS3Key": "S3 key of the Lambda zip (named by its SHA-256).",
    "SecretArn": "Secrets Manager secret with JSON {\"api_key\", \"api_secret\"} for TruSTAR.",
    "EnclaveIds": "Comma-separated TruSTAR enclave ids to write reports to.",
    "ApiEndpoint": "TruSTAR API base URL.",
    "AuthEndpoint": "TruSTAR OAuth token URL.",
    "StationUrl": "TruSTAR Station web URL (for links in reports).",
    "MaxRate": "Station calls per minute allowed to each running copy of the function.",
}


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


def _arn(resource: str) -> dict[str, str]:
    return {"Fn::GetAtt": [resource, "Arn"]}


def _role(spec: StackSpec) -> dict[str, Any]:
    account = "${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
    log_arn = f"arn:{account}:log-group:{spec.log_group_name}"
    statements = [
        {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": {"Fn::Sub": f"{log_arn}:*"}},
        {"Sid": "OwnSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": {"Ref": "SecretArn"}},
        {"Sid": "OnFailureDestination", "Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": _arn("DeadLetterQueue")},
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
            "Role": _arn("ExecutionRole"),
            "Code": {"S3Bucket": {"Ref": "CodeS3Bucket"}, "S3Key": {"Ref": "CodeS3Key"}},
            "Environment": {"Variables": {env: {"Ref": name} for name, env in PARAMETER_ENV.items()}},
        },
    }


def _queue_policy() -> dict[str, Any]:
    statements = [
        {"Sid": "EventBridgeRuleDeadLetters", "Effect": "Allow",
         "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
         "Resource": _arn("DeadLetterQueue"),
         "Condition": {"ArnEquals": {"aws:SourceArn": _arn("FindingsRule")}}},
        {"Sid": "LambdaOnFailureDestination", "Effect": "Allow",
         "Principal": {"AWS": _arn("ExecutionRole")}, "Action": "sqs:SendMessage",
         "Resource": _arn("DeadLetterQueue")},
    ]
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {"Queues": [{"Ref": "DeadLetterQueue"}],
                       "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}},
    }


def _rule(spec: StackSpec) -> dict[str, Any]:
    target = {
        "Id": "gdtrustar-function",
        "Arn": _arn("Function"),
        "DeadLetterConfig": {"Arn": _arn("DeadLetterQueue")},
        "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
    }
    return {
        "Type": "AWS::Events::Rule",
        "Properties": {"Name": f"{spec.function_name}-findings",
                       "Description": "GuardDuty findings to the gdtrustar function",
                       "EventPattern": event_pattern(spec.min_severity), "State": "ENABLED",
                       "Targets": [target]},
    }


def _resources(spec: StackSpec) -> dict[str, Any]:
    return {
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": f"{spec.function_name}-dlq", "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": DLQ_RETENTION_SECONDS}},
        "DeadLetterQueuePolicy": _queue_policy(),
        "LogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": spec.log_group_name, "RetentionInDays": spec.log_retention_days}},
        "ExecutionRole": _role(spec),
        "Function": _function(spec),
        "AsyncInvokeConfig": {"Type": "AWS::Lambda::EventInvokeConfig", "Properties": {
            "FunctionName": {"Ref": "Function"}, "Qualifier": "$LATEST",
            "MaximumRetryAttempts": ASYNC_RETRIES,
            "DestinationConfig": {"OnFailure": {"Destination": _arn("DeadLetterQueue")}}}},
        "FindingsRule": _rule(spec),
        "InvokePermission": {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction", "FunctionName": _arn("Function"),
            "Principal": "events.amazonaws.com", "SourceArn": _arn("FindingsRule")}},
    }


_OUTPUTS = {
    "FunctionName": ({"Ref": "Function"}, "The Lambda function"),
    "FunctionArn": (_arn("Function"), "The Lambda function's ARN"),
    "RuleArn": (_arn("FindingsRule"), "The EventBridge rule sending GuardDuty findings"),
    "DeadLetterQueueUrl": ({"Ref": "DeadLetterQueue"}, "Events that could not be delivered or processed"),
    "DeadLetterQueueArn": (_arn("DeadLetterQueue"), "ARN of the dead-letter queue"),
    "ExecutionRoleArn": (_arn("ExecutionRole"), "The function's execution role"),
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
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"gdtrustar: GuardDuty findings to TruSTAR Station ({spec.function_name})",
        "Parameters": parameters,
        "Resources": _resources(spec),
        "Outputs": {key: {"Value": value, "Description": doc} for key, (value, doc) in _OUTPUTS.items()},
    }


def template_body(template: Mapping[str, Any]) -> str:
    """Serialise deterministically, so the deployed body can be compared byte for byte."""
    return json.dumps(template, indent=1, sort_keys=True)
