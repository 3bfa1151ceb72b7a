"""FERModel assembly: modality switch, feature-cache path, parameter groups, frozen parts, meta build."""

import pytest
import torch

from fer.config import resolve_config
from fer.labels import EMOTIONS
from fer.models.model import PARTS, build_model
from fer.train.config import PARAM_GROUPS

B = 2
BRANCH = {"audio": ("audio_encoder", "audio_pooling"), "visual": ("visual_encoder", "roi", "temporal")}


def tiny_cfg(**overrides):
    return resolve_config("tiny", overrides)


def batch_for(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.data
    return {
        "audio": torch.randn(B, int(d.sample_rate * d.audio_seconds), generator=g) * 0.1,
        "frames": torch.randn(B, d.frames, 3, d.size, d.size, generator=g),
        "keypoints": torch.rand(B, d.frames, 6, 2, generator=g),
        "label": torch.arange(B),
    }


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def test_part_names_are_the_trainers_parameter_groups():
    assert PARTS == PARAM_GROUPS


@pytest.mark.parametrize("modality", ["av", "audio", "visual"])
def test_modality_switch_builds_only_its_branches(modality):
    cfg = tiny_cfg(**{"model.modality": modality})
    model = build(cfg).eval()
    absent = {"av": (), "audio": BRANCH["visual"], "visual": BRANCH["audio"]}[modality]
    for name in PARTS:
        assert (getattr(model, name) is None) == (name in absent), name
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.split(".")[0] in absent for n in names)
    assert (model.fusion.audio_proj is None) == (modality == "visual")
    assert (model.fusion.visual_proj is None) == (modality == "audio")
    # the other modality's inputs are never read: a batch without them runs
    batch = batch_for(cfg)
    for key in {"audio": ("frames", "keypoints"), "visual": ("audio",), "av": ()}[modality]:
        del batch[key]
    logits = model(batch)
    assert logits.shape == (B, len(EMOTIONS)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("modality", ["av", "audio", "visual"])
@pytest.mark.parametrize("encoders_frozen", [True, False])
def test_gradients_reach_every_trainable_parameter_and_no_frozen_one(modality, encoders_frozen):
    cfg = tiny_cfg(**{"model.modality": modality, "model.audio.freeze": encoders_frozen,
                      "model.visual.freeze": encoders_frozen})
    model = build(cfg).train()
    loss = torch.nn.functional.cross_entropy(model(batch_for(cfg)), torch.arange(B))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    encoders = [n for n, _ in trainable if n.startswith(("audio_encoder.", "visual_encoder."))]
    assert bool(encoders) == (not encoders_frozen)


def test_training_step_leaves_frozen_parts_bit_identical():
    cfg = tiny_cfg(**{"model.fusion.freeze": "frozen"})
    model = build(cfg).train()
    stochastic = (torch.nn.Dropout, torch.nn.modules.batchnorm._BatchNorm)
    for part in (model.audio_encoder, model.visual_encoder, model.fusion.backbone):  # frozen: eval mode kept
        layers = [m for m in part.modules() if isinstance(m, stochastic)]
        assert not any(m.training for m in layers)
    assert any(isinstance(m, stochastic) and m.training for m in model.temporal.modules())  # the rest trains
    before = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers
    groups = model.param_groups()
    opt = torch.optim.AdamW([p for params in groups.values() for p in params], lr=1e-3)
    torch.nn.functional.cross_entropy(model(batch_for(cfg)), torch.arange(B)).backward()
    opt.step()
    trainable = {id(p) for params in groups.values() for p in params}
    params = dict(model.named_parameters())
    for key, value in model.state_dict().items():
        frozen = key not in params or id(params[key]) not in trainable
        if frozen and key.startswith(("audio_encoder.", "visual_encoder.", "fusion.backbone.")):
            assert torch.equal(value, before[key]), f"frozen {key} changed"
        elif not frozen:
            assert not torch.equal(value, before[key]), f"trainable {key} did not change"


def test_param_groups_partition_the_trainable_parameters():
    cfg = tiny_cfg(**{"model.fusion.freeze": "lora"})
    model = build(cfg)
    groups = model.param_groups()
    assert set(groups) <= set(PARTS) and "audio_encoder" not in groups  # frozen encoder: no group
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    for name, params in groups.items():
        assert {id(p) for p in params} == {id(p) for p in getattr(model, name).parameters() if p.requires_grad}


def test_precomputed_features_skip_the_encoders():
    cfg = tiny_cfg()
    model = build(cfg).eval()
    batch = batch_for(cfg)
    with torch.no_grad():
        expected = model(batch)
        feats = {"audio_feats": model.audio_encoder(batch["audio"]),
                 "visual_feats": model.visual_encoder(batch["frames"])}
    calls = []
    for name in ("audio_encoder", "visual_encoder"):
        getattr(model, name).register_forward_hook(lambda m, a, o, n=name: calls.append(n))
    cached = {"keypoints": batch["keypoints"], **feats}  # no raw audio or frames at all
    with torch.no_grad():
        torch.testing.assert_close(model(cached), expected)
    assert calls == []


@pytest.mark.parametrize("overrides, expected", [
    ({}, [("audio_encoder", "audio", "audio_feats"), ("visual_encoder", "frames", "visual_feats")]),
    ({"model.modality": "visual"}, [("visual_encoder", "frames", "visual_feats")]),
    ({"model.audio.freeze": False}, [("visual_encoder", "frames", "visual_feats")]),
    ({"model.audio.freeze": False, "model.visual.freeze": False}, []),
])
def test_frozen_encoders_are_those_built_frozen_with_their_batch_keys(overrides, expected):
    model = build(tiny_cfg(**overrides))
    encoders = model.frozen_encoders()
    assert [(e.part, e.slot.input_key, e.slot.feature_key) for e in encoders] == expected
    assert all(e.module is getattr(model, e.part) for e in encoders)


def test_same_seed_same_model_and_tiny_is_small():
    cfg = tiny_cfg()
    a, b = build(cfg, seed=3).state_dict(), build(cfg, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build(cfg, seed=4).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    total = sum(p.numel() for p in build(cfg).parameters())
    assert total < 5_000_000


@pytest.mark.parametrize("preset", ["tiny", "rtx3050", "full"])
def test_meta_build_matches_the_preset_without_reading_weights(preset):
    model = build_model(resolve_config(preset), device="meta")
    assert all(p.is_meta for p in model.parameters())
    if preset == "tiny":  # same parameter names and shapes as a real build
        real = build(resolve_config("tiny"))
        assert {k: v.shape for k, v in real.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
