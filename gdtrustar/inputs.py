"""What ``send`` reads, in the order given: files, directories, stdin, failures files and ``s3://`` URLs.

Each kind of source turns its input into items and plugs into the same engine: local input through
``sources`` and ``items.items_from``, the S3 export through ``s3export.S3Export``. The filters
(``selection.py``) apply to every source alike. A failures file that names something it could not
read (a re-read reference, e.g. an S3 object refused by KMS) has it read again here, so replaying
the file after fixing IAM picks the object up.

AWS is touched only when an ``s3://`` URL (or a re-read reference to one) is given: the session
and client are built then, and every URL is checked with one listing before the run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, Optional

from gdtrustar.errors import GdTrustarError
from gdtrustar.items import Item, items_from, reread_reference
from gdtrustar.ledger import Ledger
from gdtrustar.s3export import ObjectStats, S3Export, s3_client
from gdtrustar.selection import Filtered, Selection, select
from gdtrustar.sources import iter_documents

if TYPE_CHECKING:  # type information only (boto3-stubs)
    from boto3 import Session
    from mypy_boto3_s3 import S3Client


class Inputs:
    """The sources of one ``send`` run; ``items`` streams them all."""

    def __init__(self, sources: tuple[str, ...], selection: Selection, profile: Optional[str] = None,
                 session: Optional[Session] = None) -> None:
        self.sources = sources
        self.selection = selection
        self.profile = profile
        self.left_out = Filtered()
        self.stats = ObjectStats()
        self._session = session
        self._client: Optional[S3Client] = None
        self._binding: tuple[Optional[Ledger], str, bool] = (None, "", False)
        self.exports = {url: self._export(url) for url in sources if url.startswith("s3://")}

    def check(self) -> None:
        """Fail fast (one line, exit 2) if an ``s3://`` URL cannot be listed at all."""
        for export in self.exports.values():
            export.check()

    def bind(self, ledger: Optional[Ledger], scope: str, force: bool) -> None:
        """Where S3 objects are remembered once delivered (no ledger: a dry run, nothing remembered)."""
        self._binding = (ledger, scope, force)
        for export in self.exports.values():
            export.bind(ledger, scope, force)

    def notes(self) -> list:
        """Figures for the summary: what the filters left out, and what the S3 source did."""
        return [self.left_out, self.stats]

    def items(self) -> Iterator[Item]:
        for source in self.sources:
            if source in self.exports:
                yield from self.exports[source].items()
            else:
                yield from select(items_from(iter_documents([source]), expand=self._reread), self.selection,
                                  self.left_out)

    def _reread(self, target: str, origin: str) -> Iterable[Item]:
        """Read again what a failures file says was not read (only S3 objects and folders are known)."""
        try:
            if not target.startswith("s3://"):
                raise GdTrustarError(f"cannot read {target} again: not an s3:// URL")
            export = self._export(target).bind(*self._binding)
        except GdTrustarError as exc:
            return [Item(origin, error=str(exc), document=reread_reference(target))]
        return export.items()

    def _export(self, url: str) -> S3Export:
        return S3Export(self.client(), url, self.selection, self.left_out, self.stats)

    def client(self) -> S3Client:
        """The S3 client, built on first use (a run without S3 never needs AWS)."""
        if self._client is None:
            from gdtrustar.aws import build_session

            self._client = s3_client(self._session or build_session(self.profile))
        return self._client
