"""The queue side of the stack: key, queues, their policies, event source mapping, alarms.

Why a stack-created KMS key and not SSE-SQS (docs/decisions.md#sqs-encryption): AWS documents
that a service sending to an encrypted queue (EventBridge here, both to the buffer queue and, on
delivery failure, to the dead-letter queue) needs a customer managed key whose policy grants
``events.amazonaws.com`` ``kms:GenerateDataKey`` and ``kms:Decrypt``. Whether EventBridge can send
to an SSE-SQS queue is not confirmed anywhere we looked. The customer managed key works under both
readings; SSE-SQS works under one. The key grants EventBridge the two calls without a condition:
the queue policies are the gate (only this rule may send), and a condition key EventBridge might
not pass to KMS would make delivery fail silently.

Sizes (docs/decisions.md#sqs-event-source): the visibility timeout is six function timeouts plus
the batching window; failed items come back after it, and after ``MAX_RECEIVE_COUNT`` receives SQS
moves them to the dead-letter queue, whence ``gdtrustar redrive`` brings them back.
"""

from __future__ import annotations

from typing import Any

TIMEOUT_SECONDS = 120  # the function's timeout
BATCH_SIZE = 10
BATCH_WINDOW_SECONDS = 5  # short: a lone finding waits at most this long for company
MAX_CONCURRENCY = 2  # ScalingConfig.MaximumConcurrency; each copy paces at MaxRate / this
VISIBILITY_TIMEOUT_SECONDS = 6 * TIMEOUT_SECONDS + BATCH_WINDOW_SECONDS
# A 429 or a missed deadline also counts as a receive: 10 receives ≈ 2 h of Station trouble
# (10 × the visibility timeout) before a message reaches the dead-letter queue.
MAX_RECEIVE_COUNT = 10
RETENTION_SECONDS = 14 * 24 * 3600  # SQS maximum: a big backfill must not expire in the queue
OLDEST_MESSAGE_ALARM_SECONDS = 3600  # also fires during a large `backfill --via-queue`, by design
ALARM_PERIOD_SECONDS = 300


def arn(resource: str) -> dict[str, list[str]]:
    """``Fn::GetAtt`` of a resource's ARN."""
    return {"Fn::GetAtt": [resource, "Arn"]}


def rule_arn(rule_name: str) -> dict[str, str]:
    """The rule's ARN built from its name, not ``GetAtt``.

    The queue policies must exist *before* the rule switches its target to the queue, so they
    cannot depend on the rule resource.
    """
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:rule/{rule_name}"}


def _key() -> dict[str, Any]:
    statements = [
        {"Sid": "AccountAdministersKeyThroughIam", "Effect": "Allow",
         "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "EventBridgeSendsToEncryptedQueues", "Effect": "Allow",
         "Principal": {"Service": "events.amazonaws.com"},
         "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*"},
    ]
    return {"Type": "AWS::KMS::Key", "Properties": {
        "Description": "gdtrustar: encrypts the buffer and dead-letter queues",
        "EnableKeyRotation": True,
        "KeyPolicy": {"Version": "2012-10-17", "Statement": statements}}}


def _queue_policy(queue: str, rule_name: str) -> dict[str, Any]:
    statement = {"Sid": "OnlyThisRuleSends", "Effect": "Allow",
                 "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
                 "Resource": arn(queue), "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn(rule_name)}}}
    return {"Type": "AWS::SQS::QueuePolicy", "Properties": {
        "Queues": [{"Ref": queue}], "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}}}


def _alarm_actions() -> dict[str, Any]:
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    return {"AlarmActions": topic, "OKActions": topic}


def _alarm(description: str, queue: str, metric: str, threshold: int) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmDescription": description, "Namespace": "AWS/SQS", "MetricName": metric,
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
        "Statistic": "Maximum", "Period": ALARM_PERIOD_SECONDS, "EvaluationPeriods": 1,
        "Threshold": threshold, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching", **_alarm_actions()}}


def queue_resources(function_name: str, rule_name: str) -> dict[str, Any]:
    """Key, queues, policies, event source mapping and alarms, keyed by logical id."""
    encrypted = {"KmsMasterKeyId": {"Ref": "QueueKey"}, "MessageRetentionPeriod": RETENTION_SECONDS}
    return {
        "QueueKey": _key(),
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": f"{function_name}-dlq", **encrypted}},
        "DeadLetterQueuePolicy": _queue_policy("DeadLetterQueue", rule_name),
        "BufferQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": f"{function_name}-buffer", "VisibilityTimeout": VISIBILITY_TIMEOUT_SECONDS, **encrypted,
            "RedrivePolicy": {"deadLetterTargetArn": arn("DeadLetterQueue"), "maxReceiveCount": MAX_RECEIVE_COUNT}}},
        "BufferQueuePolicy": _queue_policy("BufferQueue", rule_name),
        "QueueEventSource": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
            "EventSourceArn": arn("BufferQueue"), "FunctionName": {"Ref": "Function"}, "Enabled": True,
            "BatchSize": BATCH_SIZE, "MaximumBatchingWindowInSeconds": BATCH_WINDOW_SECONDS,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": MAX_CONCURRENCY}}},
        "DeadLetterAlarm": _alarm(
            f"{function_name}: findings in the dead-letter queue; fix the cause, then `gdtrustar redrive`",
            "DeadLetterQueue", "ApproximateNumberOfMessagesVisible", 0),
        "BufferAgeAlarm": _alarm(
            f"{function_name}: the oldest buffered finding waits over {OLDEST_MESSAGE_ALARM_SECONDS} s "
            "(Station slow or failing, or a large backfill --via-queue draining)",
            "BufferQueue", "ApproximateAgeOfOldestMessage", OLDEST_MESSAGE_ALARM_SECONDS),
    }


def role_statements() -> list[dict[str, Any]]:
    """What the event source mapping needs, on this stack's queue and key only.

    Receive, delete and get-attributes are what Lambda documents for an SQS event source;
    change-visibility is granted too (its own queue only) because whether the poller calls it is
    not documented either way, and a poller denied it would stall the queue.
    """
    return [
        {"Sid": "OwnBufferQueue", "Effect": "Allow",
         "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                    "sqs:ChangeMessageVisibility"],
         "Resource": arn("BufferQueue")},
        {"Sid": "OwnQueueKey", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": arn("QueueKey")},
    ]
