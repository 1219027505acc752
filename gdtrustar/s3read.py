"""Reading S3 export objects: ``GetObject`` a few objects ahead, bodies streamed one at a time.

Objects are small and many (typically one or a few findings each), so a run is bound by the
latency of ``GetObject``, not by bytes. ``open_ahead`` therefore issues the calls for the next
``READ_AHEAD`` objects on a small thread pool while the current one is parsed. It only *opens*
them: headers are read, bodies are not. Each body is consumed by the main thread one object at a
time, streamed through a small buffer, so at most one object is being read and no object is ever
held whole in memory (an opened response waits with at most the HTTP client's 8 KiB buffer).

Errors are classified for people (``unreadable_reason``): KMS refusals name ``kms:Decrypt``.
``_Body`` resumes a body whose connection dropped with a ranged ``GetObject`` (``If-Match`` the
ETag, so a changed object is never stitched together), a few times, then gives up with an
``OSError`` that the reader reports as a read error of that object.
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from gdtrustar.s3layout import Listed

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

READ_AHEAD = 4  # GetObject calls in flight beyond the object being read (botocore's pool holds 10)
RESUMES = 3  # ranged re-reads of one body after a dropped connection
READ_BUFFER = 1 << 16
_KMS_WORDS = ("kms", "ciphertext", "customer master key")


@dataclass
class Opened:
    """The answer to one ``GetObject``: a response whose body is still unread, or the error."""

    client: S3Client
    listed: Listed
    response: Optional[GetObjectOutputTypeDef] = None
    error: Optional[Exception] = None

    @property
    def etag(self) -> str:
        return self.response.get("ETag", "") if self.response is not None else ""

    @contextlib.contextmanager
    def stream(self) -> Iterator[IO[bytes]]:
        """The body as a buffered byte stream, closed (and the connection released) afterwards."""
        if self.response is None:  # callers look at ``error`` first; reading a failed GetObject is a read error
            raise OSError(f"{self.listed.url}: not opened: {self.error}")
        body = io.BufferedReader(_Body(self.response["Body"], self._open_at), READ_BUFFER)
        try:
            yield body
        finally:
            body.close()

    def close(self) -> None:
        if self.response is not None:
            self.response["Body"].close()

    def _open_at(self, offset: int) -> StreamingBody:
        kwargs: dict[str, Any] = {"IfMatch": self.etag} if self.etag else {}  # boto3 rejects IfMatch=None
        return self.client.get_object(Bucket=self.listed.bucket, Key=self.listed.key, Range=f"bytes={offset}-",
                                      **kwargs)["Body"]


def _get(client: S3Client, listed: Listed) -> Opened:
    try:
        return Opened(client, listed, client.get_object(Bucket=listed.bucket, Key=listed.key))
    except Exception as exc:  # botocore already retried what retrying can fix
        return Opened(client, listed, error=exc)


def open_ahead(client: S3Client, entries: Iterable[Any], ahead: int = READ_AHEAD) -> Iterator[tuple[Any, Any]]:
    """(entry, Opened) for each ``Listed`` entry, in order, opened up to ``ahead`` entries early.

    Anything else in ``entries`` passes through as (entry, None). Responses opened but never
    handed out (the run stopped) are closed.
    """
    pending: deque[tuple[Any, Optional[Future]]] = deque()
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="s3-get") as pool:
        try:
            for entry in entries:
                pending.append((entry, pool.submit(_get, client, entry) if isinstance(entry, Listed) else None))
                if len(pending) > ahead:
                    yield _ready(pending.popleft())
            while pending:
                yield _ready(pending.popleft())
        finally:
            for _, future in pending:
                if future is not None:
                    future.result().close()


def _ready(pair: tuple[Any, Optional[Future]]) -> tuple[Any, Any]:
    entry, future = pair
    return entry, (future.result() if future is not None else None)


def error_of(exc: Exception) -> tuple[str, str]:
    """(code, message) of an AWS error, whitespace folded and cut to one line's worth."""
    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code") or type(exc).__name__)
    message = str(error.get("Message") or exc)
    return code, " ".join(message.split())[:300]


def unreadable_reason(exc: Exception) -> str:
    """One line for a ``GetObject`` that failed: which permission is missing, when that is the cause."""
    code, message = error_of(exc)
    said = f"S3 said {code}: {message}"
    if code.startswith("KMS."):
        return (f"cannot decrypt: KMS refused the export's key ({said}); the reader needs kms:Decrypt on it, "
                f"and the key must be enabled")
    if code in ("AccessDenied", "403") and any(word in message.lower() for word in _KMS_WORDS):
        return f"cannot decrypt: the reader needs kms:Decrypt on the export's KMS key ({said})"
    if code in ("AccessDenied", "403"):
        return f"access denied: the reader needs s3:GetObject on it ({said})"
    if code in ("NoSuchKey", "404"):
        return f"the object is gone ({said})"
    return f"cannot read the object ({said})"



class _Body(io.RawIOBase):
    """A ``GetObject`` body as a raw stream; a connection lost mid-body is resumed with a ranged GET."""

    def __init__(self, body: StreamingBody, open_at: Callable[[int], StreamingBody]) -> None:
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
                    raise OSError(f"connection lost after {self._offset} bytes: {error_of(again)[0]}") from again
        buffer[: len(chunk)] = chunk
        self._offset += len(chunk)
        return len(chunk)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()
