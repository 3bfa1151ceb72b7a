"""Published architectures without the hub, and ``model.random_weights``.

The architectures of LFM2-350M/700M (``fer.models.fusion.PUBLISHED_LFM2``), FastConformer-large
(``fer.models.audio.AUDIO_ENCODERS``) and SigLIP2 B/16 (``fer.models.visual.VISUAL_ENCODERS``) are
written in the code, so a random-weights build reads nothing: it is tried in a fresh interpreter
with ``HF_HUB_OFFLINE=1``, an empty ``HF_HOME`` and a working directory without the presets'
local checkpoints, where any read of a checkpoint fails. Random weights are also a different
model from pretrained ones for the feature cache and the unit key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

from fer.config import resolve_config
from fer.data.prepare import PrepareSettings
from fer.models.fusion import PUBLISHED_LFM2
from fer.models.model import PARTS, build_model
from fer.slots import AUDIO, VISUAL
from fer.train.features import encoder_key
from studies.grid import unit_key
from test_param_counts import FASTCONFORMER_LARGE, PUBLISHED_TOTAL, SIGLIP_B16_PATCH_ENCODER, numel  # same folder

# Run in a fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import.
BUILD_OFFLINE = r"""
import json, sys
import torch
from fer.config import resolve_config
from fer.models.fusion import FusionConfig, build_fusion
from fer.models.model import PARTS, build_model

out = {}
torch.manual_seed(0)
model = build_model(resolve_config("rtx3050", {"model.random_weights": True}))  # real tensors, on the CPU
out["rtx3050"] = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in PARTS}
out["rtx3050_meta"] = all(not p.is_meta for p in model.parameters())
out["fusion_width"] = model.fusion.backbone.config.hidden_size
del model
for hub_id in sys.argv[1:]:  # init random: the published architecture, no weights
    with torch.device("meta"):
        fusion = build_fusion(FusionConfig(pretrained=hub_id, init="random", layers=16), audio_dim=512, visual_dim=768)
    cfg = fusion.backbone.config
    out[hub_id] = {"backbone": sum(p.numel() for p in fusion.backbone.parameters()), "width": cfg.hidden_size,
                   "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
                   "layer_types": cfg.layer_types}
try:  # the same preset with its pretrained weights: nothing here to read them from
    build_model(resolve_config("rtx3050"))
    out["pretrained"] = "built"
except Exception as exc:
    out["pretrained"] = type(exc).__name__
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline_build(tmp_path_factory) -> dict:
    """What ``BUILD_OFFLINE`` printed, run with no reachable or cached checkpoint."""
    work = tmp_path_factory.mktemp("no-weights")
    (work / "hf-home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.update(HF_HOME=str(work / "hf-home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", BUILD_OFFLINE, *sorted(PUBLISHED_LFM2)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_random_weights_builds_the_rtx3050_preset_with_nothing_to_read(offline_build):
    # Where the weights would be read, they are not there: the pretrained build fails ...
    assert offline_build["pretrained"] in ("OSError", "FileNotFoundError", "ValueError")
    # ... and the random-weights build is every part, with real tensors, at the published shapes.
    assert offline_build["rtx3050_meta"] is True
    expected = build_model(resolve_config("rtx3050"), device="meta")
    assert offline_build["rtx3050"] == {name: numel(getattr(expected, name)) for name in PARTS}
    counts = offline_build["rtx3050"]
    assert counts["visual_encoder"] == SIGLIP_B16_PATCH_ENCODER
    per_layer = numel(expected.audio_encoder.encoder.layers[0])
    assert counts["audio_encoder"] + 11 * per_layer == FASTCONFORMER_LARGE  # 6 of FastConformer-large's 17 layers
    with torch.device("meta"):
        lfm2 = Lfm2ForCausalLM(Lfm2Config(**PUBLISHED_LFM2["LiquidAI/LFM2-700M"]))
    backbone = numel(lfm2.model.layers[:6]) + numel(lfm2.model.embedding_norm)
    base = [p for n, p in expected.fusion.backbone.named_parameters() if "lora_" not in n]
    assert sum(p.numel() for p in base) == backbone  # the LoRA adapters come on top
    assert offline_build["fusion_width"] == 1536


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED_LFM2))
def test_random_init_fusion_is_the_published_lfm2_without_the_hub(offline_build, hub_id):
    built, config = offline_build[hub_id], PUBLISHED_LFM2[hub_id]
    assert built["backbone"] == PUBLISHED_TOTAL[hub_id] - config["vocab_size"] * config["hidden_size"]
    assert (built["width"], built["heads"], built["kv_heads"]) == (
        config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"])
    assert built["layer_types"] == config["layer_types"]


def test_random_weights_change_nothing_without_a_checkpoint():
    """On a config that names no checkpoint the flag draws nothing: the same weights, bit for bit."""
    cfg = resolve_config("tiny", {"model.fusion.freeze": "lora"})
    torch.manual_seed(5)
    plain = build_model(cfg).state_dict()
    torch.manual_seed(5)
    flagged = build_model(cfg.model_copy(update={"model": cfg.model.model_copy(update={"random_weights": True})}))
    assert plain.keys() == flagged.state_dict().keys()
    assert all(torch.equal(plain[k], v) for k, v in flagged.state_dict().items())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Encoder checkpoints of the tiny architecture holding other weights than a seed-0 build."""
    from timm.models import save_for_hf

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    torch.manual_seed(1)
    model = build_model(resolve_config("tiny"))
    model.audio_encoder.encoder.save_pretrained(root / "audio")
    save_for_hf(model.visual_encoder.vit, root / "visual", safe_serialization=True)
    return {"model.audio.pretrained": str(root / "audio"), "model.visual.pretrained": str(root / "visual")}


def feature_keys(cfg) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg)
    prepare_key = PrepareSettings.from_data_config(cfg.data).model_copy(update={"face_model_sha": "0" * 64}).key()
    return {enc.slot: encoder_key(enc, cfg.data, prepare_key) for enc in model.frozen_encoders()}


def test_random_and_pretrained_weights_are_other_features_and_other_units(checkpoints):
    pretrained = resolve_config("tiny", checkpoints)
    random = resolve_config("tiny", {**checkpoints, "model.random_weights": True})
    keys = {name: feature_keys(cfg) for name, cfg in
            (("pretrained", pretrained), ("random", random), ("none", resolve_config("tiny")))}
    for slot in (AUDIO, VISUAL):
        assert keys["random"][slot] != keys["pretrained"][slot], slot.modality
        # Random weights are the seed's own initialisation: the features of a config without
        # checkpoints, shared with it (the weights hash identifies them, not the flag).
        assert keys["random"][slot] == keys["none"][slot], slot.modality
    where = dict(fold=0, seed=0, data_manifest="m")
    assert unit_key(random, **where) != unit_key(pretrained, **where)

