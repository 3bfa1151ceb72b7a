"""Data-layer configuration: which clips, which protocol, how they are prepared and augmented."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_serializer


class AugmentConfig(BaseModel):
    """Training-time augmentation; every switch is independent. Off at evaluation."""

    model_config = ConfigDict(extra="forbid")

    crop: bool = False  # random resized crop within the face
    flip: bool = False  # horizontal flip, keypoints flipped with the face
    color_jitter: bool = False
    audio_gain: bool = False
    audio_noise: bool = False
    audio_shift: bool = False

    @property
    def visual(self) -> bool:
        return self.crop or self.flip or self.color_jitter

    @property
    def audio(self) -> bool:
        return self.audio_gain or self.audio_noise or self.audio_shift


class DataConfig(BaseModel):
    """Where clips come from and how they are turned into tensors."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["ravdess", "crema-d"] = "ravdess"  # the corpus; its label set is fer.labels.emotions
    protocol: str = "ravdess-6fold"
    vocal_channel: Literal["speech", "song", "both"] = "speech"
    frames: int = 16  # T frames sampled evenly over the clip
    size: int = 224  # square face crop, pixels
    audio_seconds: float = 3.0  # fixed audio length (pad or centre-crop)
    sample_rate: int = 16000
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # visual encoder normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    augment: AugmentConfig = AugmentConfig()

    @model_serializer(mode="wrap")
    def _omit_default_dataset(self, handler):
        # RAVDESS, the default, is left out of dumps, so the unit keys and feature-cache keys of
        # RAVDESS runs (hashes of the dumped config) stay what they were before the field existed.
        out = handler(self)
        if self.dataset == "ravdess":
            out.pop("dataset", None)
        return out
