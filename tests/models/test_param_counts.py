"""Full-size parameter counts on the meta device against the published architectures."""

import pytest
import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

from fer.config import resolve_config
from fer.models.fusion import PUBLISHED_LFM2, FusionConfig, build_fusion
from fer.models.model import build_model

# Published totals (LiquidAI model cards: 16 layers, 65,536-token vocabulary, tied embeddings).
PUBLISHED_TOTAL = {"LiquidAI/LFM2-700M": 742_489_344, "LiquidAI/LFM2-350M": 354_483_968}
# Encoder counts the branch teams test against the published architectures.
FASTCONFORMER_LARGE = 108_762_112  # 17 layers
SIGLIP_B16_PATCH_ENCODER = 92_884_224 - 7_087_104  # the B/16 224 px tower without its MAP head


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED_LFM2))
def test_published_lfm2_configs_give_the_published_counts(hub_id):
    with torch.device("meta"):
        model = Lfm2ForCausalLM(Lfm2Config(**PUBLISHED_LFM2[hub_id]))
    assert numel(model) == PUBLISHED_TOTAL[hub_id]  # lm_head tied: counted once
    assert model.config.layer_types.count("conv") == 10 and model.config.layer_types.count("full_attention") == 6


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED_LFM2))
def test_fusion_keeps_all_of_lfm2_but_the_token_embeddings(hub_id):
    config = PUBLISHED_LFM2[hub_id]
    with torch.device("meta"):
        fusion = build_fusion(FusionConfig(pretrained=hub_id, init="pretrained", layers=16, freeze="unfrozen"),
                              audio_dim=512, visual_dim=768, load_weights=False)
    embeddings = config["vocab_size"] * config["hidden_size"]
    assert numel(fusion.backbone) == PUBLISHED_TOTAL[hub_id] - embeddings
    assert fusion.backbone.embed_tokens is None


def test_truncation_keeps_the_first_layers_in_checkpoint_order():
    with torch.device("meta"):
        fusion = build_fusion(FusionConfig(pretrained="LiquidAI/LFM2-700M", init="pretrained", layers=6,
                                           freeze="unfrozen"), audio_dim=512, visual_dim=768, load_weights=False)
        full = Lfm2ForCausalLM(Lfm2Config(**PUBLISHED_LFM2["LiquidAI/LFM2-700M"]))
    assert fusion.backbone.config.layer_types == ["conv", "conv", "full_attention"] * 2
    expected = numel(full.model.layers[:6]) + numel(full.model.embedding_norm)
    assert numel(fusion.backbone) == expected


def test_full_preset_encoders_are_the_published_towers():
    model = build_model(resolve_config("full"), device="meta")
    assert numel(model.audio_encoder) == FASTCONFORMER_LARGE
    assert numel(model.visual_encoder) == SIGLIP_B16_PATCH_ENCODER
    rtx = build_model(resolve_config("rtx3050"), device="meta")
    assert len(rtx.audio_encoder.encoder.layers) == 6 and len(rtx.fusion.backbone.layers) == 6
