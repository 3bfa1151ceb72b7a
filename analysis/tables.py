"""A study's results table: one numeric frame (``table.csv``) and its Markdown and LaTeX renderings.

``study_table`` computes; ``render_markdown`` / ``render_latex`` only format. All formatting uses
fixed decimals and the study's cell order, so the same runs always give the same bytes.

Shown per cell: axis values, finished/expected units, mean +- std of each metric (best mean in
bold, a dagger where the paired t-test against the reference cell is significant after Holm
correction), parameters and GFLOPs. A CREMA-D study may end with ``human (majority vote)`` rows
(``with_human``): the raters' vote per modality, mean +- std over folds, never bold or tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from analysis.human import HUMAN, HumanReference, is_human
from analysis.load import dataset_names
from analysis.stats import axis_columns, cell_summary, cells_in_order, finished, mean_ci, paired_comparisons

DAGGER = "\u2020"
PM = "\u00b1"
METRIC_LABELS = {"test/uar": "UAR", "test/war": "WAR", "test/f1": "F1", "val/uar_best": "val UAR",
                 "val/war_best": "val WAR", "val/f1_best": "val F1", "best_epoch": "best epoch"}
# Efficiency columns: (unit column, table.csv column, header, scale, decimals).
EFFICIENCY_COLUMNS = (("params/total", "params_m", "Params (M)", 1e-6, 2),
                      ("params/trainable", "trainable_m", "Trainable (M)", 1e-6, 2),
                      ("gflops_per_clip", "gflops", "GFLOPs", 1.0, 2))
CSV_FLOAT = "%.6f"


def axis_text(value) -> str:
    """An axis value as shown in tables and figures; a missing value is YAML's ``null``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return str(value)


def slug(metric: str) -> str:
    """``"test/uar"`` -> ``"test_uar"`` (a metric as part of a CSV column name)."""
    return metric.replace("/", "_")


def is_percent(metric: str) -> bool:
    """Fractions shown as percentages: UAR, WAR, F1 and recall metrics."""
    last = metric.rsplit("/", 1)[-1].removesuffix("_best")
    return last in {"uar", "war", "f1"} or "/recall/" in metric


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric


def metric_label(metric: str) -> str:
    label = METRIC_LABELS.get(metric, metric)
    return f"{label} (%)" if is_percent(metric) else label


def study_table(units: pd.DataFrame, metrics: Sequence[str], reference: str, *, alpha: float = 0.05) -> pd.DataFrame:
    """The numeric results table, one row per cell in the study's order.

    Args:
        units: tidy unit frame (``analysis.load.load_study_runs``).
        metrics: metric columns to report, e.g. ``["test/uar", "test/war", "test/f1"]``.
        reference: cell every other cell is compared with.
        alpha: significance level applied to Holm-corrected paired t-test p-values.

    Returns:
        Columns ``cell``, axis columns, ``reference``, ``finished``, ``expected``; per metric
        ``<slug>_{n,mean,std,ci_low,ci_high,diff,p_t,p_t_holm,p_wilcoxon,p_wilcoxon_holm,
        significant,note}``; then ``params_m``, ``trainable_m``, ``gflops`` (cell means).
    """
    axes = axis_columns(units)
    table = cell_summary(units, metrics[0])[["cell", *axes, "finished", "expected"]]
    table.insert(len(axes) + 1, "reference", table["cell"] == reference)
    for metric in metrics:
        s = slug(metric)
        summary = cell_summary(units, metric)
        tests = paired_comparisons(units, metric, reference)
        for col in ("n", "mean", "std", "ci_low", "ci_high"):
            table[f"{s}_{col}"] = summary[col].to_numpy()
        table[f"{s}_diff"] = tests["mean_diff"].to_numpy()
        for col in ("p_t", "p_t_holm", "p_wilcoxon", "p_wilcoxon_holm"):
            table[f"{s}_{col}"] = tests[col].to_numpy()
        table[f"{s}_significant"] = (tests["p_t_holm"] < alpha).to_numpy()
        table[f"{s}_note"] = tests["note"].to_numpy()
    done = finished(units).groupby("cell", sort=False)
    for source, column, _, scale, _ in EFFICIENCY_COLUMNS:
        table[column] = table["cell"].map(done[source].mean() * scale)
    return table


def with_human(table: pd.DataFrame, human: dict[str, HumanReference], metrics: Sequence[str],
               units: pd.DataFrame) -> pd.DataFrame:
    """``study_table`` with one ``human (majority vote), <modality>`` row per modality appended.

    A human row has the metric's n, mean, std and interval over the folds (NaN for a metric the
    votes do not give, e.g. F1), ``finished`` = folds scored, ``expected`` = the study's folds,
    its modality in an axis column of ``model.modality`` and nothing else: no test, no efficiency.
    """
    if not human:
        return table
    path_of = units.attrs.get("axes", {})
    folds = int(units["fold"].nunique())
    rows = []
    for ref in human.values():
        row = {"cell": ref.cell, "reference": False, "finished": len(ref.folds), "expected": folds}
        row.update({a: ref.modality for a, p in path_of.items() if p == "model.modality" and a in table})
        for metric in metrics:
            s = slug(metric)
            row.update({f"{s}_{k}": v for k, v in mean_ci(ref.values(metric)).items()})
            row.update({f"{s}_significant": False, f"{s}_note": HUMAN})
        rows.append(row)
    # Object axis columns, so that appending a row without a value keeps 16 from becoming 16.0.
    head = table.astype({a: object for a in axis_columns(units) if a in table})
    return pd.concat([head, pd.DataFrame(rows, columns=table.columns)], ignore_index=True)


def data_text(units: pd.DataFrame) -> str:
    """The data a study ran on, for captions: ``RAVDESS (speech)``, ``CREMA-D``, or both."""
    channels = ", ".join(sorted(str(c) for c in units["vocal_channel"].dropna().unique()))
    names = {"ravdess": f"RAVDESS ({channels})" if channels else "RAVDESS", "crema-d": "CREMA-D"}
    return " and ".join(names.get(d, d) for d in dataset_names(units))


def table_caption(units: pd.DataFrame, metrics: Sequence[str], reference: str, *, title: str,
                  alpha: float = 0.05, human: bool = False) -> str:
    """Caption naming the metrics, data, protocol, folds, seeds, the reference and the significance
    test; with ``human``, what the ``human (majority vote)`` rows are."""
    folds = ", ".join(str(f) for f in sorted(units["fold"].unique()))
    seeds = ", ".join(str(s) for s in sorted(units["seed"].unique()))
    protocols = ", ".join(sorted(str(p) for p in units["protocol"].dropna().unique())) or "unknown"
    labels = ", ".join(METRIC_LABELS.get(m, m) for m in metrics)
    caption = (f"{title}. {labels} on {data_text(units)}, protocol {protocols}, folds {folds}, seeds {seeds}: "
               f"mean {PM} std over finished fold-seed units (Finished = finished / expected units). "
               f"Bold: best mean per column. {DAGGER}: different from the reference cell {reference} at "
               f"alpha = {alpha:g} (paired t-test over matching fold-seed units, Holm-corrected within the study).")
    if human:
        caption += (f" {HUMAN[0].upper()}{HUMAN[1:]}: the CREMA-D raters' majority vote from the voice (audio), "
                    f"the face (visual) or both (av), scored on the same test clips per fold (a tie of k emotions "
                    f"counts 1/k); mean {PM} std over folds (Finished = folds scored / folds), not a trained cell "
                    "and not tested.")
    return caption

def _fmt(value: float, decimals: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def _shown_as(metric: str) -> tuple[int, float]:
    """(decimals, scale) a metric is displayed with: percentages to 0.1, anything else to 0.001."""
    return (1, 100.0) if is_percent(metric) else (3, 1.0)


def _display(table: pd.DataFrame, metrics: Sequence[str]) -> tuple[list[str], list[list[dict]]]:
    """Headers and rows of cell dicts ``{"text", "pm", "bold", "mark"}`` shared by both renderers."""
    axes = list(table.columns[1:table.columns.get_loc("reference")])  # study_table puts them there
    label_cols = axes or ["cell"]
    headers = [*label_cols, "Finished", *(metric_label(m) for m in metrics),
               *(header for _, _, header, _, _ in EFFICIENCY_COLUMNS)]
    best = {}
    cells_only = table[~table["cell"].map(is_human)]  # a human row is never the best cell
    for metric in metrics:
        decimals, scale = _shown_as(metric)
        shown = [round(v * scale, decimals) for v in cells_only[f"{slug(metric)}_mean"] if not math.isnan(v)]
        best[metric] = (max if higher_is_better(metric) else min)(shown) if shown else None
    rows = []
    for _, row in table.iterrows():
        human = is_human(row["cell"])
        cells = [{"text": axis_text(row[c])} for c in label_cols]
        if human:
            cells = [{"text": row["cell"]}] + [{"text": ""} for _ in label_cols[1:]]
        if row["reference"]:
            cells[0]["text"] += " (ref)"
        cells.append({"text": f"{row['finished']}/{row['expected']}"})
        for metric in metrics:
            s = slug(metric)
            decimals, scale = _shown_as(metric)
            mean, std = row[f"{s}_mean"] * scale, row[f"{s}_std"] * scale
            shown = None if math.isnan(mean) else round(mean, decimals)
            cells.append({"text": _fmt(mean, decimals), "pm": None if math.isnan(std) else _fmt(std, decimals),
                          "bold": not human and shown is not None and shown == best[metric],
                          "mark": bool(row[f"{s}_significant"])})
        for _, column, _, _, decimals in EFFICIENCY_COLUMNS:
            cells.append({"text": "" if human else _fmt(row[column], decimals)})
        rows.append(cells)
    return headers, rows


def render_markdown(table: pd.DataFrame, metrics: Sequence[str], caption: str) -> str:
    """GitHub Markdown table with the caption as a paragraph below."""
    headers, rows = _display(table, metrics)
    n_label = len(headers) - 1 - len(metrics) - len(EFFICIENCY_COLUMNS)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] * n_label + ["---:"] * (len(headers) - n_label)) + "|"]
    for cells in rows:
        out = []
        for cell in cells:
            text = cell["text"] + (f" {PM} {cell['pm']}" if cell.get("pm") else "")
            text = f"**{text}**" if cell.get("bold") else text
            out.append(text + (DAGGER if cell.get("mark") else ""))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + f"\n\n**Table.** {caption}\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters; ``±`` and the dagger become math-mode symbols."""
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace(PM, r"$\pm$").replace(DAGGER, r"$^{\dagger}$")


def render_latex(table: pd.DataFrame, metrics: Sequence[str], caption: str, label: str) -> str:
    """A booktabs ``table`` environment with caption and ``\\label{label}``."""
    headers, rows = _display(table, metrics)
    n_label = len(headers) - 1 - len(metrics) - len(EFFICIENCY_COLUMNS)
    spec = "l" * n_label + "r" * (len(headers) - n_label)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for cells in rows:
        out = []
        for cell in cells:
            text = tex_escape(cell["text"]) + (rf" $\pm$ {cell['pm']}" if cell.get("pm") else "")
            text = rf"\textbf{{{text}}}" if cell.get("bold") else text
            out.append(text + (r"$^{\dagger}$" if cell.get("mark") else ""))
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    """``table.csv`` text: fixed 6 decimals, ``\\n`` line ends."""
    return table.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")


def reference_cell(units: pd.DataFrame, reference: str | None) -> str:
    """The declared reference, or the first cell in study order when none is declared."""
    return reference if reference is not None else cells_in_order(finished(units))[0]
