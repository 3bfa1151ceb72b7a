"""The results table: numbers, bold best, significance marks, fixed formatting.

Identical bytes across processes: test_report_determinism.py."""

import re

import numpy as np
import pytest
from scipy import stats as sps

from analysis.tables import render_csv, render_latex, render_markdown, study_table, table_caption, tex_escape

REF = [0.50, 0.55, 0.60, 0.52, 0.57, 0.54]
BETTER = [r + d for r, d in zip(REF, [0.08, 0.10, 0.09, 0.11, 0.10, 0.07])]
SAME = [r + d for r, d in zip(REF, [0.02, -0.03, 0.01, -0.01, 0.03, -0.02])]
METRICS = ["test/uar", "test/war"]


@pytest.fixture
def units(make_units):
    rows = []
    for cell, values in (("no_audio", REF), ("better", BETTER), ("same", SAME)):
        for fold, v in enumerate(values):
            status = "FAILED" if (cell == "same" and fold == 5) else "FINISHED"
            rows.append((cell, fold, 0, status, {"test/uar": v, "test/war": v + 0.01}, {"fusion": cell}))
    return make_units(rows, axes={"fusion": "model.fusion.kind"})


def test_table_numbers(units):
    table = study_table(units, METRICS, "no_audio").set_index("cell")
    assert table.loc["better", "test_uar_mean"] == pytest.approx(np.mean(BETTER))
    assert table.loc["same", "test_uar_n"] == 5 and table.loc["same", "finished"] == 5
    assert table.loc["same", "expected"] == 6
    assert table.loc["better", "test_uar_diff"] == pytest.approx(np.mean(np.subtract(BETTER, REF)))
    p_better = sps.ttest_rel(BETTER, REF).pvalue
    p_same = sps.ttest_rel(SAME[:5], REF[:5]).pvalue
    assert p_better < p_same
    assert table.loc["better", "test_uar_p_t_holm"] == pytest.approx(2 * p_better)
    assert table.loc["same", "test_uar_p_t_holm"] == pytest.approx(max(2 * p_better, p_same))
    assert table["test_uar_significant"].tolist() == [False, True, False]
    assert table.loc["better", "params_m"] == pytest.approx(1.5) and table.loc["better", "gflops"] == pytest.approx(2.25)
    assert table["reference"].tolist() == [True, False, False]


def test_markdown_bold_best_dagger_and_fixed_decimals(units):
    table = study_table(units, METRICS, "no_audio")
    caption = table_caption(units, METRICS, "no_audio", title="Study toy")
    md = render_markdown(table, METRICS, caption)
    lines = md.splitlines()
    assert lines[0] == ("| fusion | Finished | UAR (%) | WAR (%) | Params (M) | Trainable (M) | GFLOPs |")
    mean, std = 100 * np.mean(BETTER), 100 * np.std(BETTER, ddof=1)
    assert lines[3] == (f"| better | 6/6 | **{mean:.1f} ± {std:.1f}**† | **{mean + 1:.1f} ± {std:.1f}**† "
                        "| 1.50 | 1.00 | 2.25 |")
    assert lines[2].startswith("| no_audio (ref) | 6/6 | ")
    assert lines[4].startswith("| same | 5/6 | ") and "**" not in lines[4] and "†" not in lines[4]
    assert "protocol ravdess-6fold, folds 0, 1, 2, 3, 4, 5, seeds 0" in caption
    assert "reference cell no_audio" in caption and "Holm" in caption
    assert re.search(r"\*\*Table\.\*\* Study toy\.", md)


def test_latex_is_booktabs_and_escaped(units):
    table = study_table(units, METRICS, "no_audio")
    tex = render_latex(table, METRICS, "a_b 50% & more", "tab:toy")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\caption{a\\_b 50\\% \\& more}" in tex and "\\label{tab:toy}" in tex
    assert "no\\_audio (ref) & 6/6" in tex
    assert "\\textbf{" in tex and "$^{\\dagger}$" in tex
    assert "\\begin{tabular}{lrrrrrr}" in tex
    assert tex_escape("x^2 ~ {y}") == "x\\textasciicircum{}2 \\textasciitilde{} \\{y\\}"


def test_csv_header_and_fixed_decimals(units):
    csv = render_csv(study_table(units, METRICS, "no_audio"))
    header = csv.splitlines()[0].split(",")
    assert header[:5] == ["cell", "fusion", "reference", "finished", "expected"]
    assert "test_uar_p_wilcoxon_holm" in header
    assert csv.splitlines()[2].split(",")[header.index("test_uar_mean")] == f"{np.mean(BETTER):.6f}"