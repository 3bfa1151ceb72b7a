"""Segment pooling: a frame sequence (B, T, D) becomes S segment tokens (B, S, D).

Both branches end here (audio after the FastConformer, visual after the temporal encoder), so
fusion sees the same number of segments S from each. Every strategy takes an optional bool mask
(B, T) (True = valid frame) and ignores masked frames entirely.

Segments split each clip's *valid* frames into S contiguous, adaptive windows: segment s covers
valid frames [floor(s * L / S), ceil((s + 1) * L / S)) where L is that clip's number of valid
frames, the windows of ``torch.nn.functional.adaptive_avg_pool1d``. Every segment holds at least
one frame even when L < S, and a masked clip pools exactly as its valid frames alone would.

    pool = build_segment_pooling("attention", dim=512, segments=8)
    pool(x, mask)  # (B, T, 512) -> (B, 8, 512)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fer.models.registry import Registry

SEGMENT_POOLING: Registry[type[nn.Module]] = Registry("segment pooling")


def temporal_encoding(length: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal encoding of frame positions 0..length-1 (Vaswani et al. 2017).

    Args:
        length: number of frames T.
        dim: feature width D (odd widths drop the last cosine).
    Returns:
        (T, D) tensor with values in [-1, 1].
    """
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = pos * freq  # (T, ceil(D/2))
    enc = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :dim]  # sin, cos interleaved
    return enc.to(dtype)


def segment_membership(mask: torch.Tensor, segments: int) -> torch.Tensor:
    """Which frames each segment pools: adaptive windows over each clip's valid frames.

    Args:
        mask: (B, T) bool, True = valid frame; every clip needs at least one.
        segments: S.
    Returns:
        (B, S, T) bool; entry [b, s, t] says frame t of clip b belongs to segment s.
    """
    valid = mask.sum(1)  # (B,)
    if not mask.is_meta and not bool((valid > 0).all()):  # meta tensors (profiling) hold no values
        raise ValueError("segment pooling: a clip has no valid frame in its mask")
    rank = mask.long().cumsum(1) - 1  # (B, T) position of each frame among the valid ones
    s = torch.arange(segments, device=mask.device)[None, :, None]  # (1, S, 1)
    length = valid[:, None, None]  # (B, 1, 1)
    start = (s * length) // segments
    end = ((s + 1) * length + segments - 1) // segments  # ceil
    r = rank[:, None, :]  # (B, 1, T)
    return mask[:, None, :] & (r >= start) & (r < end)


def _full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"segment pooling: mask must be bool {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    return mask


@SEGMENT_POOLING.register("max")
class MaxSegmentPooling(nn.Module):
    """Element-wise maximum over each segment's frames; no parameters."""

    def __init__(self, dim: int, segments: int):
        super().__init__()
        self.segments = segments

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        member = segment_membership(_full_mask(x, mask), self.segments)  # (B, S, T)
        x = x[:, None].masked_fill(~member[..., None], float("-inf"))  # (B, S, T, D)
        return x.amax(2)  # (B, S, D)


@SEGMENT_POOLING.register("avg")
class AvgSegmentPooling(nn.Module):
    """Mean over each segment's frames; no parameters."""

    def __init__(self, dim: int, segments: int):
        super().__init__()
        self.segments = segments

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        member = segment_membership(_full_mask(x, mask), self.segments).to(x.dtype)  # (B, S, T)
        weights = member / member.sum(-1, keepdim=True)
        return torch.einsum("bst,btd->bsd", weights, x)  # (B, S, D)


@SEGMENT_POOLING.register("attention")
class AttentionSegmentPooling(nn.Module):
    """Learned frame scores, softmax within each segment, weighted sum of the frames.

    Scores see the frame plus its temporal encoding, so where a frame sits can matter; the
    pooled values are the frames themselves, so each output is a convex combination of its
    segment's frames.
    """

    def __init__(self, dim: int, segments: int):
        super().__init__()
        self.segments = segments
        hidden = max(dim // 4, 8)
        # No bias on the last layer: a constant added to every score leaves the softmax unchanged.
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def segment_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, S, T) weights; each segment's weights sum to 1 over its frames."""
        member = segment_membership(_full_mask(x, mask), self.segments)  # (B, S, T)
        pos = temporal_encoding(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)  # (T, D)
        score = self.score(x + pos).squeeze(-1)  # (B, T)
        score = score[:, None, :].masked_fill(~member, float("-inf"))  # (B, S, T)
        return score.softmax(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.einsum("bst,btd->bsd", self.segment_weights(x, mask), x)  # (B, S, D)


@SEGMENT_POOLING.register("learnable")
class LearnedQuerySegmentPooling(nn.Module):
    """S learned queries cross-attend over all valid frames (keys carry the temporal encoding).

    Unlike the windowed strategies, each query learns which part of the clip it summarises.
    Heads: the largest of 8, 4, 2, 1 dividing ``dim``.
    """

    def __init__(self, dim: int, segments: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(segments, dim) * 0.02)  # (S, D)
        self.attn = nn.MultiheadAttention(dim, math.gcd(dim, 8), batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _full_mask(x, mask)
        if not mask.is_meta and not bool(mask.any(1).all()):
            raise ValueError("segment pooling: a clip has no valid frame in its mask")
        keys = self.norm(x + temporal_encoding(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype))
        queries = self.queries.expand(x.shape[0], -1, -1)  # (B, S, D)
        out, _ = self.attn(queries, keys, x, key_padding_mask=~mask, need_weights=False)
        return out  # (B, S, D)


def build_segment_pooling(strategy: str, dim: int, segments: int) -> nn.Module:
    """Segment pooling module by registry name.

    Args:
        strategy: one of ``SEGMENT_POOLING.names()`` (attention, avg, learnable, max).
        dim: feature width D of the frames (and of the segments).
        segments: number of output segments S.
    Returns:
        module mapping (B, T, D) [+ bool mask (B, T)] -> (B, S, D).
    """
    if segments < 1:
        raise ValueError(f"segment pooling: segments must be >= 1, got {segments}")
    return SEGMENT_POOLING.get(strategy)(dim=dim, segments=segments)
