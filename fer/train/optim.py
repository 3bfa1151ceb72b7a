"""AdamW with one learning rate per model part, and a cosine schedule with linear warm-up.

Each model part (``FERModel.param_groups()``: audio encoder, pooling, visual encoder, ROI,
temporal, fusion, classifier) becomes two optimizer groups at ``lr * lr_mult[part]``: its weight
matrices with weight decay, and its biases and norm gains without (decaying a bias or a
LayerNorm gain only pulls it towards an arbitrary zero; nanoGPT draws the same line at
``ndim < 2``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(groups: dict[str, list[nn.Parameter]], *, lr: float, lr_mult: dict[str, float],
                 weight_decay: float) -> list[dict]:
    """Optimizer groups: per model part, decayed matrices and undecayed vectors.

    Args:
        groups: trainable parameters by model part name.
        lr: base learning rate.
        lr_mult: multiplier per part name.
        weight_decay: decay of the matrices.

    Returns:
        ``torch.optim`` groups, each with a ``name`` such as ``"fusion/decay"``; empty ones left out.

    Raises:
        KeyError: a part with trainable parameters and no multiplier (lists the known parts).
    """
    out = []
    for name, params in groups.items():
        params = [p for p in params if p.requires_grad]
        if not params:
            continue
        if name not in lr_mult:
            raise KeyError(f"no learning-rate multiplier for model part {name!r}; "
                           f"known: {', '.join(lr_mult)}")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for suffix, members, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if members:
                out.append({"name": f"{name}/{suffix}", "params": members,
                            "lr": lr * lr_mult[name], "weight_decay": wd})
    return out


def build_optimizer(groups: dict[str, list[nn.Parameter]], *, lr: float, lr_mult: dict[str, float],
                    weight_decay: float) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`.

    Raises:
        ValueError: nothing to train (every part frozen).
    """
    optim_groups = param_groups(groups, lr=lr, lr_mult=lr_mult, weight_decay=weight_decay)
    if not optim_groups:
        raise ValueError("the model has no trainable parameters (every part is frozen)")
    # foreach: one multi-tensor kernel per group instead of a loop over parameters (the default
    # only on CUDA); small models on CPU spend a quarter of a step in the optimizer without it.
    return torch.optim.AdamW(optim_groups, lr=lr, foreach=True)


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Factor on each group's learning rate at optimizer update ``step`` (0-based).

    Linear from 1/warmup_steps to 1 over the first ``warmup_steps`` updates (the first update
    already moves the weights), then half a cosine from 1 down to 0 at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int,
                    warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine schedule with linear warm-up over ``total_steps`` optimizer updates.

    Args:
        optimizer: the optimizer whose group rates are scaled (each keeps its own peak).
        total_steps: optimizer updates in the whole run (at the most epochs).
        warmup: warm-up length as a fraction of ``total_steps``.
    """
    warmup_steps = round(warmup * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps=total_steps, warmup_steps=warmup_steps))
