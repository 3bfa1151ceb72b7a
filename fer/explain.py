"""What a model looked at for one prepared clip: the data behind an explain figure.

One evaluation forward pass with forward hooks on the parts that decide (nothing in the model
changes, so the pass equals the one that predicted):

- the ROI compression's inputs give the kept patches per frame (``RoiCompression.choose``, the
  evaluation selection: no noise) and the keypoint prior's weights (``beta * keypoint_prior``);
- the audio encoder's log-mel front end gives the log-mel the encoder read;
- the audio segment pooling's input gives the frame weights of each segment (attention pooling:
  its softmax weights; avg: uniform within each segment; max and learnable queries: none).

    explanation = explain_clip(loaded, entry_path)
    explanation.kept  # (T, k) patch indices in raster order

Drawing is ``analysis.explain``'s job; this module returns arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer.models.pooling import AttentionSegmentPooling, AvgSegmentPooling, segment_membership
from fer.models.roi import keypoint_prior

# What each segment pooling's weights mean in the figure, by registry name.
POOLING_NOTES = {
    "attention": "attention pooling weights",
    "avg": "avg pooling: uniform weights within each segment",
    "max": "max pooling: no frame weights (element-wise maximum)",
    "learnable": "learned-query pooling: no per-segment frame weights shown",
}


@dataclass
class Explanation:
    """The arrays one explain figure shows for one clip.

    frames: uint8 (T, H, W, 3) face crops the model read; keypoints: (T, 6, 2) crop pixels;
    face_boxes: (T, 4) x0, y0, x1, y1 of the detected face in crop pixels; face_detected: (T,) bool.
    grid: patch grid (h, w); kept: (T, k) kept patch indices (raster order), None without a visual
    branch; prior: (T, N) the prior's weights (beta * prior), None when the selection uses none.
    selection: the ROI selection mode. mel: (Tm, n_mels) normalised log-mel of the valid frames,
    None without an audio branch; mel_hop_s: seconds per mel frame; pooling: the audio pooling
    name; pooling_weights: (S, Ta) frame weights per segment, None when the pooling has none;
    audio_frame_s: seconds per encoder frame.
    """

    frames: np.ndarray
    keypoints: np.ndarray
    face_boxes: np.ndarray
    face_detected: np.ndarray
    grid: tuple[int, int] | None = None
    kept: np.ndarray | None = None
    prior: np.ndarray | None = None
    selection: str | None = None
    mel: np.ndarray | None = None
    mel_hop_s: float | None = None
    pooling: str | None = None
    pooling_weights: np.ndarray | None = None
    audio_frame_s: float | None = None


def _crop_boxes(meta: dict, size: int) -> np.ndarray:
    """(T, 4) face boxes moved from frame pixels into the crop's pixels (``prepare_clip``'s squares)."""
    boxes = np.asarray(meta["face_boxes"], np.float32)  # (T, 4) frame pixels
    squares = np.asarray(meta["crop_squares"], np.float32)  # (T, 3) x0, y0, side
    origin = np.concatenate([squares[:, :2], squares[:, :2]], axis=1)  # (T, 4)
    return (boxes - origin) * (size / squares[:, 2:3])


@torch.no_grad()
def explain_clip(loaded, entry: Path) -> Explanation:
    """Run ``loaded`` (a ``fer.train.checkpoint.LoadedModel``) on one prepared entry, recording
    what decided its output.

    Args:
        loaded: the model and its resolved config.
        entry: a cache entry (``fer.data.cache.save_entry``) prepared with the model's data settings.
    Returns:
        The clip's ``Explanation``.
    """
    from fer.data.cache import load_entry
    from fer.data.dataset import PreparedClipDataset, collate

    cfg, model = loaded.cfg, loaded.model
    clip = load_entry(entry)
    m = cfg.model
    out = Explanation(frames=clip.frames, keypoints=clip.keypoints,
                      face_boxes=_crop_boxes(clip.meta, clip.frames.shape[1]),
                      face_detected=np.asarray(clip.meta["face_detected"], bool))
    dataset = PreparedClipDataset([entry], cfg.data, train=False, load_frames=m.uses_visual,
                                  load_audio=m.uses_audio)
    device = next(model.parameters()).device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in collate([dataset[0]]).items()}
    seen: dict[str, tuple] = {}
    hooks = []

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (args, output))

    if model.roi is not None:
        hooks.append(model.roi.register_forward_hook(keep("roi")))
    if model.audio_pooling is not None:
        hooks.append(model.audio_pooling.register_forward_hook(keep("pooling")))
        hooks.append(model.audio_encoder.melspec.register_forward_hook(keep("mel")))
    was_training = model.training
    model.eval()
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if "roi" in seen:
        _roi(out, model, seen["roi"][0], m.visual.roi.selection)
    if "mel" in seen:
        feats, mask = seen["mel"][1]  # (1, Tm, M), (1, Tm)
        encoder = model.audio_encoder
        out.mel = feats[0][mask[0]].float().cpu().numpy()
        out.mel_hop_s = encoder.melspec.hop / encoder.sample_rate
        out.audio_frame_s = out.mel_hop_s * encoder.subsampling_factor
        _pooling(out, model.audio_pooling, seen["pooling"][0], m.audio.pooling)
    return out


def _roi(out: Explanation, model, args: tuple, selection: str) -> None:
    """Kept patches and prior weights from the ROI compression's inputs (B = 1)."""
    roi = model.roi
    tokens, keypoints = args  # (1, T, N, D), (1, T, 6, 2)
    flat, points = tokens[0], keypoints[0]  # (T, N, D), (T, 6, 2)
    index, _ = roi.choose(flat, points)  # (T, k)
    out.grid = tuple(model.visual_encoder.grid)
    out.kept = index.cpu().numpy()
    out.selection = selection
    if roi.mode.prior:
        out.prior = (roi.beta * keypoint_prior(points.float(), roi.centres, roi.sigma)).cpu().numpy()  # (T, N)


def _pooling(out: Explanation, pooling, args: tuple, name: str) -> None:
    """Frame weights per segment from the pooling's input (B = 1), where the strategy has them."""
    out.pooling = name
    x = args[0]  # (1, Ta, D)
    mask = args[1] if len(args) > 1 else None
    if isinstance(pooling, AttentionSegmentPooling):
        out.pooling_weights = pooling.segment_weights(x, mask)[0].float().cpu().numpy()  # (S, Ta)
    elif isinstance(pooling, AvgSegmentPooling):
        full = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        member = segment_membership(full, pooling.segments)[0].float()  # (S, Ta)
        out.pooling_weights = (member / member.sum(-1, keepdim=True)).cpu().numpy()
