"""Quiet by default: native and library log lines that are not the user's business stay off the
terminal; ``python runner.py -v ...`` shows them.

The flag travels as the environment variable ``FER_VERBOSE``, so processes started by a command
(prepare's spawned workers, the demo's study workers) follow it too. Native libraries (MediaPipe's
LiteRT and glog) write to file descriptor 2 from C++, past Python's ``sys.stderr``: only
redirecting the descriptor itself (``stderr_to``) keeps them off the terminal.

Stdlib only: ``runner.py`` imports this at start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERBOSE_ENV = "FER_VERBOSE"


def set_verbose(on: bool) -> None:
    """Turn verbose output on or off for this process and every process it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def verbose() -> bool:
    """True when ``-v`` asked for the native and library log lines."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def open_log(path: Path) -> int | None:
    """A descriptor appending to ``path`` (folders created); None when verbose (keep stderr)
    or when the file cannot be written (then ``os.devnull``'s descriptor is returned instead)."""
    if verbose():
        return None
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)
    except OSError:  # a read-only folder: the lines are dropped rather than shown
        return os.open(os.devnull, os.O_WRONLY)


@contextmanager
def stderr_to(fd: int | None) -> Iterator[None]:
    """File descriptor 2 of this process writes to ``fd`` inside the block (None: unchanged).

    Process-wide: whatever any thread writes to stderr meanwhile lands there too, so keep the
    block around the native call alone.
    """
    if fd is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
