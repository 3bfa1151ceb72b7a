"""Segment pooling: every registered strategy, plus value checks per strategy."""

import math

import pytest
import torch
import torch.nn.functional as F

from fer.models.pooling import SEGMENT_POOLING, build_segment_pooling, segment_membership, temporal_encoding

STRATEGIES = SEGMENT_POOLING.names()
D, S = 16, 8


def _pool(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_segment_pooling(name, dim=D, segments=S).eval()


def test_registry_lists_the_four_strategies():
    assert STRATEGIES == ["attention", "avg", "learnable", "max"]
    with pytest.raises(KeyError, match="known: attention, avg, learnable, max"):
        build_segment_pooling("median", dim=D, segments=S)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("frames", [5, 8, 37])  # fewer, as many and more frames than segments
def test_shape_and_finite(name, frames):
    x = torch.randn(3, frames, D)
    out = _pool(name)(x)
    assert out.shape == (3, S, D)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_gradients_reach_every_parameter_and_the_input(name):
    pool = _pool(name).train()
    x = torch.randn(2, 37, D, requires_grad=True)
    (pool(x) * torch.randn(2, S, D)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in pool.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", STRATEGIES)
def test_masked_frames_are_ignored(name):
    """A masked clip pools exactly as its valid frames alone, whatever the padding holds."""
    pool = _pool(name)
    lengths = [37, 20, 3]
    x = torch.randn(3, 37, D)
    mask = torch.arange(37)[None] < torch.tensor(lengths)[:, None]
    out = pool(x, mask)
    garbage = torch.where(mask[..., None], x, torch.full_like(x, 1e4))
    torch.testing.assert_close(pool(garbage, mask), out)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(out[b], pool(x[b : b + 1, :n])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", STRATEGIES)
def test_scattered_mask_ignores_masked_frames(name):
    pool = _pool(name)
    x = torch.randn(2, 30, D)
    mask = torch.rand(2, 30, generator=torch.Generator().manual_seed(1)) > 0.4
    other = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    torch.testing.assert_close(pool(other, mask), pool(x, mask))


@pytest.mark.parametrize("name", STRATEGIES)
def test_bad_masks_are_rejected(name):
    pool = _pool(name)
    x = torch.randn(2, 10, D)
    empty = torch.ones(2, 10, dtype=torch.bool)
    empty[1] = False
    with pytest.raises(ValueError, match="no valid frame"):
        pool(x, empty)
    with pytest.raises(ValueError, match="mask must be bool"):
        pool(x, torch.ones(2, 10))
    with pytest.raises(ValueError, match="mask must be bool"):
        pool(x, torch.ones(2, 9, dtype=torch.bool))


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_seed_same_module(name):
    a, b = _pool(name, seed=3), _pool(name, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def _manual_windows(length: int) -> list[list[int]]:
    """Frames of each segment written out: [floor(s L / S), ceil((s + 1) L / S))."""
    return [list(range(math.floor(s * length / S), math.ceil((s + 1) * length / S))) for s in range(S)]


def test_max_pairs_of_frames():
    x = torch.randn(2, 16, D)
    torch.testing.assert_close(_pool("max")(x), x.view(2, S, 2, D).amax(2), rtol=0, atol=0)


def test_max_equals_manual_max_over_each_segment_with_mask():
    x = torch.randn(2, 29, D)
    lengths = [29, 13]
    mask = torch.arange(29)[None] < torch.tensor(lengths)[:, None]
    out = _pool("max")(x, mask)
    for b, n in enumerate(lengths):
        for s, frames in enumerate(_manual_windows(n)):
            assert torch.equal(out[b, s], x[b, frames].amax(0))
    torch.testing.assert_close(out[:1], F.adaptive_max_pool1d(x[:1].transpose(1, 2), S).transpose(1, 2))


def test_fewer_frames_than_segments_repeat_frames():
    x = torch.randn(2, 4, D)
    expected = x.repeat_interleave(2, dim=1)  # 4 frames over 8 segments: each frame twice
    torch.testing.assert_close(_pool("max")(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(_pool("avg")(x), expected)


def test_avg_equals_segment_mean():
    x = torch.randn(2, 16, D)
    torch.testing.assert_close(_pool("avg")(x), x.view(2, S, 2, D).mean(2))
    y = torch.randn(2, 37, D)
    torch.testing.assert_close(_pool("avg")(y), F.adaptive_avg_pool1d(y.transpose(1, 2), S).transpose(1, 2))
    mask = torch.arange(37)[None] < torch.tensor([37, 11])[:, None]
    out = _pool("avg")(y, mask)
    for s, frames in enumerate(_manual_windows(11)):
        torch.testing.assert_close(out[1, s], y[1, frames].mean(0))


def test_attention_weights_are_a_distribution_over_the_segment():
    pool = _pool("attention")
    x = torch.randn(3, 29, D)
    mask = torch.arange(29)[None] < torch.tensor([29, 17, 6])[:, None]
    w = pool.segment_weights(x, mask)  # (B, S, T)
    member = segment_membership(mask, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, S))
    assert (w >= 0).all() and (w[~member] == 0).all() and (w[member] > 0).all()
    torch.testing.assert_close(pool(x, mask), torch.einsum("bst,btd->bsd", w, x))


def test_attention_output_stays_inside_its_segment():
    x = torch.randn(1, 24, D)
    out = _pool("attention")(x)[0]
    for s, frames in enumerate(_manual_windows(24)):
        seg = x[0, frames]
        assert (out[s] <= seg.amax(0) + 1e-6).all() and (out[s] >= seg.amin(0) - 1e-6).all()


def test_attention_scores_see_frame_position():
    """Identical frames get different weights: the temporal encoding enters the scores."""
    pool = _pool("attention")
    x = torch.randn(1, 1, D).expand(1, 32, D)
    w = pool.segment_weights(x)
    assert not torch.allclose(w[0, 0, :4], torch.full((4,), 0.25))
    torch.testing.assert_close(pool(x), x[:, :S])  # any convex combination of equal frames


def test_learnable_queries_see_frame_order():
    pool = _pool("learnable")
    x = torch.randn(1, 20, D)
    assert not torch.allclose(pool(x), pool(x.flip(1)), atol=1e-4)


def test_max_and_avg_have_no_parameters_learned_ones_do():
    assert sum(p.numel() for p in _pool("max").parameters()) == 0
    assert sum(p.numel() for p in _pool("avg").parameters()) == 0
    assert sum(p.numel() for p in _pool("attention").parameters()) > 0
    assert _pool("learnable").queries.shape == (S, D)


@pytest.mark.parametrize("length", range(1, 21))
def test_membership_covers_valid_frames_in_order(length):
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 2 : 2 + length] = True  # valid frames need not start at 0
    member = segment_membership(mask, S)[0]  # (S, T)
    assert member.any(1).all()  # no empty segment
    assert torch.equal(member.any(0), mask[0])  # every valid frame used, no masked one
    firsts = [int(row.nonzero()[0]) for row in member]
    lasts = [int(row.nonzero()[-1]) for row in member]
    assert firsts == sorted(firsts) and lasts == sorted(lasts)
    for row in member:  # contiguous windows
        idx = row.nonzero()[:, 0]
        assert torch.equal(idx, torch.arange(int(idx[0]), int(idx[-1]) + 1))


def test_temporal_encoding_values():
    enc = temporal_encoding(50, 7)
    assert enc.shape == (50, 7)
    torch.testing.assert_close(enc[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    t = torch.arange(50, dtype=torch.float32)
    torch.testing.assert_close(enc[:, 0], torch.sin(t))
    torch.testing.assert_close(enc[:, 1], torch.cos(t))
    torch.testing.assert_close(enc[:, 2], torch.sin(t * 10000 ** (-2 / 7)))
    assert torch.cdist(enc, enc).add(torch.eye(50)).min() > 0  # every position distinct
