"""One resolver for TruSTAR settings, shared by the CLI and the Lambda.

Precedence is flag > environment (new names, then both generations of the old Lambda's names) >
trustar.conf (the SDK's own format, read with the SDK's own parser). The API secret is never
shown: ``Settings.__repr__`` redacts it and every resolved secret is registered with the log
redaction filter in :mod:`gdtrustar.logs`.

Where the credentials go is guarded, because the OAuth call carries the key and secret in HTTP
Basic: a ``trustar.conf`` is read only when the user names it (``--trustar-config`` or
``TRUSTAR_PYTHON_CONFIG_PATH``), never because one lies in the working directory; the two
endpoints come as a pair from flags/environment or from the file, so a file can never redirect
one of them while the other came from the environment; and credentials are only ever sent over
HTTPS, or to a loopback address (a local simulator or tunnel).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from gdtrustar.errors import ConfigError
from gdtrustar.logs import register_secret
from gdtrustar.text import unicode_problem

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from mypy_boto3_secretsmanager import SecretsManagerClient

DEFAULT_API_ENDPOINT = "https://api.trustar.co/api/1.3"
DEFAULT_AUTH_ENDPOINT = "https://api.trustar.co/oauth/token"
DEFAULT_STATION_URL = "https://station.trustar.co"
DEFAULT_MAX_RATE = 60.0  # Station's per-user limit, calls per minute (docs/decisions.md#rate-limit)

# setting -> environment names in order of preference (new name first, then the old Lambdas' names)
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "api_key": ("TRUSTAR_API_KEY", "API_KEY", "USER_API_KEY"),
    "api_secret": ("TRUSTAR_API_SECRET", "API_SECRET", "USER_API_SECRET"),
    "enclave_ids": ("TRUSTAR_ENCLAVE_IDS", "ENCLAVE_ID"),
    "api_endpoint": ("TRUSTAR_API_ENDPOINT", "API_ENDPOINT"),
    "auth_endpoint": ("TRUSTAR_AUTH_ENDPOINT", "AUTH_ENDPOINT"),
    "station_url": ("TRUSTAR_STATION_URL", "TRUSTAR_URL"),
    "max_rate": ("TRUSTAR_MAX_RATE",),
    "secret_arn": ("TRUSTAR_SECRET_ARN",),
}
ENDPOINTS = frozenset(("api_endpoint", "auth_endpoint"))  # where the credentials are sent
# setting -> key in trustar.conf (the SDK's names)
CONF_NAMES = {
    "api_key": "user_api_key",
    "api_secret": "user_api_secret",
    "enclave_ids": "enclave_ids",
    "api_endpoint": "api_endpoint",
    "auth_endpoint": "auth_endpoint",
    "station_url": "station_base_url",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved TruSTAR settings; safe to print."""

    api_key: Optional[str] = None
    api_secret: Optional[str] = dataclasses.field(default=None, repr=False)
    enclave_ids: tuple[str, ...] = ()
    api_endpoint: str = DEFAULT_API_ENDPOINT
    auth_endpoint: str = DEFAULT_AUTH_ENDPOINT
    station_url: str = DEFAULT_STATION_URL
    max_rate: float = DEFAULT_MAX_RATE
    secret_arn: Optional[str] = None

    def require_credentials(self) -> None:
        """Fail with the names a user must set, or an endpoint the secret must not go to, before any call."""
        if not self.api_key or not self.api_secret:
            raise ConfigError(
                "TruSTAR credentials missing: set TRUSTAR_API_KEY and TRUSTAR_API_SECRET "
                "(or pass --trustar-config FILE)"
            )
        for name, url in (("auth endpoint", self.auth_endpoint), ("API endpoint", self.api_endpoint)):
            if not secure_endpoint(url):
                raise ConfigError(f"refusing to send TruSTAR credentials to {url} ({name}): "
                                  "use https:// (plain http:// only to a loopback address)")

    def require_enclaves(self) -> None:
        """Fail when no enclave is configured: a report must go somewhere."""
        if not self.enclave_ids:
            raise ConfigError("no enclave configured: pass --enclave-id or set TRUSTAR_ENCLAVE_IDS")

    def with_secret(self, api_key: Optional[str], api_secret: Optional[str]) -> Settings:
        """Return a copy with credentials fetched later (Secrets Manager)."""
        register_secret(api_secret)
        return dataclasses.replace(self, api_key=api_key or self.api_key, api_secret=api_secret)


def split_ids(value: Any) -> tuple[str, ...]:
    """Turn a comma list, or a list of comma lists, into unique ids in order."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        for part in str(item or "").split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return tuple(out)


def secure_endpoint(url: str) -> bool:
    """True for an https URL, or an http URL whose host is loopback (127.0.0.0/8, ::1, localhost)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    if parts.scheme == "https" and host:
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: its address is not ours to vouch for
        return False


def _from_env(env: Mapping[str, str], key: str) -> Optional[str]:
    for name in ENV_NAMES[key]:
        value = env.get(name)
        if value not in (None, ""):
            return value
    return None


def _from_conf(config_file: Optional[str], config_role: Optional[str], env: Mapping[str, str]) -> dict:
    """Read the trustar.conf the user named, with the SDK's parser; none named, none read."""
    named = config_file or env.get("TRUSTAR_PYTHON_CONFIG_PATH")
    if not named:
        return {}
    path = Path(named)
    if not path.is_file():
        raise ConfigError(f"{path}: TruSTAR config file not found")
    from gdtrustar.sdk import TruStar  # deferred: the SDK is slow to import and the Lambda may not need it here

    role = config_role or env.get("TRUSTAR_PYTHON_CONFIG_ROLE") or "trustar"
    try:
        return dict(TruStar.config_from_file(str(path), role))
    except Exception as exc:  # the SDK raises bare Exception / KeyError for a missing role
        raise ConfigError(f"{path}: cannot read role '{role}': {exc}") from exc


def load_settings(
    *,
    env: Optional[Mapping[str, str]] = None,
    enclave_ids: Sequence[str] = (),
    api_endpoint: Optional[str] = None,
    auth_endpoint: Optional[str] = None,
    max_rate: Optional[float] = None,
    config_file: Optional[str] = None,
    config_role: Optional[str] = None,
) -> Settings:
    """Resolve settings from flags (the keyword arguments), the environment and trustar.conf."""
    env = os.environ if env is None else env
    conf = _from_conf(config_file, config_role, env)
    flags = {
        "enclave_ids": list(enclave_ids) or None,
        "api_endpoint": api_endpoint,
        "auth_endpoint": auth_endpoint,
        "max_rate": max_rate,
    }
    values: dict[str, Any] = {}
    for key in ENV_NAMES:
        value = flags.get(key)
        if value is None:
            value = _from_env(env, key)
        if value is not None:
            values[key] = value
    if values.keys() & ENDPOINTS:  # the pair comes from one place: a file never redirects half of it
        conf = {name: value for name, value in conf.items() if name not in {CONF_NAMES[k] for k in ENDPOINTS}}
    for key, name in CONF_NAMES.items():
        if key not in values and conf.get(name) is not None:
            values[key] = conf[name]
    for key, value in values.items():  # e.g. an environment variable holding bytes that are not UTF-8
        if unicode_problem(value):
            raise ConfigError(f"the {key.replace('_', ' ')} setting is not valid UTF-8 text")
    if "enclave_ids" in values:
        values["enclave_ids"] = split_ids(values["enclave_ids"])
    if "max_rate" in values:
        values["max_rate"] = _positive_rate(values["max_rate"])
    for key in ("api_endpoint", "auth_endpoint", "station_url"):
        if key in values:
            values[key] = str(values[key]).rstrip("/")
    register_secret(values.get("api_secret"))
    return Settings(**values)


def _positive_rate(value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if rate <= 0:
        raise ConfigError(f"TRUSTAR_MAX_RATE must be a positive number of calls per minute, got {value!r}")
    return rate


def fetch_secret(secret_arn: str, client: Optional[SecretsManagerClient] = None) -> tuple[str, str]:
    """API key and secret from a Secrets Manager JSON secret ``{"api_key", "api_secret"}``."""
    import json

    if client is None:
        import boto3

        client = boto3.client("secretsmanager")
    try:
        raw = client.get_secret_value(SecretId=secret_arn)["SecretString"]
        data = json.loads(raw)
        key, secret = data["api_key"], data["api_secret"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"secret {secret_arn} must be JSON with api_key and api_secret") from exc
    except Exception as exc:  # botocore ClientError / NoCredentialsError: say which secret, not why twice
        raise ConfigError(f"cannot read secret {secret_arn}: {exc}") from exc
    register_secret(secret)
    return key, secret
