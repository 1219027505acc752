"""The AWS side shared by the commands that read from AWS (``backfill``, ``send s3://...``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from gdtrustar.errors import ConfigError

if TYPE_CHECKING:  # type information only (boto3-stubs): boto3 itself is imported when a session is made
    from boto3 import Session
    from botocore.config import _RetryDict

# botocore's own retries (standard mode: throttling, 5xx, dropped connections) with enough attempts
# to ride out a burst; errors that retrying cannot fix surface at once.
RETRY_CONFIG: _RetryDict = {"mode": "standard", "max_attempts": 12}


def retry_config() -> _RetryDict:
    """``RETRY_CONFIG``, unless the user set ``AWS_MAX_ATTEMPTS`` (the standard variable): then theirs."""
    if os.environ.get("AWS_MAX_ATTEMPTS"):
        return {"mode": "standard"}
    return RETRY_CONFIG.copy()


def build_session(profile: Optional[str]) -> Session:
    """A boto3 session; ``AWS_ENDPOINT_URL*`` variables are honoured by boto3 itself."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile) if profile else boto3.Session()
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise ConfigError(str(exc)) from exc

