"""The GuardDuty API side of backfill: detectors, server-side criteria, pages of 50, statistics.

API economy (docs/decisions.md#gd-paging): ``ListFindings`` returns at most 50 ids a page and ``GetFindings``
takes at most 50 ids, so N findings cost ceil(N/50) calls of each per detector. Pages are fetched
one ahead on a background thread (``prefetch``) so listing overlaps with delivery, and only two
pages are ever held. Throttling is left to botocore's standard retry mode with enough attempts to
ride out a burst; errors that retrying cannot fix (access denied, unknown detector, no
credentials) become one ``ConfigError`` line (exit 2), and transient ones that outlasted the
retries (throttling, 5xx, network) one ``SourceUnavailableError`` line (exit 1).
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from gdtrustar.aws import retry_config
from gdtrustar.errors import ConfigError, GdTrustarError, SourceUnavailableError

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_guardduty import GuardDutyClient
    from mypy_boto3_guardduty.type_defs import ConditionTypeDef, FindingCriteriaTypeDef, FindingTypeDef

PAGE = 50
# botocore's throttling codes (retries/standard.py), across AWS services
THROTTLING_CODES = frozenset((
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
))
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: Optional[datetime] = None) -> int:
    """Epoch milliseconds from ISO-8601 (``2024-05-01``, ``2024-05-01T10:00:00Z``) or ``7d``/``12h`` ago."""
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        return int((now.timestamp() - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 nor a relative time like 7d, 12h, 30m") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Criteria:
    """What the user asked for, as flags; rendered to GuardDuty's ``FindingCriteria``."""

    since_ms: Optional[int] = None
    until_ms: Optional[int] = None
    min_severity: Optional[float] = None
    types: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    include_archived: bool = False

    def finding_criteria(self, since_ms: Optional[int] = None) -> FindingCriteriaTypeDef:
        """Server-side filter; ``since_ms`` (a resume bookmark) may narrow ``--since``."""
        criterion: dict[str, ConditionTypeDef] = {}
        updated: ConditionTypeDef = {}
        low = max(x for x in (self.since_ms, since_ms, -1) if x is not None)
        if low >= 0:
            # Long operators: epoch ms overflow the Integer ones (docs/decisions.md#gd-criteria)
            updated["GreaterThanOrEqual"] = low
        if self.until_ms is not None:
            updated["LessThanOrEqual"] = self.until_ms
        if updated:
            criterion["updatedAt"] = updated
        if self.min_severity is not None:
            criterion["severity"] = {"GreaterThanOrEqual": int(self.min_severity)}
        if self.types:
            criterion["type"] = {"Equals": list(self.types)}
        if self.accounts:
            criterion["accountId"] = {"Equals": list(self.accounts)}
        if not self.include_archived:
            criterion["service.archived"] = {"Equals": ["false"]}
        return {"Criterion": criterion}

    def key(self) -> str:
        """Identity of the filter, for bookmarks: a bookmark only resumes the same question."""
        return repr((self.min_severity, self.types, self.accounts, self.include_archived))


@dataclass(frozen=True)
class Target:
    """One detector in one region (detector ids are unique, so this names the account too)."""

    region: str
    detector_id: str
    client: GuardDutyClient = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.region}/{self.detector_id}"


def aws_errors() -> tuple[type[Exception], ...]:
    """What botocore raises for a failed call; anything else is a bug and stays unexpected (exit 3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def wrap_aws_error(exc: Exception, what: str) -> GdTrustarError:
    """One readable line, typed by what the user can do about it.

    Throttling, 5xx and network errors that outlived botocore's retries are transient
    (``SourceUnavailableError``: a rerun resumes, exit 1); anything else (credentials, permissions,
    an unknown detector) is the user's to fix (``ConfigError``, exit 2).
    """
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code") or type(exc).__name__
    message = response.get("Error", {}).get("Message") or str(exc)
    if _transient(exc, code, response.get("ResponseMetadata", {}).get("HTTPStatusCode")):
        return SourceUnavailableError(f"GuardDuty {what}: {code}: {message} (a transient AWS error that outlasted "
                                      "the retries: findings not read were not delivered; rerun to resume)")
    return ConfigError(f"GuardDuty {what}: {code}: {message}")


def _transient(exc: Exception, code: str, status: Optional[int]) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, reset, timed out
        return True
    return code in THROTTLING_CODES or (isinstance(status, int) and (status == 429 or status >= 500))


def discover(session: Session, regions: list[str], detector: Optional[str]) -> list[Target]:
    """Every detector to read: the named one, or each one ``ListDetectors`` returns per region."""
    from botocore.config import Config

    targets = []
    for region in regions:
        client = session.client("guardduty", region_name=region, config=Config(retries=retry_config()))
        if detector:
            targets.append(Target(region, detector, client))
            continue
        try:
            for page in client.get_paginator("list_detectors").paginate():
                targets.extend(Target(region, d, client) for d in page.get("DetectorIds", []))
        except aws_errors() as exc:
            raise wrap_aws_error(exc, f"ListDetectors in {region}") from exc
    if not targets:
        raise ConfigError(f"no GuardDuty detector in {', '.join(regions)}: is GuardDuty enabled there?")
    return targets


def enabled_regions(session: Session) -> list[str]:
    """Regions enabled for the account, from EC2 (``--all-regions``)."""
    try:
        regions = session.client("ec2").describe_regions(AllRegions=False)["Regions"]
    except aws_errors() as exc:
        raise wrap_aws_error(exc, "DescribeRegions (for --all-regions)") from exc
    return sorted(r["RegionName"] for r in regions)


def count(target: Target, criteria: FindingCriteriaTypeDef) -> Optional[int]:
    """How many findings match, from ``GetFindingsStatistics`` (one call); None if not allowed."""
    try:
        stats = target.client.get_findings_statistics(
            DetectorId=target.detector_id, FindingStatisticTypes=["COUNT_BY_SEVERITY"], FindingCriteria=criteria)
    except Exception:
        return None  # progress without a total is fine; a real error surfaces from ListFindings
    return sum(stats.get("FindingStatistics", {}).get("CountBySeverity", {}).values())


def known_total(counts: Iterable[Optional[int]]) -> Optional[int]:
    """The sum of ``count``s for a progress bar; None (no total shown) if any of them is unknown."""
    total = 0
    for number in counts:
        if number is None:
            return None
        total += number
    return total


def pages(target: Target, criteria: FindingCriteriaTypeDef) -> Iterator[list[FindingTypeDef]]:
    """Findings (boto3 PascalCase) 50 at a time, oldest update first, for one detector."""
    token: Optional[str] = None
    while True:
        kwargs: dict[str, Any] = {"DetectorId": target.detector_id, "FindingCriteria": criteria,
                                  "MaxResults": PAGE,
                                  "SortCriteria": {"AttributeName": "updatedAt", "OrderBy": "ASC"}}
        if token:
            kwargs["NextToken"] = token
        try:
            listed = target.client.list_findings(**kwargs)
            ids = listed.get("FindingIds", [])
            found = target.client.get_findings(DetectorId=target.detector_id, FindingIds=ids)["Findings"] if ids else []
        except aws_errors() as exc:
            raise wrap_aws_error(exc, f"ListFindings/GetFindings on {target.label}") from exc
        if found:
            yield found
        token = listed.get("NextToken")
        if not token:
            return


_DONE = object()


def prefetch(source: Iterator[Any], stop: threading.Event) -> Iterator[Any]:
    """Run ``source`` one item ahead on a thread; exceptions are re-raised in the consumer."""
    box: queue.Queue = queue.Queue(maxsize=1)

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        box.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            box.put(exc)

    threading.Thread(target=produce, name="guardduty-pages", daemon=True).start()
    while True:
        item = box.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
