"""The S3 export source: ``gdtrustar send s3://BUCKET[/PREFIX]``.

Folders are walked as ``s3layout.py`` says, with pages of ``ListObjectsV2`` (1,000 keys a page),
and objects are read one at a time, each streamed from its ``GetObject`` body through the same
reader as files (``sources.read_stream``: gzip, JSON Lines, per-line origins): nothing holds more
than one page of keys and one line of one object. The ``GetObject`` calls themselves are issued
a few objects ahead (``s3read.py``), because a run of many small objects is bound by latency.

Each object is one ``Checkpoint``. When every finding in it was delivered (created, updated,
unchanged or skipped: see ``checkpoint.py`` for why invalid and failed do not count) and none was
left out by a filter, the ledger remembers (bucket, key, ETag) for this Station and these
enclaves. A rerun lists, skips remembered objects without a ``GetObject``, and makes no Station
call for them. An object that changed (another ETag) is read again. ``--force`` reads everything.

A ``GetObject`` that fails after botocore's own retries (standard mode) is one invalid item for
the object, naming it and the cause, and the run goes on. Refusals that retrying cannot fix are
not retried: a refusal from KMS (S3 answers ``AccessDenied`` naming KMS, or a ``KMS.*`` code)
says that the reader needs ``kms:Decrypt`` on the export's key. The item's document is a re-read
reference (``items.reread_reference``), so the failures file names the object and replaying it
(``gdtrustar send FAILURES``) reads the object again once IAM is fixed. A connection lost in the
middle of a body is resumed with a ranged ``GetObject`` (``If-Match`` the ETag) a few times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

from gdtrustar.aws import retry_config
from gdtrustar.checkpoint import Checkpoint
from gdtrustar.errors import ConfigError
from gdtrustar.items import Item, items_from, reread_reference
from gdtrustar.ledger import Ledger
from gdtrustar.s3layout import OBJECT_SUFFIX, Listed, Place, Walk, child_level, locate, parse_url
from gdtrustar.s3read import Opened, error_of, open_ahead, unreadable_reason
from gdtrustar.selection import Filtered, Selection, select
from gdtrustar.sources import read_stream

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef


@dataclass
class ObjectStats:
    """What the S3 source did, for the summary (its ``str`` is the summary's line)."""

    listed: int = 0
    read: int = 0
    skipped: int = 0
    unreadable: int = 0
    ignored: int = 0

    used: bool = False

    def __str__(self) -> str:
        if not self.used:
            return ""
        text = f"s3: {self.listed} objects listed, {self.read} read, {self.skipped} skipped (delivered before)"
        if self.unreadable:
            text += f", {self.unreadable} unreadable"
        if self.ignored:
            text += f"; {self.ignored} other keys ignored"
        return text


def s3_client(session: Session) -> S3Client:
    """An S3 client with botocore's standard retries; ``AWS_ENDPOINT_URL_S3`` is honoured by botocore.

    Its region is the profile's (or ``us-east-1``): botocore follows a bucket in another region.
    """
    from botocore.config import Config

    return session.client("s3", region_name=session.region_name or "us-east-1",
                          config=Config(retries=retry_config()))


class S3Export:
    """One ``s3://`` source of ``send``; ``items`` streams its findings with per-object checkpoints."""

    def __init__(self, client: S3Client, url: str, selection: Selection, left_out: Filtered,
                 stats: Optional[ObjectStats] = None) -> None:
        self.client = client
        self.url = url
        self.bucket, _ = parse_url(url)
        self.place = locate(url)
        self.walk = Walk.of(selection.regions, selection.criteria.since_ms, selection.criteria.until_ms)
        self.selection = selection
        self.left_out = left_out
        self.stats = stats or ObjectStats()
        self.stats.used = True
        self.ledger: Optional[Ledger] = None
        self.scope = ""
        self.force = False

    def bind(self, ledger: Optional[Ledger], scope: str, force: bool) -> S3Export:
        """Remember delivered objects in ``ledger`` for ``scope`` (None: a dry run remembers nothing)."""
        self.ledger, self.scope, self.force = ledger, scope, force
        return self

    def check(self) -> None:
        """One listing call before the run, so missing access or a wrong bucket is one line, exit 2."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.place.prefix, MaxKeys=1)
        except Exception as exc:
            code, message = error_of(exc)
            hint = " (the reader needs s3:ListBucket on the bucket for this prefix)" if "Denied" in code else ""
            raise ConfigError(f"S3 ListObjectsV2 on s3://{self.bucket}/{self.place.prefix}: {code}: {message}{hint}") \
                from exc

    def items(self) -> Iterator[Item]:
        """Every wanted finding of every wanted object under the URL, one object at a time."""
        for entry, opened in open_ahead(self.client, self._to_read()):
            if isinstance(entry, Item):  # a folder that could not be listed (after the check passed)
                yield entry
            else:
                yield from self._read(entry, opened)

    def _to_read(self) -> Iterator[Listed | Item]:
        """Listed objects less those delivered before (no GetObject for them)."""
        for entry in self.objects():
            if isinstance(entry, Listed):
                self.stats.listed += 1
                if self.ledger is not None and not self.force and \
                        self.ledger.object_done(self.scope, entry.bucket, entry.key, entry.etag):
                    self.stats.skipped += 1
                    continue
            yield entry

    def _read(self, listed: Listed, opened: Opened) -> Iterator[Item]:
        """The findings of one object, held in its checkpoint; an unreadable object is one invalid item."""
        url = listed.url
        if opened.error is not None:
            self.stats.unreadable += 1
            yield Item(url, error=unreadable_reason(opened.error), document=reread_reference(url))
            return
        self.stats.read += 1
        etag = opened.etag
        checkpoint = Checkpoint(lambda complete: self._done(complete, listed.bucket, listed.key, etag), name=url)
        with opened.stream() as body:
            held = (checkpoint.hold(_whole_object_reread(item, url)) for item in items_from(read_stream(body, url)))
            yield from select(held, self.selection, self.left_out)
            checkpoint.seal()

    def _done(self, complete: bool, bucket: str, key: str, etag: str) -> None:
        if complete and self.ledger is not None and etag:
            self.ledger.mark_object(self.scope, bucket, key, etag)

    def objects(self) -> Iterator[Listed | Item]:
        """Wanted objects under the URL, in key order within each folder.

        A folder whose listing fails after botocore's retries is an invalid item naming it for a
        re-read; its sibling folders are still listed.
        """
        yield from self._walk(self.place)

    def _walk(self, place: Place) -> Iterator[Listed | Item]:
        try:
            yield from self._walk_folder(place)
        except _ListingError as exc:
            url = f"s3://{self.bucket}/{place.prefix}"
            yield Item(url, error=str(exc), document=reread_reference(url))

    def _walk_folder(self, place: Place) -> Iterator[Listed | Item]:
        if place.level == "key":
            yield from (listed for listed, _ in self._keys(place.prefix) if listed.key == place.prefix)
            return
        if self.walk.flat(place):
            for listed, wanted in self._keys(place.prefix):
                if wanted:
                    yield listed
                elif not listed.key.endswith("/"):
                    self.stats.ignored += 1
            return
        if place.level == "service":
            yield from self._walk(place.child("GuardDuty", "region"))
            return
        for name in self._folders(place.prefix):
            below = child_level(place, name)
            if below is not None and self.walk.keeps(below):
                yield from self._walk(below)

    def _pages(self, **kwargs: Any) -> Iterator[ListObjectsV2OutputTypeDef]:
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # botocore already retried what retrying can fix
            code, message = error_of(exc)
            raise _ListingError(f"cannot list s3://{self.bucket}/{kwargs.get('Prefix', '')}: S3 said {code}: "
                                f"{message}") from exc

    def _folders(self, prefix: str) -> Iterator[str]:
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(prefix):].rstrip("/")

    def _keys(self, prefix: str) -> Iterator[tuple[Listed, bool]]:
        for page in self._pages(Prefix=prefix):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                wanted = key.endswith(OBJECT_SUFFIX) and self.walk.wants_key(key)
                yield Listed(self.bucket, key, entry.get("ETag", "")), wanted


class _ListingError(Exception):
    """A listing failed after botocore's retries."""


def _whole_object_reread(item: Item, url: str) -> Item:
    """A reader error about the whole object (corrupt gzip, lost connection) names it for a re-read."""
    if item.finding is None and item.document is None and item.origin == url:
        item.document = reread_reference(url)
    return item
