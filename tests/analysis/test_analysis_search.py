"""Search report from an Optuna journal file and from an RDB URL."""

import math

import pytest
import yaml

from analysis.load import ReportError
from analysis.search import write_search_report


def _search(storage, name="search:toy", trials=6):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    # Known optimum: value = 1 - (log10(lr) + 3)^2 / 10 + layers / 100
    study.set_metric_names(["mean val UAR"])  # as tune names it: trials.csv keeps its `value` column
    study.optimize(lambda t: 1 - (math.log10(t.suggest_float("train.lr", 1e-5, 1e-1, log=True)) + 3) ** 2 / 10
                   + t.suggest_int("model.fusion.layers", 0, 6) / 100, n_trials=trials)
    return study


def test_journal_report(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "ledger.journal"
    study = _search(JournalStorage(JournalFileBackend(str(journal))))
    files = write_search_report(journal, "search:toy", out_dir=tmp_path / "rep", command="python runner.py report toy")
    names = [p.name for p in files]
    assert names == ["history.png", "history.pdf", "importances.png", "importances.pdf", "parallel.png",
                     "parallel.pdf", "trials.csv", "best_trial.yaml", "README.md"]
    assert all(p.stat().st_size > 0 for p in files)
    best = yaml.safe_load((tmp_path / "rep" / "best_trial.yaml").read_text())
    assert best["trial"] == study.best_trial.number and best["params"] == study.best_params
    assert best["value"] == pytest.approx(study.best_value)
    assert best["value"] == pytest.approx(max(t.value for t in study.trials))
    trials = (tmp_path / "rep" / "trials.csv").read_text().splitlines()
    assert len(trials) == 7 and trials[0].startswith("number,state,value,params_")
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "Trials: 6 (COMPLETE 6)" in readme and f"best trial {study.best_trial.number}" in readme


def test_rdb_report_and_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _search(url, trials=1)
    files = write_search_report(url, "search:toy", out_dir=tmp_path / "rep")
    readme = (tmp_path / "rep" / "README.md").read_text()
    # One trial: importances cannot be computed, and the README says why instead of skipping silently.
    assert "importances.png" not in [p.name for p in files] and "`importances` not drawn" in readme
    with pytest.raises(ReportError, match="no Optuna study 'search:nope'.*stored: search:toy"):
        write_search_report(url, "search:nope", out_dir=tmp_path / "x")
    with pytest.raises(ReportError, match="journal .*missing.journal' does not exist"):
        write_search_report(tmp_path / "missing.journal", "search:toy", out_dir=tmp_path / "x")


def test_no_completed_trial_is_an_error(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="search:empty", storage=url)
    study.ask()  # a RUNNING trial only
    with pytest.raises(ReportError, match="no completed trial among 1"):
        write_search_report(url, "search:empty", out_dir=tmp_path / "x")
