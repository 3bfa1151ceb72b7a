"""ROI compression: every selection mode, the uncompressed path, the prior, and learning to select."""

import math

import pytest
import torch
from pydantic import ValidationError

from fer.models.roi import (
    PRIOR_KEYPOINTS,
    ROI_SELECTION,
    RoiConfig,
    build_roi,
    grid_indices,
    keypoint_prior,
    patch_centres,
    relaxed_topk,
)

MODES = ROI_SELECTION.names()
GRID = (8, 8)
N, D = 64, 16
# A face in the crop: eyes, nose tip, mouth centre, ears (BlazeFace order), as fractions.
FACE = torch.tensor([[0.35, 0.40], [0.65, 0.40], [0.50, 0.58], [0.50, 0.75], [0.15, 0.45], [0.85, 0.45]])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tagged_tokens(b: int, t: int, n: int = N, d: int = D) -> torch.Tensor:
    """Random tokens whose feature 0 is the patch index, so a kept token says where it came from."""
    tokens = torch.randn(b, t, n, d)
    tokens[..., 0] = torch.arange(n, dtype=torch.float32)
    return tokens


def faces(b: int, t: int, jitter: float = 0.03) -> torch.Tensor:
    return FACE.expand(b, t, 6, 2) + jitter * torch.randn(b, t, 6, 2)


def roi(selection: str, *, k: int | None = 16, g: int = 0, grid=GRID, **kw):
    return build_roi(RoiConfig(k=k, global_tokens=g, selection=selection, **kw), dim=D, grid=grid)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("mode", MODES)
def test_keeps_k_distinct_patches_in_raster_order(mode, training):
    torch.manual_seed(0)
    module = roi(mode, k=16, g=3).train(training)
    tokens = tagged_tokens(2, 3)
    out = module(tokens, faces(2, 3))
    assert out.shape == (2, 3, 16 + 3, D)
    assert torch.isfinite(out).all()
    index = out[..., :16, 0].round().long()  # (B, T, k) patch each kept token came from
    assert (index.diff(dim=-1) > 0).all()  # distinct, in patch order
    # The kept tokens are the input tokens themselves: the straight-through weight is exactly 1 forward.
    assert torch.equal(out[..., :16, :], tokens.gather(2, index[..., None].expand(-1, -1, -1, D)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("mode", MODES)
def test_k_equal_n_is_the_uncompressed_path(mode, training):
    torch.manual_seed(0)
    tokens, keypoints = torch.randn(2, 3, N, D), faces(2, 3)
    assert torch.equal(roi(mode, k=None, g=0).train(training)(tokens, keypoints), tokens)
    with_global = roi(mode, k=None, g=2).train(training)(tokens, keypoints)
    assert with_global.shape == (2, 3, N + 2, D)
    assert torch.equal(with_global[:, :, :N], tokens)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_trainable_parameter(mode):
    torch.manual_seed(0)
    module = roi(mode, k=16, g=2).train()
    tokens = torch.randn(2, 3, N, D, requires_grad=True)
    (module(tokens, faces(2, 3)) * torch.randn(2, 3, 18, D)).sum().backward()
    names = [n for n, _ in module.named_parameters()]
    assert ("scorer.weight" in names) == ROI_SELECTION.get(mode).learned
    assert {"queries", "attn.in_proj_weight"} <= set(names)
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_prior_is_a_sum_of_gaussians_at_eyes_nose_mouth():
    centres = patch_centres((2, 4))
    assert torch.equal(centres[5], torch.tensor([0.375, 0.75]))  # row 1, column 1: raster order
    keypoints = torch.rand(6, 2)
    prior = keypoint_prior(keypoints, centres, sigma=0.2)
    for n in (0, 5, 7):
        expected = sum(
            math.exp(-((centres[n] - keypoints[j]).square().sum().item()) / (2 * 0.2**2)) for j in PRIOR_KEYPOINTS)
        assert prior[n].item() == pytest.approx(expected, rel=1e-5)
    moved_ears = keypoints.clone()
    moved_ears[4:] = torch.rand(2, 2)
    assert torch.equal(keypoint_prior(moved_ears, centres, sigma=0.2), prior)


def near_keypoints(out: torch.Tensor, keypoints: torch.Tensor, grid, radius: float) -> torch.Tensor:
    """Per kept token of ``tagged_tokens``: is its patch centre within ``radius`` of an eye, nose or mouth?"""
    centres = patch_centres(grid)[out[..., 0].round().long()]  # (B, T, k, 2)
    points = keypoints[..., PRIOR_KEYPOINTS, :]  # (B, T, 4, 2)
    dist = (centres[..., :, None, :] - points[..., None, :, :]).norm(dim=-1).amin(-1)  # (B, T, k)
    return dist <= radius


def test_selection_concentrates_on_the_keypoints():
    """14x14 grid, k = 16, sigma = 0.1: the prior keeps only patches within 2 sigma of an eye, the
    nose or the mouth, where random and grid selection land in proportion to that area (~0.37)."""
    torch.manual_seed(0)
    grid, n = (14, 14), 196
    tokens, keypoints = tagged_tokens(10, 8, n), faces(10, 8)
    all_patches = torch.arange(n, dtype=torch.float32).expand(10, 8, n)[..., None]
    area = near_keypoints(all_patches, keypoints, grid, 0.2).float().mean().item()
    assert 0.25 < area < 0.5

    def fraction(mode, training):
        return near_keypoints(roi(mode, k=16, grid=grid, sigma=0.1).train(training)(tokens, keypoints),
                              keypoints, grid, 0.2).float().mean().item()

    assert fraction("prior", False) == 1.0
    assert fraction("prior+learned", False) == 1.0  # zero-initialised scorer: the prior alone
    assert fraction("random", False) == pytest.approx(area, abs=0.05)  # uniform: expected = area
    assert fraction("grid", False) < 0.5
    assert fraction("prior+learned", True) > 0.8  # Gumbel sampling still favours the face


def test_gumbel_topk_samples_like_sequential_sampling():
    """Training-mode selection is a sample of k patches without replacement with probabilities
    proportional to exp(importance): compare with torch.multinomial on the same prior."""
    torch.manual_seed(0)
    grid, n, k = (14, 14), 196, 16
    keypoints = faces(25, 8)
    module = roi("prior+learned", k=k, grid=grid, sigma=0.1).train()
    ours = module(tagged_tokens(25, 8, n), keypoints)
    weights = torch.exp(4.0 * keypoint_prior(keypoints, patch_centres(grid), 0.1)).flatten(0, 1)  # beta = 4
    picks = torch.multinomial(weights, k, replacement=False).sort(-1).values.float()  # (M, k)
    reference = picks.reshape(25, 8, k, 1)
    mine = near_keypoints(ours, keypoints, grid, 0.1).float().mean().item()
    theirs = near_keypoints(reference, keypoints, grid, 0.1).float().mean().item()
    assert mine == pytest.approx(theirs, abs=0.04)
    assert 0.2 < mine < 0.9  # the radius leaves room to tell a wrong distribution apart


def test_learned_score_selects_by_token_content():
    module = roi("learned", k=8).eval()
    with torch.no_grad():
        module.scorer.weight.copy_(torch.eye(D)[1:2])  # score = feature 1
    tokens = tagged_tokens(2, 2)
    chosen = torch.tensor([3, 9, 10, 22, 40, 41, 50, 63])
    tokens[..., chosen, 1] += 5.0
    out = module(tokens, faces(2, 2))
    assert torch.equal(out[..., 0].round().long(), chosen.expand(2, 2, 8))


def test_scorer_learns_to_select_informative_patches():
    """Through the straight-through Gumbel top-k, maximising the kept tokens' feature 0 teaches the
    scorer which 8 of 64 patches carry it: eval selection goes from chance (1/8) to all of them."""
    torch.manual_seed(0)
    module = roi("learned", k=8)
    target = torch.zeros(N)
    target[torch.randperm(N)[:8]] = 1.0
    keypoints = faces(2, 16)

    def batch():
        x = torch.randn(2, 16, N, D)
        x[..., 0] = 0.1 * x[..., 0] + 2 * target
        return x

    def hit_rate():
        with torch.no_grad():
            return (module.eval()(batch(), keypoints)[..., 0] > 1).float().mean().item()

    before = hit_rate()
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(80):
        loss = -module.train()(batch(), keypoints)[..., 0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.5
    assert hit_rate() > 0.95


def test_random_mode_is_fixed_at_eval_and_fresh_in_training():
    module = roi("random", k=16)
    tokens, keypoints = tagged_tokens(1, 4), faces(1, 4)
    module.eval()
    assert torch.equal(module(tokens, keypoints), module(tokens, keypoints))
    module.train()
    torch.manual_seed(0)
    first = module(tokens, keypoints)
    assert not torch.equal(first, module(tokens, keypoints))
    torch.manual_seed(0)
    assert torch.equal(first, module(tokens, keypoints))  # deterministic given the seed


@pytest.mark.parametrize("n", [16, 64, 196])
def test_grid_indices_are_evenly_spaced_and_distinct(n):
    for k in range(1, n + 1):
        index = grid_indices(n, k)
        assert len(set(index.tolist())) == k and index[0] == 0 and (k == 1 or index[-1] == n - 1)
        if k > 1:
            step = (n - 1) / (k - 1)
            assert (index.diff().float() - step).abs().max() <= 1.0
    assert grid_indices(196, 16).tolist() == [13 * i for i in range(16)]


def test_relaxed_topk_is_a_soft_k_hot_mask():
    torch.manual_seed(0)
    scores = torch.randn(5, 30) * 3
    soft = relaxed_topk(scores, 6, tau=1.0)
    torch.testing.assert_close(soft.sum(-1), torch.full((5,), 6.0))
    assert (soft >= 0).all()
    spaced = torch.stack([torch.randperm(30).float() for _ in range(5)])  # gaps of 1 >> tau
    sharp = relaxed_topk(spaced, 6, tau=0.01)
    hard = torch.zeros_like(spaced).scatter(1, spaced.topk(6).indices, 1.0)
    torch.testing.assert_close(sharp, hard, atol=1e-3, rtol=0)


def test_config_and_build_errors():
    with pytest.raises(ValidationError, match="known: grid, learned, prior, prior\\+learned, random"):
        RoiConfig(selection="saliency")
    with pytest.raises(ValueError, match="model.visual.roi.k = 65 exceeds the 64 patches"):
        roi("prior", k=65)
    with pytest.raises(ValueError, match="model.visual.roi.heads = 5 does not divide"):
        roi("prior", g=1, heads=5)
    with pytest.raises(ValueError, match="built for 64 patches, got 49"):
        roi("prior")(torch.randn(1, 1, 49, D), faces(1, 1))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("mode", MODES)
def test_runs_on_the_meta_device(mode, training):
    """Profiling builds the model on the meta device: every mode must run there."""
    with torch.device("meta"):
        module = roi(mode, k=16, g=2).train(training)
        out = module(torch.randn(2, 3, N, D), torch.rand(2, 3, 6, 2))
    assert out.shape == (2, 3, 18, D) and out.is_meta
