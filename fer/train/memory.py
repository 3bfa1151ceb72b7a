"""Fit a run into a memory budget: split the batch into micro-batches, back off on CUDA OOM.

The effective batch (``train.batch_size`` clips per optimizer update) is what the recipe
specifies, so it never changes; only how it is computed does. :func:`plan_batch` picks the
largest micro-batch that divides it and whose estimated training memory
(``fer.models.profile.profile_model``'s ``train_mem_estimate_mb`` at that batch) fits the budget,
and accumulates gradients over ``batch_size // micro_batch`` micro-batches. Estimates can be off,
so :func:`run_with_backoff` retries a run with the next smaller micro-batch when CUDA runs out
of memory, the same idea as accelerate's ``find_executable_batch_size`` but keeping the
effective batch.

    micro, accum = plan_batch(cfg, parse_budget("8GB"))  # parse_budget: fer.train.config

The profiles made for the plan also hold the model's forward FLOPs per clip, which a run logs:
:class:`ProfileEstimate` keeps them, so a unit builds no second meta-device model to count them.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from fer.config import RunConfig

T = TypeVar("T")
MIB = 2**20


class MemoryBudgetError(ValueError):
    """Even a micro-batch of one clip is estimated not to fit the budget."""


def divisors_descending(n: int) -> list[int]:
    """Micro-batch sizes that split ``n`` clips into equal micro-batches, largest first."""
    return [d for d in range(n, 0, -1) if n % d == 0]


class ProfileEstimate:
    """micro-batch -> ``profile_model``'s ``total.train_mem_estimate_mb`` at ``train.precision``,
    keeping the profiles it made.

    Args:
        cfg: the resolved run config.
    """

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profiles: dict[int, dict] = {}  # micro-batch -> profile_model result

    def __call__(self, micro_batch: int) -> float:
        from fer.models.profile import profile_model

        self.profiles[micro_batch] = profile_model(self.cfg, batch=micro_batch, precision=self.cfg.train.precision)
        return self.profiles[micro_batch]["total"]["train_mem_estimate_mb"]

    def gflops_per_clip(self) -> float:
        """Forward GFLOPs of one clip through the whole model, encoders included: from a profile
        already made (the count per clip does not depend on the batch), else from one at
        ``train.batch_size``, the plan's first candidate (a training-mode batch norm refuses one clip)."""
        if not self.profiles:
            self(self.cfg.train.batch_size)
        return next(iter(self.profiles.values()))["total"]["gflops_per_clip"]


def plan_batch(cfg: RunConfig, budget_bytes: int,
               estimate_mb: Callable[[int], float] | None = None) -> tuple[int, int]:
    """The largest micro-batch whose estimated training memory fits ``budget_bytes``.

    Args:
        cfg: resolved run config; ``train.batch_size`` is the batch to split.
        budget_bytes: memory the run may use (``fer.train.config.parse_budget``).
        estimate_mb: micro-batch -> estimated training memory in MiB; default
            :class:`ProfileEstimate`. Called with candidates from largest to smallest until one fits.

    Returns:
        ``(micro_batch, grad_accum)`` with ``micro_batch * grad_accum == cfg.train.batch_size``.
        ``grad_accum`` multiplies ``train.grad_accum`` (which accumulates whole batches).

    Raises:
        MemoryBudgetError: a micro-batch of one is estimated above the budget.
    """
    estimate_mb = estimate_mb or ProfileEstimate(cfg)
    batch = cfg.train.batch_size
    for micro in divisors_descending(batch):
        need = estimate_mb(micro)
        if need * MIB <= budget_bytes:
            return micro, batch // micro
    raise MemoryBudgetError(f"the run is estimated to need {need:.0f} MiB at a micro-batch of 1 clip, more than "
                            f"the memory budget of {budget_bytes / MIB:.0f} MiB; use a smaller model, freeze "
                            "encoders or raise the budget")


def is_cuda_oom(exc: BaseException) -> bool:
    """True for CUDA running out of memory (the typed error, or the message older paths raise)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))


def run_with_backoff(attempt: Callable[[int, int], T], micro_batch: int, grad_accum: int) -> T:
    """``attempt(micro_batch, grad_accum)``, retried with a smaller micro-batch on CUDA OOM.

    Each retry takes the largest micro-batch at most half the failed one that divides the
    effective batch ``micro_batch * grad_accum`` (so a power of two halves, and accumulation
    doubles), after freeing the failed attempt's memory. ``attempt`` must start from scratch
    (a fresh model and optimizer), as with accelerate's ``find_executable_batch_size``.

    Args:
        attempt: runs the training with (micro-batch, accumulation steps) and returns its result.
        micro_batch: first micro-batch to try (e.g. from :func:`plan_batch`).
        grad_accum: its accumulation steps.

    Returns:
        What the first attempt that did not run out of memory returned.

    Raises:
        Exception: whatever ``attempt`` raised when it is not an OOM, or an OOM at micro-batch 1.
    """
    effective = micro_batch * grad_accum
    while True:
        try:
            return attempt(micro_batch, grad_accum)
        except Exception as exc:
            if not is_cuda_oom(exc) or micro_batch == 1:
                raise
            failed = micro_batch
        # Outside the except block, so the traceback (and the tensors it holds) can be freed.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        micro_batch = next(d for d in divisors_descending(effective) if d <= failed // 2)
        grad_accum = effective // micro_batch
        warnings.warn(f"CUDA out of memory at micro-batch {failed}; retrying with micro-batch {micro_batch} x "
                      f"{grad_accum} accumulation steps (effective batch {effective})", stacklevel=2)
