"""The study ledger: every unit is a trial of an Optuna study in a shared storage.

Why Optuna storage: its trial states give an atomic claim (WAITING -> RUNNING succeeds for exactly
one process), on a journal file for several processes on one machine and on an RDB
(``sqlite:///``, ``postgresql://``, ``mysql://``) for several machines. The optimisation side of
Optuna is not used here; a trial is just a unit with its key in ``user_attrs``.

Trial states mean:
    WAITING   enqueued, not yet claimed
    RUNNING   claimed by a worker, which renews a ``heartbeat`` attribute every few seconds
    COMPLETE  trained and logged (value = best validation UAR, never test)
    FAIL      raised, hit a NaN loss, or its worker died (``fail_reason`` says which)
    PRUNED    a duplicate claim of a unit another trial already owns (multi-machine race)

RUNNING goes back to WAITING (``release``) when the worker stopped on an error every unit would
hit (``studies.failures``): the unit is queued again and no retry is spent.

A RUNNING trial is stale when its worker's process is gone (same host) or its heartbeat is older
than the lease: the next ``sync`` fails it with reason ``worker lost`` and enqueues the unit again,
without counting it against ``--retries``.

A database ledger outlives its connections: when the server restarts or the network drops, every
ledger call waits for it with back-off (``reconnecting``, up to ``RECONNECT_FOR`` seconds) and goes
on. A call whose commit reached the server but whose answer was lost is harmless when repeated: a
claim repeated finds the trial RUNNING and skips it (the trial, with no worker beating, is reclaimed
after the lease), an enqueue repeated makes a second WAITING trial that ``claim`` prunes as a
duplicate, a completion repeated finds the trial COMPLETE. Nothing is claimed twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from fer.procs import pid_alive

WORKER_LOST = "worker lost"
RECONNECT_FOR = 120.0  # seconds a ledger call waits for an unreachable database before raising
_log = logging.getLogger(__name__)
T = TypeVar("T")


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc``, or what it was raised from, is the database connection failing (server
    down or restarting, network gone, connection reset), not a statement the database refused."""
    from sqlalchemy import exc as sa

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sa.OperationalError, sa.InterfaceError)) or getattr(exc, "connection_invalidated", False):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def reconnecting(call: Callable[[], T], *, patience: float = RECONNECT_FOR,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, repeated with back-off (0.5 s doubling to 8 s) while the database cannot be
    reached, for up to ``patience`` seconds; any other error at once. SQLAlchemy drops the dead
    connections of its pool at the first failure, so the next try opens a fresh one."""
    delay, deadline = 0.5, time.monotonic() + patience
    while True:
        try:
            return call()
        except Exception as exc:
            if not connection_lost(exc) or time.monotonic() + delay > deadline:
                raise
            _log.warning("ledger: database unreachable (%s); retrying in %.1f s", type(exc).__name__, delay)
            sleep(delay)
            delay = min(2 * delay, 8.0)


def open_storage(storage: str):
    """A file path -> journal file storage; a URL -> RDB storage."""
    if "://" in storage:
        return _rdb_storage(storage)
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _rdb_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage of ``url``. Workers started together on an empty database race to
    create its tables; the loser's ``CREATE`` collides with the winner's and it tries again,
    finding them made (PostgreSQL creates them all in one transaction)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
        except RuntimeError as exc:
            if "table schema" not in str(exc):
                raise
            from sqlalchemy.engine import make_url

            from studies.failures import StoreError

            shown = make_url(url).render_as_string(hide_password=True)
            raise StoreError(f"--storage {shown}: this database holds another program's tables (an MLflow "
                             "tracking store?); give the ledger a database of its own, e.g. "
                             "--storage sqlite:///ledger.db or a journal file") from None


def _crashes(trials: list) -> int:
    """How often a unit's trials failed by themselves (raised, NaN loss), not by a lost worker."""
    from optuna.trial import TrialState

    return sum(t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") != WORKER_LOST
               for t in trials)


class Ledger:
    """Units of one study in an Optuna storage.

    Args:
        storage: journal file path or RDB URL.
        name: the Optuna study name (``ledger:<study>`` for studies).
        lease: seconds without a heartbeat after which a RUNNING trial counts as stale.
    """

    def __init__(self, storage: str, name: str, *, lease: float = 120.0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage_path = storage
        self.storage = reconnecting(lambda: open_storage(storage))
        self.study = reconnecting(lambda: optuna.create_study(
            study_name=name, storage=self.storage, load_if_exists=True, direction="maximize"))
        self.study_id = self.study._study_id
        self.lease = lease
        self.host = socket.gethostname()
        self.worker = f"{self.host}:{os.getpid()}"

    @classmethod
    def existing(cls, storage: str, name: str) -> "Ledger | None":
        """The ledger if its storage and study exist already; None otherwise (nothing created)."""
        if "://" not in storage and not Path(storage).exists():
            return None
        import optuna

        if name not in reconnecting(lambda: optuna.study.get_all_study_names(open_storage(storage))):
            return None
        return cls(storage, name)

    # -- reading -------------------------------------------------------------------------------
    def _db(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)`` of the storage or study, waiting out a lost connection."""
        return reconnecting(lambda: method(*args, **kwargs))

    def trials(self) -> list:
        return self._db(self.study.get_trials, deepcopy=False)

    def by_key(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for t in self.trials():
            key = t.user_attrs.get("unit_key")
            if key:
                out.setdefault(key, []).append(t)
        return out

    def status(self, keys: list[str]) -> dict[str, str]:
        """``finished``, ``running``, ``queued``, ``failed xN`` or ``new`` per unit key.

        N counts the unit's own failures, as ``--retries`` does: a reclaim from a lost worker
        is not one.
        """
        from optuna.trial import TrialState

        trials = self.by_key()
        out = {}
        for key in keys:
            states = [t.state for t in trials.get(key, [])]
            fails = _crashes(trials.get(key, []))
            if TrialState.COMPLETE in states:
                out[key] = "finished"
            elif TrialState.RUNNING in states:
                out[key] = "running"
            elif TrialState.WAITING in states:
                out[key] = "queued" + (f" (failed x{fails})" if fails else "")
            elif fails:
                out[key] = f"failed x{fails}"
            else:
                out[key] = "new"
        return out

    # -- coordination --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise enqueueing between processes sharing a journal file (one machine).

        RDB storages span machines, where no file lock reaches: there a race can enqueue a unit
        twice, and ``claim`` turns the later copy into a PRUNED duplicate.
        """
        if "://" in self.storage_path:
            yield
            return
        with open(f"{self.storage_path}.ledger-lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _is_stale(self, trial) -> bool:
        worker = trial.user_attrs.get("worker", "")
        host, _, pid = worker.rpartition(":")
        if host == self.host and pid.isdigit() and not pid_alive(int(pid)):
            return True
        beat = trial.user_attrs.get("heartbeat")
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - (beat if beat is not None else started) > self.lease

    def reap_stale(self) -> list:
        """Fail RUNNING trials whose worker is gone; returns them (their MLflow runs need closing)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        reaped = []
        for t in self.trials():
            if t.state == TrialState.RUNNING and self._is_stale(t):
                try:
                    self._db(self.storage.set_trial_user_attr, t._trial_id, "fail_reason", WORKER_LOST)
                    self._db(self.storage.set_trial_state_values, t._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue
                reaped.append(t)
        return reaped

    def sync(self, units: list, retries: int) -> list:
        """Enqueue every unit that has no live trial and may still run; returns reaped trials.

        A unit is enqueued when it has never been tried, when its last worker died, or when it
        failed at most ``retries`` times by raising.
        """
        from optuna.trial import TrialState

        with self.lock():
            reaped = self.reap_stale()
            trials = self.by_key()
            for unit in units:
                states = trials.get(unit.key, [])
                if any(t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
                       for t in states):
                    continue
                if _crashes(states) <= retries:
                    self._db(self.study.enqueue_trial, {}, user_attrs=self.unit_attrs(unit))
        return reaped

    @staticmethod
    def unit_attrs(unit) -> dict[str, Any]:
        return {"unit_key": unit.key, "cell": unit.cell.name, "fold": unit.fold, "seed": unit.seed}

    def claim(self, keys: set[str]):
        """Atomically take one WAITING trial of ``keys``; None when there is none."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for t in sorted(self._db(self.study.get_trials, deepcopy=False, states=(TrialState.WAITING,)),
                        key=lambda t: t.number):
            if t.user_attrs.get("unit_key") not in keys:
                continue
            try:
                if not self._db(self.storage.set_trial_state_values, t._trial_id, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            self.set_attrs(t, worker=self.worker, heartbeat=time.time())
            if self._duplicate(t):
                self.set_attrs(t, duplicate=True)
                self._db(self.storage.set_trial_state_values, t._trial_id, TrialState.PRUNED)
                continue
            return self._db(self.storage.get_trial, t._trial_id)
        return None

    def _duplicate(self, trial) -> bool:
        from optuna.trial import TrialState

        key = trial.user_attrs["unit_key"]
        for other in self.by_key().get(key, []):
            if other.number == trial.number:
                continue
            if other.state == TrialState.COMPLETE:
                return True
            if other.state == TrialState.RUNNING and other.number < trial.number:
                return True
        return False

    def set_attrs(self, trial, **attrs: Any) -> None:
        for k, v in attrs.items():
            self._db(self.storage.set_trial_user_attr, trial._trial_id, k, v)

    def complete(self, trial, value: float, **attrs: Any) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        self.set_attrs(trial, **attrs)
        try:
            self._db(self.storage.set_trial_state_values, trial._trial_id, TrialState.COMPLETE, values=[value])
        except UpdateFinishedTrialError:  # a retry after a commit whose answer was lost
            if self._db(self.storage.get_trial, trial._trial_id).state != TrialState.COMPLETE:
                raise

    def release(self, trial, reason: str) -> None:
        """Put a claimed trial back in the queue (RUNNING -> WAITING): not a failure of the unit.

        ``released`` keeps the last reason, for the record; the next ``claim`` renews ``worker``,
        ``heartbeat`` and the MLflow run id.
        """
        from optuna.trial import TrialState

        self.set_attrs(trial, released=reason[:2000])
        self._db(self.storage.set_trial_state_values, trial._trial_id, TrialState.WAITING)

    def fail(self, trial, reason: str) -> None:
        from optuna.trial import TrialState

        self.set_attrs(trial, fail_reason=reason[:2000])
        self._db(self.storage.set_trial_state_values, trial._trial_id, TrialState.FAIL)

    @contextlib.contextmanager
    def heartbeat(self, trial, every: float | None = None) -> Iterator[None]:
        """Renew the trial's heartbeat from a background thread while the unit trains (a beat
        that cannot reach the database is skipped, not waited for: the lease allows for some)."""
        every = every or self.lease / 4
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):
                    self.storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())

        thread = threading.Thread(target=beat, name="ledger-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # -- study-level attributes (parent runs) ----------------------------------------------------
    def get_study_attr(self, key: str) -> Any:
        return self._db(self.storage.get_study_user_attrs, self.study_id).get(key)

    def set_study_attr(self, key: str, value: Any) -> None:
        self._db(self.storage.set_study_user_attr, self.study_id, key, value)
