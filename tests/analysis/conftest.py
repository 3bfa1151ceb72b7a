"""Fixtures for the analysis tests: a small MLflow store written the way the study engine writes
runs (tracking naming in the team brief), and a builder of unit frames without MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


def _log_unit(client, exp, parent, *, study, cell, axes, fold, seed, status, uar, start, tmp: Path,
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


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> Store:
    """Studies: ``modality`` (3 cells x 3 folds x 2 seeds, one unit RUNNING, one resumed after a
    FAILED run), ``all-failed`` (no finished unit), ``bad-tags`` (fold tag not an integer) and
    ``bad-confusion`` (a confusion artifact with the wrong labels)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    store = Store(uri=f"sqlite:///{root}/mlflow.db", root=root)
    client = MlflowClient(tracking_uri=store.uri)
    tmp = root / "upload"
    tmp.mkdir()

    exp = client.create_experiment(STUDY, artifact_location=(root / "artifacts").as_uri())
    start = 1_700_000_000_000
    # Cells logged in an order unlike both the declared and the sorted one.
    for cell in ("av", "audio", "visual"):
        parent = client.create_run(exp, tags={"study": STUDY, "cell": cell, "kind": "cell"}, start_time=start)
        for fold in FOLDS:
            for seed in SEEDS:
                start += 10_000
                key = (cell, fold, seed)
                common = dict(study=STUDY, cell=cell, axes={"model.modality": cell}, fold=fold, seed=seed,
                              start=start, tmp=tmp)
                if key == RESUMED:
                    store.run_ids["failed"] = _log_unit(client, exp, parent.info.run_id, status="FAILED",
                                                        uar=0.0, **{**common, "start": start - 5000})
                status = "RUNNING" if key == UNFINISHED else "FINISHED"
                store.run_ids[key] = _log_unit(client, exp, parent.info.run_id, status=status,
                                               uar=unit_uar(cell, fold, seed), **common)
        client.set_terminated(parent.info.run_id, "FINISHED")

    for study, kwargs in (("all-failed", {"status": "FAILED"}),
                          ("bad-tags", {"status": "FINISHED", "fold_tag": "first"}),
                          ("bad-confusion", {"status": "FINISHED", "confusion_text": "a,b\n1,2\n"})):
        exp = client.create_experiment(study, artifact_location=(root / f"artifacts-{study}").as_uri())
        parent = client.create_run(exp, tags={"study": study, "cell": "x", "kind": "cell"}).info.run_id
        store.run_ids[study] = _log_unit(client, exp, parent, study=study, cell="x", axes={"model.modality": "av"},
                                         fold=0, seed=0, uar=0.5, start=start, tmp=tmp, **kwargs)
    return store


@pytest.fixture
def make_units():
    """Build a tidy unit frame by hand: rows of (cell, fold, seed, status, {metric: value}, {axis: value})."""

    def build(rows, axes: dict[str, str] | None = None, study: str = "toy") -> pd.DataFrame:
        records = []
        for cell, fold, seed, status, metrics, axis_values in rows:
            records.append({"study": study, "cell": cell, **axis_values, "fold": fold, "seed": seed,
                            "status": status, "protocol": "ravdess-6fold", "vocal_channel": "speech",
                            "params/total": 1.5e6, "params/trainable": 1.0e6, "gflops_per_clip": 2.25,
                            **metrics, "git_commit": "abc1234"})
        frame = pd.DataFrame(records)
        frame.attrs = {"study": study, "axes": dict(axes or {})}
        return frame

    return build
