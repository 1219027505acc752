"""The AWS side shared by the commands that read from AWS (``backfill``, ``send s3://...``)."""

from __future__ import annotations

import os
from typing import Any, Optional

from gdtrustar.errors import ConfigError

# botocore's own retries (standard mode: throttling, 5xx, dropped connections) with enough attempts
# to ride out a burst; errors that retrying cannot fix surface at once.
RETRY_CONFIG = {"mode": "standard", "max_attempts": 12}


def retry_config() -> dict:
    """``RETRY_CONFIG``, unless the user set ``AWS_MAX_ATTEMPTS`` (the standard variable): then theirs."""
    if os.environ.get("AWS_MAX_ATTEMPTS"):
        return {"mode": "standard"}
    return dict(RETRY_CONFIG)


def build_session(profile: Optional[str]) -> Any:
    """A boto3 session; ``AWS_ENDPOINT_URL*`` variables are honoured by boto3 itself."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile) if profile else boto3.Session()
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise ConfigError(str(exc)) from exc

