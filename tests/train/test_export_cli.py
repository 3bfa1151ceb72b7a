"""runner.py export --run: a trained unit's model as ONNX, whose logits on a prepared test clip give
the probabilities that unit logged for it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fer.labels import EMOTIONS

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_exported_unit_reproduces_its_logged_test_prediction(recorded_run, prepared_cache, unit_cfg, tmp_path):
    from click.testing import CliRunner

    import runner
    from fer.data.cache import entry_path
    from fer.data.dataset import PreparedClipDataset
    from fer.data.prepare import PrepareSettings, resolve_settings

    out = tmp_path / "unit.onnx"
    result = CliRunner().invoke(runner.cli, ["export", "--run", recorded_run.run_id, "--out", str(out),
                                             "--tracking-uri", recorded_run.client.tracking_uri,
                                             "--cache", str(prepared_cache)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["max_abs_diff"] <= 1e-4 and out.stat().st_size == summary["bytes"]

    with open(recorded_run.client.download_artifacts(recorded_run.run_id, "predictions_test.csv")) as fh:
        row = next(csv.DictReader(fh))
    settings, _ = resolve_settings(PrepareSettings.from_data_config(unit_cfg.data))
    item = PreparedClipDataset([entry_path(prepared_cache, settings.key(), row["clip_id"])], unit_cfg.data, train=False)[0]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {i.name: item[i.name][None].numpy() for i in session.get_inputs()}
    logits = session.run(["logits"], feed)[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(probs, [float(row[f"p_{e}"]) for e in EMOTIONS], atol=1e-4, rtol=0)


def test_export_of_a_run_without_weights_is_a_clear_error(tmp_path):
    from click.testing import CliRunner
    from mlflow import MlflowClient

    import runner

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x"))
    result = CliRunner().invoke(runner.cli, ["export", "--run", run.info.run_id, "--out", str(tmp_path / "m.onnx"),
                                             "--tracking-uri", uri, "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert "model" in result.output and not (tmp_path / "m.onnx").exists()
