"""Paper tables from the temporary MLflow store, the efficiency table and its measured rows.

The ``paper:`` section is validated by ``studies.spec`` (tests/studies/test_spec_paper.py); here
the tables come as the plain data it hands out."""

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import FOLDS, SEEDS, STUDY, unit_uar

from analysis.load import ReportError
from analysis.paper import efficiency_table, measure_efficiency, write_paper
from fer.config import ConfigError, resolve_config

SPEC = {"modality": {"study": STUDY, "metrics": ["test/uar"], "caption": "Contribution of each modality",
                     "reference": "av", "cell_order": ["audio", "visual", "av"]}}
ROWS = [{"name": "tiny", "params": 1.5e6, "params_trainable": 1.0e6, "gflops": 0.5, "train_mem_mb": 512.0},
        {"name": "full", "params": 9.5e8, "gflops": 120.25, "train_mem_mb": 20480.0}]


def test_write_paper(mlflow_store, tmp_path):
    paper = write_paper(SPEC, tracking_uri=mlflow_store.uri, out_dir=tmp_path, efficiency=pd.DataFrame(ROWS),
                        command="python runner.py paper")
    assert paper.missing == {}
    assert [p.name for p in paper.files] == ["modality.csv", "modality.md", "modality.tex", "efficiency.md",
                                       "efficiency.tex", "efficiency.csv", "README.md"]
    table = pd.read_csv(tmp_path / "modality.csv").set_index("cell")
    values = [unit_uar("audio", f, s) for f in FOLDS for s in SEEDS]
    assert table.loc["audio", "test_uar_mean"] == pytest.approx(np.mean(values), abs=1e-6)
    assert "test_war_mean" not in table  # only the declared metrics
    md = (tmp_path / "modality.md").read_text()
    assert "**Table.** Contribution of each modality. UAR on RAVDESS (speech), protocol ravdess-6fold" in md
    assert md.splitlines()[4].startswith("| av (ref) | 6/6 |")
    assert "\\label{tab:modality}" in (tmp_path / "modality.tex").read_text()
    eff = (tmp_path / "efficiency.md").read_text().splitlines()
    assert eff[0] == "| Configuration | Params (M) | Trainable (M) | GFLOPs | Train memory (GiB) |"
    assert eff[2] == "| tiny | 1.50 | 1.00 | 0.50 | 0.50 |"
    assert eff[3] == "| full | 950.00 | n/a | 120.25 | 20.00 |"
    readme = (tmp_path / "README.md").read_text()
    assert "study `modality`" in readme and f"{18 - 1}/18 units finished" in readme


def test_efficiency_rows_are_validated_with_key_paths():
    with pytest.raises(ConfigError) as err:
        efficiency_table([{"name": "a", "params": -1, "gflops": 1.0}, {"params": 1, "gflops": 1}])
    assert [p for p, _ in err.value.errors] == ["efficiency.0.params", "efficiency.1.name"]
    assert "clips_per_s" not in efficiency_table(ROWS)  # nobody measured it: no column


def test_efficiency_is_measured_at_each_configs_own_batch_and_precision(monkeypatch):
    import fer.models.profile

    calls = []

    def profile_model(cfg, *, batch, precision):
        calls.append((batch, precision))
        return {"total": {"params_total": 10 * batch, "params_trainable": batch, "gflops_per_clip": 0.5,
                          "train_mem_estimate_mb": 64.0 if precision == "no" else 32.0}}

    monkeypatch.setattr(fer.models.profile, "profile_model", profile_model)
    configs = {"tiny": resolve_config("tiny"),  # trains in fp32 ("no")
               "tiny-bf16": resolve_config("tiny", {"train.precision": "bf16", "train.batch_size": 4})}
    rows = measure_efficiency(configs)
    assert calls == [(configs["tiny"].train.batch_size, "no"), (4, "bf16")]
    assert rows[1] == {"name": "tiny-bf16", "params": 40, "params_trainable": 4, "gflops": 0.5, "train_mem_mb": 32.0}
    assert [r["train_mem_mb"] for r in rows] == [64.0, 32.0]


def test_tables_of_studies_without_finished_units_are_listed_and_the_others_written(mlflow_store, tmp_path):
    spec = {**SPEC, "broken": {"study": "all-failed", "metrics": ["test/uar"], "caption": "x"},
            "later": {"study": "not-run-yet", "metrics": ["test/uar"], "caption": "y"}}
    paper = write_paper(spec, tracking_uri=mlflow_store.uri, out_dir=tmp_path / "out")
    assert [p.name for p in paper.files] == ["modality.csv", "modality.md", "modality.tex", "README.md"]
    assert paper.missing == {
        "broken": "study 'all-failed' has no finished unit (1 unit runs, none FINISHED)",
        "later": f"no MLflow experiment named 'not-run-yet' in {mlflow_store.uri}"}
    assert paper.commands == {"broken": "python runner.py study all-failed --data-root DIR",
                              "later": "python runner.py study not-run-yet --data-root DIR"}
    readme = (tmp_path / "out" / "README.md").read_text()
    assert ("- `later` (study `not-run-yet`): no MLflow experiment named 'not-run-yet' in "
            f"{mlflow_store.uri}. Run: `python runner.py study not-run-yet --data-root DIR`") in readme
    assert "`broken` (study `all-failed`)" in readme and "broken.csv" not in readme


def test_a_bad_metric_of_a_finished_study_is_an_error_before_anything_is_written(mlflow_store, tmp_path):
    spec = {**SPEC, "wrong": {"study": STUDY, "metrics": ["test/nope"], "caption": "x"}}
    with pytest.raises(ReportError):
        write_paper(spec, tracking_uri=mlflow_store.uri, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
