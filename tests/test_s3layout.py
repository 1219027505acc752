"""Where a URL points in GuardDuty's export tree, and which folders a window keeps (pure, no I/O)."""

from __future__ import annotations

from datetime import date

import pytest

from gdtrustar.errors import ConfigError
from gdtrustar.s3layout import Place, Walk, child_level, locate

ACCOUNT = "111122223333"


@pytest.mark.parametrize("url,prefix,level", [
    ("s3://b", "AWSLogs/", "top"),
    ("s3://b/", "AWSLogs/", "top"),
    ("s3://b/exports/gd", "exports/gd/AWSLogs/", "top"),
    ("s3://b/AWSLogs", "AWSLogs/", "top"),
    (f"s3://b/AWSLogs/{ACCOUNT}", f"AWSLogs/{ACCOUNT}/", "service"),
    ("s3://b/AWSLogs/o-abc123def4/", "AWSLogs/o-abc123def4/", "account"),
    (f"s3://b/AWSLogs/o-abc123def4/{ACCOUNT}/GuardDuty", f"AWSLogs/o-abc123def4/{ACCOUNT}/GuardDuty/", "region"),
    (f"s3://b/p/AWSLogs/{ACCOUNT}/GuardDuty/eu-west-1/2024/05/", f"p/AWSLogs/{ACCOUNT}/GuardDuty/eu-west-1/2024/05/",
     "day"),
    (f"s3://b/AWSLogs/{ACCOUNT}/GuardDuty/eu-west-1/2024/05/01/x.jsonl.gz",
     f"AWSLogs/{ACCOUNT}/GuardDuty/eu-west-1/2024/05/01/x.jsonl.gz", "key"),
])
def test_locate(url, prefix, level):
    place = locate(url)
    assert (place.prefix, place.level) == (prefix, level)


@pytest.mark.parametrize("url", [f"s3://b/AWSLogs/{ACCOUNT}/CloudTrail/", f"s3://b/AWSLogs/{ACCOUNT}/GuardDuty/r/24/",
                                 "https://b/AWSLogs/", "s3:///AWSLogs/"])
def test_paths_outside_the_layout_are_configuration_errors(url):
    with pytest.raises(ConfigError):
        locate(url)


def test_window_keeps_day_folders_with_a_day_of_margin():
    day = 86_400_000
    may2 = 1714608000000  # 2024-05-02T00:00:00Z
    walk = Walk.of(("eu-west-1",), may2, may2 + day - 1)
    region = Place("AWSLogs/1/GuardDuty/eu-west-1/", "year", {"region": "eu-west-1"})
    assert walk.keeps(region) and not walk.keeps(Place("x/", "year", {"region": "us-east-1"}))
    days = {d: walk.keeps(child_level(child_level(child_level(region, "2024"), "05"), f"{d:02d}"))
            for d in range(1, 6)}
    assert days == {1: True, 2: True, 3: True, 4: False, 5: False}
    assert not walk.keeps(child_level(region, "2023"))
    assert not walk.keeps(child_level(child_level(region, "2024"), "04"))
    assert not walk.flat(region) and walk.flat(Place("d/", "object", {}))
    assert Walk.of((), None, None).flat(region)  # no window: a region is listed flat
    assert Walk.of((), None, 0).last_day == date(1970, 1, 2)


def test_keys_outside_the_layout_are_not_wanted():
    walk = Walk()
    assert walk.wants_key(f"AWSLogs/{ACCOUNT}/GuardDuty/us-east-1/2024/05/01/a.jsonl.gz")
    assert walk.wants_key(f"pre/AWSLogs/o-x/{ACCOUNT}/GuardDuty/us-east-1/2024/05/01/a.jsonl.gz")
    assert not walk.wants_key(f"AWSLogs/{ACCOUNT}/GuardDuty/us-east-1/2024/05/01/a.json")
    not_a_day = f"AWSLogs/{ACCOUNT}/GuardDuty/us-east-1/2024/02/31/a.jsonl.gz"
    assert walk.wants_key(not_a_day) and not Walk.of((), 0, None).wants_key(not_a_day)  # a window needs real days
