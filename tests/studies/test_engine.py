"""The study engine on the real ledger and MLflow store, with a stand-in training function."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from studies.engine import run_study  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.ledger import Ledger  # noqa: E402
from studies.spec import validate  # noqa: E402

N_UNITS = 4  # 2 cells x 2 folds x 1 seed


@pytest.fixture()
def data_root(tmp_path):
    """Empty files with real names: enough for the data manifest (names and sizes)."""
    root = tmp_path / "ravdess"
    fake_worker.named_clips(root)
    return root


@pytest.fixture()
def env(tmp_path, data_root):
    markers = tmp_path / "markers"
    markers.mkdir()
    return {"storage": str(tmp_path / "ledger.journal"),
            "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "data_root": data_root, "markers": markers}


def _runs(tracking: str, kind: str = "unit"):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("toy")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.kind = '{kind}'",
                              run_view_type=3)


def _opts(env, **kw) -> RunOptions:
    return RunOptions(data_root=env["data_root"], storage=env["storage"],
                        tracking_uri=env["tracking"], **kw)


def _trainings(markers: Path) -> Counter:
    """How often each unit was trained, by fake_worker's marker name (``av-f1-s0``)."""
    return Counter(p.name.split(".")[0] for p in markers.iterdir())


def _marker(run) -> str:
    """fake_worker's marker name of the unit an MLflow run tracked."""
    tags = run.data.tags
    return f"{tags['cell'].split('=')[1]}-f{tags['fold']}-s{tags['seed']}"


def test_study_trains_each_unit_once_and_rerun_skips_finished(env):
    spec = validate(fake_worker.ABLATIONS)
    run_fn = fake_worker.make_run_fn(env["markers"], 0.0)
    first = run_study("toy", spec, _opts(env), run_fn=run_fn, echo=lambda s: None)
    assert first == {"finished": N_UNITS, "failed": 0, "reclaimed": 0}
    second = run_study("toy", spec, _opts(env), run_fn=run_fn, echo=lambda s: None)
    assert second["finished"] == 0

    runs = _runs(env["tracking"])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * N_UNITS
    keys = {r.data.tags["unit_key"] for r in runs}
    assert len(keys) == N_UNITS
    assert _trainings(env["markers"]) == Counter({_marker(r): 1 for r in runs})
    for r in runs:
        assert {"study", "cell", "fold", "seed", "protocol", "git_commit", "mlflow.parentRunId"} <= set(r.data.tags)
        assert r.data.params["model.modality"] == r.data.tags["cell"].split("=")[1]
    # Each parent carries mean and std of its folds' test metrics (fold 0: base, fold 1: base + 0.1).
    parents = {r.data.tags["cell"]: r for r in _runs(env["tracking"], "cell")}
    assert set(parents) == {"modality=audio", "modality=av"}
    assert parents["modality=av"].data.metrics["test/uar_mean"] == pytest.approx(0.75)
    assert parents["modality=audio"].data.metrics["test/uar_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert all(p.info.status == "FINISHED" for p in parents.values())


def test_failing_unit_is_marked_failed_and_retried_up_to_retries(env):
    spec = validate(fake_worker.ABLATIONS)
    run_fn = fake_worker.make_run_fn(env["markers"], 0.0, fail_cells=("audio",))
    done = run_study("toy", spec, _opts(env, retries=1), run_fn=run_fn, echo=lambda s: None)
    assert done == {"finished": 2, "failed": 4, "reclaimed": 0}  # 2 audio units x (1 + 1 retry)
    runs = _runs(env["tracking"])
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 4
    assert all("planted failure" in r.data.tags["fail_reason"] for r in failed)
    ledger = Ledger(env["storage"], "ledger:toy")
    statuses = sorted(ledger.status(list(ledger.by_key())).values())
    assert statuses == ["failed x2", "failed x2", "finished", "finished"]
    # Running again with the retries spent trains nothing more.
    again = run_study("toy", spec, _opts(env, retries=1), run_fn=run_fn, echo=lambda s: None)
    assert again == {"finished": 0, "failed": 0, "reclaimed": 0}


def _worker(env, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(fake_worker.__file__)), env["storage"], env["tracking"],
         str(env["data_root"]), str(env["markers"]), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_unit_then_rerun_finishes_every_unit_once(env):
    proc = _worker(env, seconds=3.0)
    deadline = time.time() + 120
    while sum(_trainings(env["markers"]).values()) < 2 and time.time() < deadline:  # second unit under way
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = _trainings(env["markers"])
    assert sum(before_kill.values()) == 2 and len(before_kill) == 2

    spec = validate(fake_worker.ABLATIONS)
    done = run_study("toy", spec, _opts(env), run_fn=fake_worker.make_run_fn(env["markers"], 0.0),
                     echo=lambda s: None)
    assert done["reclaimed"] == 1
    runs = _runs(env["tracking"])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == N_UNITS
    assert len({r.data.tags["unit_key"] for r in finished}) == N_UNITS
    (lost,) = [r for r in runs if r.info.status != "FINISHED"]
    assert lost.info.status == "KILLED" and lost.data.tags["fail_reason"].startswith("worker lost")
    # The interrupted unit was one of the two started before the kill and is trained again; every
    # other unit, the one finished before the kill included, is trained exactly once.
    assert _marker(lost) in before_kill
    expected = Counter({_marker(r): 1 for r in finished})
    expected[_marker(lost)] += 1
    assert _trainings(env["markers"]) == expected


@pytest.mark.slow
def test_two_workers_share_a_study_and_train_each_unit_exactly_once(env):
    procs = [_worker(env, seconds=1.0) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = _runs(env["tracking"])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * N_UNITS
    assert len({r.data.tags["unit_key"] for r in runs}) == N_UNITS
    assert _trainings(env["markers"]) == Counter({_marker(r): 1 for r in runs})
