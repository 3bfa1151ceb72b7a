"""Statistics against scipy on a fixture frame with known values; Holm on hand-computed examples."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.load import ReportError
from analysis.stats import cell_summary, holm, paired_comparisons, paired_test, per_class_recall, row_normalise
from fer.labels import EMOTIONS

REF = [0.50, 0.55, 0.60, 0.52, 0.57, 0.54]
BETTER = [r + d for r, d in zip(REF, [0.08, 0.10, 0.09, 0.11, 0.10, 0.07])]
SAME = [r + d for r, d in zip(REF, [0.02, -0.03, 0.01, -0.01, 0.03, -0.02])]


@pytest.fixture
def units(make_units):
    rows = []
    for cell, values in (("ref", REF), ("better", BETTER), ("same", SAME)):
        for fold, v in enumerate(values):
            status = "RUNNING" if (cell == "same" and fold == 5) else "FINISHED"
            rows.append((cell, fold, 0, status, {"test/uar": v if status == "FINISHED" else np.nan},
                         {"modality": cell}))
    # A failed unit with a wild value must not enter any statistic.
    rows.append(("better", 6, 0, "FAILED", {"test/uar": 0.99}, {"modality": "better"}))
    return make_units(rows, axes={"modality": "model.modality"})


def test_cell_summary_equals_numpy_and_scipy(units):
    table = cell_summary(units, "test/uar").set_index("cell")
    for cell, values in (("ref", REF), ("better", BETTER), ("same", SAME[:5])):
        row = table.loc[cell]
        n = len(values)
        low, high = sps.t.interval(0.95, n - 1, loc=np.mean(values), scale=sps.sem(values))
        assert row["n"] == n
        assert row["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert row["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert list(table.index) == ["ref", "better", "same"]  # frame order kept
    assert table.loc["same", "finished"] == 5 and table.loc["better", "finished"] == 6
    assert (table["expected"] == 7).all()  # 7 distinct (fold, seed) pairs, the failed fold 6 included


def test_paired_comparisons_equal_scipy_with_holm(units):
    out = paired_comparisons(units, "test/uar", "ref").set_index("cell")
    t_better = sps.ttest_rel(BETTER, REF)
    t_same = sps.ttest_rel(SAME[:5], REF[:5])  # fold 5 of "same" unfinished: 5 pairs
    w_better = sps.wilcoxon(np.subtract(BETTER, REF))
    w_same = sps.wilcoxon(np.subtract(SAME[:5], REF[:5]))
    assert out.loc["better", "n_pairs"] == 6 and out.loc["same", "n_pairs"] == 5
    assert out.loc["better", "mean_diff"] == pytest.approx(np.mean(np.subtract(BETTER, REF)), abs=1e-12)
    assert out.loc["better", "p_t"] == pytest.approx(t_better.pvalue, rel=1e-10)
    assert out.loc["better", "t_stat"] == pytest.approx(t_better.statistic, rel=1e-10)
    assert out.loc["same", "p_t"] == pytest.approx(t_same.pvalue, rel=1e-10)
    assert out.loc["better", "p_wilcoxon"] == pytest.approx(w_better.pvalue, rel=1e-10)
    assert out.loc["same", "p_wilcoxon"] == pytest.approx(w_same.pvalue, rel=1e-10)
    # Holm over the two comparisons, by hand: smaller p doubled, larger one kept (but not below it).
    lo, hi = sorted([t_better.pvalue, t_same.pvalue])
    expected = {t_better.pvalue: None, t_same.pvalue: None}
    expected[lo] = min(1.0, 2 * lo)
    expected[hi] = max(min(1.0, 2 * lo), min(1.0, hi))
    assert out.loc["better", "p_t_holm"] == pytest.approx(expected[t_better.pvalue], rel=1e-10)
    assert out.loc["same", "p_t_holm"] == pytest.approx(expected[t_same.pvalue], rel=1e-10)
    assert math.isnan(out.loc["ref", "p_t"]) and out.loc["ref", "note"] == "reference"


def test_holm_hand_example():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> raised to 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, np.nan, 0.04])  # NaN outside the family: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]).size == 0


@pytest.mark.parametrize("diff, note", [([0.1], "1 pair(s): tests need at least 2"), ([], "0 pair(s): tests need at least 2"),
                                        ([0.0, 0.0, 0.0], "all differences zero")])
def test_paired_test_undefined_cases_are_nan_with_note(diff, note):
    out = paired_test(diff)
    assert math.isnan(out["p_t"]) and math.isnan(out["p_wilcoxon"]) and out["note"] == note


def test_paired_test_constant_differences_skip_t_only():
    out = paired_test([0.05, 0.05, 0.05, 0.05])
    assert math.isnan(out["p_t"]) and "constant" in out["note"]
    assert out["p_wilcoxon"] == pytest.approx(sps.wilcoxon([0.05] * 4).pvalue)
    assert out["mean_diff"] == pytest.approx(0.05)


def test_unknown_reference_and_metric_are_clear_errors(units):
    with pytest.raises(ReportError, match="reference cell 'nope'.*cells: ref, better, same"):
        paired_comparisons(units, "test/uar", "nope")
    with pytest.raises(ReportError, match="no metric 'test/auc'"):
        cell_summary(units, "test/auc")


def test_per_class_recall_and_row_normalise(make_units):
    rec = {f"test/recall/{e}": 0.1 * k for k, e in enumerate(EMOTIONS)}
    rec2 = {f"test/recall/{e}": 0.1 * k + 0.2 for k, e in enumerate(EMOTIONS)}
    units = make_units([("b", 0, 0, "FINISHED", rec, {}), ("a", 0, 0, "FINISHED", rec, {}),
                        ("a", 1, 0, "FINISHED", rec2, {}), ("a", 2, 0, "FAILED", {**rec, "test/recall/calm": 9.0}, {})])
    table = per_class_recall(units)
    assert list(table.index) == ["b", "a"] and list(table.columns) == list(EMOTIONS)
    assert table.loc["a", "happy"] == pytest.approx(0.3) and table.loc["b", "calm"] == pytest.approx(0.1)
    counts = pd.DataFrame([[3, 1], [0, 0]], index=["x", "y"], columns=["x", "y"])
    norm = row_normalise(counts)
    assert norm.loc["x"].tolist() == [0.75, 0.25] and norm.loc["y"].isna().all()
