"""The human reference of a CREMA-D study: the raters' majority vote on the units' own test clips.

CREMA-D's ``processedResults/summaryTable.csv`` holds per clip the raters' majority vote from the
voice alone, the face alone and both. For every modality a study's cells use (``model.modality``:
audio -> voice votes, visual -> face votes, av -> multimodal votes) and every fold, the vote is
scored on the test clips the fold's finished units were evaluated on (their
``predictions_test.csv``), with ``fer.data.cremad.human_reference`` (a tie of k emotions counts
1/k). The report shows it as a row ``human (majority vote)`` per modality (mean over folds) and a
line in the metric figures.

    human = human_reference(units, tracking_uri, data_root)
    human["audio"].mean("test/uar")  # the voice vote's UAR, mean over the study's folds
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import FINISHED, ReportError
from fer.data import cremad
from fer.data.cremad import SUMMARY_TABLE
from fer.data.datasets import get_dataset

HUMAN = "human (majority vote)"
HUMAN_DATASET = "crema-d"  # the one dataset with per-clip votes
MODALITIES = ("audio", "visual", "av")  # vote columns VoiceVote, FaceVote, MultiModalVote
HUMAN_METRICS = {"test/uar": "uar", "test/war": "war"}  # report metric -> human_reference key


@dataclass(frozen=True)
class HumanReference:
    """One modality's majority vote, scored per fold on the fold's test clips."""

    modality: str
    folds: dict[int, dict[str, float]]  # fold -> {"uar", "war"}, fractions
    clips: int  # test clips scored, over all folds

    @property
    def cell(self) -> str:
        """The row's name in tables: ``human (majority vote), audio``."""
        return human_cell(self.modality)

    def values(self, metric: str) -> list[float]:
        """Per-fold values of a report metric (fold order); empty for a metric the votes do not give."""
        key = HUMAN_METRICS.get(metric)
        return [] if key is None else [self.folds[f][key] for f in sorted(self.folds)]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return float(np.mean(values)) if values else float("nan")


def human_cell(modality: str) -> str:
    return f"{HUMAN}, {modality}"


def is_human(cell: str) -> bool:
    """Whether a table row is a human reference row rather than a cell of the study."""
    return str(cell).startswith(HUMAN)


def wants_human(units: pd.DataFrame) -> bool:
    """Whether the study has CREMA-D units, whose test clips have votes."""
    return "dataset" in units and bool((units["dataset"] == HUMAN_DATASET).any())


def human_reference(units: pd.DataFrame, tracking_uri: str, data_root: str | Path) -> dict[str, HumanReference]:
    """The majority vote of every modality the study's finished CREMA-D cells use, per fold.

    Args:
        units: frame from ``analysis.load.load_study_runs`` (``attrs["modality"]``: cell -> modality).
        tracking_uri: the MLflow store of the runs (their ``predictions_test.csv``).
        data_root: the CREMA-D folder holding ``processedResults/summaryTable.csv``.

    Returns:
        ``{modality: HumanReference}`` in ``MODALITIES`` order; empty without finished CREMA-D units.

    Raises:
        ReportError: no summary table under ``data_root``, a malformed one, a test clip without a
            row in it, or a unit's predictions that cannot be read.
    """
    from analysis.roi import read_predictions

    done = units[(units["status"] == FINISHED) & (units["dataset"] == HUMAN_DATASET)]
    modality_of = units.attrs.get("modality", {})
    present = [m for m in MODALITIES if m in {modality_of.get(c) for c in done["cell"]}]
    if not present:
        return {}
    table = Path(data_root) / SUMMARY_TABLE
    try:
        votes = get_dataset(HUMAN_DATASET).human_votes(data_root)
    except cremad.CremaDFileError as exc:
        raise ReportError(str(exc)) from None
    if votes is None:
        raise ReportError(f"{table}: not found; the human reference of a CREMA-D study needs the summary "
                          "table of the data root given (--data-root)")
    clips: dict[tuple[str, int], set[str]] = {}
    with tempfile.TemporaryDirectory(prefix="fer-human-") as tmp:
        for row in done.itertuples(index=False):
            modality = modality_of.get(row.cell)
            if modality in present:
                ids = read_predictions(row, tracking_uri, Path(tmp))["clip_id"]
                clips.setdefault((modality, int(row.fold)), set()).update(ids)
    out = {}
    for modality in present:
        folds = {}
        for (m, fold), ids in sorted(clips.items()):
            if m != modality:
                continue
            try:
                folds[fold] = cremad.human_reference(sorted(ids), votes)[modality]
            except ValueError as exc:
                raise ReportError(f"{table}, fold {fold}: {exc}") from None
        out[modality] = HumanReference(modality, folds, sum(len(ids) for (m, _), ids in clips.items()
                                                            if m == modality))
    return out
