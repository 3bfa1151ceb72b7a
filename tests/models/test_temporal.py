"""Temporal encoder: block layout, causal and centred convolutions, frame pooling, every segment pooling."""

import math

import pytest
import torch
from pydantic import ValidationError

from fer.models.pooling import SEGMENT_POOLING
from fer.models.temporal import (
    AttentionBlock,
    FramePooling,
    GatedConvBlock,
    TemporalConfig,
    block_kinds,
    build_temporal,
)

B, T, K, DV, S = 2, 16, 10, 32, 8


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.mark.parametrize("layers", range(0, 13))
@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_block_counts_follow_the_conv_share(layers, share):
    kinds = block_kinds(layers, share)
    assert len(kinds) == layers
    assert kinds.count("conv") == round(share * layers)
    if "attn" in kinds:
        assert kinds[-1] == "attn"  # attention closes the last run of convolutions


def test_block_order_is_the_documented_one():
    assert block_kinds(4, 0.7) == ["conv", "conv", "conv", "attn"]
    assert block_kinds(10, 0.7) == ["conv"] * 3 + ["attn"] + ["conv"] * 2 + ["attn"] + ["conv"] * 2 + ["attn"]
    assert block_kinds(3, 0.0) == ["attn"] * 3


def changed_frames(block: torch.nn.Module, frame: int) -> list[int]:
    """Frames whose output moves when only input ``frame`` is perturbed."""
    torch.manual_seed(0)
    x = torch.randn(1, 12, 16)
    bumped = x.clone()
    bumped[:, frame] += torch.randn(16)  # not a constant shift: the LayerNorm would remove it
    diff = (block.eval()(bumped) - block(x)).abs().amax(-1)[0]  # (T,)
    return [t for t in range(12) if diff[t] > 1e-4]


def test_causal_convolution_sees_only_the_past():
    block = GatedConvBlock(16, kernel=3, causal=True, hidden=32, dropout=0.0)
    assert changed_frames(block, 5) == [5, 6, 7]


def test_centred_convolution_sees_both_sides():
    block = GatedConvBlock(16, kernel=5, causal=False, hidden=32, dropout=0.0)
    assert changed_frames(block, 5) == [3, 4, 5, 6, 7]


def test_attention_block_mixes_all_frames():
    block = AttentionBlock(16, heads=4, hidden=32, dropout=0.0)
    assert changed_frames(block, 5) == list(range(12))


def test_frame_pooling_is_an_order_free_convex_combination():
    torch.manual_seed(0)
    pool = FramePooling(DV)
    tokens = torch.randn(B, T, K, DV)
    out = pool(tokens)
    assert out.shape == (B, T, DV)
    torch.testing.assert_close(out, pool(tokens[:, :, torch.randperm(K)]))
    assert (out <= tokens.amax(2) + 1e-6).all() and (out >= tokens.amin(2) - 1e-6).all()
    with torch.no_grad():
        pool.score.weight.zero_()
    torch.testing.assert_close(pool(tokens), tokens.mean(2))


@pytest.mark.parametrize("causal", [False, True], ids=["centred", "causal"])
@pytest.mark.parametrize("pooling", SEGMENT_POOLING.names())
def test_shapes_values_and_gradients(pooling, causal):
    torch.manual_seed(0)
    cfg = TemporalConfig(dim=24, layers=4, heads=4, kernel=3, causal=causal, pooling=pooling)
    enc = build_temporal(cfg, in_dim=DV, segments=S).train()
    assert enc.kinds == ["conv", "conv", "conv", "attn"] and enc.out_dim == 24
    out = enc(torch.randn(B, T, K, DV))
    assert out.shape == (B, S, 24)
    assert torch.isfinite(out).all()
    (out * torch.randn(B, S, 24)).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_frame_pooling_weights_tokens_by_the_softmax_of_their_scores():
    pool = FramePooling(1)
    with torch.no_grad():
        pool.score.weight.fill_(1.0)  # score = the token itself
    tokens = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 2, 1)  # (B, T, K, D)
    # softmax(0, ln 3) = (1/4, 3/4): 0 * 1/4 + ln 3 * 3/4
    assert pool(tokens).item() == pytest.approx(0.75 * math.log(3.0))


def test_segments_follow_time():
    """No mixing blocks, avg pooling, one token per frame (its frame-pooling weight is 1) and no
    projection: segment s is the mean of frames 2s and 2s + 1 of LayerNorm(token + sinusoid),
    every step written out here in float64."""
    torch.manual_seed(0)
    enc = build_temporal(TemporalConfig(layers=0, pooling="avg"), in_dim=DV, segments=S).eval()
    tokens = torch.randn(B, T, 1, DV)
    t = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    i = torch.arange(0, DV, 2, dtype=torch.float64)  # even channels
    angle = t / 10000 ** (i / DV)  # (T, DV / 2)
    sinusoid = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, DV)  # sin, cos interleaved
    x = tokens[:, :, 0].double() + sinusoid  # (B, T, DV)
    normed = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    expected = normed.reshape(B, S, T // S, DV).mean(2)  # (B, S, DV)
    torch.testing.assert_close(enc(tokens).double(), expected, atol=1e-5, rtol=1e-5)


def test_width_defaults_to_the_encoder_width():
    enc = build_temporal(TemporalConfig(), in_dim=DV, segments=S)
    assert enc.out_dim == DV and isinstance(enc.proj, torch.nn.Identity)
    assert isinstance(build_temporal(TemporalConfig(dim=48), in_dim=DV, segments=S).proj, torch.nn.Linear)


def test_config_errors():
    with pytest.raises(ValidationError, match="centred convolution needs an odd kernel"):
        TemporalConfig(kernel=4)
    assert TemporalConfig(kernel=4, causal=True).kernel == 4
    with pytest.raises(ValidationError, match="unknown segment pooling 'median'"):
        TemporalConfig(pooling="median")
    with pytest.raises(ValidationError, match="conv_share"):
        TemporalConfig(conv_share=1.5)
    with pytest.raises(ValueError, match="model.visual.temporal.heads = 5 does not divide the width 32"):
        build_temporal(TemporalConfig(heads=5), in_dim=DV, segments=S)
    build_temporal(TemporalConfig(heads=5, conv_share=1.0), in_dim=DV, segments=S)  # no attention: any heads
