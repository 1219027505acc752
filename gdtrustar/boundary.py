"""The process's one error boundary: every way a command can end becomes one exit status and one line.

The run itself is finished by ``Run.finishing`` (ledger committed, failures file published, every
finding read delivered or listed); this boundary only decides what the process says and returns:

* a usage or configuration error: one ``gdtrustar: error:`` line, exit 2;
* a source that failed transiently (GuardDuty throttling or 5xx after retries): one line, exit 1;
* Ctrl-C: exit 130; a closed stdout (``| head``): no message at all, exit 141 as for SIGPIPE;
* anything else is a bug or an environment failure: one line naming a crash log (0600, in the
  state directory) that holds the redacted traceback, exit 3. ``--debug`` also prints it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click

from gdtrustar import __version__
from gdtrustar.errors import GdTrustarError, SourceUnavailableError
from gdtrustar.ledger import default_path
from gdtrustar.logs import redact
from gdtrustar.status import ExitStatus
from gdtrustar.text import printable, printable_lines


def run_command(command: Callable[[], Any], debug: bool = False, argv: Sequence[str] = ()) -> int:
    """Run ``command`` (the click group) and return the exit status; never raises, never a traceback."""
    status: int
    try:
        result = command()
        status = int(result) if isinstance(result, int) else ExitStatus.SUCCESS
    except (click.exceptions.Abort, KeyboardInterrupt):
        _say("gdtrustar: interrupted")
        status = ExitStatus.INTERRUPTED
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        _say(printable_lines(shown.getvalue().rstrip("\n")))
        status = ExitStatus.ERROR
    except BrokenPipeError:  # stdout closed outside a run (e.g. deploy-lambda's outputs): quietly
        status = ExitStatus.OUTPUT_CLOSED
    except GdTrustarError as exc:
        _debug(exc, debug)
        _say(f"gdtrustar: error: {printable(redact(str(exc)))}")
        status = ExitStatus.UNDELIVERED if isinstance(exc, SourceUnavailableError) else ExitStatus.ERROR
    except Exception as exc:  # the boundary: one line and a crash log, never a traceback, unless --debug
        _debug(exc, debug)
        log, why = write_crash_log(exc, argv)
        where = f"details in {log}" if log else f"no crash log: {why}"
        _say(f"gdtrustar: error: unexpected {type(exc).__name__}: {printable(redact(str(exc)))[:300]} "
             f"({printable(where)}; rerun with --debug)")
        status = ExitStatus.UNEXPECTED
    if not _stdout_flushed() and status != ExitStatus.INTERRUPTED:
        status = ExitStatus.OUTPUT_CLOSED
    return status


def write_crash_log(exc: BaseException, argv: Sequence[str] = ()) -> tuple[Optional[Path], str]:
    """The redacted traceback in a new private file in the state directory (or the temp directory)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    body = (f"gdtrustar {__version__} crashed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            f"command: gdtrustar {' '.join(argv)}\n\n{text}")
    body = printable_lines(redact(body))
    why = ""
    for directory in (default_path().parent, Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix=f"crash-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-",
                                        suffix=".log", dir=directory)  # created 0600
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(body)
            return Path(name), ""
        except OSError as err:
            why = f"{directory}: {err.strerror or err}"
    return None, why


def _debug(exc: BaseException, debug: bool) -> None:
    if debug:
        _say(printable_lines(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))))


def _say(line: str) -> None:
    """One line on stderr; a closed stderr is no reason to fail."""
    try:
        click.echo(line, err=True)
    except (OSError, ValueError):
        pass


def _stdout_flushed() -> bool:
    """Flush stdout now; if its reader went away, point it at /dev/null so exit does not complain."""
    stream = sys.stdout
    if stream is None:
        return True
    try:
        stream.flush()
        return True
    except (BrokenPipeError, ValueError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return False
