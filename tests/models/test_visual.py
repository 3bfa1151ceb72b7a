"""Visual encoder: patch tokens from both backends, freezing, pretrained loading, published sizes."""

import pytest
import torch
from pydantic import ValidationError

from fer.models.visual import (
    TIMM_ARCHITECTURE,
    VISUAL_BACKENDS,
    VISUAL_ENCODERS,
    VisualConfig,
    build_visual_encoder,
)

BACKENDS = VISUAL_BACKENDS.names()
SIGLIP_B16_TOWER = 92_884_224  # published: SigLIP B/16 224 px vision tower, MAP head included


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny(backend: str, **kw):
    return build_visual_encoder(VisualConfig(backend=backend, encoder="tiny", **kw), image_size=64)


def full_timm_tower(arch, image_size: int):
    """timm's SigLIP tower of ``arch`` as published: with its MAP head (the hub checkpoint layout)."""
    import timm

    return timm.create_model(TIMM_ARCHITECTURE, embed_dim=arch.width, depth=arch.depth, num_heads=arch.heads,
                             mlp_ratio=arch.mlp / arch.width, patch_size=arch.patch, img_size=image_size, num_classes=0,
                             act_layer="gelu_tanh")


def full_siglip_config(arch, image_size: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=arch.width, num_hidden_layers=arch.depth, num_attention_heads=arch.heads,
                              intermediate_size=arch.mlp, patch_size=arch.patch, image_size=image_size)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_tokens_per_frame(backend):
    torch.manual_seed(0)
    enc = tiny(backend).eval()
    frames = torch.randn(2, 3, 3, 64, 64)
    tokens = enc(frames)
    assert enc.grid == (8, 8) and enc.num_patches == 64 and enc.out_dim == 64
    assert tokens.shape == (2, 3, 64, 64)
    assert torch.isfinite(tokens).all()
    # Frames are batched as B*T images: frame (1, 2) alone gives the same tokens.
    alone = enc(frames[1:2, 2:3])[0, 0]
    torch.testing.assert_close(tokens[1, 2], alone, atol=1e-5, rtol=1e-5)
    # Tokens leave the final LayerNorm (affine weight 1, bias 0 at init): zero mean, unit variance.
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 3, 64), atol=1e-4, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 3, 64), atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_encoder_stays_bit_identical(backend):
    torch.manual_seed(0)
    enc = tiny(backend, freeze=True)
    head = torch.nn.Linear(64, 3)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=1e-2, weight_decay=0.1)
    loss = head(enc(torch.randn(2, 2, 3, 64, 64)).mean(2)).square().mean()
    loss.backward()
    opt.step()
    assert head.weight.grad is not None
    for key, value in enc.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_unfrozen_encoder_gradients_reach_every_parameter(backend):
    torch.manual_seed(0)
    enc = tiny(backend, freeze=False).train()
    assert enc.training
    target = torch.randn(1, 2, 64, 64)
    (enc(torch.randn(1, 2, 3, 64, 64)) * target).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_b16_parameter_counts_on_meta(backend):
    """The preset is the published tower; the encoder is that tower less its unused MAP head."""
    arch = VISUAL_ENCODERS.get("siglip2-b16")()
    with torch.device("meta"):
        if backend == "timm":
            tower = full_timm_tower(arch, 224)
            head = tower.attn_pool
        else:
            from transformers import SiglipVisionModel

            tower = SiglipVisionModel(full_siglip_config(arch, 224))
            head = tower.head
        enc = build_visual_encoder(VisualConfig(backend=backend, encoder="siglip2-b16"), image_size=224)
    d, hidden = arch.width, arch.mlp
    # MAP head: probe, attention (q, k, v and output projections), LayerNorm, MLP.
    map_head = d + (4 * d * d + 4 * d) + 2 * d + (2 * d * hidden + hidden + d)
    assert count(tower) == SIGLIP_B16_TOWER
    assert count(head) == map_head
    assert count(enc) == SIGLIP_B16_TOWER - map_head
    assert enc.grid == (14, 14) and enc.num_patches == 196 and enc.out_dim == 768


def assert_loaded(enc: torch.nn.Module, source: dict[str, torch.Tensor], prefix: str = ""):
    """Every encoder tensor equals the source tensor of the same name."""
    state = enc.state_dict()
    assert state, "encoder has no weights"
    for key, value in state.items():
        assert torch.equal(value, source[prefix + key.split(".", 1)[1]]), key


def test_timm_loads_hub_layout_dir_and_file(tmp_path):
    """A tower saved with timm's own ``save_for_hf`` (MAP head included, as on the hub) loads from
    its directory and from its weights file; the head is dropped, everything else is equal."""
    from timm.models import save_for_hf

    torch.manual_seed(0)
    tower = full_timm_tower(VISUAL_ENCODERS.get("tiny")(), 64)
    save_for_hf(tower, tmp_path, safe_serialization=True)
    source = tower.state_dict()
    for pretrained in (tmp_path, tmp_path / "model.safetensors"):
        enc = tiny("timm", pretrained=str(pretrained))
        assert_loaded(enc, source)
        dropped = set(source) - {k.split(".", 1)[1] for k in enc.state_dict()}
        assert dropped == {k for k in source if k.startswith("attn_pool.")} != set()
    frames = torch.randn(1, 2, 3, 64, 64)
    torch.testing.assert_close(enc(frames), tower.forward_features(frames.flatten(0, 1)).unflatten(0, (1, 2)))


def test_timm_round_trip_of_own_encoder(tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(1)
    enc = tiny("timm")
    save_for_hf(enc.vit, tmp_path, safe_serialization=False)  # pytorch_model.bin, no MAP head
    loaded = tiny("timm", pretrained=str(tmp_path))
    assert_loaded(loaded, {k.split(".", 1)[1]: v for k, v in enc.state_dict().items()})


def test_timm_refuses_a_checkpoint_of_another_shape(tmp_path):
    import timm
    from timm.models import save_for_hf

    shallow = timm.create_model(TIMM_ARCHITECTURE, embed_dim=64, depth=1, num_heads=2, mlp_ratio=4.0, patch_size=8,
                                img_size=64, num_classes=0)
    save_for_hf(shallow, tmp_path, safe_serialization=True)
    with pytest.raises(RuntimeError, match="blocks.1"):
        tiny("timm", pretrained=str(tmp_path))


def test_timm_resamples_positions_to_the_data_size(tmp_path):
    from timm.models import save_for_hf

    save_for_hf(full_timm_tower(VISUAL_ENCODERS.get("tiny")(), 64), tmp_path, safe_serialization=True)
    enc = build_visual_encoder(VisualConfig(backend="timm", pretrained=str(tmp_path)), image_size=32)
    tokens = enc(torch.randn(1, 1, 3, 32, 32))
    assert enc.grid == (4, 4) and tokens.shape == (1, 1, 16, 64) and torch.isfinite(tokens).all()


def test_transformers_loads_full_siglip_checkpoint(tmp_path):
    """The hub's SigLIP2 checkpoints are full ``SiglipModel``s: the vision tower is taken from one."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    vision = full_siglip_config(VISUAL_ENCODERS.get("tiny")(), 64).to_dict()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
    full = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
    full.save_pretrained(tmp_path)
    enc = tiny("transformers", pretrained=str(tmp_path))
    assert_loaded(enc, full.state_dict(), prefix="vision_model.")
    assert not hasattr(enc.siglip, "head") or enc.siglip.head is None


def test_transformers_round_trip_and_other_size(tmp_path):
    torch.manual_seed(2)
    enc = tiny("transformers")
    enc.siglip.save_pretrained(tmp_path)
    loaded = tiny("transformers", pretrained=str(tmp_path)).eval()
    assert_loaded(loaded, {k.split(".", 1)[1]: v for k, v in enc.state_dict().items()})
    frames = torch.randn(1, 2, 3, 64, 64)
    torch.testing.assert_close(loaded(frames), enc.eval()(frames))
    smaller = build_visual_encoder(VisualConfig(backend="transformers", pretrained=str(tmp_path)), image_size=32)
    assert smaller.interpolate and smaller.grid == (4, 4)
    assert smaller(torch.randn(1, 1, 3, 32, 32)).shape == (1, 1, 16, 64)


def test_transformers_refuses_a_checkpoint_of_another_shape(tmp_path):
    from transformers import SiglipVisionModel

    cfg = full_siglip_config(VISUAL_ENCODERS.get("tiny")(), 64)
    cfg.intermediate_size = 128
    SiglipVisionModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="intermediate_size"):
        tiny("transformers", pretrained=str(tmp_path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_offline_hub_id_fails_clearly(backend, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE") as err:
        tiny(backend, pretrained="fer-tests/no-such-siglip")
    assert "fer-tests/no-such-siglip" in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_local_path_names_the_key(backend, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.visual.pretrained"):
        tiny(backend, pretrained=str(tmp_path / "absent"))


def test_config_errors_name_the_choices():
    with pytest.raises(ValidationError, match="known: timm, transformers"):
        VisualConfig(backend="onnx")
    with pytest.raises(ValidationError, match="known: siglip2-b16, tiny"):
        VisualConfig(encoder="vit-h")
    with pytest.raises(ValueError, match="data.size 60 is not a multiple"):
        build_visual_encoder(VisualConfig(), image_size=60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_branch_training_step_moves_only_the_trainable_parts(backend):
    """Frozen encoder -> ROI -> temporal encoder: one optimiser step changes ROI and temporal
    weights and leaves the encoder bit-identical."""
    from fer.models.roi import build_roi
    from fer.models.temporal import build_temporal

    torch.manual_seed(0)
    cfg = VisualConfig(backend=backend, roi=dict(k=16, global_tokens=2), temporal=dict(layers=2, heads=4))
    enc = build_visual_encoder(cfg, image_size=64)
    roi = build_roi(cfg.roi, dim=enc.out_dim, grid=enc.grid)
    temporal = build_temporal(cfg.temporal, in_dim=enc.out_dim, segments=4)
    branch = torch.nn.ModuleList([enc, roi, temporal]).train()
    before = {k: v.clone() for k, v in branch.state_dict().items()}
    opt = torch.optim.AdamW(branch.parameters(), lr=1e-3)
    out = temporal(roi(enc(torch.randn(2, 8, 3, 64, 64)), torch.rand(2, 8, 6, 2)))
    assert out.shape == (2, 4, enc.out_dim)
    (out * torch.randn_like(out)).sum().backward()
    opt.step()
    after = branch.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("0."))
    moved = {k for k in before if not torch.equal(after[k], before[k])}
    trainable = {"1." + n for n, _ in roi.named_parameters()} | {"2." + n for n, _ in temporal.named_parameters()}
    assert moved == trainable


def timm_to_transformers(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """timm SigLIP ViT weights under transformers' ``SiglipVisionModel`` names (fused qkv split)."""
    out = {
        "embeddings.patch_embedding.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state["patch_embed.proj.bias"],
        "embeddings.position_embedding.weight": state["pos_embed"][0],
        "post_layernorm.weight": state["norm.weight"],
        "post_layernorm.bias": state["norm.bias"],
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            q, k, v = state[f"{src}attn.qkv.{p}"].chunk(3)
            out |= {f"{dst}self_attn.q_proj.{p}": q, f"{dst}self_attn.k_proj.{p}": k, f"{dst}self_attn.v_proj.{p}": v}
            for a, b in (("attn.proj", "self_attn.out_proj"), ("norm1", "layer_norm1"), ("norm2", "layer_norm2"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[f"{dst}{b}.{p}"] = state[f"{src}{a}.{p}"]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_settings_are_the_towers_shape_and_input_size(backend):
    # What the feature cache keys on besides the weights; where they come from is not part of it.
    expected = {"width": 64, "depth": 2, "heads": 2, "mlp": 256, "patch": 8, "image_size": 64}
    assert tiny(backend).build_settings() == expected
    assert build_visual_encoder(VisualConfig(backend=backend), image_size=32).build_settings() == {**expected, "image_size": 32}


def test_backends_compute_the_same_tower():
    """Same weights, same tokens: the timm tower is built with SigLIP's tanh GELU, as transformers'.
    Weights are drawn wide (std 0.2) so MLP inputs reach where exact and tanh GELU differ (~1e-3)."""
    torch.manual_seed(0)
    arch = VISUAL_ENCODERS.get("tiny")()
    timm_enc = tiny("timm").eval()
    with torch.no_grad():
        for p in timm_enc.parameters():
            p.normal_(0.0, 0.2)
    hf_enc = tiny("transformers").eval()
    hf_enc.siglip.load_state_dict(timm_to_transformers(timm_enc.vit.state_dict(), arch.depth), strict=True)
    frames = torch.randn(1, 2, 3, 64, 64)
    torch.testing.assert_close(hf_enc(frames), timm_enc(frames), atol=1e-5, rtol=0)
