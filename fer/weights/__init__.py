"""Pretrained weights that need more than a download: NeMo checkpoints converted to transformers."""

from fer.weights.nemo import convert_nemo
from fer.weights.nemo_mapping import NemoConversionError

__all__ = ["NemoConversionError", "convert_nemo"]
