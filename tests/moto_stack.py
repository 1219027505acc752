"""A gdtrustar stack in moto without building the Lambda zip: for redrive and --via-queue tests.

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
from typing import Iterator

import boto3
import pytest

from gdtrustar.deploy.template import StackSpec, build_template, template_body

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def client(moto_url: str, name: str, region: str = REGION):
    return boto3.client(name, endpoint_url=moto_url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


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
