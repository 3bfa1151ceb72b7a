"""The ledger's leases: a RUNNING unit is reclaimed when its heartbeat stops for longer than the
lease, or at once when its worker's process on this host is gone; never while it beats."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from studies.grid import Cell, Unit
from studies.ledger import WORKER_LOST, Ledger

ROOT = Path(__file__).resolve().parents[2]
LEASE = 2.0  # seconds: short enough to watch expire, long against a loaded machine's stalls
NAME = "ledger:toy"


def _units(n: int = 1) -> list[Unit]:
    return [Unit("toy", Cell(f"c{i}", {"x": i}, config=None), fold=0, seed=0, key=f"key{i}")
            for i in range(n)]


def _state(ledger: Ledger, number: int):
    return next(t for t in ledger.trials() if t.number == number)


@pytest.fixture()
def storage(tmp_path) -> str:
    return str(tmp_path / "ledger.journal")


def _claimed(storage: str, units: list[Unit]):
    """Enqueue the units and claim the first from a worker ledger; returns (worker, trial)."""
    worker = Ledger(storage, NAME, lease=LEASE)
    assert worker.sync(units, retries=0) == []
    trial = worker.claim({u.key for u in units})
    assert trial is not None and trial.state == TrialState.RUNNING
    return worker, trial


def test_unit_whose_heartbeat_stops_is_reclaimed_after_the_lease(storage):
    units = _units()
    _, trial = _claimed(storage, units)
    other = Ledger(storage, NAME, lease=LEASE)  # another worker, looking at the same storage

    assert other.sync(units, retries=0) == [], "a fresh claim is not stale"
    assert other.status([units[0].key]) == {"key0": "running"}
    time.sleep(LEASE + 0.3)

    reaped = other.sync(units, retries=0)
    assert [t.number for t in reaped] == [trial.number]
    lost = _state(other, trial.number)
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"] == WORKER_LOST
    # Enqueued again although retries=0: a lost worker is not the unit's failure.
    waiting = [t for t in other.trials() if t.state == TrialState.WAITING]
    assert [t.user_attrs["unit_key"] for t in waiting] == ["key0"]
    assert other.status(["key0"]) == {"key0": "queued"}
    again = other.claim({"key0"})
    assert again is not None and again.number != trial.number


def test_unit_whose_heartbeat_renews_is_never_reclaimed(storage):
    units = _units()
    worker, trial = _claimed(storage, units)
    other = Ledger(storage, NAME, lease=LEASE)
    first_beat = _state(other, trial.number).user_attrs["heartbeat"]

    with worker.heartbeat(trial, every=LEASE / 10):
        deadline = time.time() + 3 * LEASE  # several lease periods
        while time.time() < deadline:
            assert other.sync(units, retries=0) == []
            time.sleep(LEASE / 2)
        running = _state(other, trial.number)
        assert running.state == TrialState.RUNNING
        assert running.user_attrs["heartbeat"] > first_beat + 2 * LEASE

    # Once the beating stops, the same lease does expire: the renewal was what kept it.
    time.sleep(LEASE + 0.3)
    assert [t.number for t in other.sync(units, retries=0)] == [trial.number]


def test_dead_worker_on_this_host_is_reclaimed_at_once(storage):
    units = _units(2)
    Ledger(storage, NAME).sync(units, retries=0)
    # A worker process claims key0 and exits without finishing it (as if SIGKILLed).
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from studies.ledger import Ledger; "
            "t = Ledger(sys.argv[2], sys.argv[3]).claim({'key0'}); print(t.number)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), storage, NAME], capture_output=True,
                         text=True, check=True).stdout
    number = int(out.split()[-1])

    ledger = Ledger(storage, NAME, lease=3600.0)  # the lease alone would wait an hour
    claimed = _state(ledger, number)
    assert claimed.state == TrialState.RUNNING
    assert claimed.user_attrs["worker"].startswith(socket.gethostname() + ":")
    assert time.time() - claimed.user_attrs["heartbeat"] < 60  # its heartbeat is still fresh

    assert [t.number for t in ledger.sync(units, retries=0)] == [number]
    assert _state(ledger, number).user_attrs["fail_reason"] == WORKER_LOST
    assert ledger.status(["key0", "key1"]) == {"key0": "queued", "key1": "queued"}


def test_live_claim_on_another_host_waits_for_its_lease(storage):
    """A pid on another machine cannot be checked: only the heartbeat's age counts there."""
    units = _units()
    worker, trial = _claimed(storage, units)
    worker.set_attrs(trial, worker="some-other-host:1")  # pid 1 is alive here; elsewhere unknown
    other = Ledger(storage, NAME, lease=LEASE)
    assert other.sync(units, retries=0) == []
    time.sleep(LEASE + 0.3)
    assert [t.number for t in other.sync(units, retries=0)] == [trial.number]
