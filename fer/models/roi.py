"""ROI token compression: per frame, keep the k most important patches plus g global tokens.

    tokens (B, T, N, D) + keypoints (B, T, 6, 2) -> (B, T, k + g, D)

Importance of a patch = learned score (a linear map of its token) + beta * ROI prior, where the
prior is a sum of Gaussians (std ``sigma``, a fraction of the face crop) centred on the eyes, nose
tip and mouth centre, evaluated at the patch centres. ``ROI_SELECTION`` decides which terms count
(``prior+learned``, ``learned``, ``prior``) or replaces importance by a fixed rule (``random``,
``grid``) for the ablation baselines.

Selection with a learned score is differentiable while training: Gumbel top-k (Kool et al. 2019)
picks the k patches, and a straight-through estimator multiplies each selected token by
``1 + (soft - soft.detach())``, exactly 1 forward, while the gradient flows through ``soft``, the
relaxed k-hot mask of Xie & Ermon (2019), into the scorer. At evaluation the selection is the
plain top-k of the importance, without noise. Modes without a learned score have nothing to train:
``prior`` takes the plain top-k in training too, ``random`` draws a fresh subset per frame each
training step and a fixed one at evaluation, ``grid`` keeps k patches evenly spaced in raster order.

Selected tokens keep their patch (raster) order, not their rank order: the SigLIP tokens already
carry their position, later stages see a stable layout, and with k = N every mode returns its
input unchanged (the uncompressed path). The g global tokens are learned queries that attend
over all N patches, so context outside the kept patches still reaches the temporal encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fer.models.config import RoiConfig
from fer.models.registry import Registry

ROI_SELECTION: Registry = Registry("ROI selection")

# Keypoint rows the prior is centred on, in the cache's BlazeFace order (right eye, left eye,
# nose tip, mouth centre, right ear, left ear): the ears carry little expression.
PRIOR_KEYPOINTS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Selection:
    """How patch importance is computed for one selection mode."""

    learned: bool = False  # a linear score of each token, trained through Gumbel top-k
    prior: bool = False  # beta * keypoint prior
    rule: str = "score"  # "score": top-k of importance; "random": uniform subset; "grid": even raster subsample


ROI_SELECTION.register("prior+learned")(Selection(learned=True, prior=True))
ROI_SELECTION.register("learned")(Selection(learned=True))
ROI_SELECTION.register("prior")(Selection(prior=True))
ROI_SELECTION.register("random")(Selection(rule="random"))
ROI_SELECTION.register("grid")(Selection(rule="grid"))


def patch_centres(grid: tuple[int, int]) -> torch.Tensor:
    """(N, 2) centres (x, y) of the patches in raster order, as fractions of the crop."""
    h, w = grid
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def keypoint_prior(keypoints: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """Sum of Gaussians at the eye, nose and mouth keypoints, evaluated at the patch centres.

    Args:
        keypoints: (..., 6, 2) (x, y) fractions of the crop, BlazeFace order.
        centres: (N, 2) patch centres from ``patch_centres``.
        sigma: Gaussian standard deviation, fraction of the crop side.
    Returns:
        (..., N) prior; each keypoint contributes at most 1.
    """
    points = keypoints[..., PRIOR_KEYPOINTS, :]  # (..., 4, 2)
    dist2 = (centres[:, None, :] - points[..., None, :, :]).square().sum(-1)  # (..., N, 4)
    return torch.exp(-dist2 / (2 * sigma**2)).sum(-1)  # (..., N)


def grid_indices(num_patches: int, k: int) -> torch.Tensor:
    """k patch indices evenly spaced in raster order (distinct: the spacing is at least 1)."""
    return torch.floor(torch.linspace(0, num_patches - 1, k, dtype=torch.float64) + 0.5).long()


def relaxed_topk(scores: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Soft k-hot mask: k rounds of softmax, each damping what earlier rounds took (Xie & Ermon 2019).

    Args:
        scores: (M, N) perturbed importances.
    Returns:
        (M, N) non-negative weights summing to k per row; as tau -> 0 the k largest scores tend
        to 1 and the rest to 0 (at larger tau a dominant score can take more than 1).
    """
    khot = torch.zeros_like(scores)
    onehot = torch.zeros_like(scores)
    for _ in range(k):
        scores = scores + torch.log1p(-onehot.clamp(max=1 - 1e-6))  # log(1 - p): taken mass leaves
        onehot = torch.softmax(scores / tau, dim=-1)
        khot = khot + onehot
    return khot


class RoiCompression(nn.Module):
    """(B, T, N, D) patch tokens + (B, T, 6, 2) keypoints -> (B, T, k + g, D).

    Args:
        dim: token width D.
        grid: patch grid (h, w), N = h * w, raster order.
        k: patches kept per frame, 1..N.
        global_tokens: g learned queries attending over all patches (0 = none).
        selection: ``ROI_SELECTION`` mode name.
        beta: prior weight; sigma: prior Gaussian std (crop fraction); tau: relaxed top-k temperature.
        heads: attention heads of the global tokens (must divide D).
    """

    def __init__(self, *, dim: int, grid: tuple[int, int], k: int, global_tokens: int, selection: str,
                 beta: float, sigma: float, tau: float, heads: int):
        super().__init__()
        self.mode: Selection = ROI_SELECTION.get(selection)
        self.k, self.beta, self.sigma, self.tau = k, beta, sigma, tau
        self.num_patches = grid[0] * grid[1]
        self.register_buffer("centres", patch_centres(grid), persistent=False)  # (N, 2)
        # Bias-free: a shared offset cannot change a ranking. Zero-initialised so that training
        # starts from the prior alone (or, for ``learned``, from a uniform random choice).
        self.scorer = nn.Linear(dim, 1, bias=False) if self.mode.learned else None
        if self.scorer is not None:
            nn.init.zeros_(self.scorer.weight)
        self.queries = nn.Parameter(torch.randn(global_tokens, dim) * 0.02) if global_tokens else None  # (g, D)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True) if global_tokens else None

    def importance(self, tokens: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """(M, N, D) tokens, (M, 6, 2) keypoints -> (M, N) float32 importance of a score-based mode.

        Float32 whatever the autocast dtype: Gumbel noise and near-ties need the resolution.
        """
        score = torch.zeros(tokens.shape[:2], device=tokens.device)
        if self.scorer is not None:
            score = score + self.scorer(tokens).squeeze(-1).float()
        if self.mode.prior:
            score = score + self.beta * keypoint_prior(keypoints.float(), self.centres, self.sigma)  # (M, N)
        return score

    def choose(self, tokens: torch.Tensor, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(M, N, D) tokens, (M, 6, 2) keypoints -> which patches to keep.

        Returns:
            index (M, k) of the kept patches in raster order, and the straight-through weight
            (M, N) (exactly 0 forward) when a learned score trains, else None.
        """
        m, n = tokens.shape[:2]
        weight = None
        if self.mode.rule == "grid":
            index = grid_indices(n, self.k).to(tokens.device).expand(m, -1)  # (M, k)
        elif self.mode.rule == "random":
            if self.training:  # a fresh subset per frame and step
                noise = torch.rand(m, n, device=tokens.device)
            else:  # a fixed draw (on the CPU, any device has one), so evaluation is repeatable
                noise = torch.rand(m, n, generator=torch.Generator().manual_seed(0)).to(tokens.device)
            index = noise.topk(self.k, dim=-1).indices
        else:
            score = self.importance(tokens, keypoints)  # (M, N)
            if self.training and self.scorer is not None:
                uniform = torch.rand_like(score).clamp(1e-9, 1 - 1e-9)
                score = score - torch.log(-torch.log(uniform))  # + Gumbel noise: sample k without replacement
                soft = relaxed_topk(score, self.k, self.tau)  # (M, N)
                weight = soft - soft.detach()  # exactly 0 forward; the gradient of the soft mask backward
            index = score.topk(self.k, dim=-1).indices
        return index.sort(dim=-1).values, weight  # raster order

    def select(self, tokens: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """(M, N, D) -> (M, k, D): the kept patches in raster order (straight-through weighted)."""
        index, weight = self.choose(tokens, keypoints)
        kept = tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))  # (M, k, D)
        if weight is not None:
            kept = kept * (1 + weight.gather(1, index)).to(kept.dtype)[..., None]  # straight-through: forward value unchanged
        return kept

    def forward(self, tokens: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        b, t, n, d = tokens.shape
        if n != self.num_patches:
            raise ValueError(f"ROI compression built for {self.num_patches} patches, got {n}")
        flat = tokens.reshape(b * t, n, d)  # (M, N, D), M = B*T frames
        parts = [self.select(flat, keypoints.reshape(b * t, *keypoints.shape[2:]))]  # (M, k, D)
        if self.queries is not None:
            queries = self.queries.expand(b * t, -1, -1)  # (M, g, D)
            parts.append(self.attn(queries, flat, flat, need_weights=False)[0])  # (M, g, D)
        return torch.cat(parts, dim=1).reshape(b, t, -1, d)  # (B, T, k + g, D)


def build_roi(cfg: RoiConfig, *, dim: int, grid: tuple[int, int]) -> RoiCompression:
    """ROI compression from its config.

    Args:
        cfg: the ROI config (``k`` None = all patches).
        dim: token width Dv of the visual encoder.
        grid: the encoder's patch grid (h, w).
    Returns:
        module (B, T, N, Dv) + (B, T, 6, 2) -> (B, T, k + g, Dv).
    """
    n = grid[0] * grid[1]
    k = n if cfg.k is None else cfg.k
    if k > n:
        raise ValueError(f"model.visual.roi.k = {k} exceeds the {n} patches of the {grid[0]}x{grid[1]} grid")
    if cfg.global_tokens and dim % cfg.heads:
        raise ValueError(f"model.visual.roi.heads = {cfg.heads} does not divide the token width {dim}")
    return RoiCompression(dim=dim, grid=grid, k=k, global_tokens=cfg.global_tokens, selection=cfg.selection,
                          beta=cfg.beta, sigma=cfg.sigma, tau=cfg.tau, heads=cfg.heads)
