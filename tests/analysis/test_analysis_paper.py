"""Paper tables from the temporary MLflow store, the efficiency table, and spec validation."""

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import FOLDS, SEEDS, STUDY, unit_uar

from analysis.load import ReportError
from analysis.paper import efficiency_table, parse_paper_spec, write_paper
from fer.config import ConfigError

SPEC = {"modality": {"study": STUDY, "metrics": ["test/uar"], "caption": "Contribution of each modality",
                     "reference": "av", "cell_order": ["audio", "visual", "av"]}}
ROWS = [{"name": "tiny", "params": 1.5e6, "params_trainable": 1.0e6, "gflops": 0.5, "train_mem_mb": 512.0},
        {"name": "full", "params": 9.5e8, "gflops": 120.25, "train_mem_mb": 20480.0}]


def test_write_paper(mlflow_store, tmp_path):
    files = write_paper(SPEC, tracking_uri=mlflow_store.uri, out_dir=tmp_path, efficiency=pd.DataFrame(ROWS),
                        command="python runner.py paper")
    assert [p.name for p in files] == ["modality.csv", "modality.md", "modality.tex", "efficiency.md",
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


def test_spec_and_rows_are_validated_with_key_paths():
    with pytest.raises(ConfigError) as err:
        parse_paper_spec({"t1": {"study": "modality", "metrics": [], "colour": "red"}})
    paths = [p for p, _ in err.value.errors]
    assert paths == ["paper.t1.metrics", "paper.t1.caption", "paper.t1.colour"]
    with pytest.raises(ConfigError, match="paper: expected a non-empty mapping"):
        parse_paper_spec([])
    with pytest.raises(ConfigError) as err:
        efficiency_table([{"name": "a", "params": -1, "gflops": 1.0}, {"params": 1, "gflops": 1}])
    assert [p for p, _ in err.value.errors] == ["efficiency.0.params", "efficiency.1.name"]
    assert "clips_per_s" not in efficiency_table(ROWS)  # nobody measured it: no column


def test_unfinished_study_is_an_error_before_anything_is_written(mlflow_store, tmp_path):
    spec = {**SPEC, "broken": {"study": "all-failed", "caption": "x"}}
    with pytest.raises(ReportError, match="paper table 'broken': study 'all-failed' has no finished unit"):
        write_paper(spec, tracking_uri=mlflow_store.uri, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
