"""fer.tracking.tracked_unit, the one owner of a unit's MLflow run for study and search: its tags,
params, epoch metrics, artifacts and terminal status, on a real sqlite store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from fer.config import resolve_config  # noqa: E402
from fer.labels import EMOTIONS  # noqa: E402
from fer.tracking import TrackedRun, end_run, git_commit, tracked_unit, unit_tags  # noqa: E402

CFG = resolve_config("tiny", {"model.modality": "av"})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(client, experiment id, parent run id) of a fresh store shared by the module's tests."""
    from mlflow import MlflowClient

    from fer.tracking import ensure_experiment

    root = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = ensure_experiment(client, "toy")
    parent = client.create_run(experiment, run_name="modality=av", tags={"kind": "cell"}).info.run_id
    return client, experiment, parent


def _start(store, fold: int, **kwargs) -> TrackedRun:
    client, experiment, parent = store
    tags = unit_tags(study="toy", cell="modality=av", fold=fold, seed=7, config=CFG,
                     axes={"model.modality": "av"}, unit_key=f"key{fold}", ledger_trial=3)
    return tracked_unit(client, experiment, parent_run_id=parent, tags=tags, config=CFG,
                        run_name=f"modality=av/fold{fold}/seed7", **kwargs)


def test_finished_unit_has_tags_params_metrics_and_artifacts(store, tmp_path):
    client, _, parent = store
    with _start(store, fold=0) as unit:
        for epoch in range(2):
            unit.logger.on_epoch_end(epoch, {"train/loss": 1.0 / (epoch + 1), "val/uar": 0.25 * (epoch + 1)})
        row = {"clip_id": "c1", "actor": 1, "label": "neutral", "pred": "calm", **{f"p_{e}": 0.125 for e in EMOTIONS}}
        unit.log(fake_worker.FakeResult(metrics={"test/uar": 0.625, "val/uar_best": 0.5},
                                        predictions_val=[row], predictions_test=[row]))
        assert client.get_run(unit.run_id).info.status == "RUNNING"

    run = client.get_run(unit.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "modality=av/fold0/seed7"
    tags = run.data.tags
    assert {k: tags[k] for k in ("study", "cell", "fold", "seed", "protocol", "kind", "axes", "git_commit",
                                 "unit_key", "ledger_trial", "mlflow.parentRunId")} == {
        "study": "toy", "cell": "modality=av", "fold": "0", "seed": "7", "protocol": "ravdess-6fold",
        "kind": "unit", "axes": json.dumps({"model.modality": "av"}), "git_commit": git_commit(),
        "unit_key": "key0", "ledger_trial": "3", "mlflow.parentRunId": parent}
    assert tags["version.optuna"] == optuna.__version__ and "fail_reason" not in tags
    params = run.data.params
    assert params["model.modality"] == "av" and params["data.size"] == "64"
    assert params["model.visual.roi.k"] == "16" and params["train.precision"] == "no"
    assert run.data.metrics == {"train/loss": 0.5, "val/uar": 0.5, "test/uar": 0.625, "val/uar_best": 0.5}
    history = client.get_metric_history(unit.run_id, "val/uar")
    assert [(m.step, m.value) for m in history] == [(0, 0.25), (1, 0.5)]
    files = {a.path for a in client.list_artifacts(unit.run_id)}
    assert files == {"config.yaml", "predictions_val.csv", "predictions_test.csv", "confusion_test.csv",
                     "history.json"}
    config = Path(client.download_artifacts(unit.run_id, "config.yaml", str(tmp_path))).read_text()
    assert "modality: av" in config


def test_an_exception_fails_the_run_with_its_reason_and_propagates(store):
    client, _, _ = store
    with pytest.raises(RuntimeError, match="planted"):
        with _start(store, fold=1) as unit:
            raise RuntimeError("planted failure in fold 1")
    run = client.get_run(unit.run_id)
    assert run.info.status == "FAILED"
    reason = run.data.tags["fail_reason"]
    assert reason.startswith("RuntimeError: planted failure in fold 1\nTraceback (most recent call last):")
    assert 'raise RuntimeError("planted failure in fold 1")' in reason


@pytest.mark.parametrize("exc", [optuna.TrialPruned("pruned at epoch 2"), KeyboardInterrupt()],
                         ids=["killed_by", "interrupt"])
def test_a_stopped_unit_is_killed_not_failed(store, exc):
    client, _, _ = store
    with pytest.raises(type(exc)):
        with _start(store, fold=2, killed_by=(optuna.TrialPruned,)) as unit:
            raise exc
    run = client.get_run(unit.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["fail_reason"] == f"{type(exc).__name__}: {exc}"


def test_a_pruned_exception_fails_the_run_unless_it_is_named_in_killed_by(store):
    client, _, _ = store
    with pytest.raises(optuna.TrialPruned):
        with _start(store, fold=3) as unit:  # a study prunes nothing: any exception is a failure
            raise optuna.TrialPruned("unexpected")
    assert client.get_run(unit.run_id).info.status == "FAILED"


def test_end_run_closes_the_run_of_a_lost_worker(store):
    client, _, _ = store
    unit = _start(store, fold=4)  # started, never entered: its worker died
    end_run(client, unit.run_id, "KILLED", "worker lost " + "x" * 6000)
    run = client.get_run(unit.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["fail_reason"].startswith("worker lost x") and len(run.data.tags["fail_reason"]) == 5000
