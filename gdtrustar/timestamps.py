"""One canonical form for every way a GuardDuty time arrives: ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC).

The same instant reaches us as an ISO string with or without a zone, epoch milliseconds (the
EventBridge ``launchTime``), epoch seconds as a float or in scientific notation, as a number or a
string (``1.636625755218E9`` in the S3 export and nested EventBridge times), or a boto3 ``datetime``.
All of them must render identically, or one finding gives different reports through different doors.

Nothing here raises: a value that is not a time, or names an instant a ``datetime`` cannot hold
(year 9999 less an offset, epoch 1e300, NaN), is ``None``, and the caller decides what that means.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Optional

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
_ISO_TIME = re.compile(
    r"\s*(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?\s*"
    r"(Z|z|UTC|[+-]\d\d(?::?\d\d)?)?\s*\Z"
)
_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*\Z")
_MILLIS_ABOVE = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)


def canonical_time(value: Any) -> Optional[str]:
    """Return ``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), or None if it is not a usable time.

    Accepts ISO strings (``Z``, offsets, or a space and no zone, meaning UTC), epoch
    milliseconds or seconds (int, float, digit or scientific-notation string; > 1e11 means
    milliseconds) and ``datetime`` objects (naive means UTC).
    """
    if isinstance(value, str):
        return _time_from_string(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _time_from_epoch(value)
    return None


@lru_cache(maxsize=4096)
def _time_from_string(text: str) -> Optional[str]:
    if CANONICAL_TIME.match(text):
        return text
    if _NUMBER.match(text):
        return _time_from_epoch(float(text))
    match = _ISO_TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                          int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), timezone.utc)
        if zone and zone[0] in "+-":
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            moment = moment - offset if zone[0] == "+" else moment + offset
    except (ValueError, OverflowError):  # month 13, or 9999-12-31T23:59:59-01:00 (past datetime.max in UTC)
        return None
    return format_time(moment)


def _time_from_epoch(number: float) -> Optional[str]:
    try:
        seconds = number / 1000.0 if abs(number) > _MILLIS_ABOVE else float(number)
        return format_time(EPOCH + timedelta(seconds=seconds))
    except (OverflowError, ValueError):  # huge integers, NaN, infinity
        return None


def format_time(moment: datetime) -> Optional[str]:
    """The canonical text of a ``datetime`` (naive means UTC); None if it cannot be moved to UTC."""
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(timezone.utc)
        except (OverflowError, ValueError):  # datetime.max with a negative offset
            return None
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z")
