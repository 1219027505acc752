"""The S3 export source: ``gdtrustar send s3://BUCKET[/PREFIX]``.

Folders are walked as ``s3layout.py`` says, with pages of ``ListObjectsV2`` (1,000 keys a page),
and objects are read one at a time, each streamed from its ``GetObject`` body through the same
reader as files (``sources.read_stream``: gzip, JSON Lines, per-line origins): nothing holds more
than one page of keys and one line of one object.

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

import io
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from gdtrustar.aws import RETRY_CONFIG
from gdtrustar.checkpoint import Checkpoint
from gdtrustar.errors import ConfigError
from gdtrustar.items import Item, items_from, reread_reference
from gdtrustar.ledger import Ledger
from gdtrustar.s3layout import OBJECT_SUFFIX, Place, Walk, child_level, locate, parse_url
from gdtrustar.selection import Filtered, Selection, select
from gdtrustar.sources import read_stream

RESUMES = 3  # ranged re-reads of one body after a dropped connection
READ_BUFFER = 1 << 16
_KMS_WORDS = ("kms", "ciphertext", "customer master key")


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


@dataclass(frozen=True)
class Listed:
    """One object as ``ListObjectsV2`` returned it."""

    bucket: str
    key: str
    etag: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def s3_client(session: Any) -> Any:
    """An S3 client with botocore's standard retries; ``AWS_ENDPOINT_URL_S3`` is honoured by botocore.

    Its region is the profile's (or ``us-east-1``): botocore follows a bucket in another region.
    """
    from botocore.config import Config

    return session.client("s3", region_name=session.region_name or "us-east-1",
                          config=Config(retries=RETRY_CONFIG))


def _error(exc: Exception) -> tuple[str, str]:
    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code") or type(exc).__name__)
    message = str(error.get("Message") or exc)
    return code, " ".join(message.split())[:300]


def unreadable_reason(exc: Exception) -> str:
    """One line for a ``GetObject`` that failed: which permission is missing, when that is the cause."""
    code, message = _error(exc)
    said = f"S3 said {code}: {message}"
    if code.startswith("KMS.") or (code in ("AccessDenied", "403") and any(w in message.lower() for w in _KMS_WORDS)):
        return f"cannot decrypt: the reader needs kms:Decrypt on the export's KMS key ({said})"
    if code in ("AccessDenied", "403"):
        return f"access denied: the reader needs s3:GetObject on it ({said})"
    if code in ("NoSuchKey", "404"):
        return f"the object is gone ({said})"
    return f"cannot read the object ({said})"


class S3Export:
    """One ``s3://`` source of ``send``; ``items`` streams its findings with per-object checkpoints."""

    def __init__(self, client: Any, url: str, selection: Selection, left_out: Filtered,
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
            code, message = _error(exc)
            hint = " (the reader needs s3:ListBucket on the bucket for this prefix)" if "Denied" in code else ""
            raise ConfigError(f"S3 ListObjectsV2 on s3://{self.bucket}/{self.place.prefix}: {code}: {message}{hint}") \
                from exc

    def items(self) -> Iterator[Item]:
        """Every wanted finding of every wanted object under the URL, one object at a time."""
        for listed in self.objects():
            if isinstance(listed, Item):  # a folder that could not be listed (after the check passed)
                yield listed
                continue
            self.stats.listed += 1
            if self.ledger is not None and not self.force and \
                    self.ledger.object_done(self.scope, listed.bucket, listed.key, listed.etag):
                self.stats.skipped += 1
                continue
            yield from self.read(listed.bucket, listed.key)

    def read(self, bucket: str, key: str) -> Iterator[Item]:
        """The findings of one object, held in its checkpoint; an unreadable object is one invalid item."""
        url = f"s3://{bucket}/{key}"
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:  # botocore already retried what retrying can fix
            self.stats.unreadable += 1
            yield Item(url, error=unreadable_reason(exc), document=reread_reference(url))
            return
        self.stats.read += 1
        etag = response.get("ETag", "")
        checkpoint = Checkpoint(lambda complete: self._done(complete, bucket, key, etag), name=url)
        body = io.BufferedReader(_Body(response["Body"], self._opener(bucket, key, etag)), READ_BUFFER)
        try:
            held = (checkpoint.hold(_whole_object_reread(item, url)) for item in items_from(read_stream(body, url)))
            yield from select(held, self.selection, self.left_out)
            checkpoint.seal()
        finally:
            body.close()

    def _done(self, complete: bool, bucket: str, key: str, etag: str) -> None:
        if complete and self.ledger is not None and etag:
            self.ledger.mark_object(self.scope, bucket, key, etag)

    def _opener(self, bucket: str, key: str, etag: str) -> Callable[[int], Any]:
        def open_at(offset: int) -> Any:
            kwargs = {"IfMatch": etag} if etag else {}
            return self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-", **kwargs)["Body"]
        return open_at

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

    def _pages(self, **kwargs: Any) -> Iterator[dict]:
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # botocore already retried what retrying can fix
            code, message = _error(exc)
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


class _Body(io.RawIOBase):
    """A ``GetObject`` body as a raw stream; a connection lost mid-body is resumed with a ranged GET."""

    def __init__(self, body: Any, open_at: Callable[[int], Any]) -> None:
        super().__init__()
        self._body = body
        self._open_at = open_at
        self._offset = 0
        self._resumes = RESUMES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            try:
                chunk = self._body.read(len(buffer))
                break
            except (BotoCoreError, OSError) as exc:
                if self._resumes <= 0:
                    raise OSError(f"connection lost after {self._offset} bytes: {exc}") from exc
                self._resumes -= 1
                self._body.close()
                try:
                    self._body = self._open_at(self._offset)
                except (BotoCoreError, ClientError) as again:
                    raise OSError(f"connection lost after {self._offset} bytes: {_error(again)[0]}") from again
        buffer[: len(chunk)] = chunk
        self._offset += len(chunk)
        return len(chunk)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()
