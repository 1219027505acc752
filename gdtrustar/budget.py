"""One API key, two shares of its quota: the deployed stack's budget and the CLI's ``--max-rate``.

Station counts calls per API key (api-facts A12), so a laptop backfill and the live function on the
same key compete. To notice that without reading any secret, ``deploy-lambda`` stores a
*fingerprint* of the key as a stack parameter (and output): HMAC-SHA256 keyed with a fixed,
public label, over the API endpoint and the API key, cut to 16 hex digits. The secret is never
part of it, so a rotated secret keeps the fingerprint (same key, same quota); the endpoint is,
so the same key string on two Stations does not match. API keys are long random strings, so the
fingerprint cannot be turned back into the key. ``backfill`` computes the same fingerprint from
its own settings and lists the stacks in its regions: a match, or a stack whose key is unknown
(deployed with ``--secret-arn`` and no local key), gets one warning line with both shares and
their sum against the key's 60 calls/min.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from gdtrustar.settings import DEFAULT_MAX_RATE, Settings

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from mypy_boto3_cloudformation import CloudFormationClient

log = logging.getLogger(__name__)
_LABEL = b"gdtrustar quota key fingerprint v1"
KEY_QUOTA = DEFAULT_MAX_RATE  # Station's per-key limit, calls per minute


def key_fingerprint(api_endpoint: str, api_key: Optional[str]) -> str:
    """A non-secret, stable identifier of (Station, API key); empty when the key is unknown."""
    if not api_key:
        return ""
    message = f"{api_endpoint.rstrip('/')}|{api_key}".encode("utf-8", "surrogatepass")
    return hmac.new(_LABEL, message, hashlib.sha256).hexdigest()[:16]


def _stack_shares(cloudformation: CloudFormationClient, fingerprint: str) -> Iterable[tuple[str, float, bool]]:
    """(stack name, MaxRate, known same key) for every gdtrustar stack that may share the key."""
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        for stack in page.get("Stacks", []):
            if stack.get("StackStatus", "").startswith("DELETE"):
                continue
            params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
            if "KeyFingerprint" not in params or "MaxRate" not in params:
                continue  # not a gdtrustar stack, or one made before the fingerprint
            theirs = params["KeyFingerprint"]
            if theirs and theirs != fingerprint:
                continue
            try:
                rate = float(params["MaxRate"])
            except ValueError:
                continue
            yield stack["StackName"], rate, bool(theirs)


def shared_budget_warning(settings: Settings, regions: Iterable[str],
                          client: Callable[[str], CloudFormationClient]) -> Optional[str]:
    """One line when a deployed stack in ``regions`` spends the same key's quota, else None.

    ``client(region)`` returns a CloudFormation client. Any error reading stacks (no permission,
    no network) means no warning: this is advice, never a reason to stop a run.
    """
    fingerprint = key_fingerprint(settings.api_endpoint, settings.api_key)
    found: list[tuple[str, str, float, bool]] = []
    for region in regions:
        try:
            found += [(region, name, rate, known) for name, rate, known in _stack_shares(client(region), fingerprint)]
        except Exception as exc:  # botocore errors of every kind: advice only
            log.debug("cannot list stacks in %s: %s", region, exc)
    if not found:
        return None
    stacks = sum(rate for _, _, rate, _ in found)
    names = ", ".join(f"{name} ({region}, {rate:g}/min)" for region, name, rate, _ in found)
    total = stacks + settings.max_rate
    verdict = "over" if total > KEY_QUOTA else "within"
    same = "uses this API key" if all(known for *_, known in found) else "may use this API key"
    return (f"warning: deployed stack {names} {same}: {stacks:g} + this run's --max-rate "
            f"{settings.max_rate:g} = {total:g} calls/min, {verdict} the key's {KEY_QUOTA:g}/min; "
            "lower one share, or use --via-queue")
