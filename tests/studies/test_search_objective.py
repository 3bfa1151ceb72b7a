"""A search names its objective in the ledger, so the Optuna dashboard shows "mean val UAR"."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from runner import cli  # noqa: E402

SEARCH = {"defaults": {"preset": "tiny"},
          "searches": {"toy": {"description": "lr", "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
                               "trials": 1, "sampler": "random", "pruner": "none", "folds": [0]}}}


def test_the_search_objective_is_named_in_the_ledger(tmp_path, monkeypatch):
    import optuna

    from studies.ledger import open_storage

    module = types.ModuleType("fer.train.run")
    module.run_unit = lambda cfg, **kw: fake_worker.FakeResult(metrics={"val/uar_best": 0.5})
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    fake_worker.named_clips(tmp_path / "ravdess")
    (tmp_path / "ablations.yaml").write_text(yaml.safe_dump(SEARCH))
    storage = tmp_path / "ledger.journal"
    result = CliRunner().invoke(cli, ["--ablations", str(tmp_path / "ablations.yaml"), "tune", "toy",
                                      "--data-root", str(tmp_path / "ravdess"), "--storage", str(storage),
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="search:toy", storage=open_storage(str(storage)))
    assert study.metric_names == ["mean val UAR"]
    assert [t.value for t in study.trials] == [0.5]
