"""The Optuna search: objective from validation folds only, MLflow runs per fold, export, resume."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from studies.spec import validate  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.tune import export_best, run_search  # noqa: E402

SEARCH = {
    "defaults": {"preset": "tiny"},
    "searches": {
        "toy": {
            "description": "lr only",
            "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "trials": 4,
            "sampler": "random",
            "pruner": "none",
            "folds": [0, 2],
        }
    },
}


def test_search_objective_is_mean_validation_uar_and_never_touches_test(tmp_path):
    calls = []

    def run_fn(cfg, *, data_root, cache_dir, fold, seed, callback, max_epochs, evaluate_test):
        calls.append((cfg.train.lr, fold, evaluate_test))
        val = 0.3 + 0.1 * fold + cfg.train.lr  # depends on the trial's params and on the fold
        callback.on_epoch_end(0, {"train/loss": 1.0, "val/uar": val})
        result = fake_worker.FakeResult(metrics={"val/uar_best": val, "best_epoch": 0})
        return result

    opts = RunOptions(data_root=tmp_path, storage=str(tmp_path / "t.journal"),
                       tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", trials=4)
    study = run_search("toy", validate(SEARCH), opts, run_fn=run_fn, echo=lambda s: None)
    assert len(study.trials) == 4
    assert {f for _, f, _ in calls} == {0, 2}
    assert not any(ev for _, _, ev in calls), "a search must never evaluate the test actors"
    for t in study.trials:
        lr = t.params["train.lr"]
        assert t.value == pytest.approx(statistics.fmean([0.3 + lr, 0.5 + lr]))
    best = max(study.trials, key=lambda t: t.value)
    assert study.best_trial.number == best.number

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=opts.tracking_uri)
    exp = client.get_experiment_by_name("search-toy")
    units = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    assert len(units) == 8 and all(r.info.status == "FINISHED" for r in units)
    assert all(r.data.tags["optuna_trial"] for r in units)
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        r.data.tags["mlflow.parentRunId"] for r in units}

    out = tmp_path / "best.yaml"
    export_best(study, out, "toy")
    assert yaml.safe_load(out.read_text()) == {"defaults": {"overrides": {"train.lr": best.params["train.lr"]}}}

    again = run_search("toy", validate(SEARCH), opts, run_fn=run_fn, echo=lambda s: None)
    assert len(again.trials) == 4, "a finished search does not run more trials"
