"""Fixtures for the analysis tests: a small MLflow store written the way the study engine writes
runs (tracking naming in the team brief), and a builder of unit frames without MLflow."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_fixtures import Store, log_modality_study, log_unit


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> Store:
    """Studies: ``modality`` (3 cells x 3 folds x 2 seeds, one unit RUNNING, one resumed after a
    FAILED run), ``roi`` (k = 16, null, 4; one unit each), ``all-failed`` (no finished unit), ``bad-tags`` (fold tag not an integer) and
    ``bad-confusion`` (a confusion artifact with the wrong labels)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    store = Store(uri=f"sqlite:///{root}/mlflow.db", root=root)
    client = MlflowClient(tracking_uri=store.uri)
    tmp = root / "upload"
    tmp.mkdir()

    # Cells logged in an order unlike both the declared and the sorted one.
    start = log_modality_study(client, store, root / "artifacts", tmp, cells=("av", "audio", "visual"))

    exp = client.create_experiment("roi", artifact_location=(root / "artifacts-roi").as_uri())
    for k in (16, None, 4):
        parent = client.create_run(exp, tags={"study": "roi", "cell": f"k={k}", "kind": "cell"}).info.run_id
        log_unit(client, exp, parent, study="roi", cell=f"k={k}", axes={"model.visual.roi.k": k}, fold=0, seed=0,
                 status="FINISHED", uar=0.5, start=start, tmp=tmp)

    for study, kwargs in (("all-failed", {"status": "FAILED"}),
                          ("bad-tags", {"status": "FINISHED", "fold_tag": "first"}),
                          ("bad-confusion", {"status": "FINISHED", "confusion_text": "a,b\n1,2\n"})):
        exp = client.create_experiment(study, artifact_location=(root / f"artifacts-{study}").as_uri())
        parent = client.create_run(exp, tags={"study": study, "cell": "x", "kind": "cell"}).info.run_id
        store.run_ids[study] = log_unit(client, exp, parent, study=study, cell="x", axes={"model.modality": "av"},
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
