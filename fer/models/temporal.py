"""Temporal encoder of the visual branch: (B, T, k + g, Dv) -> (B, S, Dt).

1. Per-frame aggregation: attention pooling (a bias-free linear score per token, softmax over the
   frame's k + g tokens, weighted sum), chosen over the mean because the kept patches differ in
   how much expression they carry and the global tokens in what they summarise. (B, T, Dv).
2. Projection to the width Dt (``dim``; identity when Dt = Dv) plus a sinusoidal frame encoding,
   which the attention blocks need (the convolutions see order by construction).
3. A hybrid stack of ``layers`` pre-norm residual blocks, each a token mixer then a GELU MLP:
   ``round(conv_share * layers)`` gated short convolution blocks (LFM2-style: input-gated,
   depthwise over time, output-gated; centred, or causal if asked) and the rest temporal
   multi-head attention blocks. Order: the attention blocks are spread evenly and each one closes
   a run of convolution blocks, e.g. 4 layers at 0.7 -> conv conv conv attn, 10 layers ->
   conv conv conv attn conv conv attn conv conv attn; local motion is mixed before global context.
4. Final LayerNorm, then segment pooling to S segments (``fer.models.pooling``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer.models.config import TemporalConfig
from fer.models.pooling import build_segment_pooling, temporal_encoding


def block_kinds(layers: int, conv_share: float) -> list[str]:
    """"conv" / "attn" per layer: ``round(conv_share * layers)`` convs, attention spread evenly, last in each run."""
    attn = layers - round(conv_share * layers)
    return ["attn" if (i + 1) * attn // layers > i * attn // layers else "conv" for i in range(layers)]


class FramePooling(nn.Module):
    """Attention pooling of a frame's tokens: (B, T, K, D) -> (B, T, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)  # a shared offset would cancel in the softmax

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.score(tokens).softmax(dim=2)  # (B, T, K, 1)
        return (weights * tokens).sum(2)  # (B, T, D)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))


class GatedConvBlock(nn.Module):
    """x + out(C * conv_t(B * h)) with B, C, h = in(norm(x)), then x + mlp(norm(x)): (B, T, D) -> (B, T, D).

    Args:
        dim: width D; kernel: frames per depthwise convolution; causal: pad on the past side only.
        hidden: MLP width; dropout: after the mixer and in the MLP.
    """

    def __init__(self, dim: int, *, kernel: int, causal: bool, hidden: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.inp = nn.Linear(dim, 3 * dim)
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim)  # depthwise: each channel its own filter
        self.out = nn.Linear(dim, dim)
        self.pad = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b_gate, c_gate, h = self.inp(self.norm1(x)).chunk(3, dim=-1)  # 3 x (B, T, D)
        y = (b_gate * h).transpose(1, 2)  # (B, D, T)
        y = self.conv(F.pad(y, self.pad)).transpose(1, 2)  # (B, T, D)
        x = x + self.drop(self.out(c_gate * y))
        return x + self.mlp(self.norm2(x))


class AttentionBlock(nn.Module):
    """x + mha(norm(x)) over frames (non-causal), then x + mlp(norm(x)): (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, *, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class TemporalEncoder(nn.Module):
    """(B, T, K, Din) ROI tokens -> (B, S, D) segment tokens; ``out_dim`` = D.

    Args:
        in_dim: token width Din (the visual encoder's Dv).
        dim: width D of the stack.
        layers: number of blocks; conv_share: fraction that are gated convolution blocks.
        heads, kernel, causal, mlp_ratio, dropout: block settings.
        pooling: segment pooling strategy; segments: S.
    """

    def __init__(self, *, in_dim: int, dim: int, layers: int, conv_share: float, heads: int, kernel: int,
                 causal: bool, mlp_ratio: float, dropout: float, pooling: str, segments: int):
        super().__init__()
        hidden = round(mlp_ratio * dim)
        self.frame_pool = FramePooling(in_dim)
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.kinds = block_kinds(layers, conv_share)
        self.blocks = nn.ModuleList(
            GatedConvBlock(dim, kernel=kernel, causal=causal, hidden=hidden, dropout=dropout) if kind == "conv"
            else AttentionBlock(dim, heads=heads, hidden=hidden, dropout=dropout)
            for kind in self.kinds
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = build_segment_pooling(pooling, dim, segments)
        self.out_dim = dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.frame_pool(tokens))  # (B, T, D)
        x = x + temporal_encoding(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = block(x)  # (B, T, D)
        return self.pool(self.norm(x))  # (B, S, D)


def build_temporal(cfg: TemporalConfig, *, in_dim: int, segments: int) -> TemporalEncoder:
    """Temporal encoder from its config.

    Args:
        cfg: the temporal config (``dim`` None = ``in_dim``).
        in_dim: width Dv of the ROI tokens.
        segments: S (``model.segments``).
    Returns:
        module (B, T, k + g, Dv) -> (B, S, Dt), ``out_dim`` = Dt.
    """
    dim = in_dim if cfg.dim is None else cfg.dim
    if "attn" in block_kinds(cfg.layers, cfg.conv_share) and dim % cfg.heads:
        raise ValueError(f"model.visual.temporal.heads = {cfg.heads} does not divide the width {dim}")
    return TemporalEncoder(in_dim=in_dim, dim=dim, layers=cfg.layers, conv_share=cfg.conv_share, heads=cfg.heads,
                           kernel=cfg.kernel, causal=cfg.causal, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                           pooling=cfg.pooling, segments=segments)
