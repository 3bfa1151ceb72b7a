"""Several machines for real: a PostgreSQL ledger and an ``mlflow server`` on a PostgreSQL backend.

A throwaway cluster and server on loopback (``pg_server``), study workers started as a user would
(``runner.py`` with stand-in training: ``cli_worker``), and the faults of a network: a worker
killed mid-unit, the database restarted mid-study, the tracking server unreachable while a unit
logs. What must hold: each unit FINISHED exactly once in MLflow, each ledger trial COMPLETE once
and never without its FINISHED run, artifacts on the server's ``--artifacts-destination``, and the
report the same as from a single machine's sqlite store.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402
import pg_server  # noqa: E402

from studies.engine import run_study  # noqa: E402
from studies.ledger import Ledger, connection_lost, reconnecting  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.spec import validate  # noqa: E402

CLI_WORKER = Path(__file__).parent / "cli_worker.py"


def ablations(study: str, folds: list[int]) -> dict:
    """fake_worker's two cells (audio, av) as study ``study`` over ``folds``, one seed."""
    return {"defaults": {"preset": "tiny"},
            "studies": {study: {**fake_worker.ABLATIONS["studies"]["toy"], "folds": folds}}}


@pytest.fixture(scope="module")
def cluster():
    """The ledgers' PostgreSQL; each test its own database."""
    with pg_server.postgres_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tracking server for the module (it takes a while to start), each test its own study.
    Its database is another cluster, so that stopping the ledgers' one leaves it up: a worker then
    meets the outage in its ledger calls, not in MLflow's retries."""
    with pg_server.postgres_cluster() as tracking_db, \
            pg_server.mlflow_server(tracking_db.create_database("mlflow"), tmp_path_factory.mktemp("mlflow")) as s:
        yield s


@pytest.fixture()
def ws(tmp_path):
    """Empty clips with real names (the data manifest), a markers folder, the working folder."""
    for actor in range(1, 25):
        d = tmp_path / "ravdess" / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        (d / f"01-01-01-01-01-01-{actor:02d}.mp4").write_bytes(b"x")
    (tmp_path / "markers").mkdir()
    return tmp_path


def write_ablations(ws: Path, doc: dict) -> Path:
    path = ws / "ablations.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cli_worker(ws: Path, study: str, storage: str, tracking: str, seconds: float) -> subprocess.Popen:
    """``runner.py study`` in the working folder ``ws``, as on another machine."""
    return subprocess.Popen(
        [sys.executable, str(CLI_WORKER), str(ws / "markers"), str(seconds), "--ablations", str(ws / "ablations.yaml"),
         "study", study, "--data-root", str(ws / "ravdess"), "--storage", storage, "--tracking-uri", tracking,
         "--retries", "0"],
        cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def trainings(ws: Path) -> Counter:
    return Counter(p.name.split(".")[0] for p in (ws / "markers").iterdir())


def marker(run) -> str:
    tags = run.data.tags
    return f"{tags['cell'].split('=')[1]}-f{tags['fold']}-s{tags['seed']}"


def unit_runs(tracking: str, study: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'", run_view_type=3)


def assert_each_unit_once(storage: str, tracking: str, study: str, n_units: int) -> list:
    """Each unit: one COMPLETE trial, its run FINISHED; no other FINISHED run. Returns the runs."""
    runs = unit_runs(tracking, study)
    by_id = {r.info.run_id: r for r in runs}
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == n_units and len({r.data.tags["unit_key"] for r in finished}) == n_units
    ledger = Ledger(storage, f"ledger:{study}")
    complete = [t for t in ledger.trials() if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["unit_key"] for t in complete) == sorted(r.data.tags["unit_key"] for r in finished)
    for t in complete:  # never COMPLETE without its FINISHED run
        assert by_id[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    return runs


def ledger_states(storage: str, study: str) -> Counter:
    """Trial states, PRUNED duplicates left out: workers starting together on a database may both
    enqueue a unit (no file lock spans machines); ``claim`` prunes the later copy untrained."""
    trials = Ledger(storage, f"ledger:{study}").trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(t.user_attrs.get("duplicate") for t in pruned)
    return Counter(t.state for t in trials if t.state != TrialState.PRUNED)


def report_table(ws: Path, study: str, tracking: str, out: Path) -> bytes:
    from runner import cli

    result = CliRunner().invoke(cli, ["--ablations", str(ws / "ablations.yaml"), "report", study,
                                      "--tracking-uri", tracking, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "table.csv").read_bytes()


def pid_trainings(ws: Path, pid: int) -> int:
    """How many units worker ``pid`` has started training."""
    return sum(p.name.split(".")[1] == str(pid) for p in (ws / "markers").iterdir())


def wait_for(condition, procs, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
        time.sleep(0.1)


@pytest.mark.slow
def test_two_cli_workers_through_a_database_restart_one_killed_mid_unit_then_a_rerun(cluster, server, ws):
    """Two workers (``runner.py study``) on a PostgreSQL ledger logging to the tracking server.

    While both train, the ledger's database stops for 5 s: both wait for it with back-off and go
    on. Then one worker is killed by SIGKILL in the middle of its next unit; the other reclaims
    that unit (the dead process is on its host; from another machine the lease would expire
    first) and finishes the study; a rerun finds nothing left to train.
    """
    study, n_units = "machines", 6  # 2 cells x 3 folds x 1 seed
    write_ablations(ws, ablations(study, [0, 1, 2]))
    storage = cluster.create_database("ledger_machines")
    killed, other = procs = [cli_worker(ws, study, storage, server.uri, seconds=2.0) for _ in range(2)]
    wait_for(lambda: pid_trainings(ws, killed.pid) and pid_trainings(ws, other.pid), procs)
    cluster.stop()  # both are mid-unit (2 s): they finish it into a ledger that is gone
    time.sleep(5.0)
    cluster.start()
    started = pid_trainings(ws, killed.pid)
    wait_for(lambda: pid_trainings(ws, killed.pid) > started, procs)  # a unit claimed after the restart
    os.kill(killed.pid, signal.SIGKILL)  # mid-unit: its training has just begun its 2 s
    killed.wait()
    out = killed.stdout.read() + other.communicate(timeout=300)[0]
    assert other.returncode == 0, out
    # A worker that finished its unit in the outage waited for the database (one line per try);
    # both went on (the killed one claimed a unit after the restart, the other finished the study).
    assert "ledger: database unreachable" in out, out
    rerun = cli_worker(ws, study, storage, server.uri, seconds=0.0)
    rerun_out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "this worker: 0 finished, 0 failed, 0 reclaimed" in rerun_out, rerun_out

    runs = assert_each_unit_once(storage, server.uri, study, n_units)
    (lost,) = [r for r in runs if r.info.status != "FINISHED"]
    assert lost.info.status == "KILLED" and lost.data.tags["fail_reason"].startswith("worker lost")
    expected = Counter({marker(r): 1 for r in runs if r.info.status == "FINISHED"})
    expected[marker(lost)] += 1  # the interrupted unit trained again; every other unit once
    assert trainings(ws) == expected
    assert ledger_states(storage, study) == Counter({TrialState.COMPLETE: n_units, TrialState.FAIL: 1})

    # Artifacts: on the server's --artifacts-destination, read back through the server, none in
    # the workers' working folder (no ./mlruns).
    from mlflow.artifacts import download_artifacts

    finished = [r for r in runs if r.info.status == "FINISHED"]
    for r in finished:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/")
        local = download_artifacts(run_id=r.info.run_id, artifact_path="predictions_test.csv",
                                   tracking_uri=server.uri, dst_path=str(ws / "download" / r.info.run_id))
        assert Path(local).read_text().splitlines()[1].startswith(f"x{r.data.tags['fold']},1,")
    stored = {p.parts[-3] for p in server.artifacts.rglob("predictions_test.csv")}
    assert {r.info.run_id for r in finished} <= stored
    assert not (ws / "mlruns").exists()

    # The report from the server equals the report of the same study trained by one worker on
    # one machine (journal ledger, sqlite store), byte for byte. The stand-in training gives each
    # unit the same metrics wherever it runs, so what is compared is everything between: the
    # restart, the kill, the reclaim and the rerun leave one FINISHED run per unit, and the
    # report reads the same rows from a server on PostgreSQL as from a local sqlite file.
    single = ws / "single"
    done = run_study(study, validate(ablations(study, [0, 1, 2])),
                     RunOptions(data_root=ws / "ravdess", storage=str(single / "ledger.journal"),
                                tracking_uri=f"sqlite:///{single / 'mlflow.db'}"),
                     run_fn=fake_worker.make_run_fn(ws / "markers", 0.0), echo=lambda s: None)
    assert done["finished"] == n_units
    from_server = report_table(ws, study, server.uri, ws / "report-server")
    assert from_server == report_table(ws, study, f"sqlite:///{single / 'mlflow.db'}", ws / "report-sqlite")
    assert from_server.count(b"\n") == 3  # header and the two cells


def outage_run_fn(ws: Path, gate: pg_server.Gate, seconds: float, fail_fast: bool):
    """Stand-in training whose first unit cuts the way to the tracking server, then logs an epoch.

    ``fail_fast``: the client does not retry (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so the logging
    raises; the way is open again before the unit's run is ended."""
    inner = fake_worker.make_run_fn(ws / "markers", 0.0)
    cut = []

    def run_fn(cfg, **kw):
        if not cut:
            cut.append(cfg.model.modality)
            gate.cut()
            reopen = threading.Timer(seconds, gate.open)
            reopen.start()
            if fail_fast:
                try:
                    kw["callback"].on_epoch_end(0, {"train/loss": 1.0})
                finally:
                    reopen.join()
        return inner(cfg, **kw)

    return run_fn


@pytest.mark.slow
@pytest.mark.parametrize("fail_fast", [False, True], ids=["logging-retries", "unit-fails-and-is-retried"])
def test_tracking_server_unreachable_while_a_unit_logs(cluster, server, ws, monkeypatch, fail_fast):
    study, n_units = f"outage-{int(fail_fast)}", 4
    gate = pg_server.Gate(server.port)
    storage = cluster.create_database(f"ledger_outage_{int(fail_fast)}")
    if fail_fast:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    opts = RunOptions(data_root=ws / "ravdess", storage=storage, tracking_uri=gate.uri, retries=1)
    started = time.time()
    try:
        done = run_study(study, validate(ablations(study, [0, 1])), opts,
                         run_fn=outage_run_fn(ws, gate, 3.0, fail_fast), echo=lambda s: None)
    finally:
        gate.cut()
    assert time.time() - started > 3.0, "the unit waited for the server"
    runs = assert_each_unit_once(storage, server.uri, study, n_units)
    if fail_fast:  # the unit failed as a unit (its run FAILED, its trial FAIL) and trained again
        assert done == {"finished": n_units, "failed": 1, "reclaimed": 0}
        (failed,) = [r for r in runs if r.info.status != "FINISHED"]
        assert failed.info.status == "FAILED" and "ConnectionError" in failed.data.tags["fail_reason"]
        assert sum(trainings(ws).values()) == n_units  # the stand-in's marker comes after the outage
    else:  # MLflow's client retried with back-off; nothing failed
        assert done == {"finished": n_units, "failed": 0, "reclaimed": 0}
        assert len(runs) == n_units


# --- reconnecting: the unit of it, and a real cluster stopped and started ---------------------------


def operational_error():
    from sqlalchemy.exc import OperationalError

    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_reconnecting_backs_off_on_a_lost_connection_and_raises_anything_else():
    from optuna.exceptions import StorageInternalError

    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            try:
                raise operational_error()
            except Exception as exc:  # optuna wraps it as its RDB storage does
                raise StorageInternalError("An exception is raised during the commit.") from exc
        return "ok"

    assert reconnecting(flaky, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0, 2.0]
    def refused():  # a statement the database refused, not the connection: no retry
        raise StorageInternalError("value too long")

    with pytest.raises(StorageInternalError):
        reconnecting(refused, sleep=sleeps.append)
    assert len(sleeps) == 3 and not connection_lost(ValueError("bad value"))

    def always_down():
        raise operational_error()

    slept: list[float] = []
    with pytest.raises(Exception) as gave_up:
        reconnecting(always_down, patience=0.0, sleep=slept.append)
    assert connection_lost(gave_up.value) and slept == []


def test_ledger_waits_for_a_stopped_database(cluster, caplog):
    ledger = Ledger(cluster.create_database("ledger_wait"), "ledger:wait")
    units = [fake_unit(i) for i in range(2)]
    ledger.sync(units, retries=0)
    cluster.stop()
    threading.Timer(2.0, cluster.start).start()
    started = time.time()
    with caplog.at_level(logging.WARNING, logger="studies.ledger"):
        trial = ledger.claim({u.key for u in units})
    assert time.time() - started >= 1.5 and trial.user_attrs["unit_key"] == "key0"
    assert any("ledger: database unreachable" in r.getMessage() for r in caplog.records)
    assert ledger.status([u.key for u in units]) == {"key0": "running", "key1": "queued"}


def fake_unit(i: int):
    from studies.grid import Cell, Unit

    return Unit("wait", Cell(f"c{i}", {"x": i}, config=None), fold=0, seed=0, key=f"key{i}")


# --- a worker logging straight to a database: one warning line ----------------------------------------


def test_logging_straight_to_a_database_warns_once_with_the_fix(cluster, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    from fer import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "_warned_local_artifacts", set())
    uri = cluster.create_database("direct").replace("fer@", "fer:secret@")
    client = MlflowClient(tracking_uri=uri)
    with caplog.at_level(logging.WARNING, logger="fer.tracking"):
        first = tracking.ensure_experiment(client, "direct")
        assert tracking.ensure_experiment(client, "direct") == first
        tracking.ensure_experiment(client, "other")  # the same store: said already
    (record,) = caplog.records
    line = record.getMessage()
    shown = f"postgresql://fer@127.0.0.1:{cluster.port}/direct"
    assert "\n" not in line and "secret" not in line
    assert line.startswith(f"warning: --tracking-uri {shown} is a database, not a tracking server")
    assert f"mlflow server --backend-store-uri {shown} --artifacts-destination DIR" in line
    assert str(tmp_path / "mlruns") in line or "./mlruns" in line, line


@pytest.mark.parametrize("uri, location", [
    ("sqlite:////x/mlflow.db", "file:///x/mlartifacts/s"),  # beside the database: fer's default
    ("http://host:5000", "mlflow-artifacts:/1"),
    ("postgresql://u@h/db", "s3://bucket/mlflow/1"),  # object storage: every machine reaches it
])
def test_no_warning_where_every_machine_reads_the_artifacts(uri, location, monkeypatch, caplog):
    from fer import tracking

    monkeypatch.setattr(tracking, "_warned_local_artifacts", set())
    with caplog.at_level(logging.WARNING, logger="fer.tracking"):
        tracking.warn_local_artifacts(uri, location)
    assert caplog.records == []
