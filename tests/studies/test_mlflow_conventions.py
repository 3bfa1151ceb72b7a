"""MLflow's conventions, read back from the store after a study and a search (stand-in training):
the experiment kind that opens the UI on training runs, the source and user tags, each unit's
dataset input, and system metrics only when asked for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from fer.tracking import git_commit  # noqa: E402
from studies.engine import run_study  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.spec import validate  # noqa: E402

# ravdess-6fold over 24 actors with one clip each: fold 0 tests 4 actors, validates on 4.
SPLIT_COUNTS = {"n_train": 16, "n_val": 4, "n_test": 4}


@pytest.fixture()
def data_root(tmp_path):
    """Empty files with real names, one speech clip per actor: what the index and folds read."""
    root = tmp_path / "ravdess"
    fake_worker.named_clips(root)
    return root


def _study(tmp_path, data_root, seconds: float = 0.0):
    """Run study ``toy`` (2 cells x folds 0, 1); its runs by kind, and the client."""
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = RunOptions(data_root=data_root, storage=str(tmp_path / "ledger.journal"), tracking_uri=tracking)
    markers = tmp_path / "markers"
    markers.mkdir()
    run_study("toy", validate(fake_worker.ABLATIONS), opts, run_fn=fake_worker.make_run_fn(markers, seconds),
              echo=lambda s: None)
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("toy")
    runs = client.search_runs([exp.experiment_id])
    return exp, {kind: [r for r in runs if r.data.tags["kind"] == kind] for kind in ("unit", "cell")}, client


def test_study_runs_follow_mlflow_conventions(tmp_path, data_root, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    exp, runs, client = _study(tmp_path, data_root)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(runs["unit"]) == 4 and len(runs["cell"]) == 2
    commit = git_commit()
    for run in runs["unit"] + runs["cell"]:
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"] == Path(sys.argv[0]).name  # runner.py under the CLI
        assert tags["mlflow.user"] and tags["mlflow.user"] != "unknown"
        assert tags["mlflow.source.git.commit"] == commit.removesuffix("-dirty")
        assert len(tags["mlflow.source.git.commit"]) == 40
    digests = {}
    for run in runs["unit"]:
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        assert dataset.name == "ravdess-speech"
        assert json.loads(dataset.source) == {"uri": str(data_root.resolve())}
        profile = json.loads(dataset.profile)
        assert profile["fold"] == int(run.data.tags["fold"]) and profile["protocol"] == "ravdess-6fold"
        assert {k: profile[k] for k in SPLIT_COUNTS} == SPLIT_COUNTS
        assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}
        digests.setdefault(run.data.tags["fold"], set()).add(dataset.digest)
        assert not [k for k in run.data.metrics if k.startswith("system/")]  # off by default
    # The same data for both cells of a fold; another fold is another split of it.
    assert {f: len(d) for f, d in digests.items()} == {"0": 1, "1": 1}
    assert digests["0"] != digests["1"]
    for run in runs["cell"]:  # a cell's run holds the data of each of its folds
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert {i.dataset.digest for i in inputs} == digests["0"] | digests["1"]
    # The runs table's dataset filter: 4 units and their 2 cells.
    for name, n in (("ravdess-speech", 6), ("ravdess-song", 0)):
        found = client.search_runs([exp.experiment_id], filter_string=f"dataset.name = '{name}'")
        assert len(found) == n
    (fold1,) = digests["1"]
    found = client.search_runs([exp.experiment_id], filter_string=f"dataset.digest = '{fold1}' and tags.kind = 'unit'")
    assert sorted(r.data.tags["fold"] for r in found) == ["1", "1"]


def test_an_older_experiment_gets_the_kind_tag(tmp_path, data_root):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("toy")  # as a run of the harness before the tag
    exp, _, _ = _study(tmp_path, data_root)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_system_metrics_only_when_asked_for(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")  # what --system-metrics sets
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    _, runs, client = _study(tmp_path, data_root, seconds=1.0)
    for run in runs["unit"]:
        metrics = client.get_run(run.info.run_id).data.metrics
        assert metrics.get("system/cpu_utilization_percentage", -1) >= 0
        assert metrics.get("system/system_memory_usage_megabytes", 0) > 0
    for run in runs["cell"]:  # the units' own, not their parents'
        assert not [k for k in run.data.metrics if k.startswith("system/")]


def test_runner_flag_turns_system_metrics_on(monkeypatch, data_root):
    """``--system-metrics`` sets MLflow's own switch, which study workers inherit."""
    from click.testing import CliRunner

    import runner
    import studies.engine

    seen = {}

    def fake_run_study(name, spec, opts, echo):
        import os

        seen["env"] = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
        return {"finished": 0, "failed": 0, "reclaimed": 0}

    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    monkeypatch.setattr(studies.engine, "run_study", fake_run_study)
    for flags, expected in (([], None), (["--system-metrics"], "true")):
        result = CliRunner().invoke(runner.cli, ["study", "modality", "--data-root", str(data_root), *flags])
        assert result.exit_code == 0, result.output
        assert seen.pop("env") == expected
        monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)


def test_search_units_carry_the_dataset_and_source(tmp_path, data_root):
    from mlflow import MlflowClient

    from studies.tune import run_search

    search = {"defaults": {"preset": "tiny"},
              "searches": {"toy": {"description": "lr only", "trials": 1, "sampler": "random", "pruner": "none",
                                   "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
                                   "folds": [0, 2]}}}

    def run_fn(cfg, *, data_root, cache_dir, fold, seed, callback, max_epochs, evaluate_test):
        return fake_worker.FakeResult(metrics={"val/uar_best": 0.5, "best_epoch": 0})

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = RunOptions(data_root=data_root, storage=str(tmp_path / "t.journal"), tracking_uri=tracking, trials=1)
    run_search("toy", validate(search), opts, run_fn=run_fn, echo=lambda s: None)
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("search-toy")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags["kind"] for r in runs} == {"unit", "trial"}
    for run in runs:
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
    units = [client.get_run(r.info.run_id) for r in runs if r.data.tags["kind"] == "unit"]
    assert sorted(json.loads(u.inputs.dataset_inputs[0].dataset.profile)["fold"] for u in units) == [0, 2]


def test_a_dataset_another_worker_just_added_is_logged_on_the_second_try():
    from mlflow.exceptions import MlflowException

    from fer.mlflow_conventions import log_inputs

    class Client:
        calls = 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.calls == 1:
                raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name")

    client = Client()
    log_inputs(client, "run", ["dataset"])
    assert client.calls == 2
