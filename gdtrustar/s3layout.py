"""Where things are in GuardDuty's S3 export: URLs, the key layout, and which folders a run must list.

GuardDuty writes ``[prefix/]AWSLogs/[<org id>/]<account>/GuardDuty/<region>/<YYYY>/<MM>/<DD>/<uuid>.jsonl.gz``
(docs/decisions.md#s3-export-layout; one public reader also allows the organisation segment). A
``send`` URL may point anywhere in that tree: above ``AWSLogs`` (the destination's prefix), at an
account, a region, a year, month or day, or at one object. ``locate`` says where, as a ``Place``;
the lister (``s3export.py``) then walks down from there, one level at a time:

* levels whose names are known are not listed: ``AWSLogs/`` and ``GuardDuty/`` are appended;
* accounts (or organisation ids) and regions are listed as folders, regions kept if ``--region``
  asked for them. Accounts are never pruned: an administrator's export holds its members'
  findings, so ``--account`` is checked on each finding instead;
* with ``--since/--until``, years, months and days are listed as folders and kept if the day can
  hold findings of the window: object names are random UUIDs, not time-ordered, so a window can
  only choose whole day folders. The day folder is the export's write date, which is at or after
  the finding's ``updatedAt`` and, with a publishing frequency of at most six hours, at most a day
  after it; one day of margin on each side covers that and clock skew. Findings outside the window
  are then left out by ``updatedAt``;
* without a window, a region (or anything below it) is listed flat, all keys, 1,000 a page.

Only keys that match the layout are read; anything else under those folders is counted and
ignored. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Optional

from gdtrustar.errors import ConfigError

LEVELS = ("top", "org", "account", "service", "region", "year", "month", "day", "object")
OBJECT_SUFFIX = ".jsonl.gz"
_ACCOUNT = re.compile(r"\d{12}\Z")
_DIGITS = {"year": re.compile(r"\d{4}\Z"), "month": re.compile(r"\d\d\Z"), "day": re.compile(r"\d\d\Z")}
_KEY = re.compile(
    r"(?:.*/)?AWSLogs/(?:[^/]+/)?(?P<account>\d{12})/GuardDuty/(?P<region>[^/]+)/"
    r"(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/[^/]+\.jsonl\.gz\Z"
)
_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Listed:
    """One object as ``ListObjectsV2`` returned it."""

    bucket: str
    key: str
    etag: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://BUCKET[/PREFIX]``."""
    if not url.startswith("s3://"):
        raise ConfigError(f"{url}: not an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ConfigError(f"{url}: no bucket name (expected s3://BUCKET[/PREFIX])")
    return bucket, prefix


@dataclass(frozen=True)
class Place:
    """A folder (or one object) of the export tree: its key prefix and the level below it."""

    prefix: str
    level: str  # what the next path segment is (LEVELS), or "key": ``prefix`` is one object's key
    fields: dict = field(default_factory=dict, compare=False)  # segments known so far: region, year, ...

    def child(self, name: str, level: str, **known: str) -> Place:
        return Place(f"{self.prefix}{name}/", level, {**self.fields, **known})


def locate(url: str) -> Place:
    """Where ``url`` points in the export tree; a path that cannot be in it is a configuration error."""
    _, prefix = parse_url(url)
    if prefix.endswith(OBJECT_SUFFIX) or (prefix and not prefix.endswith("/") and _KEY.match(prefix)):
        return Place(prefix, "key")
    segments = [s for s in prefix.split("/") if s]
    if "AWSLogs" not in segments:
        base = "/".join(segments)
        return Place(f"{base}/AWSLogs/" if base else "AWSLogs/", "top")
    cut = len(segments) - 1 - segments[::-1].index("AWSLogs")
    place = Place("/".join(segments[: cut + 1]) + "/", "top")
    for segment in segments[cut + 1:]:
        place = _descend(place, segment, url)
    return place


def _descend(place: Place, segment: str, url: str) -> Place:
    """One segment of a user's URL, checked against the layout."""
    level = place.level
    if level == "top":
        return place.child(segment, "service", account=segment) if _ACCOUNT.match(segment) else \
            place.child(segment, "account")
    if level == "account" and _ACCOUNT.match(segment):
        return place.child(segment, "service", account=segment)
    if level == "service" and segment == "GuardDuty":
        return place.child(segment, "region")
    if level == "region":
        return place.child(segment, "year", region=segment)
    if level in _DIGITS and _DIGITS[level].match(segment):
        return place.child(segment, LEVELS[LEVELS.index(level) + 1], **{level: segment})
    raise ConfigError(f"{url}: not a folder of a GuardDuty export (expected "
                      f"[prefix/]AWSLogs/<account>/GuardDuty/<region>/<YYYY>/<MM>/<DD>/; {segment!r} is not "
                      f"{'an account id' if level in ('top', 'account') else 'the ' + level})")


@dataclass(frozen=True)
class Walk:
    """What the lister keeps while walking down: regions and the window's days (inclusive)."""

    regions: tuple[str, ...] = ()
    first_day: Optional[date] = None
    last_day: Optional[date] = None

    @classmethod
    def of(cls, regions: tuple[str, ...], since_ms: Optional[int], until_ms: Optional[int]) -> Walk:
        return cls(tuple(regions), _day(since_ms, -_MARGIN), _day(until_ms, _MARGIN))

    @property
    def windowed(self) -> bool:
        return self.first_day is not None or self.last_day is not None

    def flat(self, place: Place) -> bool:
        """List everything below ``place`` in one flat listing (no folders left to prune)."""
        if place.level == "key":
            return True
        return LEVELS.index(place.level) >= LEVELS.index("year") and (
            not self.windowed or place.level == "object")

    def keeps(self, place: Place) -> bool:
        """Whether a listed folder can hold objects this run wants."""
        f = place.fields
        if self.regions and "region" in f and f["region"] not in self.regions:
            return False
        if "year" not in f or not self.windowed:
            return True
        low = self.first_day or date.min
        high = self.last_day or date.max
        year = int(f["year"])
        if "month" not in f:
            return low.year <= year <= high.year
        month = int(f["month"])
        if "day" not in f:
            return (low.year, low.month) <= (year, month) <= (high.year, high.month)
        try:
            return low <= date(year, month, int(f["day"])) <= high
        except ValueError:  # not a date (e.g. 2024/02/31): not GuardDuty's
            return False

    def wants_key(self, key: str) -> bool:
        """A listed key is an export object this run wants (layout, region, window day)."""
        match = _KEY.match(key)
        if match is None:
            return False
        fields = {"region": match["region"], "year": match["y"], "month": match["m"], "day": match["d"]}
        return self.keeps(Place(key, "object", fields))


def child_level(place: Place, name: str) -> Optional[Place]:
    """The folder ``name`` listed below ``place``, or None when it cannot be part of the layout."""
    level = place.level
    if level == "top":
        if _ACCOUNT.match(name):
            return place.child(name, "service", account=name).child("GuardDuty", "region")
        return place.child(name, "account")
    if level == "account":
        if _ACCOUNT.match(name):
            return place.child(name, "service", account=name).child("GuardDuty", "region")
        return None
    if level == "region":
        return place.child(name, "year", region=name)
    if level in _DIGITS and _DIGITS[level].match(name):
        return place.child(name, LEVELS[LEVELS.index(level) + 1], **{level: name})
    return None


def _day(ms: Optional[int], margin: timedelta) -> Optional[date]:
    if ms is None:
        return None
    try:
        return (datetime.fromtimestamp(ms / 1000, tz=timezone.utc) + margin).date()
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold: no bound on that side
        return None
