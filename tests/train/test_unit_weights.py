"""A unit's model/ artifact: written once with the other artifacts, loaded back bit-identically,
a fixed part whose hash differs refused by name, nothing kept under train.save_weights=none."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch


def _fresh(seed: int, **overrides):
    from fer.config import resolve_config
    from fer.models.model import build_model

    cfg = resolve_config("tiny", {"train.precision": "no", **overrides})
    torch.manual_seed(seed)
    return build_model(cfg), cfg


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert different == []


@pytest.mark.parametrize("mode", ["trainable", "all"])
def test_model_folder_round_trip_is_bit_identical(tmp_path, mode):
    from fer.train.checkpoint import load_model_dir, unit_weights

    model, cfg = _fresh(3)
    with torch.no_grad():  # trained weights differ from the seed's: they must come from the file
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)
    weights = unit_weights(model, cfg, seed=3, mode=mode)
    weights.write(tmp_path / "model")
    loaded = load_model_dir(tmp_path / "model", tmp_path / "cache")
    _states_equal(model, loaded.model)
    assert not loaded.model.training
    fixed = weights.manifest["fixed_parts"]
    if mode == "all":
        assert fixed == {}
    else:  # tiny's encoders are frozen and random: rebuilt from (seed, part), not stored
        assert {p: f["source"] for p, f in fixed.items()} == {"audio_encoder": "random", "visual_encoder": "random"}
        stored = safetensors.torch.load(weights.blob)
        assert not any(k.startswith(("audio_encoder.", "visual_encoder.")) for k in stored)
    assert loaded.labels == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def test_crema_d_model_folder_holds_and_loads_its_six_labels(tmp_path):
    from fer.train.checkpoint import WeightsError, load_model_dir, unit_weights

    model, cfg = _fresh(1, **{"data.dataset": "crema-d"})
    unit_weights(model, cfg, seed=1, mode="trainable").write(tmp_path / "model")
    six = ["angry", "disgust", "fearful", "happy", "neutral", "sad"]
    assert json.loads((tmp_path / "model" / "labels.json").read_text()) == six
    loaded = load_model_dir(tmp_path / "model", tmp_path / "cache")
    assert loaded.labels == tuple(six) and loaded.cfg.data.dataset == "crema-d"
    assert loaded.model.classifier.mlp[-1].out_features == 6
    # A label file that does not match the config's dataset is refused, naming both.
    (tmp_path / "model" / "labels.json").write_text(json.dumps(six[::-1]))
    with pytest.raises(WeightsError, match=r"labels.json holds \['sad'.*not the label set of its dataset crema-d"):
        load_model_dir(tmp_path / "model", tmp_path / "cache")


def test_trainable_mode_stores_less_than_all():
    from fer.train.checkpoint import unit_weights

    model, cfg = _fresh(0)
    assert unit_weights(model, cfg, seed=0, mode="trainable").mb < unit_weights(model, cfg, seed=0, mode="all").mb
    assert unit_weights(model, cfg, seed=0, mode="none") is None


def test_tampered_fixed_part_hash_is_refused_naming_the_part(tmp_path):
    from fer.train.checkpoint import WeightsError, load_model_dir, unit_weights

    model, cfg = _fresh(1)
    unit_weights(model, cfg, seed=1, mode="trainable").write(tmp_path / "model")
    manifest_path = tmp_path / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fixed_parts"]["visual_encoder"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"part visual_encoder rebuilt from random \(seed 1\) differs"):
        load_model_dir(tmp_path / "model", tmp_path / "cache")


def test_wrong_seed_rebuilds_different_frozen_part_and_is_refused(tmp_path):
    from fer.train.checkpoint import WeightsError, load_model_dir, unit_weights

    model, cfg = _fresh(1)
    unit_weights(model, cfg, seed=2, mode="trainable").write(tmp_path / "model")  # the wrong seed recorded
    with pytest.raises(WeightsError, match="part audio_encoder"):
        load_model_dir(tmp_path / "model", tmp_path / "cache")


def test_folder_without_weights_file_is_a_clear_error(tmp_path):
    from fer.train.checkpoint import WeightsError, load_model_dir, unit_weights

    model, cfg = _fresh(0)
    unit_weights(model, cfg, seed=0, mode="trainable").write(tmp_path / "model")
    (tmp_path / "model" / "weights.safetensors").unlink()
    with pytest.raises(WeightsError, match="no weights.safetensors"):
        load_model_dir(tmp_path / "model", tmp_path / "cache")


def test_unit_run_logs_model_folder_that_loads_back(recorded_run, tmp_path):
    """The recorded unit (tests/train/conftest.py) logged model/ with its other artifacts; it
    loads back with exactly the best-epoch tensors and its model_mb is the stored size."""
    from safetensors.torch import load

    from fer.train.checkpoint import load_unit_model

    client, run_id = recorded_run.client, recorded_run.run_id
    names = sorted(a.path for a in client.list_artifacts(run_id, "model"))
    assert names == ["model/config.yaml", "model/labels.json", "model/manifest.json", "model/weights.safetensors"]
    weights = recorded_run.result.weights
    assert client.get_run(run_id).data.metrics["model_mb"] == pytest.approx(len(weights.blob) / 2**20)
    loaded = load_unit_model(run_id, client.tracking_uri, tmp_path / "cache")
    saved, state = load(weights.blob), loaded.model.state_dict()
    assert [k for k in saved if not torch.equal(saved[k], state[k])] == []
    assert loaded.seed == 0


def test_save_weights_none_logs_no_model_folder(synth_data, prepared_cache, tmp_path):
    from mlflow import MlflowClient

    from fer.config import resolve_config
    from fer.tracking import ensure_experiment, log_unit_result, start_unit_run
    from fer.train.run import run_unit

    cfg = resolve_config("tiny", {"train.precision": "no", "train.save_weights": "none"})
    result = run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0, max_epochs=1)
    assert result.weights is None and result.metrics["model_mb"] == 0.0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = start_unit_run(client, ensure_experiment(client, "none"), parent_run_id=None,
                            tags={"kind": "unit"}, params={})
    log_unit_result(client, run_id, result, config=cfg)
    names = [a.path for a in client.list_artifacts(run_id)]
    assert "model" not in names and "predictions_test.csv" in names


def test_save_weights_is_a_checked_config_field():
    from fer.config import ConfigError, resolve_config

    assert resolve_config("tiny").train.save_weights == "trainable"
    with pytest.raises(ConfigError) as err:
        resolve_config("tiny", {"train.save_weights": "some"})
    assert any(path == "train.save_weights" for path, _ in err.value.errors)
