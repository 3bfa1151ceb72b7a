"""The tiny model learns: 16 synthetic clips with class-dependent signal reach 100% training accuracy."""

import pytest
import torch

from fer.config import resolve_config
from fer.labels import EMOTIONS
from fer.models.model import build_model

CLIPS = 16
MAX_STEPS = 150  # bound on optimizer steps; a learning test, not a timing test
EVAL_EVERY = 5


def synthetic_clips(cfg, seed=0):
    """Noise plus a fixed random pattern per class, in the audio and in the frames."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.data
    samples = int(d.sample_rate * d.audio_seconds)
    classes = len(EMOTIONS)
    audio_pattern = torch.randn(classes, samples, generator=g) * 0.1  # (8, L)
    frame_pattern = torch.randn(classes, 1, 3, d.size, d.size, generator=g)  # (8, 1, 3, H, W), every frame
    label = torch.arange(CLIPS) % classes
    return {
        "audio": audio_pattern[label] + 0.05 * torch.randn(CLIPS, samples, generator=g),
        "frames": frame_pattern[label] + 0.5 * torch.randn(CLIPS, d.frames, 3, d.size, d.size, generator=g),
        "keypoints": torch.rand(CLIPS, d.frames, 6, 2, generator=g),
        "label": label,
    }


def accuracy(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(batch).argmax(-1) == batch["label"]).float().mean().item()
    model.train()
    return acc


@pytest.mark.slow  # about 50 steps; 20-100 s on 2 shared CPU cores
def test_tiny_model_overfits_sixteen_clips():
    cfg = resolve_config("tiny")
    assert cfg.model.audio.freeze and cfg.model.visual.freeze
    torch.manual_seed(0)
    model = build_model(cfg)
    clips = synthetic_clips(cfg)
    # The tiny encoders are frozen (fixed weights, eval mode), so their outputs are computed once,
    # the feature-cache path; everything after them trains exactly as on raw inputs.
    with torch.no_grad():
        batch = {"keypoints": clips["keypoints"], "label": clips["label"],
                 "audio_feats": model.audio_encoder(clips["audio"]),
                 "visual_feats": model.visual_encoder(clips["frames"])}
    start = accuracy(model, batch)
    assert start < 1.0
    opt = torch.optim.AdamW([p for params in model.param_groups().values() for p in params], lr=3e-3)
    model.train()
    reached = None
    for step in range(1, MAX_STEPS + 1):
        loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % EVAL_EVERY == 0 and accuracy(model, batch) == 1.0:
            reached = step
            break
    assert reached is not None, f"training accuracy below 100% after {MAX_STEPS} steps (started at {start:.2f})"
    assert loss.item() < torch.log(torch.tensor(len(EMOTIONS))).item()  # below chance-level cross-entropy
