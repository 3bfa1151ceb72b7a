"""Worker failures versus unit failures: which errors stop a worker instead of failing a unit.

A unit's own failure (a NaN loss, out of memory after the back-off, any other exception) is
marked FAILED and counts against ``--retries``; the worker goes on with the next unit. An error
that every unit would hit is a *worker failure*: the worker stops at once with one message, and
the unit goes back to the queue without a FAILED run and without spending a retry, for a worker
on a machine that can run it, or for this one once the cause is fixed. ``worker_failure`` tells
the two apart:

- pretrained weights missing (``fer.weights.MissingWeightsError``): fetch them;
- a database driver missing (``ImportError`` of a module in ``DB_DRIVERS``): the ledger or the
  tracking store cannot be reached from this environment;
- no space left, disk quota exceeded, read-only file system (``OSError`` with ``ENOSPC``,
  ``EDQUOT``, ``EROFS``);
- the data root gone or unreadable (an ``OSError`` raised while it is): a network drive unmounted,
  permissions changed.

The exception and its explicit causes (``raise ... from``) are looked at; anything else is the unit's.

The command line asks the same question of whatever reaches it (``user_error``): an error the
user can fix (a store that cannot be reached, a driver that is not installed, a folder that cannot
be written) is one ``error: ...`` line saying what to do, not a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Top-level modules of the database drivers SQLAlchemy (Optuna's RDB storage, MLflow's tracking
# store) imports for postgresql://, mysql://, mssql:// and oracle:// URLs, and sqlite3's own.
DB_DRIVERS = frozenset({"psycopg2", "psycopg", "pg8000", "asyncpg", "pymysql", "MySQLdb", "mysql",
                        "mariadb", "pyodbc", "pymssql", "cx_Oracle", "oracledb", "sqlite3", "_sqlite3"})
# Errors of the file system itself, not of one file: the next unit writes to the same disk.
DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system"}


class StoreError(Exception):
    """A ledger, Optuna storage, tracking store or cache that cannot be opened or written from here;
    one line saying what to do (``studies.preflight.check_store``, ``check_writable``)."""


class WorkerFailure(Exception):
    """Every unit would fail as this one did: the worker stops; its unit is queued again, no retry spent.

    Attributes:
        exit_code: 2 for missing pretrained weights (fixed by the fetch command the message names,
            as the preflight's), 1 for the others.
    """

    def __init__(self, message: str, *, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _causes(exc: BaseException):
    """``exc`` and the exceptions it was explicitly raised from, innermost last (cycles cut)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__


def data_root_problem(data_root: str | Path | None) -> str | None:
    """Why ``data_root`` cannot be read now (gone, not a folder, no permission), or None."""
    if data_root is None:
        return None
    root = Path(data_root)
    if not root.is_dir():
        return f"data root {root} is not a folder (gone, or a drive not mounted)"
    if not os.access(root, os.R_OK | os.X_OK):
        return f"data root {root} is not readable"
    return None


def empty_data_root(data_root: str | Path, dataset: str = "ravdess", vocal_channel: str = "speech") -> str | None:
    """Why ``data_root`` holds nothing to work on (no clip of ``dataset`` found by its file names), or None."""
    from fer.data.datasets import get_dataset

    if get_dataset(dataset).scan(data_root, vocal_channel).clips:
        return None
    synth = "python runner.py synth --out DIR" + ("" if dataset == "ravdess" else f" --dataset {dataset}")
    return (f"--data-root {data_root}: no {dataset} clips ({vocal_channel}) found by their file names: point it "
            f"at the {dataset} folder, or write a synthetic one with {synth}")


# OSError numbers of a folder the user can fix: where to write, or its permissions.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC, errno.EDQUOT}


def user_error(exc: BaseException) -> str | None:
    """One line for an error the user can fix, saying what to do; None for anything else (a bug).

    Looked at: ``exc`` and its explicit causes. A ``StoreError``; a database driver that is not
    installed; a tracking server or database that does not answer; a folder that cannot be written
    (no permission, read-only, a file in the way, no space).
    """
    for e in _causes(exc):
        if isinstance(e, StoreError):
            return str(e)
        if isinstance(e, ImportError) and (e.name or "").split(".")[0] in DB_DRIVERS:
            return (f"database driver {e.name!r} is not installed: pip install it, or use a journal file "
                    "(--storage runs/ledger.journal) and the default --tracking-uri on one machine")
        if _unreachable(e):
            first = str(e).splitlines()[0][:300]
            return (f"the tracking store or database cannot be used ({first}): check that its server runs and "
                    "the URL (--tracking-uri, --storage)")
        if isinstance(e, OSError) and e.errno in UNWRITABLE and e.filename:
            return (f"cannot write {e.filename}: {e.strerror}: choose another folder (--cache, $FER_CACHE_DIR, "
                    "--out, --storage) or fix its permissions")
    return None


def _unreachable(e: BaseException) -> bool:
    """An MLflow request that found no server, or a database connection refused (by type name:
    neither library is imported to ask)."""
    kind = type(e).__name__
    if kind == "OperationalError" and type(e).__module__.startswith("sqlalchemy"):
        return True
    if kind in ("ConnectionError", "NewConnectionError", "MaxRetryError"):
        return True
    return kind == "MlflowException" and any(s in str(e) for s in ("Failed to establish a new connection",
                                                                   "Max retries exceeded", "Connection refused"))


def worker_failure(exc: BaseException, *, data_root: str | Path | None = None) -> str | None:
    """Why every unit would fail as ``exc`` did (one line), or None when the failure is the unit's own.

    Args:
        exc: what the unit raised.
        data_root: the study's data root, looked at when ``exc`` is an ``OSError``.
    """
    from fer.weights.resolver import MissingWeightsError  # light: no torch, no hub client

    for e in _causes(exc):
        if isinstance(e, MissingWeightsError):
            return "pretrained weights missing"
        if isinstance(e, ImportError) and (e.name or "").split(".")[0] in DB_DRIVERS:
            return f"database driver {e.name!r} is not installed (the ledger or tracking store cannot be reached)"
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            where = f" ({e.filename})" if e.filename else ""
            return f"{DISK_ERRNOS[e.errno]}{where}"
        if isinstance(e, OSError) and (problem := data_root_problem(data_root)):
            return problem
    return None


def discard_run(client, run_id: str, reason: str) -> None:
    """The MLflow run of work put back in the queue: KILLED with the reason, then deleted (gone
    from the UI and from ``analysis.load``; ``mlflow gc`` removes it for good). Best effort: when
    the store itself is what failed (a full disk), the run stays as the ``with`` block ended it."""
    import contextlib

    from fer.tracking import end_run

    with contextlib.suppress(Exception):
        end_run(client, run_id, "KILLED", f"worker failure: {reason}")
        client.delete_run(run_id)


def stop_worker(exc: BaseException, reason: str, *, put_back: str | None, preset: str | None = None,
                study: str | None = None, assignments=()) -> WorkerFailure:
    """The ``WorkerFailure`` that stops the worker: one message with the reason, what was put back
    in the queue, and what to do (for missing weights: each checkpoint and the fetch command).

    Args:
        exc: what was raised; reason: ``worker_failure(exc)``.
        put_back: the work in progress, queued again (``"unit layers=2/fold0/seed0"``); None: none.
        preset, study, assignments: for the fetch command of a missing-weights message.
    """
    from fer.weights.resolver import MissingWeightsError, missing_message

    missing = next((e for e in _causes(exc) if isinstance(e, MissingWeightsError)), None)
    if missing is not None:
        detail, code = missing_message(missing.missing, preset=preset, study=study, assignments=assignments), 2
    else:
        detail, code = f"{type(exc).__name__}: {exc}", 1
    held = (f"{put_back} is queued again (no FAILED run, no retry spent)" if put_back
            else "no unit was in progress")
    return WorkerFailure(f"this worker stops: {reason}\nevery unit would hit it; {held}.\n{detail}", exit_code=code)
