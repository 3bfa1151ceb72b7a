"""run_unit reads pretrained checkpoints from this machine only: a hub id resolves to the copy
under ``<cache>/weights``, and a checkpoint that is missing stops the unit before any work."""

from __future__ import annotations

import pytest
import torch
from transformers import ParakeetEncoder, ParakeetEncoderConfig

from fer.config import resolve_config
from fer.models.audio import AUDIO_ENCODERS
from fer.train.run import run_unit
from fer.weights import MissingWeightsError

HUB_ID = "acme/fastconformer-tiny"  # not on any hub: only the copy under <cache>/weights exists


def _cfg():
    from tests.train.conftest import OVERRIDES

    return resolve_config("tiny", {**OVERRIDES, "train.epochs": 1, "model.modality": "audio",
                                   "model.audio.pretrained": HUB_ID})


def test_hub_id_is_built_from_the_converted_copy_in_the_cache(synth_data, prepared_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    saved = ParakeetEncoder(ParakeetEncoderConfig(**AUDIO_ENCODERS.get("tiny")))
    saved.save_pretrained(prepared_cache / "weights" / "acme--fastconformer-tiny")
    built = {}
    import fer.models.model as model_module

    real_build = model_module.build_model

    def spy(cfg, device="cpu"):
        model = real_build(cfg, device)
        if str(device) == "meta":  # the FLOPs profile: shapes only, reads nothing
            return model
        built["pretrained"] = cfg.model.audio.pretrained
        built["state"] = {k: v.clone() for k, v in model.audio_encoder.encoder.state_dict().items()}
        return model

    monkeypatch.setattr(model_module, "build_model", spy)
    result = run_unit(_cfg(), data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0, evaluate_test=False)
    assert built["pretrained"] == str(prepared_cache / "weights" / "acme--fastconformer-tiny")
    for key, value in saved.state_dict().items():
        assert torch.equal(built["state"][key], value), key
    assert result.metrics["val/uar_best"] == max(h["val/uar"] for h in result.history)


def test_missing_checkpoint_stops_the_unit_before_any_work(synth_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match=HUB_ID):
        run_unit(_cfg(), data_root=synth_data, cache_dir=tmp_path / "cache", fold=0, seed=0)
    assert not (tmp_path / "cache").exists()  # nothing prepared, nothing cached
