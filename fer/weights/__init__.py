"""Pretrained weights: which checkpoints a config needs, where they are, downloading and converting them.

- ``checkpoints``: the table of known checkpoints and what a config needs (plain data).
- ``resolver``: where each one is on this machine, offline; the preflight and its error.
- ``download``: downloading what is missing, resumable and checked.
- ``nemo``: NeMo checkpoints converted to transformers (torch).

Names are imported on first use, so the preflight of a study does not pay for torch.
"""

import importlib

_EXPORTS = {
    "Checkpoint": "checkpoints", "KNOWN": "checkpoints", "checkpoint": "checkpoints",
    "checkpoints_for": "checkpoints", "checkpoints_needed": "checkpoints",
    "MissingWeightsError": "resolver", "Resolution": "resolver", "fetch_command": "resolver",
    "missing_checkpoints": "resolver", "missing_message": "resolver", "resolve": "resolver",
    "resolve_all": "resolver", "resolve_pretrained": "resolver", "with_local_weights": "resolver",
    "CorruptDownloadError": "download", "FetchResult": "download", "fetch": "download", "fetch_summary": "download",
    "convert_nemo": "nemo", "NemoConversionError": "nemo_mapping",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fer.weights' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fer.weights.{_EXPORTS[name]}"), name)
