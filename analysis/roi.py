"""Which face patches the ROI compression keeps: selection frequency over the patch grid, per cell.

Each finished unit's stored model (its ``model/`` artifact) runs on its own fold's test clips (the
``clip_id`` column of its ``predictions_test.csv``), read from the prepared-clip cache under the
unit's data settings; ``fer.explain.explain_clip`` gives the kept patch indices per frame, which are
counted over frames, clips and folds.

    counts = roi_selection_counts(units, tracking_uri, cache_dir)
    paths = write_roi_figures(counts, out_dir / "roi")

A clip without a prepared entry, and a unit without a stored model, are skipped and counted in the
figure's title.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.files import safe_name, save_figure, write_text
from analysis.load import ReportError

ROI_PREFIX = "model.visual.roi."
PREDICTIONS_ARTIFACT = "predictions_test.csv"


@dataclass
class RoiCounts:
    """One cell's kept-patch counts.

    counts: (h, w) times each patch was kept, summed over frames, clips and folds; frames: frames
    counted; clips: clips counted; folds: folds with a counted unit; missing_clips: test clips
    without a prepared entry; missing_models: finished units without a stored model.
    """

    counts: np.ndarray
    frames: int = 0
    clips: int = 0
    folds: tuple[int, ...] = ()
    missing_clips: int = 0
    missing_models: int = 0

    @property
    def frequency(self) -> np.ndarray:
        """(h, w) fraction of frames in which each patch was kept (sums to k over the grid)."""
        return self.counts / max(self.frames, 1)


def varies_roi(units: pd.DataFrame) -> bool:
    """Whether the study's axes include a ``model.visual.roi.*`` setting."""
    return any(path.startswith(ROI_PREFIX) for path in units.attrs.get("axes", {}).values())


def read_predictions(row, tracking_uri: str, tmp: Path) -> pd.DataFrame:
    """One unit's ``predictions_test.csv`` (a ``load_study_runs`` row), clip ids as strings.

    Raises:
        ReportError: the artifact is missing, unreadable or has no ``clip_id`` column.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    dst = tmp / row.run_id
    dst.mkdir(exist_ok=True)
    try:
        local = download_artifacts(artifact_uri=f"{row.artifact_uri.rstrip('/')}/{PREDICTIONS_ARTIFACT}",
                                   dst_path=str(dst), tracking_uri=tracking_uri)
        frame = pd.read_csv(local, dtype={"clip_id": str})
    except (MlflowException, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReportError(f"run {row.run_id} (cell {row.cell}, fold {row.fold}): cannot read "
                          f"{PREDICTIONS_ARTIFACT} ({exc})") from None
    if "clip_id" not in frame:
        raise ReportError(f"run {row.run_id}: {PREDICTIONS_ARTIFACT} has no clip_id column")
    return frame


def cache_key(loaded, run_id: str, face_model: str | Path | None) -> str:
    """The prepared-clip cache key of a loaded unit's data settings (``fer.data.prepare``).

    Raises:
        ReportError: the face detector of the key cannot be found or differs from the one named.
    """
    from fer.data.prepare import PrepareSettings, resolve_settings

    try:
        settings, _ = resolve_settings(PrepareSettings.from_data_config(loaded.cfg.data), face_model)
    except (ValueError, OSError) as exc:
        raise ReportError(f"run {run_id}: cannot find its prepared clips' cache key ({exc})") from None
    return settings.key()


def roi_selection_counts(units: pd.DataFrame, tracking_uri: str, cache_dir: str | Path,
                         face_model: str | Path | None = None) -> dict[str, RoiCounts]:
    """Count the kept patches of every cell's finished units on their own test clips.

    Args:
        units: frame from ``analysis.load.load_study_runs``.
        tracking_uri: the MLflow store of the runs.
        cache_dir: the prepared-clip cache the units were trained from.
        face_model: the face detector file (its checksum is part of the cache key); None for the
            usual lookup.

    Returns:
        ``{cell: RoiCounts}`` in the frame's cell order; cells whose model has no ROI compression
        are left out.

    Raises:
        ReportError: a unit's test predictions cannot be read.
    """
    from fer.data.cache import entry_path
    from fer.explain import explain_clip
    from fer.train.checkpoint import WeightsError, load_unit_model

    out: dict[str, RoiCounts] = {}
    missing_models: dict[str, int] = {}
    done = units[units["status"] == "FINISHED"]
    with tempfile.TemporaryDirectory(prefix="fer-roi-") as tmp:
        for row in done.itertuples(index=False):
            try:
                loaded = load_unit_model(row.run_id, tracking_uri, cache_dir)
            except WeightsError:
                missing_models[row.cell] = missing_models.get(row.cell, 0) + 1
                continue
            if loaded.model.roi is None:
                continue
            key = cache_key(loaded, row.run_id, face_model)
            h, w = loaded.model.visual_encoder.grid
            cell = out.setdefault(row.cell, RoiCounts(counts=np.zeros((h, w), dtype=np.int64)))
            cell.folds = tuple(sorted({*cell.folds, int(row.fold)}))
            for clip_id in read_predictions(row, tracking_uri, Path(tmp))["clip_id"]:
                entry = entry_path(Path(cache_dir), key, clip_id)
                if not entry.is_file():
                    cell.missing_clips += 1
                    continue
                kept = explain_clip(loaded, entry).kept  # (T, k) raster-order patch indices
                cell.counts += np.bincount(kept.ravel(), minlength=h * w).reshape(h, w)
                cell.frames += kept.shape[0]
                cell.clips += 1
    for cell, n in missing_models.items():
        if cell in out:
            out[cell].missing_models = n
    return out


def _title(cell: str, c: RoiCounts) -> str:
    skipped = [f"{n} {what} skipped" for n, what in ((c.missing_clips, "test clips without a prepared entry"),
                                                     (c.missing_models, "units without a stored model")) if n]
    folds = ", ".join(str(f) for f in c.folds) or "none"
    return (f"{cell}: ROI selection frequency (% of frames kept)\n{c.clips} test clips, {c.frames} frames, "
            f"folds {folds}" + ("; " + "; ".join(skipped) if skipped else ""))


def roi_figure(cell: str, c: RoiCounts) -> Figure:
    """One heatmap over the patch grid: percentage of counted frames in which each patch was kept."""
    h, w = c.counts.shape
    fig = Figure(figsize=(1.6 + 0.45 * w, 1.2 + 0.45 * h), layout="constrained")
    ax = fig.add_subplot()
    percent = 100.0 * c.frequency
    image = ax.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0)
    for (i, j), v in np.ndenumerate(percent):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize="x-small",
                color="white" if v > 60 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="kept (% of frames)")
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.set_title(_title(cell, c), fontsize="small")
    return fig


def write_roi_figures(counts: dict[str, RoiCounts], folder: Path) -> list[tuple[Path, str]]:
    """Per cell: ``<cell>_counts.csv`` (kept counts, rows = patch rows) and ``<cell>.png/.pdf``.

    Returns:
        (path, description) for every written file, for the report's README.
    """
    files: list[tuple[Path, str]] = []
    for cell, c in counts.items():
        stem = Path(folder) / safe_name(cell)
        table = pd.DataFrame(c.counts, index=pd.RangeIndex(c.counts.shape[0], name="row"),
                             columns=[f"col{j}" for j in range(c.counts.shape[1])])
        files.append((write_text(stem.with_name(f"{stem.name}_counts.csv"), table.to_csv(lineterminator="\n")),
                      f"cell `{cell}`: times each patch was kept by the ROI compression, summed over "
                      f"{c.frames} frames of {c.clips} test clips (folds {', '.join(map(str, c.folds))})"))
        files.extend((p, f"cell `{cell}`: ROI selection frequency over the patch grid")
                     for p in save_figure(roi_figure(cell, c), stem))
    return files
