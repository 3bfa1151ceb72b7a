"""The audio-visual FER model: two branches, LFM2 fusion, classifier head.

    audio (B, L) -> audio_encoder (B, Ta, Da) -> audio_pooling (B, S, Da) ---------------.
    frames (B, T, 3, H, W) -> visual_encoder (B, T, N, Dv) -> roi (B, T, k+g, Dv)         |
                           keypoints (B, T, 6, 2) --^       -> temporal (B, S, Dt) -------+-> fusion (B, S', 512)
                                                                                         -> classifier (B, 8)

``model.modality`` decides which branches exist: a single-modality model does not build the
other branch (no parameters, no compute). The submodule names are the parameter groups of
differential learning rates (``train.lr_mult.<name>``). A frozen encoder's output may come with
the batch instead (``fer.slots``); ``frozen_encoders()`` lists those encoders with what
their output depends on, for the feature cache (``fer.train.features``).

    model = build_model(resolve_config("tiny"))
    logits = model(batch)  # batch dict from fer.data.dataset
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from fer.labels import emotions
from fer.models.audio import build_audio_encoder
from fer.models.classifier import build_classifier
from fer.models.fusion import build_fusion
from fer.models.pooling import build_segment_pooling
from fer.models.roi import build_roi
from fer.slots import AUDIO, VISUAL, FeatureSlot
from fer.models.temporal import build_temporal
from fer.models.visual import build_visual_encoder

if TYPE_CHECKING:
    from fer.config import RunConfig

# Submodule names, in forward order; also the parameter-group names.
PARTS = ("audio_encoder", "audio_pooling", "visual_encoder", "roi", "temporal", "fusion", "classifier")


@dataclass(frozen=True)
class FrozenEncoder:
    """A frozen encoder of a model and its identity: what it reads, what it writes, what its
    output depends on. Frozen means fixed weights in eval mode, so its output for an input is
    always the same.

    Args:
        slot: its batch keys (input and precomputed output).
        part: its ``PARTS`` name in the model (for messages).
        module: (B, ...) input -> (B, ...) features; states ``build_settings()``.
    """

    slot: FeatureSlot
    part: str
    module: nn.Module

    def identity(self) -> dict:
        """Everything the output depends on but the input: batch keys, class, the settings the
        encoder was built with (its own ``build_settings()``) and a hash of its weights."""
        cls = type(self.module)
        return {
            "input": self.slot.input_key,
            "output": self.slot.feature_key,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "settings": self.module.build_settings(),
            "weights": weights_hash(self.module),
        }


def weights_hash(module: nn.Module) -> str:
    """sha256 of the names, dtypes, shapes and bytes of every parameter and buffer of ``module``."""
    h = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())  # non-persistent ones too (e.g. mel filters)
    for tname in sorted(tensors):
        t = tensors[tname].detach().cpu().contiguous()
        h.update(f"{tname}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


class FERModel(nn.Module):
    """Batch dict -> (B, 8) emotion logits. A part is None when the modality excludes it.

    Args:
        audio_encoder: (B, L) -> (B, Ta, Da); audio_pooling: (B, Ta, Da) -> (B, S, Da).
        visual_encoder: (B, T, 3, H, W) -> (B, T, N, Dv); roi: + keypoints -> (B, T, k+g, Dv);
        temporal: -> (B, S, Dt).
        fusion: (B, S, Da) | None, (B, S, Dt) | None -> (B, S', 512).
        classifier: (B, S', 512) -> (B, 8).
    """

    def __init__(self, *, audio_encoder: nn.Module | None, audio_pooling: nn.Module | None,
                 visual_encoder: nn.Module | None, roi: nn.Module | None, temporal: nn.Module | None,
                 fusion: nn.Module, classifier: nn.Module):
        super().__init__()
        self.audio_encoder = audio_encoder
        self.audio_pooling = audio_pooling
        self.visual_encoder = visual_encoder
        self.roi = roi
        self.temporal = temporal
        self.fusion = fusion
        self.classifier = classifier

    def audio_segments(self, batch: dict) -> torch.Tensor:
        """(B, S, Da) from ``audio_feats`` (B, Ta, Da) when the batch has them, else from ``audio`` (B, L)."""
        feats = batch.get(AUDIO.feature_key)
        if feats is None:
            feats = self.audio_encoder(batch[AUDIO.input_key])  # (B, Ta, Da)
        return self.audio_pooling(feats)  # (B, S, Da)

    def visual_segments(self, batch: dict) -> torch.Tensor:
        """(B, S, Dt) from ``visual_feats`` (B, T, N, Dv) when present, else from ``frames``."""
        tokens = batch.get(VISUAL.feature_key)
        if tokens is None:
            tokens = self.visual_encoder(batch[VISUAL.input_key])  # (B, T, N, Dv)
        tokens = self.roi(tokens, batch["keypoints"])  # (B, T, k+g, Dv)
        return self.temporal(tokens)  # (B, S, Dt)

    def forward(self, batch: dict) -> torch.Tensor:
        audio = self.audio_segments(batch) if self.audio_pooling is not None else None
        visual = self.visual_segments(batch) if self.temporal is not None else None
        return self.classifier(self.fusion(audio, visual))  # (B, 8)

    def frozen_encoders(self) -> list[FrozenEncoder]:
        """The encoders built frozen (``model.<modality>.freeze``), audio first; absent ones left out."""
        encoders = ((AUDIO, "audio_encoder", self.audio_encoder), (VISUAL, "visual_encoder", self.visual_encoder))
        return [FrozenEncoder(slot, part, module) for slot, part, module in encoders
                if module is not None and module.frozen]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part name (``PARTS``); parts with none are left out."""
        groups = {}
        for name in PARTS:
            part = getattr(self, name)
            params = [p for p in part.parameters() if p.requires_grad] if part is not None else []
            if params:
                groups[name] = params
        return groups


def build_model(cfg: RunConfig, device: str | torch.device = "cpu") -> FERModel:
    """The model of a resolved run config.

    Seed torch before calling: every random initialisation draws from its global generator.

    Args:
        cfg: ``fer.config.RunConfig``; ``model.*`` plus ``data.size``, ``data.sample_rate``. With
            ``model.random_weights`` no pretrained weights are read: every part is its preset's
            or published checkpoint's architecture, randomly initialised.
        device: where the parameters live. ``"meta"`` builds shapes only: no pretrained weights
            are read (architectures come from the presets and published configs), which is what
            profiling every preset on a CPU needs.
    Returns:
        FERModel on ``device``.
    """
    device = torch.device(device)
    if device.type == "meta":
        with device:
            return _build(cfg, load_weights=False)
    return _build(cfg, load_weights=not cfg.model.random_weights).to(device)


@contextmanager
def part_seed(name: str):
    """Initialise one part from its own stream, seeded by the global seed and the part's name, so
    its initial weights do not depend on which other parts exist or how much they drew."""
    seed = int.from_bytes(hashlib.sha256(f"{torch.initial_seed()}/{name}".encode()).digest()[:8], "little")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _build(cfg: RunConfig, *, load_weights: bool) -> FERModel:
    m, data = cfg.model, cfg.data
    parts: dict[str, nn.Module | None] = dict.fromkeys(PARTS)
    audio_dim = visual_dim = None
    if m.uses_audio:
        with part_seed("audio_encoder"):
            parts["audio_encoder"] = build_audio_encoder(m.audio, sample_rate=data.sample_rate, load_weights=load_weights)
        audio_dim = parts["audio_encoder"].out_dim
        with part_seed("audio_pooling"):
            parts["audio_pooling"] = build_segment_pooling(m.audio.pooling, audio_dim, m.segments)
    if m.uses_visual:
        # The architecture is the encoder preset's; pretrained only names weights to read.
        visual_cfg = m.visual if load_weights else m.visual.model_copy(update={"pretrained": None})
        with part_seed("visual_encoder"):
            encoder = build_visual_encoder(visual_cfg, image_size=data.size)
        parts["visual_encoder"] = encoder
        with part_seed("roi"):
            parts["roi"] = build_roi(m.visual.roi, dim=encoder.out_dim, grid=encoder.grid)
        with part_seed("temporal"):
            parts["temporal"] = build_temporal(m.visual.temporal, in_dim=encoder.out_dim, segments=m.segments)
        visual_dim = parts["temporal"].out_dim
    with part_seed("fusion"):
        parts["fusion"] = build_fusion(m.fusion, audio_dim=audio_dim, visual_dim=visual_dim, load_weights=load_weights)
    with part_seed("classifier"):
        parts["classifier"] = build_classifier(m.classifier, in_dim=m.fusion.out_dim,
                                               num_classes=len(emotions(data.dataset)))
    return FERModel(**parts)
