"""A bucket laid out exactly as GuardDuty's S3 export writes it, in moto (tests and benchmarks).

``[prefix/]AWSLogs/[<org>/]<account>/GuardDuty/<region>/<YYYY>/<MM>/<DD>/<uuid>.jsonl.gz``, each
object gzip'd JSON Lines of bare camelCase findings, SSE-KMS with a key made in moto's KMS
(docs/decisions.md#s3-export-layout).
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date
from typing import Any, Iterable, Optional

import boto3

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def client(url: str, service: str = "s3") -> Any:
    return boto3.client(service, endpoint_url=url, **CREDENTIALS)


class ExportBucket:
    """One export destination: ``put`` writes an object where GuardDuty would."""

    def __init__(self, moto_url: str, bucket: str, prefix: str = "", org: Optional[str] = None) -> None:
        self.s3 = client(moto_url)
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.org = org
        self.s3.create_bucket(Bucket=bucket)
        self.kms_key = client(moto_url, "kms").create_key(Description="GuardDuty export")["KeyMetadata"]["Arn"]
        self.keys: list[str] = []

    def folder(self, account: str, region: str, day: date) -> str:
        org = f"{self.org}/" if self.org else ""
        return f"{self.prefix}AWSLogs/{org}{account}/GuardDuty/{region}/{day:%Y/%m/%d}/"

    def put(self, findings: Iterable[Any], account: str = "123456789012", region: str = "us-east-1",
            day: date = date(2024, 1, 1), name: Optional[str] = None) -> str:
        """Write one object of ``findings`` (bare camelCase dicts, or export lines as text); returns its key."""
        key = self.folder(account, region, day) + (name or f"{uuid.uuid4()}.jsonl.gz")
        lines = (f if isinstance(f, str) else json.dumps(f, separators=(",", ":")) for f in findings)
        body = "".join(line + "\n" for line in lines).encode()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(body, mtime=0),
                           ServerSideEncryption="aws:kms", SSEKMSKeyId=self.kms_key)
        self.keys.append(key)
        return key

    def url(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{path}"
