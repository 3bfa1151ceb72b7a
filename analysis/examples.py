"""Qualitative examples: test clips on which a cell and the reference cell disagree, with explain figures.

For every cell but the reference, its finished units are paired with the reference cell's unit of
the same fold and seed; the clips whose predicted emotion differs (``predictions_test.csv`` of
both) are listed in fold, seed, clip order and the first ``n`` get the explain figure of the
cell's unit (``fer.explain`` on the clip's prepared entry, the input the unit was tested on).

    examples = find_disagreements(units, "k=16", tracking_uri, n=3)
    files = write_examples(examples, tracking_uri, cache_dir, out_dir / "examples")

A clip whose prepared entry is missing gets no figure; its row in the cell's CSV says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.explain import explain_figure
from analysis.files import safe_name, save_figure, write_text
from analysis.roi import cache_key, read_predictions


@dataclass(frozen=True)
class Disagreement:
    """One test clip the cell's unit and the reference unit (same fold and seed) label differently."""

    cell: str
    clip_id: str
    fold: int
    seed: int
    run_id: str
    label: str
    pred: str
    reference_pred: str
    probs: dict[str, float]


def find_disagreements(units: pd.DataFrame, reference: str, tracking_uri: str,
                       n: int) -> dict[str, list[Disagreement]]:
    """The first ``n`` disagreements of every non-reference cell with ``reference``.

    Args:
        units: frame from ``analysis.load.load_study_runs``.
        reference: the reference cell.
        tracking_uri: the MLflow store of the runs.
        n: examples per cell.

    Returns:
        ``{cell: [Disagreement]}`` in cell order (every non-reference cell, possibly an empty list).

    Raises:
        ReportError: a unit's test predictions cannot be read.
    """
    done = units[units["status"] == "FINISHED"]
    ref_units = {(r.fold, r.seed): r for r in done[done["cell"] == reference].itertuples(index=False)}
    out: dict[str, list[Disagreement]] = {}
    with tempfile.TemporaryDirectory(prefix="fer-examples-") as tmp:
        ref_preds: dict[tuple[int, int], pd.DataFrame] = {}
        for cell in dict.fromkeys(done["cell"]):
            if cell == reference:
                continue
            found = out.setdefault(cell, [])
            rows = done[done["cell"] == cell].sort_values(["fold", "seed"], kind="mergesort")
            for row in rows.itertuples(index=False):
                ref = ref_units.get((row.fold, row.seed))
                if ref is None or len(found) >= n:
                    continue
                if (row.fold, row.seed) not in ref_preds:
                    ref_preds[row.fold, row.seed] = read_predictions(ref, tracking_uri, Path(tmp))
                both = read_predictions(row, tracking_uri, Path(tmp)).merge(
                    ref_preds[row.fold, row.seed][["clip_id", "pred"]], on="clip_id", suffixes=("", "_ref"))
                differ = both[both["pred"] != both["pred_ref"]].sort_values("clip_id", kind="mergesort")
                for clip in differ.head(n - len(found)).itertuples(index=False):
                    found.append(Disagreement(
                        cell=cell, clip_id=clip.clip_id, fold=int(row.fold), seed=int(row.seed), run_id=row.run_id,
                        label=clip.label, pred=clip.pred, reference_pred=clip.pred_ref,
                        probs={k[2:]: float(v) for k, v in clip._asdict().items() if k.startswith("p_")}))
    return out


def write_examples(examples: dict[str, list[Disagreement]], reference: str, tracking_uri: str,
                   cache_dir: str | Path, folder: Path,
                   face_model: str | Path | None = None) -> list[tuple[Path, str]]:
    """Per cell: ``<cell>.csv`` listing its examples, and ``<cell>/<clip_id>.png/.pdf`` explain figures.

    Args:
        examples: from ``find_disagreements``.
        reference: the reference cell (named in titles and descriptions).
        tracking_uri: the MLflow store of the runs.
        cache_dir: the prepared-clip cache the units were trained from.
        folder: where to write, conventionally ``<report>/examples``.
        face_model: the face detector of the cache key (None: the usual lookup).

    Returns:
        (path, description) for every written file, for the report's README.
    """
    from fer.data.cache import entry_path
    from fer.explain import explain_clip
    from fer.train.checkpoint import WeightsError, load_unit_model

    files: list[tuple[Path, str]] = []
    loaded: dict[str, object] = {}
    for cell, found in examples.items():
        rows, figures = [], []
        for ex in found:
            note = ""
            if ex.run_id not in loaded:
                try:
                    loaded[ex.run_id] = load_unit_model(ex.run_id, tracking_uri, cache_dir)
                except WeightsError as exc:
                    loaded[ex.run_id] = exc
            model = loaded[ex.run_id]
            if isinstance(model, WeightsError):
                note = f"no figure: {model}"
            else:
                entry = entry_path(Path(cache_dir), cache_key(model, ex.run_id, face_model), ex.clip_id)
                if not entry.is_file():
                    note = f"no figure: no prepared entry {entry}"
                else:
                    title = (f"{cell}, fold {ex.fold}, seed {ex.seed}: clip {ex.clip_id}, true {ex.label}; "
                             f"predicted {ex.pred}, reference {reference}: {ex.reference_pred}")
                    stem = Path(folder) / safe_name(cell) / safe_name(ex.clip_id)
                    fig = explain_figure(explain_clip(model, entry), ex.probs, title)
                    figures.extend((p, f"cell `{cell}`: explain figure of test clip {ex.clip_id} (fold {ex.fold}), "
                                       f"predicted {ex.pred}, reference {ex.reference_pred}")
                                   for p in save_figure(fig, stem))
            rows.append({"clip_id": ex.clip_id, "fold": ex.fold, "seed": ex.seed, "label": ex.label, "pred": ex.pred,
                         "reference_pred": ex.reference_pred, "run_id": ex.run_id, "note": note})
        table = pd.DataFrame(rows, columns=["clip_id", "fold", "seed", "label", "pred", "reference_pred", "run_id",
                                            "note"])
        csv = write_text(Path(folder) / f"{safe_name(cell)}.csv", table.to_csv(index=False, lineterminator="\n"))
        files.append((csv, f"cell `{cell}`: {len(rows)} test clips it and the reference `{reference}` label "
                           "differently (same fold and seed)"))
        files.extend(figures)
    return files
