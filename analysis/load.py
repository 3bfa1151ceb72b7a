"""MLflow runs of one study -> one tidy DataFrame, a row per unit (cell x fold x seed).

This is the only module of ``analysis`` that talks to MLflow; everything downstream is a pure
function of the frame it returns. The naming it reads is the tracking contract that
``fer.tracking.unit_tags`` writes for study and search alike: one experiment per study, child
runs tagged ``kind=unit`` with ``study``, ``cell``, ``fold``, ``seed``, ``dataset`` (runs from before
the tag are RAVDESS), ``protocol``, ``unit_key``, ``git_commit`` and ``axes`` (JSON object {dotted
config path: value}). Per-class recall columns and confusion labels follow the study's dataset.

    units = load_study_runs("fusion-depth", "sqlite:///mlflow.db")
    units[["cell", "layers", "fold", "seed", "status", "test/uar"]]
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fer.labels import DATASET_EMOTIONS, EMOTIONS, emotions

FINISHED = "FINISHED"
DEFAULT_DATASET = "ravdess"  # runs logged before the ``dataset`` tag existed


def recall_metrics(labels: Sequence[str]) -> tuple[str, ...]:
    """``test/recall/<emotion>`` for every emotion of a label set, in its order."""
    return tuple(f"test/recall/{e}" for e in labels)


def unit_metrics(labels: Sequence[str]) -> tuple[str, ...]:
    """Final metrics every unit logs once; always present as columns (NaN where a run lacks them)."""
    return ("test/uar", "test/war", "test/f1", *recall_metrics(labels),
            "val/uar_best", "val/war_best", "val/f1_best", "best_epoch")

EFFICIENCY = ("params/total", "params/trainable", "gflops_per_clip", "train/clips_per_s", "peak_mem_mb")
# Logged every epoch: MLflow's latest value is the last epoch, not the selected one, so these stay
# out of the tidy frame (the ``*_best`` metrics carry the selected epoch).
PER_EPOCH = frozenset({"train/loss", "val/loss", "val/uar", "val/war", "val/f1"})
ID_COLUMNS = ("study", "cell", "fold", "seed", "status", "dataset", "protocol", "vocal_channel")
META_COLUMNS = ("run_id", "parent_run_id", "unit_key", "git_commit", "artifact_uri")
CONFUSION_ARTIFACT = "confusion_test.csv"


class ReportError(ValueError):
    """A study's runs cannot be turned into a report (no experiment, no finished unit, bad run)."""


def axis_column_names(paths: Sequence[str], reserved: Sequence[str] = ()) -> dict[str, str]:
    """Short column names for dotted axis paths: the last part, longer only where ambiguous.

    ``["model.audio.pooling", "model.classifier.pooling", "model.fusion.layers"]`` ->
    ``{"model.audio.pooling": "audio.pooling", "model.classifier.pooling": "classifier.pooling",
    "model.fusion.layers": "layers"}``. A name equal to one in ``reserved`` (the frame's fixed
    columns) is lengthened the same way.
    """
    depth = dict.fromkeys(paths, 1)
    while True:
        names = {p: ".".join(p.split(".")[-depth[p]:]) for p in paths}
        counts = pd.Series(list(names.values())).value_counts()
        clash = [p for p in paths if counts[names[p]] > 1 or names[p] in reserved]
        growable = [p for p in clash if depth[p] < len(p.split("."))]
        if not growable:
            return {p: (f"axis.{p}" if p in clash else names[p]) for p in paths}
        for p in growable:
            depth[p] += 1


def _tag_int(run, key: str) -> int:
    raw = run.data.tags.get(key)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ReportError(f"run {run.info.run_id}: tag {key!r} must be an integer, got {raw!r}") from None


def _axes(run) -> dict:
    raw = run.data.tags.get("axes", "{}")
    try:
        axes = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ReportError(f"run {run.info.run_id}: tag 'axes' is not JSON ({exc}): {raw!r}") from None
    if not isinstance(axes, dict):
        raise ReportError(f"run {run.info.run_id}: tag 'axes' must be a JSON object, got {raw!r}")
    # Lists and dicts become JSON strings so every axis value is hashable and sortable.
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v for k, v in axes.items()}


def _data_root(run) -> str | None:
    """The data root a unit logged as its dataset input's source (``fer.mlflow_conventions``), if any."""
    inputs = getattr(run, "inputs", None)
    for item in getattr(inputs, "dataset_inputs", None) or []:
        try:
            uri = json.loads(item.dataset.source).get("uri")
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue
        if uri:
            return str(uri)
    return None


def _unit_row(run, study: str) -> dict:
    """One run as a flat record; ``_axes`` and ``_start`` are working columns dropped later."""
    tags = run.data.tags
    return {"study": tags.get("study", study), "cell": tags.get("cell") or "", "fold": _tag_int(run, "fold"),
            "seed": _tag_int(run, "seed"), "status": run.info.status,
            "dataset": tags.get("dataset") or run.data.params.get("data.dataset") or DEFAULT_DATASET,
            "protocol": tags.get("protocol"),
            "vocal_channel": run.data.params.get("data.vocal_channel"), "_axes": _axes(run),
            "_modality": run.data.params.get("model.modality"), "_data_root": _data_root(run), **run.data.metrics,
            "run_id": run.info.run_id, "parent_run_id": tags.get("mlflow.parentRunId"),
            "unit_key": tags.get("unit_key"), "git_commit": tags.get("git_commit"),
            "artifact_uri": run.info.artifact_uri, "_start": run.info.start_time or 0}


def study_labels(datasets: Sequence[str]) -> tuple[str, ...]:
    """The label set of a study's datasets: one dataset's own, else every dataset's emotions in
    ``fer.labels.DATASET_EMOTIONS`` order (RAVDESS's first)."""
    known = [d for d in DATASET_EMOTIONS if d in set(datasets)]
    unknown = sorted(set(datasets) - set(known))
    if unknown:
        emotions(unknown[0])  # raises, naming the known datasets
    if len(known) == 1:
        return emotions(known[0])
    return tuple(dict.fromkeys(e for d in known for e in emotions(d))) or EMOTIONS


def study_emotions(units: pd.DataFrame) -> tuple[str, ...]:
    """The emotions of a unit frame: ``attrs["emotions"]`` set by ``load_study_runs``, else those
    of its ``dataset`` column, else RAVDESS's."""
    if "emotions" in units.attrs:
        return tuple(units.attrs["emotions"])
    if "dataset" in units:
        return study_labels(units["dataset"].dropna().unique().tolist() or [DEFAULT_DATASET])
    return EMOTIONS


def dataset_names(units: pd.DataFrame) -> list[str]:
    """The datasets of a unit frame in ``fer.labels.DATASET_EMOTIONS`` order (RAVDESS without a column)."""
    present = set(units["dataset"].dropna()) if "dataset" in units else {DEFAULT_DATASET}
    return [d for d in DATASET_EMOTIONS if d in present] + sorted(present - set(DATASET_EMOTIONS))


def _axis_series(values: list, index: pd.Index) -> pd.Series:
    """Integers stay int64 and reals float64; anything else, or a missing value (YAML null, e.g.
    ROI ``k: null`` = all patches), keeps an object column so 16 is not shown as 16.0."""
    def real(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if all(real(v) for v in values):
        dtype = np.int64 if all(isinstance(v, int) for v in values) else np.float64
        return pd.Series(values, index=index, dtype=dtype)
    return pd.Series(values, index=index, dtype=object)


def _search_units(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.kind = 'unit'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _value_key(value) -> tuple:
    """Sort numbers numerically before strings; missing values last."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def order_cells(units: pd.DataFrame, axes: Sequence[str], cell_order: Sequence[str] | None = None) -> list[str]:
    """Cells in declared order where known; the rest sorted by axis values, then name.

    Args:
        units: frame with a ``cell`` column and the axis columns.
        axes: axis column names, in declared order.
        cell_order: the study's declared cell order, if the caller knows it.

    Returns:
        Every cell of ``units`` once.
    """
    present = list(dict.fromkeys(units["cell"]))
    declared = [c for c in (cell_order or []) if c in present]
    first = units.drop_duplicates("cell").set_index("cell")
    rest = sorted((c for c in present if c not in declared),
                  key=lambda c: (tuple(_value_key(first.at[c, a]) for a in axes), c))
    return declared + rest


def load_study_runs(study: str, tracking_uri: str, *, cell_order: Sequence[str] | None = None,
                    dataset: str | None = None) -> pd.DataFrame:
    """Read every unit run of ``study`` from MLflow into a tidy frame, one row per unit.

    Where a unit has several runs (a crash, then a resume), the latest FINISHED run is kept, or
    the latest run when none finished.

    Args:
        study: study name (= MLflow experiment name).
        tracking_uri: MLflow tracking URI, e.g. ``sqlite:///mlflow.db``.
        cell_order: declared cell order; without it cells are sorted by their axis values.
        dataset: keep the units of this dataset only; None: the study's units must all be of one
            dataset (a study run on RAVDESS and on CREMA-D is reported per dataset).

    Returns:
        Columns: study, cell, one per axis (``attrs["axes"]`` maps column -> dotted path),
        fold, seed, status, dataset, protocol, vocal_channel, the final test/val metrics (recall
        per emotion of the study's label set), any other non-per-epoch metric (sorted), the
        efficiency figures, run_id, parent_run_id, unit_key, git_commit, artifact_uri. Rows
        ordered by cell order, fold, seed. ``attrs`` also holds ``study``, ``experiment_id``,
        ``tracking_uri``, ``cells`` (ordered), ``runs`` (unit runs read, before keeping one per
        unit), ``emotions`` (the study's label set, ``study_labels``), ``modality`` ({cell:
        model.modality}) and ``data_roots`` ({dataset: the data root its units logged, the latest
        unit's}).

    Raises:
        ReportError: no experiment named ``study``, no unit run in it (of ``dataset``), a run with
            bad tags, or units of several datasets and no ``dataset`` chosen.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise ReportError(f"no MLflow experiment named {study!r} in {tracking_uri}")
    runs = _search_units(client, experiment.experiment_id)
    if not runs:
        raise ReportError(f"experiment {study!r} in {tracking_uri} has no unit runs (tag kind=unit)")

    rows = [_unit_row(run, study) for run in runs]
    found = sorted({r["dataset"] for r in rows})
    if dataset is not None:
        rows = [r for r in rows if r["dataset"] == dataset]
        if not rows:
            raise ReportError(f"experiment {study!r} in {tracking_uri} has no unit runs on dataset {dataset!r} "
                              f"(its units are on: {', '.join(found)})")
    elif len(found) > 1:  # the same cell, fold and seed on two datasets are two different units
        raise ReportError(f"experiment {study!r} holds units of several datasets ({', '.join(found)}): "
                          f"report one at a time with --dataset {found[0]} (or {', '.join(found[1:])})")
    missing_cell = [r["run_id"] for r in rows if not r["cell"]]
    if missing_cell:
        raise ReportError(f"experiment {study!r}: runs without a 'cell' tag: {', '.join(sorted(missing_cell))}")

    frame = pd.DataFrame(rows)
    # Keep one run per unit: FINISHED first, then the latest start, run id as the last tie-break.
    frame["_done"] = frame["status"] != FINISHED
    frame = frame.sort_values(["cell", "fold", "seed", "_done", "_start", "run_id"],
                              ascending=[True, True, True, True, False, True], kind="mergesort")
    frame = frame.drop_duplicates(["cell", "fold", "seed"], keep="first")

    # Axis paths in the order the engine wrote them (JSON keeps insertion order), first run first.
    paths = list(dict.fromkeys(p for axes in frame["_axes"] for p in axes))
    names = axis_column_names(paths, reserved=(*ID_COLUMNS, *META_COLUMNS))
    for path in paths:
        frame[names[path]] = _axis_series([axes.get(path) for axes in frame["_axes"]], frame.index)

    axis_cols = [names[p] for p in paths]
    cells = order_cells(frame, axis_cols, cell_order)
    frame["_cell_rank"] = frame["cell"].map({c: i for i, c in enumerate(cells)})
    frame = frame.sort_values(["_cell_rank", "fold", "seed"], kind="mergesort").reset_index(drop=True)

    labels = study_labels(frame["dataset"].unique().tolist())
    final = unit_metrics(labels)
    known = (*final, *EFFICIENCY)
    logged = {k for run in runs for k in run.data.metrics if k not in PER_EPOCH}
    others = sorted(logged - set(known))
    for col in (*known, *others):
        if col not in frame:
            frame[col] = np.nan
    columns = ["study", "cell", *axis_cols, "fold", "seed", "status", "dataset", "protocol", "vocal_channel",
               *final, *others, *EFFICIENCY, *META_COLUMNS]
    modality = {cell: m for cell, m in zip(frame["cell"], frame["_modality"]) if m is not None}
    roots = {d: r for d, r, _ in sorted(zip(frame["dataset"], frame["_data_root"], frame["_start"]),
                                        key=lambda x: x[2]) if r is not None}
    out = frame[columns].copy()
    for col in (*final, *others, *EFFICIENCY):
        out[col] = out[col].astype(float)
    out.attrs = {"study": study, "experiment_id": experiment.experiment_id, "tracking_uri": tracking_uri,
                 "axes": {names[p]: p for p in paths}, "cells": cells, "runs": len(runs), "emotions": labels,
                 "modality": {cell: modality[cell] for cell in cells if cell in modality}, "data_roots": roots}
    return out


def _read_confusion(path: Path, run_id: str, dataset: str) -> pd.DataFrame:
    where = f"run {run_id}: {CONFUSION_ARTIFACT}"
    try:
        cm = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"{where}: unreadable CSV ({exc})") from None
    labels = list(emotions(dataset))
    if list(cm.index) != labels or list(cm.columns) != labels:
        raise ReportError(f"{where}: rows and columns must be the {dataset} emotion names {labels} in order; "
                          f"got rows {list(cm.index)}, columns {list(cm.columns)}")
    values = cm.to_numpy()
    if not np.issubdtype(values.dtype, np.number) or (values < 0).any() or (values != np.round(values)).any():
        raise ReportError(f"{where}: entries must be non-negative integer counts")
    return cm.astype(np.int64)


def load_confusions(units: pd.DataFrame, tracking_uri: str) -> dict[str, pd.DataFrame]:
    """Sum each cell's ``confusion_test.csv`` over its FINISHED units.

    Args:
        units: frame from ``load_study_runs`` (``cell``, ``status``, ``run_id``, ``artifact_uri``).
        tracking_uri: the MLflow store the runs live in (resolves ``mlflow-artifacts:`` URIs).

    Returns:
        ``{cell: CxC int counts}`` in the frame's cell order (cells without a finished unit are
        left out); rows = true emotion, columns = predicted, both labelled with the emotion names
        of the unit's dataset (``dataset`` column; RAVDESS without one).

    Raises:
        ReportError: a finished unit without the artifact, or an artifact of the wrong form.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    done = units[units["status"] == FINISHED]
    out: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="fer-confusion-") as tmp, _no_progress_bar():
        for row in done.itertuples(index=False):
            dst = Path(tmp) / row.run_id
            dst.mkdir()
            # From the run's artifact URI directly: one read, no run lookup per download.
            try:
                local = download_artifacts(artifact_uri=f"{row.artifact_uri.rstrip('/')}/{CONFUSION_ARTIFACT}",
                                           dst_path=str(dst), tracking_uri=tracking_uri)
            except (MlflowException, OSError) as exc:
                raise ReportError(f"run {row.run_id} (cell {row.cell}, fold {row.fold}, seed {row.seed}): "
                                  f"cannot read artifact {CONFUSION_ARTIFACT} ({exc})") from None
            cm = _read_confusion(Path(local), row.run_id, getattr(row, "dataset", DEFAULT_DATASET))
            out[row.cell] = out[row.cell] + cm if row.cell in out else cm
    return out


@contextlib.contextmanager
def _no_progress_bar():
    """Silence MLflow's per-download progress bar (one per unit otherwise), restoring the setting."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
