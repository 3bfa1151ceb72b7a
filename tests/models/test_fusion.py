"""LFM2 fusion: token order, causality, freeze modes, LoRA, pretrained loading with truncation."""

import pytest
import torch
from transformers import Lfm2Config, Lfm2ForCausalLM

from fer.models.fusion import FUSION_FREEZE, LFM2_LAYER_TYPES, FusionConfig, build_fusion

B, S, DA, DV = 2, 4, 12, 20


def tiny(**kw) -> FusionConfig:
    base = dict(pretrained=None, init="random", width=32, heads=4, kv_heads=2, ffn_dim=96, layers=3, out_dim=16,
                freeze="unfrozen")
    return FusionConfig(**{**base, **kw})


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, DA, generator=g), torch.randn(B, S, DV, generator=g)


def backbone_params(fusion):
    return {n: p for n, p in fusion.named_parameters() if n.startswith("backbone.")}


MODALITIES = {"av": (DA, DV), "audio": (DA, None), "visual": (None, DV)}


@pytest.mark.parametrize("freeze", FUSION_FREEZE.names())
@pytest.mark.parametrize("modality", list(MODALITIES))
def test_shapes_finite_and_gradients_follow_freeze_mode(freeze, modality):
    torch.manual_seed(0)
    audio_dim, visual_dim = MODALITIES[modality]
    fusion = build_fusion(tiny(freeze=freeze), audio_dim=audio_dim, visual_dim=visual_dim)
    a, v = inputs()
    out = fusion(a if audio_dim else None, v if visual_dim else None)
    assert out.shape == (B, 2 * S if modality == "av" else S, 16)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in fusion.named_parameters():
        if "lora_A" in name:  # B = 0 at the start, so A's first gradient is exactly zero
            assert p.grad is not None and not p.grad.any(), name
        elif p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    # a single-modality fusion has no parameters of the other modality
    names = {n for n, _ in fusion.named_parameters()}
    assert any(n.startswith("audio_") for n in names) == (audio_dim is not None)
    assert any(n.startswith("visual_") for n in names) == (visual_dim is not None)


@pytest.mark.parametrize("freeze", FUSION_FREEZE.names())
def test_trainable_sets(freeze):
    fusion = build_fusion(tiny(freeze=freeze), audio_dim=DA, visual_dim=DV)
    backbone = backbone_params(fusion)
    heads = {n: p for n, p in fusion.named_parameters() if not n.startswith("backbone.")}
    assert heads and all(p.requires_grad for p in heads.values())  # projections always train
    lora = {n for n in backbone if "lora_" in n}
    trainable = {n for n, p in backbone.items() if p.requires_grad}
    if freeze == "unfrozen":
        assert not lora and trainable == set(backbone)
    elif freeze == "frozen":
        assert not lora and not trainable
    else:
        assert trainable == lora
        # adapters on every attention q/k/v/out and conv in/out projection, nowhere else
        adapted = {n.split(".lora_")[0].removeprefix("backbone.") for n in lora}
        expected = set()
        for i, kind in enumerate(LFM2_LAYER_TYPES[:3]):
            if kind == "conv":
                expected |= {f"layers.{i}.conv.in_proj", f"layers.{i}.conv.out_proj"}
            else:
                expected |= {f"layers.{i}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
        assert adapted == expected


@pytest.mark.parametrize("freeze", FUSION_FREEZE.names())
def test_training_step_leaves_frozen_weights_bit_identical(freeze):
    torch.manual_seed(0)
    fusion = build_fusion(tiny(freeze=freeze), audio_dim=DA, visual_dim=DV)
    fusion.train()
    if freeze == "frozen":
        assert not fusion.backbone.training  # frozen parts stay in eval mode
    before = {n: p.detach().clone() for n, p in fusion.named_parameters()}
    opt = torch.optim.Adam([p for p in fusion.parameters() if p.requires_grad], lr=1e-2)  # scale-free steps
    a, v = inputs()
    for _ in range(2):  # two steps: LoRA's A moves only once B has left zero
        opt.zero_grad()
        fusion(a, v).square().mean().backward()
        opt.step()
    for name, p in fusion.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_lora_starts_as_the_base_model_and_then_departs():
    from peft.tuners.tuners_utils import BaseTunerLayer

    torch.manual_seed(0)
    fusion = build_fusion(tiny(freeze="lora"), audio_dim=DA, visual_dim=DV)
    tuned = [m for m in fusion.modules() if isinstance(m, BaseTunerLayer)]

    def base_output():
        for m in tuned:
            m.enable_adapters(False)
        out = fusion(*inputs())
        for m in tuned:
            m.enable_adapters(True)
        return out

    torch.testing.assert_close(fusion(*inputs()), base_output(), rtol=0, atol=0)
    opt = torch.optim.SGD([p for n, p in fusion.named_parameters() if "lora_" in n], lr=0.5)
    fusion(*inputs()).square().mean().backward()
    opt.step()
    assert not torch.allclose(fusion(*inputs()), base_output())


def test_interleave_and_concat_orders():
    torch.manual_seed(0)
    inter = build_fusion(tiny(layers=0, order="interleave"), audio_dim=DA, visual_dim=DV)
    concat = build_fusion(tiny(layers=0, order="concat"), audio_dim=DA, visual_dim=DV)
    concat.load_state_dict(inter.state_dict())
    a, v = inputs()
    x_i, x_c = inter(a, v), concat(a, v)  # no fusion layers: tokens are independent
    torch.testing.assert_close(x_i[:, 0::2], x_c[:, :S])  # a1 v1 a2 v2 ... vs a1..aS v1..vS
    torch.testing.assert_close(x_i[:, 1::2], x_c[:, S:])


def test_modality_embeddings_distinguish_identical_features():
    torch.manual_seed(0)
    fusion = build_fusion(tiny(layers=0), audio_dim=DA, visual_dim=DA)
    fusion.visual_proj.load_state_dict(fusion.audio_proj.state_dict())
    a, _ = inputs()
    tokens = fusion.tokens(a, a)  # (B, 2S, W): a1 v1 ...
    torch.testing.assert_close(tokens[:, 0::2] - tokens[:, 1::2],
                               (fusion.audio_type - fusion.visual_type).expand(B, S, -1))


@pytest.mark.parametrize("order", ["interleave", "concat"])
def test_fusion_is_causal_over_its_token_order(order):
    torch.manual_seed(0)
    fusion = build_fusion(tiny(order=order, layers=3), audio_dim=DA, visual_dim=DV).eval()
    a, v = inputs()
    v2 = v.clone()
    v2[:, -1] = torch.randn(B, DV)  # change only the last visual segment
    out, out2 = fusion(a, v), fusion(a, v2)
    changed = (out - out2).abs().amax(dim=(0, 2)) > 1e-6  # (S',) which positions moved
    last_visual = 2 * S - 1  # the last token in both orders
    assert changed[last_visual] and not changed[:last_visual].any()


def test_gradient_checkpointing_saves_less_and_gives_the_same_gradients():
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        fusion = build_fusion(tiny(grad_checkpointing=ckpt), audio_dim=DA, visual_dim=DV).train()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = fusion(*inputs())
        out.square().mean().backward()
        results.append((sum(saved), out.detach(), {n: p.grad.clone() for n, p in fusion.named_parameters()}))
    (saved_plain, out_plain, grads_plain), (saved_ckpt, out_ckpt, grads_ckpt) = results
    assert saved_ckpt < saved_plain / 2  # only layer inputs are kept for the recompute
    torch.testing.assert_close(out_plain, out_ckpt)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grad, grads_ckpt[name], msg=name)


def save_tiny_lfm2(path, layers=4):
    torch.manual_seed(1)
    config = Lfm2Config(vocab_size=64, hidden_size=32, intermediate_size=96, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, layer_types=list(LFM2_LAYER_TYPES[:layers]))
    model = Lfm2ForCausalLM(config)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("freeze", FUSION_FREEZE.names())
def test_pretrained_local_dir_loads_the_first_layers_exactly(tmp_path, freeze):
    saved = save_tiny_lfm2(tmp_path, layers=4)
    fusion = build_fusion(FusionConfig(pretrained=str(tmp_path), init="pretrained", layers=3, freeze=freeze),
                          audio_dim=DA, visual_dim=DV)
    backbone = fusion.backbone
    assert backbone.embed_tokens is None and len(backbone.layers) == 3
    assert backbone.config.layer_types == list(LFM2_LAYER_TYPES[:3])
    reference = saved.model.state_dict()
    loaded = {k.replace(".base_layer", ""): v for k, v in backbone.state_dict().items() if "lora_" not in k}
    assert set(loaded) == {k for k in reference if not k.startswith(("embed_tokens", "layers.3."))}
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key
    # the loaded layers compute what the checkpoint's first three layers compute
    x = torch.randn(B, 2 * S, 32)
    with torch.no_grad():
        h = x
        pos = torch.arange(2 * S)[None]
        emb = saved.model.rotary_emb(h, pos)
        mask = torch.full((2 * S, 2 * S), float("-inf")).triu(1)[None, None]
        for layer in saved.model.layers[:3]:
            h = layer(h, attention_mask=mask if layer.is_attention_layer else None, position_embeddings=emb)
        expected = saved.model.embedding_norm(h)
        got = backbone(inputs_embeds=x, attention_mask={"full_attention": mask, "conv": None}, position_ids=pos,
                       use_cache=False).last_hidden_state
    torch.testing.assert_close(got, expected)


def test_architecture_only_build_matches_the_loaded_one(tmp_path):
    save_tiny_lfm2(tmp_path)
    cfg = FusionConfig(pretrained=str(tmp_path), init="pretrained", layers=2, freeze="unfrozen")
    loaded = build_fusion(cfg, audio_dim=DA, visual_dim=DV)
    shapes = build_fusion(cfg, audio_dim=DA, visual_dim=DV, load_weights=False)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in shapes.state_dict().items()}


def test_random_init_of_a_checkpoint_architecture_loads_no_weights(tmp_path):
    saved = save_tiny_lfm2(tmp_path)
    fusion = build_fusion(FusionConfig(pretrained=str(tmp_path), init="random", layers=2, freeze="unfrozen"),
                          audio_dim=DA, visual_dim=DV)
    w = fusion.backbone.layers[0].feed_forward.w1.weight
    assert w.shape == saved.model.layers[0].feed_forward.w1.weight.shape
    assert not torch.equal(w, saved.model.layers[0].feed_forward.w1.weight)


def test_zero_layers_is_projection_and_concatenation_only():
    fusion = build_fusion(tiny(layers=0, order="concat"), audio_dim=DA, visual_dim=DV)
    assert fusion.backbone is None
    a, v = inputs()
    expected = fusion.out_proj(torch.cat([fusion.audio_proj(a) + fusion.audio_type,
                                          fusion.visual_proj(v) + fusion.visual_type], dim=1))
    torch.testing.assert_close(fusion(a, v), expected)


def test_loader_errors_name_the_key(tmp_path):
    save_tiny_lfm2(tmp_path, layers=4)
    with pytest.raises(ValueError, match=r"model.fusion.layers: 5 > the 4 layers"):
        build_fusion(FusionConfig(pretrained=str(tmp_path), layers=5), audio_dim=DA, visual_dim=DV)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match=r"model.fusion.pretrained: .*empty has no config.json"):
        build_fusion(FusionConfig(pretrained=str(empty), layers=1), audio_dim=DA, visual_dim=DV)
    with pytest.raises(OSError, match=r"model.fusion.pretrained: cannot load"):
        build_fusion(FusionConfig(pretrained=str(tmp_path / "missing"), layers=1), audio_dim=DA, visual_dim=DV)


def test_config_validation():
    with pytest.raises(ValueError, match="init 'pretrained' needs pretrained"):
        FusionConfig(pretrained=None, init="pretrained")
    with pytest.raises(ValueError, match="known: frozen, lora, unfrozen"):
        FusionConfig(freeze="half")
    with pytest.raises(ValueError, match="must divide by heads"):
        FusionConfig(pretrained=None, init="random", width=30, heads=4, kv_heads=2)
