"""Worker failures versus unit failures, on the real ledger and MLflow store with stand-in training.

An error every unit would hit (missing weights, a missing database driver, no space left, the data
root gone) stops the worker at once: its unit goes back to the queue (no retry spent: ``retries=0``
here, and the unit still trains on the next run), its MLflow run is deleted, the message says why.
A unit's own failure (NaN loss, out of memory, anything else) is FAILED and the worker goes on.
"""

from __future__ import annotations

import errno
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from fer.weights import MissingWeightsError, Resolution, checkpoint  # noqa: E402
from studies.engine import run_study  # noqa: E402
from studies.failures import WorkerFailure, worker_failure  # noqa: E402
from studies.ledger import Ledger  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.spec import validate  # noqa: E402
from studies.tune import run_search  # noqa: E402

N_UNITS = 4  # fake_worker's toy study: 2 cells x 2 folds x 1 seed


def missing_weights():
    return MissingWeightsError([Resolution(checkpoint("LiquidAI/LFM2-700M"), "missing", note="not downloaded")],
                               preset="tiny")


def full_disk(root: Path):
    return OSError(errno.ENOSPC, "No space left on device", str(root / "cache" / "features" / "x.npz"))


def data_root_gone(root: Path):
    shutil.rmtree(root / "ravdess")  # unmounted while the unit read it
    return FileNotFoundError(errno.ENOENT, "No such file or directory", str(root / "ravdess" / "Actor_01" / "a.mp4"))


def wrapped_full_disk(root: Path):
    try:
        raise full_disk(root)
    except OSError as exc:
        try:
            raise RuntimeError("feature cache write failed") from exc
        except RuntimeError as outer:
            return outer


# (id, what the unit raises given the tmp folder, the reason named, the exit code)
WORKER_FAILURES = [
    ("missing-weights", lambda root: missing_weights(), "pretrained weights missing", 2),
    ("db-driver", lambda root: ModuleNotFoundError("No module named 'psycopg2'", name="psycopg2"),
     "database driver 'psycopg2' is not installed", 1),
    ("disk-full", full_disk, "no space left on device", 1),
    ("disk-full-as-cause", wrapped_full_disk, "no space left on device", 1),
    ("data-root-gone", data_root_gone, "is not a folder (gone, or a drive not mounted)", 1),
]


def nonfinite():
    from fer.train.loop import NonFiniteLossError

    return NonFiniteLossError("loss is nan at epoch 0")


def out_of_memory():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory (micro-batch 1, nothing left to back off to)")


UNIT_FAILURES = [
    ("nan-loss", lambda root: nonfinite()),
    ("out-of-memory", lambda root: out_of_memory()),
    ("other-module-missing", lambda root: ModuleNotFoundError("No module named 'peft'", name="peft")),
    ("one-clip-unreadable", lambda root: FileNotFoundError(errno.ENOENT, "No such file",
                                                            str(root / "ravdess" / "Actor_01" / "gone.mp4"))),
    ("permission-on-a-file", lambda root: PermissionError(errno.EACCES, "Permission denied", "/x/y.npz")),
    ("anything-else", lambda root: ValueError("bad shape")),
]


def ravdess(root: Path) -> None:
    """Empty files with real names: enough for the data manifest (names and sizes)."""
    fake_worker.named_clips(root)


@pytest.fixture()
def env(tmp_path):
    ravdess(tmp_path / "ravdess")
    markers = tmp_path / "markers"
    markers.mkdir()
    return types.SimpleNamespace(root=tmp_path, markers=markers, storage=str(tmp_path / "ledger.journal"),
                                 tracking=f"sqlite:///{tmp_path / 'mlflow.db'}")


def opts(env) -> RunOptions:
    return RunOptions(data_root=env.root / "ravdess", storage=env.storage, tracking_uri=env.tracking, retries=0)


def raising(env, make_error, calls: list):
    """A stand-in training that records each call and raises ``make_error(tmp folder)``."""
    def run_fn(cfg, **kw):
        calls.append((cfg.model.modality, kw["fold"]))
        raise make_error(env.root)

    return run_fn


def unit_runs(env) -> list:
    """Every unit run in the store, deleted ones included."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env.tracking)
    exp = client.get_experiment_by_name("toy")
    return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'", run_view_type=3)


def statuses(env) -> Counter:
    ledger = Ledger(env.storage, "ledger:toy")
    return Counter(ledger.status(list(ledger.by_key())).values())


@pytest.mark.parametrize("make_error, reason, exit_code", [w[1:] for w in WORKER_FAILURES],
                         ids=[w[0] for w in WORKER_FAILURES])
def test_worker_failure_stops_at_once_and_leaves_the_unit_queued_with_no_run_and_no_retry_spent(
        env, make_error, reason, exit_code):
    spec = validate(fake_worker.ABLATIONS)
    calls: list = []
    with pytest.raises(WorkerFailure) as stopped:
        run_study("toy", spec, opts(env), run_fn=raising(env, make_error, calls), echo=lambda s: None)
    message = str(stopped.value)
    assert calls == [("audio", 0)], "the worker stops at the first unit"
    assert message.startswith("this worker stops: ") and reason in message.splitlines()[0]
    assert message.splitlines()[1] == ("every unit would hit it; unit modality=audio/fold0/seed0 is queued again "
                                       "(no FAILED run, no retry spent).")
    assert stopped.value.exit_code == exit_code
    assert statuses(env) == Counter({"queued": N_UNITS})
    (run,) = unit_runs(env)  # the unit's run: KILLED, deleted, why
    assert (run.info.status, run.info.lifecycle_stage) == ("KILLED", "deleted")
    assert run.data.tags["fail_reason"].startswith("worker failure: ")

    # Once the cause is gone every unit trains, that one too, although retries=0.
    if not (env.root / "ravdess").exists():
        ravdess(env.root / "ravdess")  # the drive is mounted again: the same clips, the same unit keys
    done = run_study("toy", spec, opts(env), run_fn=fake_worker.make_run_fn(env.markers, 0.0), echo=lambda s: None)
    assert done == {"finished": N_UNITS, "failed": 0, "reclaimed": 0}
    assert statuses(env) == Counter({"finished": N_UNITS})
    active = [r for r in unit_runs(env) if r.info.lifecycle_stage == "active"]
    assert sorted(r.info.status for r in active) == ["FINISHED"] * N_UNITS


@pytest.mark.parametrize("make_error", [u[1] for u in UNIT_FAILURES], ids=[u[0] for u in UNIT_FAILURES])
def test_unit_failure_is_failed_and_the_worker_goes_on(env, make_error):
    calls: list = []
    done = run_study("toy", validate(fake_worker.ABLATIONS), opts(env), run_fn=raising(env, make_error, calls),
                     echo=lambda s: None)
    assert done == {"finished": 0, "failed": N_UNITS, "reclaimed": 0}
    assert len(calls) == N_UNITS
    assert statuses(env) == Counter({"failed x1": N_UNITS})
    assert sorted((r.info.status, r.info.lifecycle_stage) for r in unit_runs(env)) == [("FAILED", "active")] * N_UNITS


def test_an_oserror_is_the_units_own_while_the_data_root_is_readable(tmp_path):
    error = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "clip.mp4"))
    assert worker_failure(error, data_root=tmp_path) is None
    assert worker_failure(error, data_root=tmp_path / "gone") == (
        f"data root {tmp_path / 'gone'} is not a folder (gone, or a drive not mounted)")


# --- the command line: one message, the exit code ----------------------------------------------------


@pytest.mark.parametrize("make_error, code, lines", [  # lines: the starts of lines the message holds
    (lambda root: missing_weights(), 2,
     ["  - LiquidAI/LFM2-700M (1.48 GB): not downloaded",
      "  python runner.py weights fetch --preset tiny --study toy"]),
    (full_disk, 1, ["OSError: [Errno 28] No space left on device"]),
], ids=["missing-weights", "disk-full"])
def test_study_command_exits_with_one_message_and_no_traceback(env, monkeypatch, make_error, code, lines):
    calls: list = []
    module = types.ModuleType("fer.train.run")
    module.run_unit = raising(env, make_error, calls)
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    path = env.root / "ablations.yaml"
    path.write_text(yaml.safe_dump(fake_worker.ABLATIONS))
    result = CliRunner().invoke(cli_main(), ["--ablations", str(path), "study", "toy", "--data-root",
                                             str(env.root / "ravdess"), "--storage", env.storage,
                                             "--tracking-uri", env.tracking])
    assert result.exit_code == code and isinstance(result.exception, SystemExit), result.output
    assert "[toy] modality=audio/fold0/seed0: training" in result.output
    assert "error: this worker stops: " in result.output and "Traceback" not in result.output
    for start in lines:
        assert any(line.startswith(start) for line in result.output.splitlines()), (start, result.output)
    assert len(calls) == 1 and statuses(env) == Counter({"queued": N_UNITS})


def test_a_database_url_without_its_driver_stops_the_worker_before_any_unit(env, monkeypatch):
    for driver in ("psycopg", "psycopg2"):  # installed here (make setup): make them unimportable
        monkeypatch.setitem(sys.modules, driver, None)
    calls: list = []
    module = types.ModuleType("fer.train.run")
    module.run_unit = raising(env, lambda root: AssertionError("never trained"), calls)
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    path = env.root / "ablations.yaml"
    path.write_text(yaml.safe_dump(fake_worker.ABLATIONS))
    result = CliRunner().invoke(cli_main(), ["--ablations", str(path), "study", "toy", "--data-root",
                                             str(env.root / "ravdess"), "--storage", "postgresql://u:p@127.0.0.1:9/db",
                                             "--tracking-uri", env.tracking])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.splitlines() == [  # checked before the ledger is opened: one line
        "error: --storage postgresql://u:***@127.0.0.1:9/db: its database driver 'psycopg' is not installed: "
        "pip install 'psycopg[binary]' (or, on one machine, a journal file: --storage runs/ledger.journal)"]
    assert calls == [] and not (env.root / "mlflow.db").exists()


def cli_main():
    from runner import cli

    return cli


# --- tune: the trial goes back to the queue with its parameters ----------------------------------------

SEARCH = {
    "defaults": {"preset": "tiny"},
    "searches": {"toy": {"description": "lr only",
                         "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
                         "trials": 3, "sampler": "random", "pruner": "median", "folds": [0, 2]}},
}


def test_tune_worker_failure_ends_the_search_and_requeues_the_trial_with_its_parameters(env):
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    search_opts = RunOptions(data_root=env.root / "ravdess", storage=env.storage, tracking_uri=env.tracking)
    calls: list = []

    def disk_full_on_second_fold(cfg, *, fold, callback, **_):
        calls.append((cfg.train.lr, fold))
        if fold == 2:
            raise full_disk(env.root)
        callback.on_epoch_end(0, {"train/loss": 1.0, "val/uar": 0.4})
        return fake_worker.FakeResult(metrics={"val/uar_best": 0.4, "best_epoch": 0})

    with pytest.raises(WorkerFailure) as stopped:
        run_search("toy", validate(SEARCH), search_opts, run_fn=disk_full_on_second_fold, echo=lambda s: None)
    assert "this worker stops: no space left on device" in str(stopped.value)
    assert "every unit would hit it; trial 0, with its parameters, is queued again" in str(stopped.value)
    assert [f for _, f in calls] == [0, 2], "the search ends at the first worker failure"
    client = MlflowClient(tracking_uri=env.tracking)
    exp = client.get_experiment_by_name("search-toy")
    assert client.search_runs([exp.experiment_id]) == [], "the trial's runs (its finished fold too) are deleted"

    def good(cfg, *, fold, callback, **_):
        calls.append((cfg.train.lr, fold))
        callback.on_epoch_end(0, {"train/loss": 1.0, "val/uar": 0.5})
        return fake_worker.FakeResult(metrics={"val/uar_best": 0.5, "best_epoch": 0})

    study = run_search("toy", validate(SEARCH), search_opts, run_fn=good, echo=lambda s: None)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert calls[2] == calls[0], "the requeued trial runs first, with the parameters it had"
    assert study.trials[0].params["train.lr"] == calls[0][0]
    units = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    assert sorted(r.info.status for r in units) == ["FINISHED"] * 6
