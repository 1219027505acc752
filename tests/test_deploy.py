"""deploy-lambda: the zip, the template, and build → plan → apply against moto in server mode.

moto runs as a real HTTP server on 127.0.0.1 (``ThreadedMotoServer``, port 0) and the CLI reaches
it through ``AWS_ENDPOINT_URL`` with dummy credentials. Two resource types of the stack are not
implemented by moto's CloudFormation (it skips them with a warning): ``AWS::SQS::QueuePolicy`` and
``AWS::CloudWatch::Alarm``. For those the tests read the template CloudFormation stored for the
stack and run cfn-lint on it. On a stack update moto neither deletes removed resources nor
refreshes the outputs; the migration test reads resources, and ``tests/test_stack_queue.py``
checks the update order on the template's dependency graph.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import boto3
import pytest
from botocore.exceptions import ClientError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gdtrustar.deploy.package import (
    REQUIREMENTS,
    RUNTIME_PROVIDED,
    BuildTarget,
    DependencyBuilder,
    LambdaPackage,
    build_package,
    deterministic_zip,
)
from gdtrustar.deploy.template import StackSpec, build_template, template_body
from tests.conftest import ROOT, Cli, Result

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # moto: "not supported by CloudFormation"

REGION, ACCOUNT = "us-east-1", "123456789012"
CLI_ONLY = {"click", "rich"}  # the handler runs without them (test_unpacked_zip_runs_the_handler_...)


# ---------------------------------------------------------------- helpers ("conftest_deploy")

def run_deploy(tmp_path: Path, *args: str, env: Optional[dict] = None, in_child: bool = False) -> Result:
    """``gdtrustar deploy-lambda *args`` from the tree: in-process, or the console script in a child process."""
    cli = Cli(tmp_path)
    return (cli.subprocess if in_child else cli)("deploy-lambda", *args, env=env, timeout=300)


@pytest.fixture(scope="module")
def aws(moto_url):
    """``aws("s3")``: a client of moto's server, one per service (making one costs ~50 ms)."""
    clients: dict = {}

    def client(name: str):
        if name not in clients:
            clients[name] = boto3.client(name, endpoint_url=moto_url, region_name=REGION,
                                         aws_access_key_id="testing", aws_secret_access_key="testing")
        return clients[name]
    return client


@pytest.fixture
def aws_env(moto_url, sim_like_settings):
    return {"AWS_ENDPOINT_URL": moto_url, **sim_like_settings}


@pytest.fixture
def sim_like_settings():
    return {"TRUSTAR_API_KEY": "test-key", "TRUSTAR_API_SECRET": "test-secret",
            "TRUSTAR_ENCLAVE_IDS": "enc-a,enc-b", "TRUSTAR_API_ENDPOINT": "https://station.example/api/1.3",
            "TRUSTAR_AUTH_ENDPOINT": "https://station.example/oauth/token"}


@pytest.fixture(scope="session")
def package() -> LambdaPackage:
    """The default target's zip, built once per session (a build compresses ~6 MB)."""
    return build_package(BuildTarget("python3.13", "x86_64"))


def _names(pkg: LambdaPackage) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(pkg.data)).namelist()


def _stack(aws, name: str) -> Optional[dict]:
    try:
        stacks = aws("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError:
        return None
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def _missing(call, *args, **kwargs) -> bool:
    try:
        call(*args, **kwargs)
    except ClientError:
        return True
    return False


# ---------------------------------------------------------------- the zip

def test_zip_is_byte_reproducible_sorted_and_stamped(package):
    again = build_package(BuildTarget("python3.13", "x86_64"))
    assert again.data == package.data and again.sha256 == hashlib.sha256(package.data).hexdigest()
    infos = zipfile.ZipFile(io.BytesIO(package.data)).infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}


def _pins() -> dict[str, Requirement]:
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in REQUIREMENTS}


def test_lambda_pins_are_exact_and_within_the_declared_dependency_ranges():
    """lambda-requirements.txt is derived from pyproject.toml's dependencies, not a second opinion."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pins = _pins()
    assert all(len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==" for req in pins.values())
    declared = [Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]]
    for req in declared:
        name = canonicalize_name(req.name)
        if name in CLI_ONLY or name in RUNTIME_PROVIDED:
            assert name not in pins, f"{name} is not shipped in the Lambda zip"
            continue
        assert name in pins, f"the Lambda needs {name}: pin it in lambda-requirements.txt"
        version = next(iter(pins[name].specifier)).version
        assert req.specifier.contains(version, prereleases=True), f"{pins[name]} is outside {req}"


def test_pip_resolves_the_lambda_pins_to_exactly_themselves(package):
    """Installing the pins for the Lambda (with dependencies) added nothing and changed no version."""
    site = DependencyBuilder().site_dir(BuildTarget("python3.13", "x86_64"))  # built for `package`
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version
                 for dist in importlib.metadata.distributions(path=[str(site)])}
    assert installed == {name: next(iter(req.specifier)).version for name, req in _pins().items()}


def test_deterministic_zip_ignores_input_order():
    entries = [("b.py", b"b"), ("a/x.py", b"x"), ("a.py", b"a")]
    assert deterministic_zip(entries) == deterministic_zip(list(reversed(entries)))


def test_zip_holds_gdtrustar_and_sdk_for_the_target_platform_without_boto(package):
    names = _names(package)
    tops = {n.split("/")[0] for n in names}
    assert {"gdtrustar", "trustar", "requests", "urllib3", "idna", "certifi", "charset_normalizer",
            "dateutil", "yaml", "json_log_formatter"} <= tops
    assert not tops & {"boto3", "botocore", "s3transfer", "jmespath", "bin", "tests"}
    assert "gdtrustar/lambda_handler.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", "/RECORD", "direct_url.json"))]
    # binary wheels for the Lambda (CPython 3.13, x86_64 Linux), not for this machine's Python
    assert "yaml/_yaml.cpython-313-x86_64-linux-gnu.so" in names
    assert package.size < 5_000_000


def test_arm64_and_python312_builds_pick_their_own_wheels():
    arm = _names(build_package(BuildTarget("python3.12", "arm64")))
    assert "yaml/_yaml.cpython-312-aarch64-linux-gnu.so" in arm
    assert not [n for n in arm if "x86_64" in n or "cpython-313" in n]


# ---------------------------------------------------------------- the template

def _resources(template: dict, kind: str) -> list[dict]:
    return [r for r in template["Resources"].values() if r["Type"] == kind]


RULE_ARN = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/fn-findings"}


def test_template_wires_the_queue_path_with_least_privilege():
    tpl = build_template(StackSpec(function_name="fn", min_severity=7.0, architecture="arm64"))
    (fn,) = _resources(tpl, "AWS::Lambda::Function")
    props = fn["Properties"]
    assert (props["Handler"], props["Timeout"], props["Architectures"]) == (
        "gdtrustar.lambda_handler.handler", 120, ["arm64"])
    assert set(props["Environment"]["Variables"]) == {
        "TRUSTAR_ENCLAVE_IDS", "TRUSTAR_API_ENDPOINT", "TRUSTAR_AUTH_ENDPOINT", "TRUSTAR_STATION_URL",
        "TRUSTAR_MAX_RATE", "TRUSTAR_SECRET_ARN", "GDTRUSTAR_MAX_CONCURRENCY"}
    assert props["Environment"]["Variables"]["GDTRUSTAR_MAX_CONCURRENCY"] == "2"
    (role,) = _resources(tpl, "AWS::IAM::Role")
    statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["logs:CreateLogStream", "logs:PutLogEvents"],
         {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                     ":log-group:/aws/lambda/fn:*"}),
        ("secretsmanager:GetSecretValue", {"Ref": "SecretArn"}),
        (["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
         {"Fn::GetAtt": ["BufferQueue", "Arn"]}),
        ("kms:Decrypt", {"Fn::GetAtt": ["QueueKey", "Arn"]}),
    ]
    (rule,) = _resources(tpl, "AWS::Events::Rule")
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"],
        "detail": {"severity": [{"numeric": [">=", 7]}]}}
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["BufferQueue", "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    (mapping,) = _resources(tpl, "AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"] == {
        "EventSourceArn": {"Fn::GetAtt": ["BufferQueue", "Arn"]}, "FunctionName": {"Ref": "Function"},
        "Enabled": True, "BatchSize": 10, "MaximumBatchingWindowInSeconds": 5,
        "FunctionResponseTypes": ["ReportBatchItemFailures"], "ScalingConfig": {"MaximumConcurrency": 2}}
    # the direct asynchronous path is gone: nothing may invoke the function, no on-failure config
    assert not _resources(tpl, "AWS::Lambda::Permission")
    assert not _resources(tpl, "AWS::Lambda::EventInvokeConfig")
    _assert_queue_policies(tpl)


def _assert_queue_policies(tpl: dict, rule_arn: Optional[dict] = None) -> None:
    """One policy per queue, each admitting only EventBridge on behalf of this rule."""
    policies = {p["Properties"]["Queues"][0]["Ref"]: p for p in _resources(tpl, "AWS::SQS::QueuePolicy")}
    assert set(policies) == {"BufferQueue", "DeadLetterQueue"}
    for queue, policy in policies.items():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert (statement["Action"], statement["Resource"]) == ("sqs:SendMessage", {"Fn::GetAtt": [queue, "Arn"]})
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn or RULE_ARN}}


def test_no_severity_filter_without_min_severity():
    rule = _resources(build_template(StackSpec()), "AWS::Events::Rule")[0]
    assert "detail" not in rule["Properties"]["EventPattern"]


def _cfn_lint(*paths: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("cfn-lint")
    command = [exe] if exe else [sys.executable, "-m", "cfnlint"]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_templates_pass_cfn_lint(tmp_path):
    paths = []
    for i, spec in enumerate([StackSpec(), StackSpec(function_name="x", runtime="python3.12",
                                                      architecture="arm64", min_severity=4.5)]):
        paths.append(tmp_path / f"t{i}.json")
        paths[-1].write_text(template_body(build_template(spec)))
    lint = _cfn_lint(*paths)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_template_out_writes_template_and_zip_and_deploys_nothing(tmp_path, package, sim_like_settings):
    out = tmp_path / "out" / "gdtrustar.json"
    out.parent.mkdir()
    # no AWS endpoint at all: a call to AWS would fail (no credentials file, metadata disabled)
    res = run_deploy(tmp_path, "--template-out", str(out), "--min-severity", "medium",
                     "--secret-arn", "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-AbCdEf",
                     env={**sim_like_settings, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, in_child=True)
    assert res.code == 0, res.stderr
    tpl = json.loads(out.read_text())
    assert tpl["Parameters"]["CodeS3Key"]["Default"] == package.filename
    assert tpl["Parameters"]["EnclaveIds"]["Default"] == "enc-a,enc-b"
    assert "Default" not in tpl["Parameters"]["CodeS3Bucket"]
    # the zip built in another process is byte-identical: reproducible across runs
    assert (out.parent / package.filename).read_bytes() == package.data
    assert "test-secret" not in out.read_text() + res.stdout + res.stderr
    lint = _cfn_lint(out)
    assert lint.returncode == 0, lint.stdout


# ---------------------------------------------------------------- deploy against moto

TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:security-ops"


@pytest.fixture(scope="module")
def deployed(moto_url, aws, tmp_path_factory):
    """One deployment (function ``gdt-main``, severity >= high) that the read-back tests inspect."""
    tmp = tmp_path_factory.mktemp("deploy-main")
    env = {"AWS_ENDPOINT_URL": moto_url, "TRUSTAR_API_KEY": "test-key", "TRUSTAR_API_SECRET": "test-secret",
           "TRUSTAR_API_ENDPOINT": "https://station.example/api/1.3",
           "TRUSTAR_AUTH_ENDPOINT": "https://station.example/oauth/token"}
    res = run_deploy(tmp, "--function-name", "gdt-main", "--enclave-id", "enc-a", "--enclave-id", "enc-b",
                     "--min-severity", "high", "--alarm-topic", TOPIC, env=env)
    assert res.code == 0, res.stderr
    return res


def test_deploy_prints_outputs_and_never_the_secret(deployed):
    outputs = json.loads(deployed.stdout)
    assert set(outputs) == {"FunctionName", "FunctionArn", "RuleArn", "BufferQueueUrl", "BufferQueueArn",
                            "DeadLetterQueueUrl", "DeadLetterQueueArn", "QueueKeyArn", "EventSourceMappingId",
                            "KeyFingerprint", "ExecutionRoleArn", "LogGroupName"}
    assert "test-secret" not in deployed.stdout + deployed.stderr
    assert "test-key" not in deployed.stdout  # a fingerprint of the key, never the key
    assert "create stack gdt-main" in deployed.stderr


def test_function_runs_the_uploaded_zip_and_keeps_the_secret_out_of_its_environment(deployed, aws, package):
    config = aws("lambda").get_function(FunctionName="gdt-main")["Configuration"]
    assert (config["Handler"], config["Runtime"], config["Timeout"]) == (
        "gdtrustar.lambda_handler.handler", "python3.13", 120)
    assert config["Role"] == json.loads(deployed.stdout)["ExecutionRoleArn"]
    # the function's code is the reproducible zip, byte for byte
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(package.data).digest()).decode()
    env = config["Environment"]["Variables"]
    secret_arn = aws("secretsmanager").describe_secret(SecretId="gdtrustar/gdt-main")["ARN"]
    assert env == {"TRUSTAR_SECRET_ARN": secret_arn, "TRUSTAR_ENCLAVE_IDS": "enc-a,enc-b",
                   "TRUSTAR_API_ENDPOINT": "https://station.example/api/1.3",
                   "TRUSTAR_AUTH_ENDPOINT": "https://station.example/oauth/token",
                   "TRUSTAR_STATION_URL": "https://station.trustar.co", "TRUSTAR_MAX_RATE": "60",
                   "GDTRUSTAR_MAX_CONCURRENCY": "2"}
    stored = json.loads(aws("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"])
    assert stored == {"api_key": "test-key", "api_secret": "test-secret"}


def test_rule_matches_guardduty_at_severity_and_targets_the_buffer_queue_with_dlq(deployed, aws):
    outputs = json.loads(deployed.stdout)
    rule = aws("events").describe_rule(Name="gdt-main-findings")
    assert rule["Arn"] == outputs["RuleArn"] and rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"],
        "detail": {"severity": [{"numeric": [">=", 7]}]}}
    (target,) = aws("events").list_targets_by_rule(Rule="gdt-main-findings")["Targets"]
    assert target["Arn"] == outputs["BufferQueueArn"]
    assert target["DeadLetterConfig"] == {"Arn": outputs["DeadLetterQueueArn"]}


def test_the_function_is_fed_only_by_its_event_source_mapping(deployed, aws):
    outputs = json.loads(deployed.stdout)
    with pytest.raises(ClientError, match="ResourceNotFound"):  # no resource policy: nobody invokes it
        aws("lambda").get_policy(FunctionName="gdt-main")
    (mapping,) = aws("lambda").list_event_source_mappings(FunctionName="gdt-main")["EventSourceMappings"]
    assert mapping["UUID"] == outputs["EventSourceMappingId"]
    assert mapping["EventSourceArn"] == outputs["BufferQueueArn"]
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"], mapping["ScalingConfig"],
            mapping["FunctionResponseTypes"]) == (10, 5, {"MaximumConcurrency": 2}, ["ReportBatchItemFailures"])


def test_role_may_write_its_logs_read_its_secret_and_read_its_queue_only(deployed, aws):
    iam = aws("iam")
    outputs = json.loads(deployed.stdout)
    role_name = outputs["ExecutionRoleArn"].split("/")[-1]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    if isinstance(document, str):  # moto quirk: a CFN-made inline policy comes back as a Python repr
        document = ast.literal_eval(document)
    secret_arn = aws("secretsmanager").describe_secret(SecretId="gdtrustar/gdt-main")["ARN"]
    granted = {(json.dumps(s["Action"]), json.dumps(s["Resource"])) for s in document["Statement"]}
    assert granted == {
        ('["logs:CreateLogStream", "logs:PutLogEvents"]',
         f'"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/gdt-main:*"'),
        ('"secretsmanager:GetSecretValue"', json.dumps(secret_arn)),
        ('["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]',
         json.dumps(outputs["BufferQueueArn"])),
        ('"kms:Decrypt"', json.dumps(outputs["QueueKeyArn"])),
    }
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_log_group_queues_and_bucket_are_retained_encrypted_and_private(deployed, aws, package):
    outputs = json.loads(deployed.stdout)
    (group,) = aws("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/gdt-main")["logGroups"]
    assert group["retentionInDays"] == 90
    key_id = outputs["QueueKeyArn"].split("/")[-1]  # not DescribeKey: moto breaks on a CFN-made key's policy
    assert aws("kms").get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    queues = {}
    for name in ("gdt-main-dlq", "gdt-main-buffer"):
        url = aws("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        queues[name] = aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert queues[name]["KmsMasterKeyId"] == key_id  # the stack's key, not SSE-SQS
        assert queues[name]["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    buffer = queues["gdt-main-buffer"]
    assert int(buffer["VisibilityTimeout"]) >= 6 * 120 + 5
    assert json.loads(buffer["RedrivePolicy"]) == {"deadLetterTargetArn": outputs["DeadLetterQueueArn"],
                                                   "maxReceiveCount": 10}
    bucket = f"gdtrustar-artifacts-{ACCOUNT}-{REGION}"
    block = aws("s3").get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = aws("s3").get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    aws("s3").head_object(Bucket=bucket, Key=f"gdtrustar/{package.sha256}.zip")


def test_key_lets_eventbridge_encrypt_and_the_account_administer(deployed, aws):
    outputs = json.loads(deployed.stdout)
    policy = aws("kms").get_key_policy(KeyId=outputs["QueueKeyArn"].split("/")[-1], PolicyName="default")["Policy"]
    policy = policy if isinstance(policy, dict) else json.loads(policy)  # moto keeps a CFN-made policy as a dict
    by_principal = {json.dumps(s["Principal"], sort_keys=True): s for s in policy["Statement"]}
    events = by_principal['{"Service": "events.amazonaws.com"}']
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert f'{{"AWS": "arn:aws:iam::{ACCOUNT}:root"}}' in by_principal


def test_moto_gaps_queue_policies_and_alarms_are_in_the_deployed_template(deployed, aws):
    """moto's CloudFormation skips AWS::SQS::QueuePolicy and AWS::CloudWatch::Alarm: read the stored template."""
    cfn = aws("cloudformation")
    body = cfn.get_template(StackName="gdt-main")["TemplateBody"]
    tpl = body if isinstance(body, dict) else json.loads(body)
    rule_arn = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/gdt-main-findings"}
    _assert_queue_policies(tpl, rule_arn)
    alarms = {a["Properties"]["MetricName"]: a["Properties"] for a in _resources(tpl, "AWS::CloudWatch::Alarm")}
    assert set(alarms) == {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}
    dlq, age = alarms["ApproximateNumberOfMessagesVisible"], alarms["ApproximateAgeOfOldestMessage"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert (dlq["ComparisonOperator"], dlq["Threshold"]) == ("GreaterThanThreshold", 0)
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["BufferQueue", "QueueName"]}}]
    for alarm in (dlq, age):
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                    {"Ref": "AWS::NoValue"}]}
    # moto's CloudWatch takes the alarms as CloudFormation would create them (the API validates the shape)
    for logical, queue in (("DeadLetterAlarm", "gdt-main-dlq"), ("BufferAgeAlarm", "gdt-main-buffer")):
        props = dict(tpl["Resources"][logical]["Properties"], Dimensions=[{"Name": "QueueName", "Value": queue}],
                     AlarmActions=[TOPIC], OKActions=[TOPIC])
        aws("cloudwatch").put_metric_alarm(AlarmName=f"gdt-main-{logical}", **props)
    made = aws("cloudwatch").describe_alarms(AlarmNamePrefix="gdt-main-")["MetricAlarms"]
    assert {(a["MetricName"], a["Dimensions"][0]["Value"], tuple(a["AlarmActions"])) for a in made} == {
        ("ApproximateNumberOfMessagesVisible", "gdt-main-dlq", (TOPIC,)),
        ("ApproximateAgeOfOldestMessage", "gdt-main-buffer", (TOPIC,))}
    params = {p["ParameterKey"]: p["ParameterValue"] for p in _stack(aws, "gdt-main")["Parameters"]}
    assert params["AlarmTopicArn"] == TOPIC
    from gdtrustar.budget import key_fingerprint
    assert params["KeyFingerprint"] == key_fingerprint("https://station.example/api/1.3", "test-key")
    assert "test-key" not in json.dumps(params) + json.dumps(tpl)


def test_bad_alarm_topic_is_a_usage_error(aws, aws_env, tmp_path):
    res = run_deploy(tmp_path, "--function-name", "gdt-topic", "--alarm-topic", "not-an-arn", env=aws_env)
    assert res.code == 2 and "--alarm-topic" in res.stderr and "SNS topic ARN" in res.stderr, res.stderr
    assert _stack(aws, "gdt-topic") is None


def _change_sets(aws, name: str) -> list:
    # moto lists every stack's change sets, executed ones included; keep this stack's pending ones
    summaries = aws("cloudformation").list_change_sets(StackName=name).get("Summaries", [])
    return [s for s in summaries if s["StackName"] == name and s.get("ExecutionStatus") != "EXECUTE_COMPLETE"]


def _snapshot(aws, name: str) -> dict:
    """What a no-op redeploy must leave exactly as it was."""
    cfn = aws("cloudformation")
    stack = _stack(aws, name)
    bucket = f"gdtrustar-artifacts-{ACCOUNT}-{REGION}"
    return {
        "stack": (stack["StackId"], stack["StackStatus"], stack.get("LastUpdatedTime")),
        "events": len(cfn.describe_stack_events(StackName=name)["StackEvents"]),
        "change_sets": _change_sets(aws, name),
        "objects": sorted(o["Key"] for o in aws("s3").list_objects_v2(Bucket=bucket).get("Contents", [])),
        "secret_versions": len(aws("secretsmanager").list_secret_version_ids(
            SecretId=f"gdtrustar/{name}")["Versions"]),
        "function": aws("lambda").get_function(FunctionName=name)["Configuration"]["CodeSha256"],
    }


def test_redeploy_changes_nothing_a_changed_input_updates_in_place_and_delete_removes(aws, aws_env, tmp_path):
    name = "gdt-cycle"
    assert run_deploy(tmp_path, "--function-name", name, env=aws_env).code == 0
    before = _snapshot(aws, name)

    again = run_deploy(tmp_path, "--function-name", name, env=aws_env)
    assert again.code == 0 and "nothing to do" in again.stderr, again.stderr
    assert _snapshot(aws, name) == before

    dry = run_deploy(tmp_path, "--function-name", name, "--min-severity", "4", "--dry-run", env=aws_env)
    assert dry.code == 0 and "would update stack gdt-cycle" in dry.stderr and "FindingsRule" in dry.stderr
    assert _snapshot(aws, name) == before

    changed = run_deploy(tmp_path, "--function-name", name, "--min-severity", "4", "--runtime", "python3.12",
                         env=aws_env)
    assert changed.code == 0, changed.stderr
    assert "update stack" in changed.stderr and "upload" in changed.stderr
    after = _snapshot(aws, name)
    assert after["stack"][0] == before["stack"][0]  # same stack, updated in place
    assert after["function"] != before["function"]
    assert aws("lambda").get_function(FunctionName=name)["Configuration"]["Runtime"] == "python3.12"
    pattern = json.loads(aws("events").describe_rule(Name=f"{name}-findings")["EventPattern"])
    assert pattern["detail"] == {"severity": [{"numeric": [">=", 4]}]}
    same = run_deploy(tmp_path, "--function-name", name, "--min-severity", "4", "--runtime", "python3.12",
                      env=aws_env)
    assert same.code == 0 and "nothing to do" in same.stderr, same.stderr

    gone = run_deploy(tmp_path, "--function-name", name, "--delete", env=aws_env)
    assert gone.code == 0, gone.stderr
    assert _stack(aws, name) is None
    assert _missing(aws("lambda").get_function, FunctionName=name)
    assert _missing(aws("events").describe_rule, Name=f"{name}-findings")
    assert _missing(aws("sqs").get_queue_url, QueueName=f"{name}-dlq")
    aws("secretsmanager").describe_secret(SecretId=f"gdtrustar/{name}")  # kept without --delete-secret

    assert run_deploy(tmp_path, "--function-name", name, "--delete", "--delete-secret", env=aws_env).code == 0
    assert _missing(aws("secretsmanager").describe_secret, SecretId=f"gdtrustar/{name}")


def test_a_stack_from_before_the_queue_migrates_in_place(aws, aws_env, tmp_path):
    """The previous release's stack (rule → function, async invoke) updates in place to the queue path."""
    name = "gdt-old"  # tests/fixtures/stack-before-queue.json was built for this name, severity >= 4
    s3, cfn = aws("s3"), aws("cloudformation")
    s3.create_bucket(Bucket="old-release-artifacts")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("gdtrustar/lambda_handler.py", "def handler(event, context): pass\n")
    s3.put_object(Bucket="old-release-artifacts", Key="old.zip", Body=code.getvalue())
    secret = aws("secretsmanager").create_secret(Name="old-release", SecretString="{}")["ARN"]
    params = {"CodeS3Bucket": "old-release-artifacts", "CodeS3Key": "old.zip", "EnclaveIds": "enc-a,enc-b",
              "ApiEndpoint": "https://station.example/api/1.3", "AuthEndpoint": "https://station.example/oauth/token",
              "StationUrl": "https://station.trustar.co", "MaxRate": "60", "SecretArn": secret}
    cfn.create_stack(StackName=name, TemplateBody=(ROOT / "tests/fixtures/stack-before-queue.json").read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
                     Capabilities=["CAPABILITY_IAM"])
    before = _stack(aws, name)
    (old_target,) = aws("events").list_targets_by_rule(Rule=f"{name}-findings")["Targets"]
    assert old_target["Arn"].endswith(f":function:{name}")

    res = run_deploy(tmp_path, "--function-name", name, "--min-severity", "4", env=aws_env)
    assert res.code == 0, res.stderr
    # the change set CloudFormation computed: queue side added, rule/role/function/DLQ modified in place,
    # the direct path removed; no resource is replaced, so the dead-letter queue keeps its messages
    for change in ("Add QueueKey ", "Add BufferQueue ", "Add BufferQueuePolicy ", "Add QueueEventSource ",
                   "Modify FindingsRule ", "Modify DeadLetterQueue ", "Modify ExecutionRole ", "Modify Function ",
                   "Remove InvokePermission ", "Remove AsyncInvokeConfig "):
        assert change in res.stderr, res.stderr
    after = _stack(aws, name)
    assert (after["StackId"], after["StackStatus"]) == (before["StackId"], "UPDATE_COMPLETE")
    buffer_url = aws("sqs").get_queue_url(QueueName=f"{name}-buffer")["QueueUrl"]
    buffer_arn = aws("sqs").get_queue_attributes(QueueUrl=buffer_url, AttributeNames=["QueueArn"])["Attributes"]
    (target,) = aws("events").list_targets_by_rule(Rule=f"{name}-findings")["Targets"]
    assert (target["Id"], target["Arn"]) == (old_target["Id"], buffer_arn["QueueArn"])
    (mapping,) = aws("lambda").list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    assert mapping["EventSourceArn"] == buffer_arn["QueueArn"]
    variables = aws("lambda").get_function(FunctionName=name)["Configuration"]["Environment"]["Variables"]
    assert variables["GDTRUSTAR_MAX_CONCURRENCY"] == "2"


def test_changed_credentials_update_the_secret_only(aws, aws_env, tmp_path):
    name = "gdt-rotate"
    assert run_deploy(tmp_path, "--function-name", name, env=aws_env).code == 0
    before = _snapshot(aws, name)
    res = run_deploy(tmp_path, "--function-name", name, env={**aws_env, "TRUSTAR_API_SECRET": "rotated"})
    assert res.code == 0 and "update the value of secret" in res.stderr and "stack" not in res.stderr
    value = aws("secretsmanager").get_secret_value(SecretId=f"gdtrustar/{name}")["SecretString"]
    assert json.loads(value)["api_secret"] == "rotated"
    assert {k: v for k, v in _snapshot(aws, name).items() if k != "secret_versions"} == {
        k: v for k, v in before.items() if k != "secret_versions"}


def test_dry_run_of_a_new_deployment_creates_nothing(aws, aws_env, tmp_path):
    res = run_deploy(tmp_path, "--function-name", "gdt-dry", "--dry-run", env=aws_env)
    assert res.code == 0, res.stderr
    assert "would create stack gdt-dry" in res.stderr
    assert "would create secret gdtrustar/gdt-dry" in res.stderr
    assert "test-secret" not in res.stderr + res.stdout
    assert _stack(aws, "gdt-dry") is None
    assert _missing(aws("secretsmanager").describe_secret, SecretId="gdtrustar/gdt-dry")


def test_existing_secret_arn_is_used_and_no_secret_is_stored(aws, moto_url, tmp_path):
    arn = aws("secretsmanager").create_secret(
        Name="team/trustar", SecretString=json.dumps({"api_key": "k", "api_secret": "s"}))["ARN"]
    env = {"AWS_ENDPOINT_URL": moto_url, "TRUSTAR_ENCLAVE_IDS": "enc-a"}  # no API key or secret here
    res = run_deploy(tmp_path, "--function-name", "gdt-byo", "--secret-arn", arn, env=env)
    assert res.code == 0, res.stderr
    assert _missing(aws("secretsmanager").describe_secret, SecretId="gdtrustar/gdt-byo")
    config = aws("lambda").get_function(FunctionName="gdt-byo")["Configuration"]
    variables = config["Environment"]["Variables"]
    assert variables["TRUSTAR_SECRET_ARN"] == arn
    gone = run_deploy(tmp_path, "--function-name", "gdt-byo", "--delete", "--delete-secret", env=env)
    assert gone.code == 0, gone.stderr
    aws("secretsmanager").describe_secret(SecretId=arn)  # never deletes a secret it did not create


@pytest.mark.parametrize("missing, expected", [
    ("TRUSTAR_API_SECRET", "TRUSTAR_API_KEY and TRUSTAR_API_SECRET"),
    ("TRUSTAR_ENCLAVE_IDS", "--enclave-id"),
])
def test_missing_settings_are_one_line_config_errors(aws_env, tmp_path, missing, expected):
    env = {**aws_env, missing: ""}
    res = run_deploy(tmp_path, "--function-name", "gdt-bad", env=env)
    assert res.code == 2 and "gdtrustar: error:" in res.stderr and expected in res.stderr, res.stderr


def test_apply_deletes_an_empty_change_set_and_changes_nothing(deployed, aws):
    """A plan made against a stale reading still cannot cause a pointless update."""
    from gdtrustar.deploy.apply import Applier
    from gdtrustar.deploy.plan import UpdateStack

    cfn = aws("cloudformation")
    stack = _stack(aws, "gdt-main")
    body = cfn.get_template(StackName="gdt-main")["TemplateBody"]
    body = body if isinstance(body, str) else json.dumps(body)
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    lines: list[str] = []
    Applier(aws("s3"), aws("secretsmanager"), cfn, lines.append, waiter_delay=1).apply(
        [UpdateStack("gdt-main", body, params, ("forced",))])
    assert any("no changes" in line for line in lines)
    assert _stack(aws, "gdt-main") == stack
    assert _change_sets(aws, "gdt-main") == []


# ---------------------------------------------------------------- the zip runs the handler

def _python(version: str) -> Optional[str]:
    """An interpreter of the Lambda runtime's version: PATH first, then pyenv's versions folder."""
    candidates = [shutil.which(f"python{version}") or ""]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
    for exe in filter(None, candidates):
        if subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0:
            return exe
    return None


def _seed_event() -> dict:
    """The seed integration guide's EventBridge event, as kept in sample_events/."""
    return json.loads((ROOT / "sample_events" / "eventbridge-seed-integration-guide.json").read_text())


_HANDLER_SCRIPT = """
import json, sys, time
sys.path[:0] = [{task!r}, {runtime!r}]
started = time.perf_counter()
import gdtrustar.lambda_handler as lambda_handler
imported = time.perf_counter() - started
with open({event!r}) as f:
    result = lambda_handler.handler(json.load(f), None)
print(json.dumps({{"import_seconds": imported, "result": result,
                  "boto3": __import__("boto3").__file__, "paths": sys.path}}))
"""


def test_unpacked_zip_runs_the_handler_in_a_fresh_interpreter(tmp_path, aws, moto_url, package):
    """Only the unpacked zip and boto3 (as the Lambda runtime provides it) on sys.path; -I -S."""
    import boto3 as boto3_module
    import botocore
    import jmespath
    import s3transfer

    from tests.sims.station import StationSim

    exe = _python("3.13") or _python("3.12")
    if exe is None:
        pytest.skip("no python3.13 or python3.12 interpreter to stand in for the Lambda runtime")
    runtime_name = "python3.13" if exe.endswith("3.13") else "python3.12"
    pkg = package if runtime_name == "python3.13" else build_package(BuildTarget(runtime_name, "x86_64"))
    task, runtime = tmp_path / "task", tmp_path / "runtime"
    runtime.mkdir()
    zipfile.ZipFile(io.BytesIO(pkg.data)).extractall(task)
    for module in (boto3_module, botocore, s3transfer, jmespath):  # what the Lambda runtime ships
        (runtime / module.__name__).symlink_to(Path(module.__file__).parent)
    event = tmp_path / "event.json"
    event.write_text(json.dumps(_seed_event()))
    with StationSim() as sim:
        credentials = json.dumps({"api_key": "test-key", "api_secret": "test-secret"})
        arn = aws("secretsmanager").create_secret(Name="gdt-handler", SecretString=credentials)["ARN"]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ENDPOINT_URL": moto_url,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION,
               "TRUSTAR_API_ENDPOINT": sim.api_endpoint, "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint,
               "TRUSTAR_ENCLAVE_IDS": "enc-a", "TRUSTAR_SECRET_ARN": arn}
        script = _HANDLER_SCRIPT.format(task=str(task), runtime=str(runtime), event=str(event))
        proc = subprocess.run([exe, "-I", "-S", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.splitlines()[-1])
        assert out["result"]["action"] == "created" and out["result"]["report_id"]
        assert len(sim.reports) == 1
    assert out["boto3"].startswith(str(runtime))
    assert not [p for p in out["paths"] if "site-packages" in p]
