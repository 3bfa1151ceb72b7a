"""Training configuration: the optimisation of one run (one fold, one seed).

Everything a study may vary about training is a field here, so an ablation of the training
recipe is a config change (``train.lr=1e-3``, ``train.lr_mult.fusion=0.5``), never a loop change.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Decimal units as disks and GPU vendors print them, binary units as nvidia-smi and torch report.
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_budget(text: str) -> int:
    """``"8GB"`` -> 8_000_000_000 bytes; ``"8GiB"`` -> 8 * 2**30; a bare number is bytes.

    Raises:
        ValueError: naming the text, when it is not a positive number with a known unit.
    """
    match = _BUDGET.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"memory budget {text!r}: expected a number and a unit such as 8GB, 7.5GiB or 512MiB "
                         f"(units: {', '.join(u for u in _UNITS if u)})")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory budget {text!r} must be positive")
    return size



# The model parts that get their own learning rate, named as FERModel's submodules.
PARAM_GROUPS = ("audio_encoder", "audio_pooling", "visual_encoder", "roi", "temporal", "fusion",
                "classifier")


class LrMult(BaseModel):
    """Learning-rate multiplier per model part (lr of a part = ``train.lr * multiplier``).

    A field per part, so ``train.lr_mult.fusion=0.5`` is checked by name like every other key.
    Encoders default to 0.1: they start pretrained and a full rate would erase what they know.
    """

    model_config = ConfigDict(extra="forbid")

    audio_encoder: float = Field(0.1, ge=0)
    audio_pooling: float = Field(1.0, ge=0)
    visual_encoder: float = Field(0.1, ge=0)
    roi: float = Field(1.0, ge=0)
    temporal: float = Field(1.0, ge=0)
    fusion: float = Field(1.0, ge=0)
    classifier: float = Field(1.0, ge=0)

    def as_dict(self) -> dict[str, float]:
        """{group name: multiplier} for every group in ``PARAM_GROUPS``."""
        return {name: getattr(self, name) for name in PARAM_GROUPS}


class TrainConfig(BaseModel):
    """How one run is trained, evaluated and stopped."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)  # most epochs; early stopping may end sooner
    patience: int | None = Field(8, ge=1)  # epochs without a better val UAR before stopping; None = never
    batch_size: int = Field(8, ge=1)  # clips per step and per process
    grad_accum: int = Field(1, ge=1)  # steps whose gradients add up to one optimizer update
    precision: Literal["bf16", "fp16", "no"] = "bf16"  # autocast dtype; fp16 needs a GPU
    lr: float = Field(3e-4, gt=0)  # peak learning rate before the per-part multipliers
    lr_mult: LrMult = LrMult()
    weight_decay: float = Field(0.05, ge=0)  # AdamW decay of weight matrices (never biases/norms)
    warmup: float = Field(0.05, ge=0, lt=1)  # linear warm-up, fraction of all optimizer updates
    clip_grad: float | None = Field(1.0, gt=0)  # max global gradient norm; None = no clipping
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    class_weights: bool = False  # inverse class frequency of the training split in the loss
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    eval_batch_size: int | None = Field(None, ge=1)  # None = batch_size
    memory_budget: str | None = None  # GPU memory a run may use ("8GB"): micro-batch and accumulation
    # are chosen so that batch_size * grad_accum stays as configured; ignored on CPU
    feature_cache: bool = True  # feed frozen, unaugmented encoders' outputs from fer.train.features' cache
    # What the unit's MLflow artifact model/ keeps (fer.train.checkpoint): the trained tensors (frozen
    # parts referenced by checkpoint id or seed and content hash), every tensor, or no folder at all.
    save_weights: Literal["trainable", "all", "none"] = "trainable"

    @field_validator("memory_budget")
    @classmethod
    def _budget_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_budget(value)
        return value
