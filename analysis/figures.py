"""Study figures, chosen by the axis type. Pure functions: frame in, matplotlib Figure out.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so they need no
display, leave no global state and are saved by ``analysis.files.save_figure``.

- numeric axis (fusion depth, ROI k, conv share): mean line with 95% CI error bars over the axis
  values, one line per combination of the other axes, the fold-seed units as dots;
- categorical axes only: points with 95% CI error bars over the first axis, one series per
  combination of the other axes, units as dots;
- confusion matrix of a cell (row-normalised) and a per-class recall heatmap across cells.

A CREMA-D study's metric figures also draw the raters' majority vote per modality as a dashed
horizontal line (``analysis.human``).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.human import HUMAN
from analysis.stats import axis_columns, cell_summary, finished, row_normalise
from analysis.tables import axis_text, is_percent, metric_label

CI_NOTE = "mean with 95% CI (t, n-1 df); dots: fold-seed units"


def is_numeric_axis(values: pd.Series) -> bool:
    """An axis is numeric when every value is a real number (bools excluded) and there are >= 2.

    A missing value (e.g. ROI ``k: null`` = all patches) makes the axis categorical, so that cell
    is drawn as a labelled point instead of vanishing from a line.
    """
    if values.isna().any():
        return False
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values)
    return numeric and values.nunique() >= 2


def _jitter(k: int, width: float) -> np.ndarray:
    """Deterministic horizontal offsets for k dots (no random jitter: figures must reproduce)."""
    return np.zeros(1) if k == 1 else np.linspace(-width, width, k)


def _group_label(row: pd.Series, others: list[str]) -> str:
    return ", ".join(f"{a}={axis_text(row[a])}" for a in others) or None


def _draw_lines(ax, summary: pd.DataFrame, valid: pd.DataFrame, metric: str, x_axis: str, others: list[str],
                half: pd.Series, scale: float) -> None:
    """One line over the numeric ``x_axis`` per combination of the ``others`` axes."""
    span = float(np.ptp(summary[x_axis].astype(float))) or 1.0
    groups = summary.groupby([summary[a].astype(str) for a in others], sort=False) if others else [(None, summary)]
    for k, (_, group) in enumerate(groups):
        group = group.sort_values(x_axis, key=lambda s: s.astype(float))
        color = f"C{k % 10}"
        ax.errorbar(group[x_axis].astype(float), group["mean"] * scale, yerr=half[group.index],
                    color=color, marker="o", capsize=3, label=_group_label(group.iloc[0], others))
        for _, row in group.iterrows():
            dots = valid[valid["cell"] == row["cell"]][metric] * scale
            ax.scatter(float(row[x_axis]) + _jitter(len(dots), 0.01 * span), dots, color=color,
                       alpha=0.4, s=14, zorder=3)
    ax.set_xlabel(x_axis)
    ax.set_xticks(sorted(summary[x_axis].astype(float).unique()))
    if others:
        ax.legend(fontsize="small")


def _draw_points(ax, summary: pd.DataFrame, valid: pd.DataFrame, metric: str, axes: list[str],
                 half: pd.Series, scale: float, reference: str | None) -> None:
    """Points over the first axis's values (study order), one dodged series per combination of the
    other axes, the units as small dots beside each point."""
    x_axis, others = (axes[0], axes[1:]) if axes else ("cell", [])
    shown = {a: summary[a].map(axis_text) for a in (x_axis, *others)}
    x_values = list(dict.fromkeys(shown[x_axis]))
    groups = list(summary.groupby([shown[a] for a in others], sort=False)) if others else [(None, summary)]
    width = 0.8 / len(groups)
    for k, (_, group) in enumerate(groups):
        color = f"C{k % 10}"
        offset = (k - (len(groups) - 1) / 2) * width
        xs = np.array([x_values.index(v) for v in shown[x_axis][group.index]]) + offset
        for x, (_, row) in zip(xs, group.iterrows()):
            dots = valid[valid["cell"] == row["cell"]][metric] * scale
            ax.scatter(x + _jitter(len(dots), 0.25 * width), dots, color=color, alpha=0.35, s=12, zorder=2)
        ax.errorbar(xs, group["mean"] * scale, yerr=half[group.index], fmt="o", color=color, capsize=3,
                    markersize=6, zorder=3, label=_group_label(group.iloc[0], others))
        is_ref = (group["cell"] == reference).to_numpy()
        if is_ref.any():  # a black ring marks the reference cell
            ax.scatter(xs[is_ref], group["mean"][is_ref] * scale, s=160, facecolors="none", edgecolors="black",
                       linewidths=1.2, zorder=4, label="reference" if others else None)
    ref_x = shown[x_axis][summary["cell"] == reference].tolist()
    labels = [f"{v} (ref)" if not others and v in ref_x else v for v in x_values]
    rotate = len(x_values) > 4 or max(len(v) for v in labels) > 12
    ax.set_xticks(range(len(x_values)), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlabel(x_axis)
    ax.set_xlim(-0.6, len(x_values) - 0.4)
    if others:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _draw_human(ax, human: dict[str, float], scale: float) -> None:
    """One dashed line per modality at the raters' majority vote (mean over folds), labelled."""
    for k, (modality, value) in enumerate(human.items()):
        ax.axhline(value * scale, color=f"0.{2 + 2 * k}", linestyle="--", linewidth=1.0, zorder=1,
                   label=f"{HUMAN}, {modality}: {value * scale:.1f}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def metric_figure(units: pd.DataFrame, metric: str, *, reference: str | None = None,
                  human: dict[str, float] | None = None) -> Figure:
    """Metric by the study's axes: a line over the first numeric axis, else points per cell.

    Args:
        units: tidy unit frame (FINISHED units with the metric are plotted).
        metric: metric column, e.g. ``"test/uar"``.
        reference: reference cell, marked "(ref)" on a categorical plot.
        human: ``{modality: value}`` of the raters' majority vote in this metric (a CREMA-D
            study), each drawn as a reference line; None or empty for none.

    Returns:
        The figure; error bars are 95% t intervals, dots the fold-seed units.
    """
    scale = 100.0 if is_percent(metric) else 1.0
    axes = axis_columns(units)
    numeric = [a for a in axes if is_numeric_axis(units[a])]
    summary = cell_summary(units, metric)
    summary = summary[summary["n"] > 0].reset_index(drop=True)
    valid = finished(units, metric)
    half = (summary["ci_high"] - summary["mean"]).fillna(0.0) * scale  # n = 1: no interval
    n_x = summary[axes[0]].astype(str).nunique() if axes else len(summary)
    fig = Figure(figsize=(6.0 if numeric else max(5.0, 1.1 * n_x + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    if numeric:
        _draw_lines(ax, summary, valid, metric, numeric[0], [a for a in axes if a != numeric[0]], half, scale)
    else:
        _draw_points(ax, summary, valid, metric, axes, half, scale, reference)
    if human:
        _draw_human(ax, human, scale)
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{units.attrs.get('study', '')} {metric}\n{CI_NOTE}".strip(), fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _heatmap(fig: Figure, ax, fractions: np.ndarray, label: str) -> None:
    """Fractions drawn as percentages on a fixed 0-100 scale, the value written in each square."""
    percent = 100.0 * fractions
    image = ax.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0, aspect="auto")
    for (i, j), v in np.ndenumerate(percent):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize="small",
                    color="white" if v > 60 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)


def confusion_figure(counts: pd.DataFrame, title: str) -> Figure:
    """Row-normalised confusion matrix (rows = true emotion), percentages written in each cell.

    Args:
        counts: square count table, index = true and columns = predicted emotion names.
        title: figure title (the cell name; the clip count is appended).
    """
    norm = row_normalise(counts)
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(fig, ax, norm.to_numpy(dtype=float), "% of the true emotion's clips")
    ax.set_xticks(range(len(norm.columns)), list(norm.columns), rotation=45, ha="right")
    ax.set_yticks(range(len(norm.index)), list(norm.index))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: row-normalised confusion (%), {int(counts.to_numpy().sum())} test clips summed over folds",
                 fontsize="medium")
    return fig


def recall_heatmap(recall: pd.DataFrame, title: str) -> Figure:
    """Per-class test recall (mean over units) for every cell: rows = cells, columns = emotions."""
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(recall)), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(fig, ax, recall.to_numpy(dtype=float), "recall (%)")
    ax.set_xticks(range(len(recall.columns)), list(recall.columns), rotation=45, ha="right")
    ax.set_yticks(range(len(recall.index)), list(recall.index))
    ax.set_title(f"{title}: test recall per emotion (%), mean over fold-seed units", fontsize="medium")
    return fig
