"""Per-cell statistics and paired significance tests over a study's units. Pure functions.

Every function takes the tidy unit frame of ``analysis.load.load_study_runs`` (or any frame with
the same columns) and uses only FINISHED units with a value for the metric. Cells keep the frame's
row order, which the loader makes the study's cell order.

Paired tests compare a cell with the reference cell over the (fold, seed) pairs both finished:
the same test actors and seed on both sides, so fold difficulty cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import FINISHED, ReportError, recall_metrics, study_emotions


def axis_columns(units: pd.DataFrame) -> list[str]:
    """The axis columns the loader recorded in ``attrs["axes"]``, in declared order."""
    return [c for c in units.attrs.get("axes", {}) if c in units.columns]


def cells_in_order(units: pd.DataFrame) -> list[str]:
    """Every cell of the frame once, in row order."""
    return list(dict.fromkeys(units["cell"]))


def finished(units: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """FINISHED units, and with a value for ``metric`` when one is given."""
    keep = units["status"] == FINISHED
    if metric is not None:
        if metric not in units:
            raise ReportError(f"no metric {metric!r} in the runs; known: {', '.join(c for c in units.columns if '/' in c)}")
        keep &= units[metric].notna()
    return units[keep]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std (ddof=1) and a t-distribution confidence interval with n - 1 df.

    Returns:
        ``{"n", "mean", "std", "ci_low", "ci_high"}``; std and the interval are NaN when n < 2.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def cell_summary(units: pd.DataFrame, metric: str, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per cell: n, mean, std, confidence interval of ``metric``; finished/expected unit counts.

    Args:
        units: tidy unit frame.
        metric: metric column, e.g. ``"test/uar"``.
        confidence: level of the t interval.

    Returns:
        One row per cell in frame order: ``cell``, the axis columns, ``finished`` (finished units),
        ``expected`` (distinct (fold, seed) pairs in the whole study), ``n``, ``mean``, ``std``,
        ``ci_low``, ``ci_high``.
    """
    axes = axis_columns(units)
    expected = len(units[["fold", "seed"]].drop_duplicates())
    done = finished(units)
    valid = finished(units, metric)
    cells = cells_in_order(units)
    rows = [{"cell": cell, "finished": int((done["cell"] == cell).sum()), "expected": expected,
             **mean_ci(valid.loc[valid["cell"] == cell, metric], confidence)} for cell in cells]
    out = pd.DataFrame(rows, columns=["cell", "finished", "expected", "n", "mean", "std", "ci_low", "ci_high"])
    # Axis values keep the frame's dtype (an object column with 16 and None must not become 16.0, NaN).
    first = units.drop_duplicates("cell").set_index("cell")
    for i, a in enumerate(axes):
        out.insert(1 + i, a, pd.Series([first.at[c, a] for c in cells], dtype=units[a].dtype))
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; NaN entries are left out of the family and stay NaN.

    With m valid p-values sorted ascending, p_(i) is adjusted to
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (1-based), which keeps the order.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="mergesort")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def paired_test(diff: Sequence[float]) -> dict:
    """Paired t-test and Wilcoxon signed-rank on the differences ``cell - reference``.

    Undefined cases give NaN with a note instead of a scipy warning or a misleading p = 0:
    fewer than 2 pairs, all differences zero, or constant differences (t-test only).

    Returns:
        ``{"n_pairs", "mean_diff", "t_stat", "p_t", "w_stat", "p_wilcoxon", "note"}``.
    """
    d = np.asarray(diff, dtype=float)
    out = {"n_pairs": len(d), "mean_diff": float(d.mean()) if len(d) else float("nan"),
           "t_stat": float("nan"), "p_t": float("nan"), "w_stat": float("nan"), "p_wilcoxon": float("nan"),
           "note": ""}
    if len(d) < 2:
        out["note"] = f"{len(d)} pair(s): tests need at least 2"
        return out
    if np.all(d == 0):
        out["note"] = "all differences zero"
        return out
    notes = []
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        notes.append("constant differences: t-test undefined")
    else:
        t = stats.ttest_rel(d, np.zeros_like(d))
        out["t_stat"], out["p_t"] = float(t.statistic), float(t.pvalue)
    w = stats.wilcoxon(d)
    out["w_stat"], out["p_wilcoxon"] = float(w.statistic), float(w.pvalue)
    out["note"] = "; ".join(notes)
    return out


def paired_comparisons(units: pd.DataFrame, metric: str, reference: str) -> pd.DataFrame:
    """Every cell against ``reference`` over matching finished (fold, seed) pairs, Holm within the study.

    Args:
        units: tidy unit frame.
        metric: metric column compared.
        reference: the reference cell.

    Returns:
        One row per cell (reference included, with NaN tests) in frame order: ``cell``,
        ``n_pairs``, ``mean_diff`` (cell - reference), ``t_stat``, ``p_t``, ``p_t_holm``,
        ``w_stat``, ``p_wilcoxon``, ``p_wilcoxon_holm``, ``note``.

    Raises:
        ReportError: ``reference`` is not a cell of the frame.
    """
    cells = cells_in_order(units)
    if reference not in cells:
        raise ReportError(f"reference cell {reference!r} is not in the study; cells: {', '.join(cells)}")
    valid = finished(units, metric)
    ref = valid[valid["cell"] == reference].set_index(["fold", "seed"])[metric]
    rows = []
    for cell in cells:
        if cell == reference:
            rows.append({"cell": cell, **paired_test([]), "note": "reference"})
            continue
        mine = valid[valid["cell"] == cell].set_index(["fold", "seed"])[metric]
        pairs = mine.to_frame("cell").join(ref.rename("ref"), how="inner").sort_index()
        rows.append({"cell": cell, **paired_test((pairs["cell"] - pairs["ref"]).to_numpy())})
    out = pd.DataFrame(rows)
    out["p_t_holm"] = holm(out["p_t"])
    out["p_wilcoxon_holm"] = holm(out["p_wilcoxon"])
    return out[["cell", "n_pairs", "mean_diff", "t_stat", "p_t", "p_t_holm", "w_stat", "p_wilcoxon",
                "p_wilcoxon_holm", "note"]]


def per_class_recall(units: pd.DataFrame) -> pd.DataFrame:
    """Mean test recall per emotion and cell over finished units (rows = cells, columns = the
    study's emotions, ``analysis.load.study_emotions``)."""
    labels = study_emotions(units)
    done = finished(units)
    table = done.groupby("cell", sort=False)[list(recall_metrics(labels))].mean()
    table.columns = list(labels)
    return table.reindex([c for c in cells_in_order(units) if c in table.index])


def row_normalise(counts: pd.DataFrame) -> pd.DataFrame:
    """Confusion counts -> each row divided by its total (a row without samples becomes NaN)."""
    totals = counts.sum(axis=1).replace(0, np.nan)
    return counts.div(totals, axis=0)
