"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer in the project (prepared clips, feature cache, face model, synthetic data, reports,
exported YAML) goes through :func:`atomic_path` (a whole folder, such as a converted checkpoint:
:func:`atomic_dir`): it hands out a temporary file beside the target,
and only when the writer returned does the file get flushed to disk and ``os.replace``-d over the
final name. A writer that raises, or a process killed mid-write, leaves at most a temporary file
named ``.<name>.<pid>.<random>.tmp``, which :func:`remove_stale_temps` deletes once that pid is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fer.procs import pid_alive

TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: Path | str, *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that need a file name (a muxer, ``savefig``).

    Args:
        path: the final file; its folder is created when missing.
        mode: permission bits of the final file (``mkstemp`` would leave it private).

    Yields:
        The temporary path (an empty file). When the block ends without an exception it is
        synced and renamed onto ``path``; otherwise it is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets remove_stale_temps tell a dead writer's leftovers from a file
    # another live process is still writing.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """A temporary folder beside ``path`` that becomes ``path``, whole, when the block succeeds.

    For writers of several files that belong together (a converted checkpoint). ``path`` must
    not exist; on any error the temporary folder is removed and nothing appears.

    Yields:
        The temporary folder (empty, named ``.<name>.<pid>.<random>.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX))
    try:
        yield tmp
        for file in sorted(tmp.rglob("*")):
            if file.is_file():
                _fsync(file)
        tmp.chmod(0o755)  # mkdtemp makes it private
        os.rename(tmp, path)  # refuses to replace a folder that appeared meanwhile with contents
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_open(path: Path | str, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` whose result appears at ``path`` only when the block succeeds.

    Args:
        path: the final file.
        mode: a write mode (``"wb"``, ``"w"``); further keyword arguments go to :func:`open`.
    """
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` with ``\\n`` line ends to ``path`` atomically. Returns ``path``."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return Path(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete the temporary files in ``folder`` whose writer is no longer running.

    Args:
        folder: a folder written through :func:`atomic_path`.

    Returns:
        The removed paths.
    """
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        parts = tmp.name.split(".")  # "", name..., pid, random, "tmp"
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid_alive(pid):
            continue
        if tmp.is_dir():  # an atomic_dir's folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
