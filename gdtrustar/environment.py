"""The process state one CLI run sees: environment variables, working directory, standard streams.

``main()`` takes these as arguments so the CLI can run in-process (tests, embedding) exactly as
the console script runs. They are applied to the process for the duration of the run instead of
being threaded through every function, because the readers are everywhere and not ours: the
settings resolver reads ``os.environ``, boto3 reads ``AWS_*`` and ``AWS_ENDPOINT_URL_*`` when a
session is made, the trustar SDK reads ``TRUSTAR_*`` and requests reads ``REQUESTS_CA_BUNDLE``;
click, rich and our log handler write to whatever ``sys.stdout``/``sys.stderr`` are when they are
created. Everything a run changes in the process (also the logging tree that ``setup_logging``
rewires and the secrets registered for redaction) is put back when it ends, so one run leaves
nothing behind for the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import IO, Iterator, Mapping, Optional, Union

from gdtrustar.logs import scoped_secrets

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def applied(
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
) -> Iterator[None]:
    """Run the body with this environment, directory and streams (``None``: the process's own)."""
    with contextlib.ExitStack() as stack:
        if env is not None:
            stack.enter_context(_environ(env))
        if cwd is not None:
            stack.enter_context(_cwd(cwd))
        stack.enter_context(_streams(stdin, stdout, stderr))
        stack.enter_context(_logging_tree())
        stack.enter_context(scoped_secrets())
        yield


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    _replace_environ(env)
    try:
        yield
    finally:
        _replace_environ(saved)


def _replace_environ(target: Mapping[str, str]) -> None:
    """Make ``os.environ`` equal ``target``, touching only the keys that differ.

    Not clear-then-update: other threads (a server in the same process) never see an empty
    environment.
    """
    for key in [key for key in os.environ if key not in target]:
        del os.environ[key]
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def _cwd(path: PathLike) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _streams(stdin: Optional[IO[str]], stdout: Optional[IO[str]], stderr: Optional[IO[str]]) -> Iterator[None]:
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream must not mask the run's exit
                stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def _logging_tree() -> Iterator[None]:
    """Put back every logger's level, handlers and flags; close the handlers the run added."""
    manager = logging.root.manager
    loggers = [logging.root, *(lg for lg in list(manager.loggerDict.values()) if isinstance(lg, logging.Logger))]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    disabled = manager.disable
    try:
        yield
    finally:
        kept = {id(handler) for _, _, handlers, _, _ in saved for handler in handlers}
        for lg in [logging.root, *(x for x in list(manager.loggerDict.values()) if isinstance(x, logging.Logger))]:
            for handler in lg.handlers:
                if id(handler) not in kept:
                    handler.close()
        for lg, level, handlers, propagate, was_disabled in saved:
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, was_disabled
            lg.setLevel(level)  # also clears the loggers' cached effective levels
        logging.disable(disabled)
