"""A gdtrustar stack in moto without building the Lambda zip: for redrive and --via-queue tests.

The ``moto_url`` fixture (moto in server mode, one per test module) is in ``tests/conftest.py``.

The stack is the real template (``build_template``) created through moto's CloudFormation, with a
placeholder zip. Its event source mapping is then disabled: moto would otherwise try to run the
function in Docker for every message that reaches the buffer queue. The tests stand in for the
function themselves (``tests/sims/lambda_sqs.py``) where they need one.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import boto3

from gdtrustar.deploy.template import StackSpec, build_template, template_body

REGION = "us-east-1"


def client(moto_url: str, name: str, region: str = REGION):
    return boto3.client(name, endpoint_url=moto_url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def queue_messages(moto_url: str, name: str, region: str = REGION) -> list:
    """Every message in the queue ``name``, which stays there (visible again after the read)."""
    sqs = client(moto_url, "sqs", region)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    out: list = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  VisibilityTimeout=300).get("Messages", [])
        if not got:
            break
        out += got
    for start in range(0, len(out), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(out[start:start + 10])])
    return out


def create_stack(moto_url: str, name: str, region: str = REGION, template: str = "", **parameters: str) -> dict:
    """Create the stack (default: this release's template) and return its outputs."""
    s3 = client(moto_url, "s3", region)
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, **({} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("gdtrustar/lambda_handler.py", "def handler(event, context): pass\n")
    s3.put_object(Bucket=bucket, Key="code.zip", Body=code.getvalue())
    secret = client(moto_url, "secretsmanager", region).create_secret(
        Name=f"gdtrustar/{name}-{uuid.uuid4().hex[:6]}", SecretString="{}")["ARN"]
    values = {"CodeS3Bucket": bucket, "CodeS3Key": "code.zip", "EnclaveIds": "enc-a",
              "ApiEndpoint": "https://station.example/api/1.3", "AuthEndpoint": "https://station.example/oauth/token",
              "StationUrl": "https://station.trustar.co", "MaxRate": "60", "SecretArn": secret, **parameters}
    body = template or template_body(build_template(StackSpec(function_name=name)))
    names = set(json.loads(body)["Parameters"])
    cfn = client(moto_url, "cloudformation", region)
    cfn.create_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items() if k in names])
    lam = client(moto_url, "lambda", region)
    for mapping in lam.list_event_source_mappings(FunctionName=name).get("EventSourceMappings", []):
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
