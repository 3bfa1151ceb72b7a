"""Fusion: audio and visual segment tokens -> one sequence through LFM2 layers -> (B, S', 512).

Each modality is projected to the fusion width by a gated projection and tagged with a learned
modality-type embedding; the tokens are ordered ``interleave`` (a1 v1 a2 v2 ...) or ``concat``
(a1 .. aS v1 .. vS) and run through the first N decoder layers of a transformers ``Lfm2Model``
(short-convolution and grouped-query attention layers in the checkpoint's ``layer_types``
order, rotary positions and the final RMSNorm as the model applies them). The token embedding
table is dropped: fusion feeds ``inputs_embeds``. N = 0 keeps only projection and
concatenation, the baseline of the fusion-depth study. An output projection maps to 512.

The LFM2 architecture comes from ``pretrained`` (hub id or local dir; the two published
checkpoints' configs are written below so an architecture-only build, ``init: random`` or
``model.random_weights``, needs no download) or,
when ``pretrained`` is null, from ``width``/``heads``/``kv_heads``/``ffn_dim``. ``init`` decides
whether the checkpoint's weights are loaded.

    fusion = build_fusion(FusionConfig(pretrained=None, init="random", width=64, heads=4,
                                       kv_heads=2, ffn_dim=256, layers=2),
                          audio_dim=48, visual_dim=64)
    fusion(audio, visual)  # (B, 8, 48), (B, 8, 64) -> (B, 16, 512)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import Lfm2Config, Lfm2Model

from fer.models.config import FusionConfig
from fer.models.registry import Registry
from fer.verbosity import verbose

# LFM2's hybrid order: 10 short-conv and 6 grouped-query attention layers (both published sizes).
LFM2_LAYER_TYPES = (
    "conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
    "full_attention", "conv", "full_attention", "conv", "full_attention", "conv", "full_attention", "conv",
)  # fmt: skip

# The published configs (config.json of each hub repo); the rest are Lfm2Config defaults.
PUBLISHED_LFM2: dict[str, dict] = {
    "LiquidAI/LFM2-700M": dict(
        vocab_size=65536, hidden_size=1536, intermediate_size=10240, num_hidden_layers=16,
        num_attention_heads=24, num_key_value_heads=8, layer_types=list(LFM2_LAYER_TYPES),
    ),
    "LiquidAI/LFM2-350M": dict(
        vocab_size=65536, hidden_size=1024, intermediate_size=6656, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=8, layer_types=list(LFM2_LAYER_TYPES),
    ),
}  # fmt: skip

# peft LoRA targets: attention q/k/v/out projections and the short-conv in/out projections.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "in_proj"]

FUSION_FREEZE = Registry("fusion freeze mode")


def lfm2_architecture(pretrained: str | None, *, width: int, heads: int, kv_heads: int, ffn_dim: int) -> Lfm2Config:
    """The full (untruncated) LFM2 config: published, read from ``pretrained``, or from the widths.

    Args:
        pretrained: hub id or local dir, or None for a random-init architecture.
        width, heads, kv_heads, ffn_dim: the random-init architecture (pretrained is None).
    Returns:
        Lfm2Config with all of its layers.
    """
    if pretrained is None:
        return Lfm2Config(hidden_size=width, intermediate_size=ffn_dim, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, num_hidden_layers=len(LFM2_LAYER_TYPES),
                          layer_types=list(LFM2_LAYER_TYPES))
    if pretrained in PUBLISHED_LFM2:
        return Lfm2Config(**PUBLISHED_LFM2[pretrained])
    return read_lfm2_config(pretrained)


def read_lfm2_config(pretrained: str) -> Lfm2Config:
    """The checkpoint's own config.json (hub id or local dir)."""
    # from_pretrained falls back to defaults for a folder without config.json; refuse that.
    if Path(pretrained).is_dir() and not (Path(pretrained) / "config.json").is_file():
        raise OSError(f"model.fusion.pretrained: {pretrained} has no config.json")
    return _hub_call(Lfm2Config.from_pretrained, pretrained)


def truncate_config(config: Lfm2Config, layers: int) -> Lfm2Config:
    """A copy of ``config`` keeping the first ``layers`` layers, in the checkpoint's order."""
    if layers > config.num_hidden_layers:
        raise ValueError(f"model.fusion.layers: {layers} > the {config.num_hidden_layers} layers of this LFM2")
    out = Lfm2Config(**{**config.to_dict(), "num_hidden_layers": layers, "layer_types": config.layer_types[:layers]})
    out._attn_implementation = "sdpa"  # takes LFM2Fusion's explicit boolean mask; eager and flash would not
    return out


def load_lfm2(pretrained: str, layers: int) -> Lfm2Model:
    """The first ``layers`` decoder layers of a pretrained LFM2, weights loaded, embeddings dropped.

    Args:
        pretrained: hub id or local dir (``HF_HUB_OFFLINE`` is honoured by the hub client).
        layers: N >= 1 layers to keep.
    Returns:
        Lfm2Model with N layers and ``embed_tokens = None``.
    """
    config = truncate_config(read_lfm2_config(pretrained), layers)
    model, info = _hub_call(Lfm2Model.from_pretrained, pretrained, config=config, attn_implementation="sdpa",
                            output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"model.fusion.pretrained: {pretrained} lacks weights {sorted(info['missing_keys'])[:5]}")
    model.embed_tokens = None
    return model


def random_lfm2(config: Lfm2Config, layers: int) -> Lfm2Model:
    """The first ``layers`` layers of the architecture ``config``, LFM2's own random initialisation."""
    # A one-token vocabulary: the embedding table is dropped, so never allocate the real one.
    tokenless = Lfm2Config(**{**config.to_dict(), "vocab_size": 1, "bos_token_id": None, "eos_token_id": None})
    model = Lfm2Model(truncate_config(tokenless, layers))
    model.embed_tokens = None
    return model


SHORT_CONV_NOTICE = ("fusion: LFM2's short convolutions run their PyTorch reference code on this GPU; "
                     "`pip install causal-conv1d` gives the fused CUDA kernel")


class _ShortConvNotice(logging.Filter):
    """transformers' notice that ``causal_conv1d`` is missing, said once per process: on CPU it is
    dropped (the package is CUDA only), on a GPU it becomes ``SHORT_CONV_NOTICE``; with
    ``runner.py -v`` transformers' own words pass."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if verbose() or "causal_conv1d" not in record.getMessage():
            return True
        if self.said or not torch.cuda.is_available():
            return False
        self.said = True
        record.msg, record.args = SHORT_CONV_NOTICE, ()
        return True


def _quiet_short_conv_notice() -> None:
    log = logging.getLogger("transformers.integrations.hub_kernels")
    if not any(isinstance(f, _ShortConvNotice) for f in log.filters):
        log.addFilter(_ShortConvNotice())


def _hub_call(fn, pretrained: str, **kwargs):
    try:
        return fn(pretrained, **kwargs)
    except OSError as exc:
        raise OSError(f"model.fusion.pretrained: cannot load {pretrained!r} (hub id or local dir): {exc}") from None


@FUSION_FREEZE.register("unfrozen")
def _unfrozen(backbone: Lfm2Model, *, lora_rank: int) -> bool:
    """Every LFM2 weight trains. Returns False: the backbone follows the model's train/eval mode."""
    return False


@FUSION_FREEZE.register("frozen")
def _frozen(backbone: Lfm2Model, *, lora_rank: int) -> bool:
    """No LFM2 weight trains. Returns True: the backbone stays in eval mode."""
    backbone.requires_grad_(False)
    return True


@FUSION_FREEZE.register("lora")
def _lora(backbone: Lfm2Model, *, lora_rank: int) -> bool:
    """Base weights frozen; rank-r LoRA adapters (B = 0 at start, so output unchanged) train."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone.requires_grad_(False)
    # alpha = 2r, the usual LoRA scale of 2; no adapter dropout, so train and eval outputs agree.
    lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    inject_adapter_in_model(lora, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    return False


class GatedProjection(nn.Module):
    """LayerNorm, then a linear map to 2 x out_dim split into value * sigmoid(gate)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(self.norm(x)).chunk(2, dim=-1)  # (B, S, W) each
        return value * torch.sigmoid(gate)


class LFM2Fusion(nn.Module):
    """Gated projections + modality embeddings -> token order -> LFM2 layers -> output projection.

    Args:
        audio_dim, visual_dim: branch widths; None for a modality the model does not use.
        width: fusion width W (the LFM2 hidden size).
        backbone: Lfm2Model without embeddings, or None for no fusion layers.
        backbone_frozen: keep the backbone in eval mode whatever the model's mode.
        order: ``interleave`` or ``concat`` (only matters with both modalities).
        out_dim: output width (512).
    """

    def __init__(self, *, audio_dim: int | None, visual_dim: int | None, width: int, backbone: Lfm2Model | None,
                 backbone_frozen: bool, order: str, out_dim: int):
        super().__init__()
        if audio_dim is None and visual_dim is None:
            raise ValueError("fusion needs at least one modality")
        self.order = order
        self.backbone_frozen = backbone_frozen
        self.audio_proj = GatedProjection(audio_dim, width) if audio_dim is not None else None
        self.visual_proj = GatedProjection(visual_dim, width) if visual_dim is not None else None
        self.audio_type = nn.Parameter(torch.randn(width) * 0.02) if audio_dim is not None else None
        self.visual_type = nn.Parameter(torch.randn(width) * 0.02) if visual_dim is not None else None
        self.backbone = backbone
        self.out_proj = nn.Linear(width, out_dim)

    def train(self, mode: bool = True) -> LFM2Fusion:
        super().train(mode)
        if self.backbone is not None and self.backbone_frozen:
            self.backbone.eval()
        return self

    def tokens(self, audio: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        """Projected, type-tagged tokens in fusion order: (B, S', W)."""
        parts = []
        if self.audio_proj is not None:
            parts.append(self.audio_proj(audio) + self.audio_type)  # (B, S, W)
        if self.visual_proj is not None:
            parts.append(self.visual_proj(visual) + self.visual_type)  # (B, S, W)
        if len(parts) == 1:
            return parts[0]
        if self.order == "concat":
            return torch.cat(parts, dim=1)  # (B, 2S, W): a1 .. aS v1 .. vS
        if parts[0].shape != parts[1].shape:
            raise ValueError(f"interleave needs equal segment counts, got {tuple(audio.shape)} and {tuple(visual.shape)}")
        return torch.stack(parts, dim=2).flatten(1, 2)  # (B, 2S, W): a1 v1 a2 v2 ...

    def forward(self, audio: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        """(B, S, Da) and/or (B, S, Dv) -> (B, S', out_dim)."""
        x = self.tokens(audio, visual)  # (B, S', W)
        if self.backbone is not None:
            n = x.shape[1]
            # Explicit causal mask and positions: the model's own mask builder inspects values,
            # which meta tensors (profiling) do not have. sdpa's boolean form (True = may attend)
            # matches queries of any dtype under autocast.
            causal = torch.ones(n, n, device=x.device, dtype=torch.bool).tril()[None, None]  # (1, 1, S', S')
            positions = torch.arange(n, device=x.device)[None]  # (1, S')
            x = self.backbone(inputs_embeds=x, attention_mask={"full_attention": causal, "conv": None},
                              position_ids=positions, use_cache=False).last_hidden_state
        return self.out_proj(x)  # (B, S', out_dim)


def build_fusion(cfg: FusionConfig, *, audio_dim: int | None, visual_dim: int | None,
                 load_weights: bool = True) -> LFM2Fusion:
    """Fusion module from its config.

    Args:
        cfg: FusionConfig.
        audio_dim, visual_dim: widths of the branches' segment tokens; None = modality absent.
        load_weights: False builds the architecture only, randomly initialised, even when
            ``cfg.init`` is ``pretrained`` (meta-device profiling, ``model.random_weights``);
            a published LFM2 then reads nothing at all.
    Returns:
        LFM2Fusion mapping (B, S, Da), (B, S, Dv) -> (B, S', cfg.out_dim).
    """
    arch = lfm2_architecture(cfg.pretrained, width=cfg.width, heads=cfg.heads, kv_heads=cfg.kv_heads,
                             ffn_dim=cfg.ffn_dim)
    backbone, frozen = None, False
    if cfg.layers > 0:
        _quiet_short_conv_notice()
        if cfg.init == "pretrained" and load_weights:
            backbone = load_lfm2(cfg.pretrained, cfg.layers)
        else:
            backbone = random_lfm2(arch, cfg.layers)
        frozen = FUSION_FREEZE.get(cfg.freeze)(backbone, lora_rank=cfg.lora_rank)
        if cfg.grad_checkpointing:
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # N = 0 keeps the architecture's width, so the depth study varies depth alone.
    return LFM2Fusion(audio_dim=audio_dim, visual_dim=visual_dim, width=arch.hidden_size, backbone=backbone,
                      backbone_frozen=frozen, order=cfg.order, out_dim=cfg.out_dim)
