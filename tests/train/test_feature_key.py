"""What a feature-cache key depends on: every setting of the run config, one at a time.

Each leaf of the tiny run config is changed to another valid value, the model is rebuilt from
the same seed, and each frozen encoder's cache key is compared with the base config's. It must
change exactly for the settings that shape that encoder's output (``SHAPES``: its architecture,
the prepared clips, its input normalisation) and stay the same for every other one (training,
pooling, ROI, fusion, head, augmentation switches, where the weights are read from). A config
setting without an entry in ``ALTERNATIVES`` fails ``test_every_setting_is_varied``, so a new
one cannot be left out of the key unnoticed.
"""

from __future__ import annotations

import pytest
import torch

from fer.config import flatten, resolve_config
from fer.data.prepare import PrepareSettings
from fer.models.model import build_model
from fer.slots import AUDIO, VISUAL
from fer.train.features import encoder_key

# Settings of the prepared entries: a new entry is a new input for both encoders. Another corpus
# is other clips: its features are kept apart from RAVDESS's.
PREPARED = {"data.dataset", "data.frames", "data.size", "data.audio_seconds", "data.sample_rate"}
SHAPES = {
    AUDIO: PREPARED | {"model.audio.encoder", "model.audio.layers"},
    VISUAL: PREPARED | {"model.visual.backend", "model.visual.encoder", "data.mean", "data.std"},
}
# Checkpoints written by the fixture ``checkpoints``; "{audio}" etc. are replaced by their paths.
CHECKPOINT = "{%s}"

# setting -> the overrides that change it (several where one setting needs another with it).
# Booleans not listed here are flipped.
ALTERNATIVES: dict[str, list[dict]] = {
    "data.dataset": [{"data.dataset": "crema-d"}],
    "data.protocol": [{"data.protocol": "hicmae-6fold"}],
    "data.vocal_channel": [{"data.vocal_channel": "song"}],
    "data.frames": [{"data.frames": 4}],
    "data.size": [{"data.size": 128}],
    "data.audio_seconds": [{"data.audio_seconds": 1.0}],
    "data.sample_rate": [{"data.sample_rate": 8000}],
    "data.mean": [{"data.mean": (0.4, 0.5, 0.5)}],
    "data.std": [{"data.std": (0.5, 0.5, 0.25)}],
    "model.modality": [{"model.modality": "audio"}, {"model.modality": "visual"}],
    "model.segments": [{"model.segments": 2}],
    "model.audio.encoder": [{"model.audio.encoder": "fastconformer-large"}],
    # The same weights read from a checkpoint: the weights hash, not the path, identifies them.
    "model.audio.pretrained": [{"model.audio.pretrained": CHECKPOINT % "audio"}],
    "model.audio.layers": [{"model.audio.layers": 1}],
    "model.audio.pooling": [{"model.audio.pooling": "max"}],
    "model.visual.backend": [{"model.visual.backend": "transformers"}],
    "model.visual.encoder": [{"model.visual.encoder": "siglip2-b16"}],
    "model.visual.pretrained": [{"model.visual.pretrained": CHECKPOINT % "visual"}],
    "model.visual.roi.k": [{"model.visual.roi.k": 8}, {"model.visual.roi.k": None}],
    "model.visual.roi.global_tokens": [{"model.visual.roi.global_tokens": 0}],
    "model.visual.roi.selection": [{"model.visual.roi.selection": "grid"}],
    "model.visual.roi.beta": [{"model.visual.roi.beta": 1.0}],
    "model.visual.roi.sigma": [{"model.visual.roi.sigma": 0.2}],
    "model.visual.roi.tau": [{"model.visual.roi.tau": 0.5}],
    "model.visual.roi.heads": [{"model.visual.roi.heads": 2}],
    "model.visual.temporal.dim": [{"model.visual.temporal.dim": 32}],
    "model.visual.temporal.layers": [{"model.visual.temporal.layers": 2}],
    "model.visual.temporal.conv_share": [{"model.visual.temporal.conv_share": 0.5}],
    "model.visual.temporal.heads": [{"model.visual.temporal.heads": 2}],
    "model.visual.temporal.kernel": [{"model.visual.temporal.kernel": 5}],
    "model.visual.temporal.mlp_ratio": [{"model.visual.temporal.mlp_ratio": 4.0}],
    "model.visual.temporal.dropout": [{"model.visual.temporal.dropout": 0.0}],
    "model.visual.temporal.pooling": [{"model.visual.temporal.pooling": "max"}],
    "model.fusion.layers": [{"model.fusion.layers": 0}],
    "model.fusion.pretrained": [{"model.fusion.pretrained": CHECKPOINT % "fusion"}],
    "model.fusion.init": [{"model.fusion.init": "pretrained", "model.fusion.pretrained": CHECKPOINT % "fusion"}],
    "model.fusion.width": [{"model.fusion.width": 32}],
    "model.fusion.heads": [{"model.fusion.heads": 2}],
    "model.fusion.kv_heads": [{"model.fusion.kv_heads": 1}],
    "model.fusion.ffn_dim": [{"model.fusion.ffn_dim": 128}],
    "model.fusion.freeze": [{"model.fusion.freeze": "lora"}],
    "model.fusion.lora_rank": [{"model.fusion.lora_rank": 4}],
    "model.fusion.order": [{"model.fusion.order": "concat"}],
    "model.fusion.out_dim": [{"model.fusion.out_dim": 256}],
    "model.classifier.pooling": [{"model.classifier.pooling": "mean"}],
    "model.classifier.hidden": [{"model.classifier.hidden": [128]}],
    "model.classifier.norm": [{"model.classifier.norm": "batch"}],
    "model.classifier.activation": [{"model.classifier.activation": "relu"}],
    "model.classifier.dropout": [{"model.classifier.dropout": 0.0}],
    # Random weights in place of the checkpoints: the weights hash, not the flag, identifies them.
    # These checkpoints hold the base model's own seed-0 weights, which a random build from seed 0
    # draws again, so the key stays; tests/models/test_architectures.py takes other weights.
    "model.random_weights": [{"model.random_weights": True, "model.audio.pretrained": CHECKPOINT % "audio",
                              "model.visual.pretrained": CHECKPOINT % "visual"}],
    "train.epochs": [{"train.epochs": 3}],
    "train.patience": [{"train.patience": None}],
    "train.batch_size": [{"train.batch_size": 4}],
    "train.grad_accum": [{"train.grad_accum": 2}],
    "train.precision": [{"train.precision": "bf16"}],
    "train.lr": [{"train.lr": 1e-3}],
    "train.weight_decay": [{"train.weight_decay": 0.0}],
    "train.warmup": [{"train.warmup": 0.1}],
    "train.clip_grad": [{"train.clip_grad": None}],
    "train.label_smoothing": [{"train.label_smoothing": 0.0}],
    "train.num_workers": [{"train.num_workers": 2}],
    "train.eval_batch_size": [{"train.eval_batch_size": 4}],
    "train.memory_budget": [{"train.memory_budget": "8GB"}],
    "train.save_weights": [{"train.save_weights": "all"}],  # what is kept after training
}
BASE = resolve_config("tiny")
# The preset's name is not a setting of its own; the default dataset is left out of dumps (so
# RAVDESS keys predate the field) and is added by hand.
SETTINGS = sorted(set(flatten(BASE)) - {"preset"} | {"data.dataset"})


def alternatives(setting: str) -> list[dict]:
    if setting in ALTERNATIVES:
        return ALTERNATIVES[setting]
    if setting.startswith("train.lr_mult."):
        return [{setting: 0.5}]
    value = flatten(BASE)[setting]
    return [{setting: not value}] if isinstance(value, bool) else []


def keys_of(cfg) -> dict:
    """Frozen encoder slot -> its cache key, for the model of ``cfg`` built from seed 0."""
    torch.manual_seed(0)
    model = build_model(cfg)
    # The key run_unit uses: the prepared entries' folder name, i.e. the settings' key.
    prepare_key = PrepareSettings.from_data_config(cfg.data).model_copy(update={"face_model_sha": "0" * 64}).key()
    return {enc.slot: encoder_key(enc, cfg.data, prepare_key) for enc in model.frozen_encoders()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """The base model's own encoder weights as checkpoints, and a small LFM2 for the fusion."""
    from timm.models import save_for_hf
    from transformers import Lfm2Config, Lfm2ForCausalLM

    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = build_model(BASE)
    model.audio_encoder.encoder.save_pretrained(root / "audio")
    save_for_hf(model.visual_encoder.vit, root / "visual", safe_serialization=True)
    lfm2 = Lfm2Config(vocab_size=64, hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, layer_types=["conv", "full_attention"])
    Lfm2ForCausalLM(lfm2).save_pretrained(root / "fusion")
    return {name: str(root / name) for name in ("audio", "visual", "fusion")}


@pytest.fixture(scope="module")
def base_keys() -> dict:
    keys = keys_of(BASE)
    assert set(keys) == {AUDIO, VISUAL}
    return keys


def test_every_setting_is_varied():
    missing = [s for s in SETTINGS if not alternatives(s)]
    assert missing == [], f"add a changed value for {missing} to ALTERNATIVES (and to SHAPES if it shapes an encoder)"
    assert set(ALTERNATIVES) <= set(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_key_changes_exactly_with_the_settings_that_shape_its_encoder(setting, base_keys, checkpoints):
    for overrides in alternatives(setting):
        overrides = {k: v.format(**checkpoints) if isinstance(v, str) else v for k, v in overrides.items()}
        keys = keys_of(resolve_config("tiny", overrides))
        compared = set(keys) & set(base_keys)
        assert compared, f"{overrides}: no frozen encoder left to compare"
        for slot in compared:
            shapes = setting in SHAPES[slot]
            assert (keys[slot] != base_keys[slot]) == shapes, (
                f"{overrides} {'should change' if shapes else 'changed'} the {slot.modality} encoder's cache key")
        # A setting that shapes an encoder must leave it built, or the check above proved nothing.
        assert {slot for slot in SHAPES if setting in SHAPES[slot]} <= compared, overrides
