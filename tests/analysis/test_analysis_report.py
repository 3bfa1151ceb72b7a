"""write_study_report on the temporary MLflow store: files, numbers against the runs.

Identical bytes across processes and run orders: test_report_determinism.py."""

import re

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import DECLARED, FOLDS, SEEDS, STUDY, UNFINISHED, unit_confusion, unit_uar

from analysis.load import ReportError
from analysis.report import write_study_report

COMMAND = "python runner.py report modality"


def _write(mlflow_store, out_dir):
    return write_study_report(STUDY, out_dir=out_dir, tracking_uri=mlflow_store.uri, reference="av",
                              command=COMMAND, cell_order=list(DECLARED), note="Synthetic data: test fixture.")


@pytest.fixture(scope="module")
def reports(mlflow_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "a"
    return out, _write(mlflow_store, out)


def test_every_file_written_and_listed(reports):
    a, first = reports
    names = {p.relative_to(a).as_posix() for p in first}
    want = {"table.csv", "table.md", "table.tex", "units.csv", "README.md", "recall.csv",
            *(f"{stem}.{ext}" for stem in ("test_uar", "test_war", "recall") for ext in ("png", "pdf")),
            *(f"confusion/{c}{suffix}" for c in DECLARED for suffix in ("_counts.csv", ".csv", ".png", ".pdf"))}
    assert names == want
    assert all(p.stat().st_size > 0 for p in first)
    readme = (a / "README.md").read_text()
    for name in names - {"README.md"}:
        assert f"[{name}]({name})" in readme
    assert "> **Synthetic data: test fixture.**" in readme
    assert f"```\n{COMMAND}\n```" in readme
    assert "MLflow experiment: `modality`" in readme and "Unit runs read: 19" in readme
    assert "FINISHED 17, RUNNING 1" in readme and "`abc1234` (17 units)" in readme
    assert (a / "table.md").read_text() in readme and "![test/uar](test_uar.png)" in readme


def test_table_csv_numbers_equal_the_runs(reports):
    table = pd.read_csv(reports[0] / "table.csv").set_index("cell")
    assert list(table.index) == list(DECLARED)
    for cell in DECLARED:
        values = [unit_uar(cell, f, s) for f in FOLDS for s in SEEDS if (cell, f, s) != UNFINISHED]
        assert table.loc[cell, "test_uar_mean"] == pytest.approx(np.mean(values), abs=1e-6)
        assert table.loc[cell, "test_uar_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        assert table.loc[cell, "test_war_mean"] == pytest.approx(np.mean(values) + 0.02, abs=1e-6)
        assert table.loc[cell, "finished"] == len(values) and table.loc[cell, "expected"] == 6
    assert table["reference"].tolist() == [False, False, True]
    # Paired differences against av over the (fold, seed) pairs both finished.
    pairs = [(f, s) for f in FOLDS for s in SEEDS if ("visual", f, s) != UNFINISHED]
    diff = np.mean([unit_uar("visual", f, s) - unit_uar("av", f, s) for f, s in pairs])
    assert table.loc["visual", "test_uar_diff"] == pytest.approx(diff, abs=1e-6)
    assert table.loc["visual", "params_m"] == pytest.approx(2.0) and table.loc["av", "gflops"] == pytest.approx(4.5)
    md = (reports[0] / "table.md").read_text()
    assert re.search(r"^\| visual \| 5/6 \|", md, re.M) and re.search(r"^\| av \(ref\) \| 6/6 \|", md, re.M)


def test_confusion_csvs(reports):
    counts = pd.read_csv(reports[0] / "confusion" / "visual_counts.csv", index_col=0)
    want = sum(unit_confusion(f, s) for f in FOLDS for s in SEEDS if ("visual", f, s) != UNFINISHED)
    assert counts.to_numpy().tolist() == want.tolist()
    norm = pd.read_csv(reports[0] / "confusion" / "visual.csv", index_col=0)
    assert norm.sum(axis=1).to_numpy() == pytest.approx(np.ones(8), abs=1e-3)
    assert norm.loc["neutral", "neutral"] == pytest.approx(want[0, 0] / want[0].sum(), abs=1e-4)


def test_errors(mlflow_store, tmp_path):
    with pytest.raises(ReportError, match="'all-failed': no finished unit .*FAILED 1"):
        write_study_report("all-failed", tracking_uri=mlflow_store.uri, out_dir=tmp_path / "x")
    with pytest.raises(ReportError, match="reference cell 'both'"):
        write_study_report(STUDY, tracking_uri=mlflow_store.uri, out_dir=tmp_path / "y", reference="both")
    with pytest.raises(ReportError, match="no metric 'test/auc'"):
        write_study_report(STUDY, tracking_uri=mlflow_store.uri, out_dir=tmp_path / "z", metric="test/auc")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
