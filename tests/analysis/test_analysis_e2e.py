"""End to end: a tiny real study (two cells, two folds, one epoch) trained by the study engine into a
temporary MLflow store, then ``write_study_report``, checked against the runs themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer.labels import EMOTIONS

ABLATIONS = {
    "defaults": {"preset": "tiny", "overrides": {"train.precision": "no", "train.batch_size": 8}},
    "studies": {"toy": {"description": "two cells", "axes": {"model.modality": ["audio", "av"]},
                        "folds": [0, 1], "seeds": [0], "reference": {"model.modality": "av"}}},
}
CELLS = ["modality=audio", "modality=av"]


@pytest.mark.slow
def test_real_study_to_report(tmp_path, monkeypatch):
    import torch
    from mlflow import MlflowClient

    from analysis.report import write_study_report
    from fer.data.synth import generate
    from studies.engine import run_study
    from studies.options import RunOptions
    from studies.spec import validate

    torch.set_num_threads(1)
    # Experiments the engine creates keep artifacts under ./mlruns of the working directory.
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "ravdess"
    generate(data, actors=12, clips_per_class=1, seconds=1.0, fps=8, size=128, seed=0)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = RunOptions(data_root=data, cache_dir=tmp_path / "cache", storage=str(tmp_path / "ledger.journal"),
                      tracking_uri=tracking, max_epochs=1)
    done = run_study("toy", validate(ABLATIONS), opts, echo=lambda s: None)
    assert done["finished"] == 4 and done["failed"] == 0

    out = tmp_path / "report"
    write_study_report("toy", tracking_uri=tracking, out_dir=out, reference="modality=av", cell_order=CELLS)

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("toy")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    by_cell = {c: [r for r in runs if r.data.tags["cell"] == c] for c in CELLS}
    table = pd.read_csv(out / "table.csv").set_index("cell")
    assert list(table.index) == CELLS and table["reference"].tolist() == [False, True]
    for cell, cell_runs in by_cell.items():
        assert len(cell_runs) == 2
        for metric in ("test/uar", "test/war", "test/f1"):
            values = [r.data.metrics[metric] for r in cell_runs]
            col = metric.replace("/", "_")
            assert table.loc[cell, f"{col}_mean"] == pytest.approx(np.mean(values), abs=1e-6)
            assert table.loc[cell, f"{col}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        assert table.loc[cell, "finished"] == 2 and table.loc[cell, "expected"] == 2
        assert table.loc[cell, "params_m"] == pytest.approx(cell_runs[0].data.metrics["params/total"] / 1e6, abs=1e-6)
        # The summed confusion equals the one rebuilt from every unit's test predictions.
        want = np.zeros((8, 8), dtype=int)
        for r in cell_runs:
            preds = pd.read_csv(client.download_artifacts(r.info.run_id, "predictions_test.csv", str(tmp_path)))
            for true, pred in zip(preds["label"], preds["pred"]):
                want[EMOTIONS.index(true), EMOTIONS.index(pred)] += 1
        got = pd.read_csv(out / "confusion" / f"{cell}_counts.csv", index_col=0)
        assert got.to_numpy().tolist() == want.tolist()
    audio_pairs = {r.data.tags["fold"]: r.data.metrics["test/uar"] for r in by_cell["modality=audio"]}
    av_pairs = {r.data.tags["fold"]: r.data.metrics["test/uar"] for r in by_cell["modality=av"]}
    diff = np.mean([audio_pairs[f] - av_pairs[f] for f in ("0", "1")])
    assert table.loc["modality=audio", "test_uar_diff"] == pytest.approx(diff, abs=1e-6)
    readme = (out / "README.md").read_text()
    assert "Unit runs read: 4" in readme and "FINISHED 4" in readme
    for name in ("table.md", "table.tex", "test_uar.png", "test_war.pdf", "recall.png", "confusion/modality=av.png"):
        assert (out / name).stat().st_size > 0 and f"[{name}]({name})" in readme
