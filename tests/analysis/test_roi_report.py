"""ROI selection frequency in study reports: a tiny real study varying ``model.visual.roi.k``, its
stored fold models run on their test clips, the kept patches counted per cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

ABLATIONS = {
    "defaults": {"preset": "tiny", "overrides": {"train.precision": "no", "train.batch_size": 8,
                                                 "model.modality": "visual"}},
    "studies": {"roi-k": {"description": "two ROI sizes", "axes": {"model.visual.roi.k": [8, 16]},
                          "folds": [0, 1], "seeds": [0], "reference": {"model.visual.roi.k": 16}}},
}
CELLS = {"k=8": 8, "k=16": 16}
FRAMES = 8  # tiny's data.frames


def test_study_not_varying_roi_writes_no_roi_figure(mlflow_store, tmp_path):
    from analysis.report import write_study_report

    plain = write_study_report("modality", tracking_uri=mlflow_store.uri, out_dir=tmp_path / "plain", command="c")
    with_cache = write_study_report("modality", tracking_uri=mlflow_store.uri, out_dir=tmp_path / "cached",
                                    cache_dir=tmp_path / "cache", command="c")
    relative = [p.relative_to(tmp_path / "plain") for p in plain]
    assert [p.relative_to(tmp_path / "cached") for p in with_cache] == relative
    assert not (tmp_path / "cached" / "roi").exists()
    assert (tmp_path / "cached" / "README.md").read_bytes() == (tmp_path / "plain" / "README.md").read_bytes()


def test_roi_units_without_stored_model_get_no_figure(mlflow_store, tmp_path):
    """The fixture's ``roi`` study varies roi.k but its units have no ``model/`` artifact."""
    from analysis.report import write_study_report

    files = write_study_report("roi", tracking_uri=mlflow_store.uri, out_dir=tmp_path / "r", cache_dir=tmp_path)
    assert not any("roi" in p.relative_to(tmp_path / "r").parts[:1] for p in files)


@pytest.mark.slow
def test_roi_figures_count_kept_patches(tmp_path, monkeypatch):
    import torch
    from mlflow import MlflowClient

    from analysis.report import write_study_report
    from fer.data.synth import generate
    from studies.engine import run_study
    from studies.options import RunOptions
    from studies.spec import validate

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "ravdess"
    generate(data, actors=12, clips_per_class=1, seconds=1.0, fps=8, size=128, seed=0)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = tmp_path / "cache"
    opts = RunOptions(data_root=data, cache_dir=cache, storage=str(tmp_path / "ledger.journal"),
                      tracking_uri=tracking, max_epochs=1)
    done = run_study("roi-k", validate(ABLATIONS), opts, echo=lambda s: None)
    assert done["finished"] == 4 and done["failed"] == 0

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("roi-k")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    clips = {cell: 0 for cell in CELLS}
    preds = {}
    for r in runs:
        dst = tmp_path / "artifacts" / r.info.run_id
        dst.mkdir(parents=True)
        frame = pd.read_csv(client.download_artifacts(r.info.run_id, "predictions_test.csv", str(dst)), dtype=str)
        clips[r.data.tags["cell"]] += len(frame)
        preds[r.data.tags["cell"], r.data.tags["fold"]] = frame.set_index("clip_id")["pred"]
    assert all(n > 0 for n in clips.values())
    # Clips k=8 and the reference k=16 label differently, fold by fold, in clip order.
    differ = [(int(fold), clip) for fold in ("0", "1") for clip in sorted(preds["k=8", fold].index)
              if preds["k=8", fold][clip] != preds["k=16", fold][clip]]
    assert differ, "the two cells should disagree somewhere for the examples to be checked"

    out = tmp_path / "report"
    files = write_study_report("roi-k", tracking_uri=tracking, out_dir=out, reference="k=16",
                               cell_order=list(CELLS), cache_dir=cache, examples=2)
    readme = (out / "README.md").read_text()
    for cell, k in CELLS.items():
        for suffix in (".png", ".pdf", "_counts.csv"):
            path = out / "roi" / f"{cell}{suffix}"
            assert path in files and path.stat().st_size > 0
            assert f"(roi/{cell}{suffix})" in readme
        counts = pd.read_csv(out / "roi" / f"{cell}_counts.csv", index_col=0).to_numpy()
        assert counts.shape == (8, 8)  # tiny: 64 px crops, 8 px patches
        # Every frame keeps exactly k distinct patches, so no patch is counted more than once a frame.
        assert counts.sum() == k * FRAMES * clips[cell]
        assert counts.max() <= FRAMES * clips[cell]
        assert np.count_nonzero(counts) >= k

    listed = pd.read_csv(out / "examples" / "k=8.csv", dtype={"clip_id": str, "note": str})
    assert list(zip(listed["fold"], listed["clip_id"])) == differ[:2]
    assert (listed["pred"] != listed["reference_pred"]).all() and listed["note"].isna().all()
    for clip in listed["clip_id"]:
        assert (out / "examples" / "k=8" / f"{clip}.png").stat().st_size > 0
        assert f"(examples/k=8/{clip}.pdf)" in readme
    assert not (out / "examples" / "k=16.csv").exists()  # the reference is not compared with itself

    # A clip whose prepared entry is gone is skipped and counted, not an error.
    for entry in sorted(cache.glob("prepared/*/*.npz"))[:1]:
        entry.unlink()
    from analysis.load import load_study_runs
    from analysis.roi import roi_selection_counts

    counted = roi_selection_counts(load_study_runs("roi-k", tracking), tracking, cache)
    for cell, k in CELLS.items():
        c = counted[cell]
        assert c.clips + c.missing_clips == clips[cell] and c.folds == (0, 1)
        assert c.counts.sum() == k * FRAMES * c.clips
    assert sum(c.missing_clips for c in counted.values()) in (0, 2)  # each cell tests every clip once
