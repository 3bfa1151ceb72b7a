"""``reports/<study>/``: every table, figure and confusion matrix of one study, from MLflow alone.

    write_study_report("fusion-depth", tracking_uri="sqlite:///mlflow.db",
                       out_dir=Path("reports/fusion-depth"), reference="layers=2")

Unfinished units do not block a report: each cell shows its finished / expected units. A study
without a single finished unit is a ``ReportError``. A CREMA-D study given its data root
(``data_root``) also gets the raters' majority vote per modality (``analysis.human``) as table rows
and figure lines.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.examples import find_disagreements, write_examples
from analysis.figures import confusion_figure, metric_figure, recall_heatmap
from analysis.files import redact_uri, safe_name, save_figure, write_text
from analysis.human import HUMAN, HUMAN_DATASET, SUMMARY_TABLE, human_reference, wants_human
from analysis.load import ReportError, load_confusions, load_study_runs
from analysis.roi import roi_selection_counts, varies_roi, write_roi_figures
from analysis.stats import cells_in_order, finished, per_class_recall, row_normalise
from analysis.tables import (CSV_FLOAT, data_text, reference_cell, render_csv, render_latex, render_markdown, slug,
                             study_table, table_caption, with_human)

__all__ = ["ReportError", "write_study_report"]

TABLE_METRICS = ("test/uar", "test/war", "test/f1")
FIGURE_METRICS = ("test/uar", "test/war")


def _csv(frame: pd.DataFrame, decimals: int = 6) -> str:
    return frame.to_csv(float_format=f"%.{decimals}f", lineterminator="\n")


def _readme(units: pd.DataFrame, files: list[tuple[Path, str]], out_dir: Path, *, command: str, metric: str,
            reference: str, note: str | None, results: str, human: str | None) -> str:
    statuses = units["status"].value_counts().sort_index()
    commits = units.loc[units["status"] == "FINISHED", "git_commit"].fillna("unknown").value_counts()
    commits = commits.sort_index()
    lines = [f"# Study report: {units.attrs['study']}", ""]
    if note:
        lines += [f"> **{note}**", ""]
    lines += ["Generated from MLflow runs only (no retraining). Regenerate with:", "", "```",
              command, "```", "",
              f"- MLflow tracking URI: `{redact_uri(units.attrs['tracking_uri'])}`",
              f"- MLflow experiment: `{units.attrs['study']}` (id {units.attrs['experiment_id']})",
              f"- Unit runs read: {units.attrs['runs']}; units (cell x fold x seed): {len(units)} "
              f"({', '.join(f'{s} {n}' for s, n in statuses.items())}); where a unit has several runs "
              "the latest FINISHED one is used",
              f"- Data: {data_text(units)}",
              *([f"- Human reference: {human}"] if human else []),
              f"- Cells: {', '.join(cells_in_order(units))}; reference cell: `{reference}`",
              f"- Primary metric: `{metric}`; statistics use FINISHED units only",
              "- Git commits of the finished units: "
              + ", ".join(f"`{c}` ({n} units)" for c, n in commits.items()), "",
              "## Results", "", results,
              "## Files", "", "| File | Content |", "|:---|:---|"]
    lines += [f"| [{p.relative_to(out_dir).as_posix()}]({p.relative_to(out_dir).as_posix()}) | {desc} |"
              for p, desc in files]
    return "\n".join(lines) + "\n"


def write_study_report(study: str, *, tracking_uri: str, out_dir: Path, metric: str = "test/uar",
                       reference: str | None = None, command: str | None = None,
                       cell_order: Sequence[str] | None = None, note: str | None = None,
                       cache_dir: Path | None = None, face_model: Path | None = None,
                       examples: int = 0, data_root: Path | None = None,
                       dataset: str | None = None) -> list[Path]:
    """Write tables, figures, confusion matrices and a README for one study into ``out_dir``.

    Args:
        study: study name (= MLflow experiment).
        tracking_uri: MLflow tracking URI.
        out_dir: the report folder itself, conventionally ``reports/<study>``.
        metric: primary metric: first table column, significance marks, first figure.
        reference: reference cell for the paired tests (default: the first cell in study order).
        command: the command line that produced the report, recorded in the README (default: the
            equivalent ``runner.py report`` line).
        cell_order: declared cell order (default: sorted by axis values).
        note: a line shown at the top of the README, e.g. that the data are synthetic.
        cache_dir: the prepared-clip cache; given, a study whose axes vary ``model.visual.roi.*``
            also gets ROI selection frequency figures (the stored fold models on their test clips).
        face_model: the face detector file of the cache key (None: the usual lookup).
        examples: per cell but the reference, this many test clips on which the cell and the
            reference cell disagree (same fold and seed), with explain figures; needs ``cache_dir``.
        data_root: the CREMA-D folder of a CREMA-D study: its ``processedResults/summaryTable.csv``
            gives the ``human (majority vote)`` rows and figure lines (ignored for RAVDESS). None:
            the data root the units logged (their MLflow dataset input), where it is on this machine.
        dataset: report the study's units on this dataset (needed when it ran on several).

    Returns:
        Every written path, README.md last.

    Raises:
        ReportError: no experiment, no finished unit, unknown metric or reference cell, bad artifact.
    """
    out_dir = Path(out_dir)
    units = load_study_runs(study, tracking_uri, cell_order=cell_order, dataset=dataset)
    if finished(units).empty:
        counts = ", ".join(f"{s} {n}" for s, n in units["status"].value_counts().sort_index().items())
        raise ReportError(f"study {study!r}: no finished unit in {tracking_uri} ({counts}); nothing to report")
    finished(units, metric)  # raises on an unknown metric before anything is written
    reference = reference_cell(units, reference)
    confusions = load_confusions(units, tracking_uri)  # a bad artifact fails before any file is written
    roi = (roi_selection_counts(units, tracking_uri, cache_dir, face_model)
           if cache_dir is not None and varies_roi(units) else {})
    if examples and cache_dir is None:
        raise ReportError("examples need the prepared-clip cache (cache_dir) to draw their explain figures")
    disagreements = find_disagreements(units, reference, tracking_uri, examples) if examples else {}
    if data_root is None and wants_human(units):  # the data root the CREMA-D units logged, if here
        logged = units.attrs.get("data_roots", {}).get(HUMAN_DATASET)
        data_root = Path(logged) if logged and (Path(logged) / SUMMARY_TABLE).is_file() else None
    human = human_reference(units, tracking_uri, data_root) if data_root is not None and wants_human(units) else {}
    if human:
        human_note = (f"rows `{HUMAN}, <modality>`: the raters' vote on the units' test clips per fold "
                      f"({', '.join(f'{m} {h.clips} clips' for m, h in human.items())}), from "
                      f"`{redact_uri(str(data_root))}`")
    elif wants_human(units):
        human_note = (f"none; the data root the units logged has no `{SUMMARY_TABLE}` here: give the CREMA-D "
                      "data root (`report --data-root DIR`) for the raters' majority vote per modality")
    else:
        human_note = None
    metrics = list(dict.fromkeys([metric, *TABLE_METRICS]))
    files: list[tuple[Path, str]] = []

    def add(paths, desc: str) -> None:
        files.extend((p, desc) for p in (paths if isinstance(paths, list) else [paths]))

    table = with_human(study_table(units, metrics, reference), human, metrics, units)
    caption = table_caption(units, metrics, reference, title=f"Study {study}", human=bool(human))
    table_md = render_markdown(table, metrics, caption)
    add(write_text(out_dir / "table.csv", render_csv(table)),
        "results per cell: n, mean, std, 95% CI, paired tests vs the reference (raw and Holm p), params, GFLOPs")
    add(write_text(out_dir / "table.md", table_md), "results table, Markdown")
    add(write_text(out_dir / "table.tex", render_latex(table, metrics, caption, f"tab:{safe_name(study)}")),
        "results table, LaTeX (booktabs)")
    add(write_text(out_dir / "units.csv", units.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")),
        "one row per unit (cell x fold x seed): axes, status, metrics, efficiency, run id, git commit")

    for m in dict.fromkeys([metric, *FIGURE_METRICS]):
        lines = {mod: h.mean(m) for mod, h in human.items() if h.values(m)}
        add(save_figure(metric_figure(units, m, reference=reference, human=lines), out_dir / slug(m)),
            f"`{m}` by the study axes: mean, 95% CI, unit dots" + (f"; dashed: {HUMAN}" if lines else ""))

    recall = per_class_recall(units)
    add(write_text(out_dir / "recall.csv", _csv(recall, 4)), "mean test recall per emotion (columns) and cell (rows)")
    add(save_figure(recall_heatmap(recall, study), out_dir / "recall"), "per-class recall heatmap across cells")

    for cell, counts in confusions.items():
        stem = out_dir / "confusion" / safe_name(cell)
        add(write_text(stem.with_name(f"{stem.name}_counts.csv"), _csv(counts)),
            f"cell `{cell}`: test confusion counts summed over finished folds (rows = true)")
        add(write_text(stem.with_name(f"{stem.name}.csv"), _csv(row_normalise(counts), 4)),
            f"cell `{cell}`: row-normalised test confusion matrix")
        add(save_figure(confusion_figure(counts, cell), stem), f"cell `{cell}`: row-normalised confusion matrix")

    files.extend(write_roi_figures(roi, out_dir / "roi"))
    if disagreements:
        files.extend(write_examples(disagreements, reference, tracking_uri, cache_dir, out_dir / "examples",
                                    face_model))

    if command is None:
        command = shlex.join(["python", "runner.py", "report", study, "--out", str(out_dir),
                              "--tracking-uri", redact_uri(tracking_uri), "--metric", metric])
    readme = _readme(units, files, out_dir, command=command, metric=metric, reference=reference, note=note,
                     results=f"{table_md}\n![{metric}]({slug(metric)}.png)\n", human=human_note)
    return [p for p, _ in files] + [write_text(out_dir / "README.md", readme)]
