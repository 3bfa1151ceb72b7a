"""The loader on a temporary MLflow store written with the study engine's tracking naming."""

import numpy as np
import pytest
from analysis_fixtures import DECLARED, FOLDS, RESUMED, SEEDS, STUDY, UNFINISHED, unit_confusion, unit_uar

from analysis.load import ReportError, axis_column_names, load_confusions, load_study_runs
from fer.labels import EMOTIONS


@pytest.fixture(scope="module")
def units(mlflow_store):
    return load_study_runs(STUDY, mlflow_store.uri, cell_order=list(DECLARED))


def test_one_row_per_unit_in_declared_order(units, mlflow_store):
    expected = [(c, f, s) for c in DECLARED for f in FOLDS for s in SEEDS]
    assert list(zip(units["cell"], units["fold"], units["seed"])) == expected
    assert units.attrs["cells"] == list(DECLARED)
    assert units.attrs["runs"] == len(expected) + 1  # the FAILED run of the resumed unit was read too
    assert units.attrs["axes"] == {"modality": "model.modality"}
    assert (units["modality"] == units["cell"]).all()
    assert units["fold"].dtype == np.int64 and units["seed"].dtype == np.int64
    # Parent (kind=cell) runs are not units.
    assert set(units["run_id"]) == {mlflow_store.run_ids[k] for k in expected}


def test_values_are_the_logged_ones(units):
    key = list(zip(units["cell"], units["fold"], units["seed"]))
    running = units[[k == UNFINISHED for k in key]]
    assert running["status"].tolist() == ["RUNNING"] and np.isnan(running["test/uar"].item())
    assert (units.drop(running.index)["status"] == "FINISHED").all()
    done = units[units["status"] == "FINISHED"]
    want = [unit_uar(c, f, s) for c, f, s in zip(done["cell"], done["fold"], done["seed"])]
    assert done["test/uar"].tolist() == pytest.approx(want, abs=1e-12)
    assert done["test/war"].tolist() == pytest.approx([w + 0.02 for w in want], abs=1e-12)
    assert done["test/recall/neutral"].tolist() == pytest.approx([w - 0.035 for w in want], abs=1e-12)
    assert (done["params/total"] == done["cell"].map({"audio": 1e6, "visual": 2e6, "av": 3.5e6})).all()
    assert set(done["vocal_channel"]) == {"speech"} and set(done["protocol"]) == {"ravdess-6fold"}
    assert set(done["git_commit"]) == {"abc1234"}


def test_resumed_unit_keeps_the_finished_run(units, mlflow_store):
    row = units[(units["cell"] == RESUMED[0]) & (units["fold"] == RESUMED[1]) & (units["seed"] == RESUMED[2])]
    assert row["run_id"].item() == mlflow_store.run_ids[RESUMED]
    assert row["test/uar"].item() == pytest.approx(unit_uar(*RESUMED))


def test_per_epoch_metrics_stay_out_and_best_ones_stay_in(units):
    assert "val/uar" not in units and "train/loss" not in units
    assert "val/uar_best" in units and "best_epoch" in units
    for col in ("params/total", "params/trainable", "gflops_per_clip", "train/clips_per_s", "peak_mem_mb"):
        assert units[col].dtype == float


def test_without_declared_order_cells_sort_by_axis_value(mlflow_store):
    units = load_study_runs(STUDY, mlflow_store.uri)
    assert units.attrs["cells"] == ["audio", "av", "visual"]


def test_integer_axis_with_null_keeps_its_values(mlflow_store):
    units = load_study_runs("roi", mlflow_store.uri)
    # Sorted numerically, null last; 16 stays 16 (not 16.0) and null stays None (not NaN).
    assert units["cell"].tolist() == ["k=4", "k=16", "k=None"]
    assert units["k"].tolist() == [4, 16, None] and units["k"].dtype == object


def test_confusions_are_summed_over_finished_units(units, mlflow_store):
    sums = load_confusions(units, mlflow_store.uri)
    assert list(sums) == list(DECLARED)
    for cell in DECLARED:
        want = sum(unit_confusion(f, s) for f in FOLDS for s in SEEDS if (cell, f, s) != UNFINISHED)
        assert sums[cell].to_numpy().tolist() == want.tolist()
        assert list(sums[cell].index) == list(EMOTIONS) and list(sums[cell].columns) == list(EMOTIONS)


def test_axis_column_names_lengthen_only_where_ambiguous():
    paths = ["model.audio.pooling", "model.classifier.pooling", "model.fusion.layers", "train.seed"]
    assert axis_column_names(paths, reserved=("seed",)) == {
        "model.audio.pooling": "audio.pooling", "model.classifier.pooling": "classifier.pooling",
        "model.fusion.layers": "layers", "train.seed": "train.seed"}
    assert axis_column_names(["seed"], reserved=("seed",)) == {"seed": "axis.seed"}


def test_errors_name_the_problem(mlflow_store):
    with pytest.raises(ReportError, match="no MLflow experiment named 'nope'"):
        load_study_runs("nope", mlflow_store.uri)
    with pytest.raises(ReportError, match=rf"run {mlflow_store.run_ids['bad-tags']}: tag 'fold' must be an integer"):
        load_study_runs("bad-tags", mlflow_store.uri)
    bad = load_study_runs("bad-confusion", mlflow_store.uri)
    with pytest.raises(ReportError, match=rf"run {mlflow_store.run_ids['bad-confusion']}: confusion_test.csv: rows"):
        load_confusions(bad, mlflow_store.uri)
