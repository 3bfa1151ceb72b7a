"""The search's pruners and failures, on real Optuna and MLflow stores, with scripted training.

``median``: each epoch reports the running mean over the folds done so far plus this epoch's
validation UAR, at step ``fold_position * max_epochs + epoch``; Optuna's MedianPruner (3 startup
trials, 1 warm-up step) stops a trial whose best report is below the finished trials' median at
that step. ``wilcoxon``: each fold reports its best validation UAR at step = fold index; Optuna's
WilcoxonPruner (p < 0.1) stops a trial that is worse than the best trial fold by fold.

The stand-in training plays a script per trial, in the order trials start (one at a time).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from studies.spec import validate  # noqa: E402
from studies.tune import run_search  # noqa: E402

EPOCHS = 3


def ablations(pruner: str, folds: list[int]):
    return validate({
        "defaults": {"preset": "tiny"},
        "searches": {"toy": {"description": "lr only",
                             "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
                             "trials": 5, "sampler": "random", "pruner": pruner, "folds": folds}},
    })


class Script:
    """Training stand-in: trial i gets ``plays[i][fold]``, a list of per-epoch validation UARs
    (or an exception to raise); records every (trial, fold, epoch) it reported."""

    def __init__(self, plays: list[dict[int, list[float] | Exception]], first_fold: int):
        self.plays, self.first_fold = plays, first_fold
        self.trial = -1
        self.epochs: list[tuple[int, int, int]] = []

    def __call__(self, cfg, *, fold, callback, evaluate_test, **_):
        assert evaluate_test is False
        if fold == self.first_fold:  # every trial starts on the search's first fold
            self.trial += 1
        play = self.plays[self.trial][fold]
        if isinstance(play, Exception):
            raise play
        for epoch, val in enumerate(play):
            self.epochs.append((self.trial, fold, epoch))
            callback.on_epoch_end(epoch, {"train/loss": 1.0, "val/uar": val})
        return fake_worker.FakeResult(metrics={"val/uar_best": max(play), "best_epoch": play.index(max(play))})


@pytest.fixture()
def search(tmp_path):
    """Runs search ``toy`` with a script; the one place that builds run_search's options."""
    from studies.options import RunOptions

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(spec, script: Script, trials: int):
        opts = RunOptions(data_root=tmp_path, storage=str(tmp_path / "search.journal"), tracking_uri=tracking,
                       trials=trials, max_epochs=EPOCHS)
        return run_search("toy", spec, opts, run_fn=script, echo=lambda s: None)

    run.tracking = tracking
    return run


def mlflow_runs(tracking: str, trial) -> tuple[str, dict[str, str]]:
    """The trial's MLflow run status and its fold runs' statuses by fold tag."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    parent = client.get_run(trial.user_attrs["mlflow_run_id"])
    folds = client.search_runs([parent.info.experiment_id], run_view_type=3,
                               filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert all(r.data.tags["optuna_trial"] == str(trial.number) for r in folds)
    return parent.info.status, {r.data.tags["fold"]: r.info.status for r in folds}


def running_means(play: dict[int, list[float]], folds: list[int]) -> dict[int, float]:
    """The median pruner's reports for a trial that trains every fold: step -> value."""
    out, done = {}, []
    for position, fold in enumerate(folds):
        for epoch, val in enumerate(play[fold]):
            out[position * EPOCHS + epoch] = statistics.fmean(done + [val])
        done.append(max(play[fold]))
    return out


def shifted(offset: float) -> dict[int, list[float]]:
    return {0: [0.50 + offset, 0.60 + offset, 0.70 + offset], 1: [0.40 + offset, 0.50 + offset, 0.60 + offset]}


def test_median_pruner_stops_a_trial_below_the_median_at_its_second_epoch(search):
    folds = [0, 1]
    bad = {0: [0.30, 0.35, 0.90], 1: [0.9, 0.9, 0.9]}  # its last epoch would have been the best
    plays = [shifted(0.0), shifted(0.02), shifted(-0.20), bad, shifted(0.05)]
    script = Script(plays, first_fold=0)
    study = search(ablations("median", folds), script, trials=5)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]

    # The third trial is the worst so far but is kept: pruning starts after 3 finished trials.
    for t, play in zip(trials[:3] + trials[4:], plays[:3] + plays[4:]):
        assert t.intermediate_values == pytest.approx(running_means(play, folds))
        assert t.value == pytest.approx(statistics.fmean(max(play[f]) for f in folds))
    # Step 0 is the warm-up; at step 1 its best, 0.35, is below the median 0.60: pruned there,
    # inside its first fold, before its third epoch and its second fold.
    assert trials[3].intermediate_values == pytest.approx({0: 0.30, 1: 0.35})
    assert [(f, e) for i, f, e in script.epochs if i == 3] == [(0, 0), (0, 1)]
    assert len(script.epochs) == 4 * 2 * EPOCHS + 2

    assert mlflow_runs(search.tracking, trials[3]) == ("KILLED", {"0": "KILLED"})
    assert mlflow_runs(search.tracking, trials[4]) == ("FINISHED", {"0": "FINISHED", "1": "FINISHED"})


def test_median_reports_continue_across_folds_as_a_running_mean(search):
    """Fold positions, not fold indices, lay out the steps: folds [3, 5] use steps 0..5."""
    folds = [3, 5]
    plays = [{3: [0.2, 0.4, 0.3], 5: [0.6, 0.5, 0.7]}]
    study = search(ablations("median", folds), Script(plays, first_fold=3), trials=1)
    (t,) = study.trials
    assert t.intermediate_values == pytest.approx({0: 0.2, 1: 0.4, 2: 0.3, 3: 0.5, 4: 0.45, 5: 0.55})
    assert t.value == pytest.approx(0.55)


def test_wilcoxon_pruner_compares_folds_with_the_best_trial(search):
    folds = [0, 1, 2, 3, 4, 5]
    best = {f: [0.5, 0.6 + 0.01 * f] for f in folds}
    worse = {f: [0.4, 0.5 + 0.01 * f] for f in folds}  # 0.1 below the best on every fold
    mixed = {f: [0.5, 0.6 + 0.01 * f + (0.05 if f % 2 else -0.05)] for f in folds}
    plays = [best, worse, mixed]
    script = Script(plays, first_fold=0)
    study = search(ablations("wilcoxon", folds), script, trials=3)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]

    assert trials[0].intermediate_values == pytest.approx({f: 0.6 + 0.01 * f for f in folds})
    # Four folds all worse: one-sided signed-rank p = 1/2**4 = 0.0625 < 0.1 (three: 0.125, kept).
    assert trials[1].intermediate_values == pytest.approx({f: 0.5 + 0.01 * f for f in range(4)})
    assert sorted({f for i, f, _ in script.epochs if i == 1}) == [0, 1, 2, 3]
    assert trials[2].value == pytest.approx(statistics.fmean(max(mixed[f]) for f in folds))
    assert mlflow_runs(search.tracking, trials[1]) == ("KILLED", {str(f): "FINISHED" for f in range(4)})


def test_a_failing_trial_is_failed_and_the_search_goes_on(search):
    folds = [0, 1]
    crash = {0: [0.5, 0.6, 0.7], 1: RuntimeError("planted failure in fold 1")}
    plays = [shifted(0.0), crash, shifted(0.01), shifted(0.02)]
    script = Script(plays, first_fold=0)
    spec = ablations("none", folds)
    study = search(spec, script, trials=3)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert mlflow_runs(search.tracking, trials[1]) == ("FAILED", {"0": "FINISHED", "1": "FAILED"})
    assert study.best_trial.number == 2

    # A failed trial does not count as one of the trials asked for: a rerun adds the missing one.
    again = search(spec, script, trials=3)
    states = [t.state for t in sorted(again.trials, key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert script.trial == 3
