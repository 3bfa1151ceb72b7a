"""Model configuration: which modalities, how many segments, and each part's own config.

Each part's config lives next to the code it configures (``AudioConfig`` in ``audio.py``,
``VisualConfig`` with its ``roi`` and ``temporal`` in ``visual.py``, ``FusionConfig`` in
``fusion.py``, ``ClassifierConfig`` in ``classifier.py``); this class only composes them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fer.models.audio import AudioConfig
from fer.models.classifier import ClassifierConfig
from fer.models.fusion import FusionConfig
from fer.models.visual import VisualConfig


class ModelConfig(BaseModel):
    """The whole model; ``modality`` decides which branches are built at all."""

    model_config = ConfigDict(extra="forbid")

    modality: Literal["av", "audio", "visual"] = "av"
    segments: int = Field(8, ge=1)  # S, shared by both branches
    audio: AudioConfig = AudioConfig()
    visual: VisualConfig = VisualConfig()
    fusion: FusionConfig = FusionConfig()
    classifier: ClassifierConfig = ClassifierConfig()

    @property
    def uses_audio(self) -> bool:
        return self.modality in ("av", "audio")

    @property
    def uses_visual(self) -> bool:
        return self.modality in ("av", "visual")
