"""The queue path's template as data: dependency order (the rule switches last), the migration
from a stack made before the queue, sizes, and the key fingerprint.

``tests/fixtures/stack-before-queue.json`` is the template the previous release deployed
(``build_template(StackSpec(function_name="gdt-old", min_severity=4.0))`` at commit 6ed0902).
CloudFormation orders an update by the dependency graph: a resource is created or updated only
after everything it references (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``) or ``DependsOn`` is done,
and removed resources are deleted in the cleanup phase after all of that. So "the rule switches
its target last, and the old path stays until then" is a property of the graph, checked here.
moto's CloudFormation creates resources in that order too but neither reports it nor deletes
removed resources, so ``tests/test_deploy.py`` checks the migrated stack's resources separately.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gdtrustar.budget import key_fingerprint
from gdtrustar.deploy.queues import BATCH_WINDOW_SECONDS, MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_SECONDS
from gdtrustar.deploy.template import StackSpec, build_template

FIXTURE = Path(__file__).parent / "fixtures" / "stack-before-queue.json"
QUEUE_PATH = {"QueueKey", "BufferQueue", "BufferQueuePolicy", "DeadLetterQueue", "DeadLetterQueuePolicy",
              "QueueEventSource", "Function", "ExecutionRole"}


def _references(node, names: set) -> set:
    """Logical ids a template fragment refers to."""
    found: set = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and value in names:
                found.add(value)
            elif key == "Fn::GetAtt" and value[0] in names:
                found.add(value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {m for m in re.findall(r"\$\{([A-Za-z0-9]+)", text) if m in names}
            found |= _references(value, names)
    elif isinstance(node, list):
        for value in node:
            found |= _references(value, names)
    return found


def _graph(tpl: dict) -> dict:
    """logical id → ids it directly waits for."""
    names = set(tpl["Resources"])
    graph = {}
    for name, resource in tpl["Resources"].items():
        depends = resource.get("DependsOn", [])
        graph[name] = _references(resource.get("Properties", {}), names) | set(
            [depends] if isinstance(depends, str) else depends)
    return graph


def _ancestors(graph: dict, name: str) -> set:
    seen, todo = set(), [name]
    while todo:
        for parent in graph[todo.pop()]:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_the_rule_switches_to_the_queue_only_after_the_whole_queue_path_exists():
    graph = _graph(build_template(StackSpec(function_name="gdt-old", min_severity=4.0)))
    assert QUEUE_PATH <= _ancestors(graph, "FindingsRule")
    # nothing waits for the rule: it is the last step of the delivery path (alarms are side branches)
    assert not [name for name, parents in graph.items() if "FindingsRule" in parents]
    # the queue policies name the rule by its ARN, not by a reference (that would be a cycle)
    assert "FindingsRule" not in _ancestors(graph, "BufferQueuePolicy") | _ancestors(graph, "DeadLetterQueuePolicy")


def test_migration_from_the_old_stack_removes_only_the_direct_path_and_keeps_the_target_id():
    old = json.loads(FIXTURE.read_text())
    new = build_template(StackSpec(function_name="gdt-old", min_severity=4.0))
    removed = set(old["Resources"]) - set(new["Resources"])
    assert removed == {"AsyncInvokeConfig", "InvokePermission"}
    assert not _references(new, removed)  # deleted in cleanup, after the rule has switched
    # the dead-letter queue keeps its logical id and name: updated in place, its messages stay
    for key in ("DeadLetterQueue", "FindingsRule", "Function", "ExecutionRole", "LogGroup"):
        assert old["Resources"][key]["Type"] == new["Resources"][key]["Type"]
    assert (old["Resources"]["DeadLetterQueue"]["Properties"]["QueueName"]
            == new["Resources"]["DeadLetterQueue"]["Properties"]["QueueName"])
    (old_target,) = old["Resources"]["FindingsRule"]["Properties"]["Targets"]
    (new_target,) = new["Resources"]["FindingsRule"]["Properties"]["Targets"]
    assert old_target["Id"] == new_target["Id"]  # PutTargets replaces it in place: no gap, no double
    assert old_target["Arn"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert new_target["Arn"] == {"Fn::GetAtt": ["BufferQueue", "Arn"]}
    # the old dead-letter queue's Lambda failure records are understood after a redrive
    assert old["Resources"]["AsyncInvokeConfig"]["Properties"]["DestinationConfig"]["OnFailure"]


def test_queue_sizes_follow_the_lambda_guidance():
    tpl = build_template(StackSpec())
    buffer = tpl["Resources"]["BufferQueue"]["Properties"]
    timeout = tpl["Resources"]["Function"]["Properties"]["Timeout"]
    assert buffer["VisibilityTimeout"] == VISIBILITY_TIMEOUT_SECONDS >= 6 * timeout + BATCH_WINDOW_SECONDS
    assert buffer["RedrivePolicy"]["maxReceiveCount"] == MAX_RECEIVE_COUNT >= 5
    mapping = tpl["Resources"]["QueueEventSource"]["Properties"]
    assert 0 < mapping["MaximumBatchingWindowInSeconds"] == BATCH_WINDOW_SECONDS <= 10


def test_both_queues_use_the_stacks_key_which_eventbridge_may_use():
    tpl = build_template(StackSpec())
    for queue in ("BufferQueue", "DeadLetterQueue"):
        props = tpl["Resources"][queue]["Properties"]
        assert props["KmsMasterKeyId"] == {"Ref": "QueueKey"} and "SqsManagedSseEnabled" not in props
    statements = tpl["Resources"]["QueueKey"]["Properties"]["KeyPolicy"]["Statement"]
    (events,) = [s for s in statements if s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]


def test_key_fingerprint_is_stable_per_key_and_station_and_reveals_neither():
    one = key_fingerprint("https://api.trustar.co/api/1.3", "AbCdEf0123456789")
    assert one == key_fingerprint("https://api.trustar.co/api/1.3/", "AbCdEf0123456789")
    assert len(one) == 16 and "AbCdEf" not in one
    assert one != key_fingerprint("https://api.trustar.co/api/1.3", "AbCdEf0123456780")
    assert one != key_fingerprint("https://station.example/api/1.3", "AbCdEf0123456789")
    assert key_fingerprint("https://api.trustar.co/api/1.3", None) == ""
