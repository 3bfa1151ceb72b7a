"""End to end on a synthetic CREMA-D: the shipped ``modality`` study with ``--set data.dataset=crema-d``
(two folds of crema-d-5fold, one epoch), its report with the six emotions and the human rows, and
``predict`` naming the six labels it reads from the runs.

Each block of crema-d-5fold holds two of the ten synthetic actors, so fold 0 tests two actors,
validates on two and trains on six."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fer.labels import emotions
from runner import cli

CREMA = emotions("crema-d")
CELLS = ["modality=audio", "modality=visual", "modality=av"]
HUMAN = "human (majority vote)"


@pytest.mark.slow
def test_modality_study_on_crema_d_to_report_and_predict(tmp_path, monkeypatch):
    import torch
    from mlflow import MlflowClient

    from fer.data.cremad import human_reference
    from fer.data.synth import generate_cremad

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the engine's experiments keep artifacts under ./mlruns
    data = tmp_path / "crema-d"
    generate_cremad(data, actors=10, clips_per_class=1, seconds=1.0, fps=8, size=128, seed=0, workers=1)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--cache", str(tmp_path / "cache"), "--tracking-uri", tracking]
    runner = CliRunner()
    result = runner.invoke(cli, ["study", "modality", "--data-root", str(data), *common, "--folds", "0,1",
                                 "--seeds", "0", "--max-epochs", "1", "--storage", str(tmp_path / "ledger.journal"),
                                 "--set", "data.dataset=crema-d", "--set", "train.precision='no'",
                                 "--set", "train.batch_size=8"])
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("modality")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert {(r.data.tags["dataset"], r.data.tags["protocol"]) for r in runs} == {("crema-d", "crema-d-5fold")}
    assert {k for k in runs[0].data.metrics if k.startswith("test/recall/")} == {f"test/recall/{e}" for e in CREMA}

    # The report finds the data root the units logged: six-emotion tables and the human rows.
    out = tmp_path / "report"
    result = runner.invoke(cli, ["report", "modality", "--out", str(out), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "table.csv").set_index("cell")
    assert list(table.index) == [*CELLS, *(f"{HUMAN}, {m}" for m in ("audio", "visual", "av"))]
    assert list(pd.read_csv(out / "recall.csv", index_col=0).columns) == list(CREMA)
    counts = pd.read_csv(out / "confusion" / "modality=av_counts.csv", index_col=0)
    assert list(counts.index) == list(CREMA) == list(counts.columns)
    # Human rows: the raters' vote on each fold's test clips (those of the units' predictions).
    av_runs = sorted((r for r in runs if r.data.tags["cell"] == "modality=av"), key=lambda r: r.data.tags["fold"])
    test_clips = [pd.read_csv(client.download_artifacts(r.info.run_id, "predictions_test.csv", str(tmp_path)),
                              dtype={"clip_id": str})["clip_id"].tolist() for r in av_runs]
    assert counts.to_numpy().sum() == sum(len(c) for c in test_clips)
    table_file = data / "processedResults" / "summaryTable.csv"
    for modality in ("audio", "visual", "av"):
        want = [human_reference(clips, table_file)[modality]["uar"] for clips in test_clips]
        assert table.loc[f"{HUMAN}, {modality}", "test_uar_mean"] == pytest.approx(np.mean(want), abs=1e-6)
    md = (out / "table.md").read_text()
    assert "on CREMA-D, protocol crema-d-5fold, folds 0, 1, seeds 0" in md and f"| {HUMAN}, av | 2/2 |" in md

    # predict reads the six labels from the run; a visual model's frames come from the .flv as in training.
    clip = test_clips[0][0]
    result = runner.invoke(cli, ["predict", "--study", "modality", "--cell", "modality=visual", "--fold", "0",
                                 "--json", *common, str(data / "VideoFlash" / f"{clip}.flv")])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["model"]["labels"] == list(CREMA) and list(answer["clips"][0]["probs"]) == list(CREMA)
    visual0 = next(r for r in runs if r.data.tags["cell"] == "modality=visual" and r.data.tags["fold"] == "0")
    logged = pd.read_csv(client.download_artifacts(visual0.info.run_id, "predictions_test.csv", str(tmp_path / "v")),
                         dtype={"clip_id": str}).set_index("clip_id").loc[clip]
    np.testing.assert_allclose([answer["clips"][0]["probs"][e] for e in CREMA], [logged[f"p_{e}"] for e in CREMA],
                               atol=1e-5, rtol=0)
