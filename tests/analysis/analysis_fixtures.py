"""Known values of the analysis test store, and the writer of unit runs with the study engine's tracking
naming (team brief). Imported by conftest.py and by the tests that check values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer.labels import EMOTIONS

STUDY = "modality"
DECLARED = ("audio", "visual", "av")
FOLDS = (0, 1, 2)
SEEDS = (0, 1)
UNFINISHED = ("visual", 2, 1)  # left RUNNING: a worker still on it
RESUMED = ("av", 0, 0)  # a FAILED run first, then a FINISHED one
PARAMS = {"audio": 1.0e6, "visual": 2.0e6, "av": 3.5e6}
GFLOPS = {"audio": 1.0, "visual": 3.0, "av": 4.5}


def unit_uar(cell: str, fold: int, seed: int) -> float:
    """The test UAR the fixture logs for a unit (differences vary, so tests are defined)."""
    base = {"audio": 0.55, "visual": 0.60, "av": 0.70}[cell]
    return base + 0.01 * fold - 0.005 * seed + 0.003 * ((7 * fold + 3 * seed + len(cell)) % 5)


def unit_confusion(fold: int, seed: int) -> np.ndarray:
    """Counts: (10 + fold) on the diagonal, (1 + seed) one class to the right."""
    cm = np.eye(8, dtype=int) * (10 + fold)
    cm[np.arange(8), (np.arange(8) + 1) % 8] = 1 + seed
    return cm


@dataclass
class Store:
    uri: str
    root: Path
    run_ids: dict = field(default_factory=dict)


def log_unit(client, exp, parent, *, study, cell, axes, fold, seed, status, uar, start, tmp: Path,
              confusion_text: str | None = None, fold_tag: str | None = None):
    from mlflow.entities import Metric, Param

    tags = {"mlflow.parentRunId": parent, "study": study, "cell": cell, "fold": fold_tag or str(fold),
            "seed": str(seed), "protocol": "ravdess-6fold", "unit_key": f"{cell}-{fold}-{seed}",
            "git_commit": "abc1234", "kind": "unit", "axes": json.dumps(axes)}
    run = client.create_run(exp, start_time=start, tags=tags)
    rid = run.info.run_id
    if status != "RUNNING":
        metrics = [Metric(k, v, start, 0) for k, v in {
            "test/uar": uar, "test/war": uar + 0.02, "test/f1": uar - 0.01, "val/uar_best": uar - 0.03,
            "best_epoch": 2.0, "params/total": PARAMS.get(cell, 1e6), "params/trainable": PARAMS.get(cell, 1e6) / 2,
            "gflops_per_clip": GFLOPS.get(cell, 1.0), "train/clips_per_s": 50.0, "peak_mem_mb": 900.0}.items()]
        metrics += [Metric(f"test/recall/{e}", uar + 0.01 * (k - 3.5), start, 0) for k, e in enumerate(EMOTIONS)]
        metrics += [Metric("val/uar", 0.3 + 0.1 * epoch, start, epoch) for epoch in range(3)]
        client.log_batch(rid, metrics=metrics, params=[Param("data.vocal_channel", "speech")])
        path = tmp / "confusion_test.csv"
        path.write_text(confusion_text if confusion_text is not None else
                        pd.DataFrame(unit_confusion(fold, seed), index=EMOTIONS, columns=EMOTIONS).to_csv())
        client.log_artifact(rid, str(path))
        client.set_terminated(rid, status, end_time=start + 1000)
    return rid




def log_modality_study(client, store: Store, artifacts: Path, tmp: Path, *, cells=DECLARED, folds=FOLDS,
                       seeds=SEEDS, start: int = 1_700_000_000_000) -> int:
    """Log study ``modality`` into a new experiment: every cell x fold x seed in the order given
    (start times rise in that order), one unit left RUNNING and one resumed after a FAILED run.
    Run ids go to ``store.run_ids``; returns the last start time used."""
    exp = client.create_experiment(STUDY, artifact_location=artifacts.as_uri())
    for cell in cells:
        parent = client.create_run(exp, tags={"study": STUDY, "cell": cell, "kind": "cell"}, start_time=start)
        for fold in folds:
            for seed in seeds:
                start += 10_000
                key = (cell, fold, seed)
                common = dict(study=STUDY, cell=cell, axes={"model.modality": cell}, fold=fold, seed=seed,
                              start=start, tmp=tmp)
                if key == RESUMED:
                    store.run_ids["failed"] = log_unit(client, exp, parent.info.run_id, status="FAILED",
                                                       uar=0.0, **{**common, "start": start - 5000})
                status = "RUNNING" if key == UNFINISHED else "FINISHED"
                store.run_ids[key] = log_unit(client, exp, parent.info.run_id, status=status,
                                              uar=unit_uar(cell, fold, seed), **common)
        client.set_terminated(parent.info.run_id, "FINISHED")
    return start
