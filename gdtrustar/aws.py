"""The AWS side shared by the commands that read from AWS (``backfill``, ``send s3://...``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from gdtrustar.errors import ConfigError

if TYPE_CHECKING:  # type information only (boto3-stubs): boto3 itself is imported when a session is made
    from boto3 import Session
    from botocore.config import _RetryDict
    from botocore.session import Session as BotocoreSession

# botocore's own retries (standard mode: throttling, 5xx, dropped connections) with enough attempts
# to ride out a burst; errors that retrying cannot fix surface at once.
RETRY_CONFIG: _RetryDict = {"mode": "standard", "max_attempts": 12}


def retry_config() -> _RetryDict:
    """``RETRY_CONFIG``, unless the user set ``AWS_MAX_ATTEMPTS`` (the standard variable): then theirs."""
    if os.environ.get("AWS_MAX_ATTEMPTS"):
        return {"mode": "standard"}
    return RETRY_CONFIG.copy()


def build_session(profile: Optional[str], region: Optional[str] = None) -> Session:
    """A boto3 session; ``AWS_ENDPOINT_URL*`` variables are honoured by boto3 itself."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(botocore_session=_botocore_session(), profile_name=profile, region_name=region)
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise ConfigError(str(exc)) from exc


_loaders: dict[Optional[str], object] = {}  # AWS_DATA_PATH -> botocore's data loader


def _botocore_session() -> BotocoreSession:
    """A new botocore session that shares this process's data loader with the sessions before it.

    A fresh session parses botocore's endpoint and service JSON again (about 0.1 s each time); the
    loader caches what it parsed, and the files do not change while the process runs. Credentials,
    profile and configuration stay per session.
    """
    import botocore.session

    session = botocore.session.get_session()
    key = os.environ.get("AWS_DATA_PATH")
    if key in _loaders:
        session.register_component("data_loader", _loaders[key])
    else:
        _loaders[key] = session.get_component("data_loader")
    return session

