"""Shared test fixtures and markers."""

import os

import pytest

# huggingface_hub reads these once, at its first import (which test collection may trigger):
# tests never reach a model hub; everything they load they built themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip gpu-marked tests when no CUDA device is present (CI never has one)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

