"""Parameters, FLOPs and training memory of a model, per component, without building weights.

The model is built on the meta device (shapes only: no weights read or allocated), so every
preset, ``full`` included, profiles in seconds on a CPU. One training-mode forward pass of a
batch of meta tensors is observed twice at once:

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-accumulate of
  matmuls, convolutions and attention; element-wise ops are not counted), attributed to the
  component whose forward ran them, divided by the batch size: ``gflops_per_clip`` is the
  forward pass of one clip, the same at every batch size. On the meta device attention
  decomposes into counted matrix products (the fused CPU kernel would be invisible to the
  counter), so the count is the same for every device. This is the one FLOP count of the
  project: a run logs ``total.gflops_per_clip`` as its ``gflops_per_clip``
  (``fer.train.memory.ProfileEstimate``), the full model's cost even when fed cached features.
- Activations: a saved-tensor hook records every tensor autograd keeps for the backward pass
  (each storage once; parameters excluded). Frozen parts fed by inputs that need no gradient
  keep nothing, as in real training. Meta tensors run in float32 (autocast does not apply to
  them), so floating activations are counted at the bytes per element of ``precision``
  (2 for bf16/fp16, 4 for ``no``): autocast saves matmul and convolution inputs in half
  precision; norms and softmax it keeps in float32 are under-counted by this.

``train_mem_estimate_mb`` per component = float32 weights (4 B/param, frozen ones too: autocast
keeps master weights in float32) + for trainable params a float32 gradient (4 B) and AdamW's two
moments (8 B) + activations. Not counted: autocast's half-precision weight copies, temporaries
freed during the forward, allocator fragmentation and the CUDA context (a few hundred MB).
``total`` is the sum of the components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from fer.models.model import PARTS, build_model

if TYPE_CHECKING:
    from fer.config import RunConfig

HALF_BYTES = {"bf16": 2, "fp16": 2, "no": 4}
MB = 2**20
FIELDS = ("params_total", "params_trainable", "gflops_per_clip", "activations_mb", "train_mem_estimate_mb")


def meta_batch(cfg: RunConfig, batch: int) -> dict[str, torch.Tensor]:
    """A batch of meta tensors shaped as the dataset delivers it for ``cfg.data``."""
    d = cfg.data
    samples = int(round(d.sample_rate * d.audio_seconds))
    return {
        "audio": torch.empty(batch, samples, device="meta"),  # (B, L)
        "frames": torch.empty(batch, d.frames, 3, d.size, d.size, device="meta"),  # (B, T, 3, H, W)
        "keypoints": torch.empty(batch, d.frames, 6, 2, device="meta"),  # (B, T, 6, 2)
    }


class SavedActivations:
    """Bytes autograd saves for backward, per component, each storage counted once."""

    def __init__(self, model: torch.nn.Module, bytes_per_float: int):
        self.bytes_per_float = bytes_per_float
        self.params = {id(p) for p in model.parameters()}
        self.seen: dict[int, torch.Tensor] = {}  # id -> tensor, kept alive so ids stay unique
        self.bytes = dict.fromkeys(PARTS, 0)
        self.current: list[str] = []
        self.handles = []
        for name in PARTS:
            part = getattr(model, name)
            if part is not None:
                self.handles.append(part.register_forward_pre_hook(self._enter(name)))
                self.handles.append(part.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module, args) -> None:
            self.current.append(name)

        return hook

    def _leave(self, module, args, output) -> None:  # returns None: the output stays as it is
        self.current.pop()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor if tensor._base is None else tensor._base  # views share their base's storage
        if id(base) not in self.params and id(base) not in self.seen and self.current:
            self.seen[id(base)] = base
            size = self.bytes_per_float if base.is_floating_point() else base.element_size()
            self.bytes[self.current[-1]] += base.numel() * size
        return tensor

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def profile_model(cfg: RunConfig, *, batch: int = 8, precision: str = "bf16") -> dict:
    """Per-component and total parameters, GFLOPs per clip and training-memory estimate.

    Args:
        cfg: resolved ``fer.config.RunConfig``.
        batch: clips per training step (memory and FLOP measurement; FLOPs are reported per clip).
        precision: ``bf16``, ``fp16`` or ``no`` (float32): bytes per saved floating activation.
    Returns:
        ``{component: {params_total, params_trainable, gflops_per_clip, activations_mb,
        train_mem_estimate_mb, built}, ..., "total": {...}}`` for every name in ``PARTS``;
        a component the modality excludes is reported with zeros and ``built`` False.
    """
    if precision not in HALF_BYTES:
        raise ValueError(f"precision must be one of {', '.join(HALF_BYTES)}, got {precision!r}")
    model = build_model(cfg, device="meta").train()
    saved = SavedActivations(model, HALF_BYTES[precision])
    try:
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            model(meta_batch(cfg, batch))
    finally:
        saved.close()
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    result = {}
    for name in PARTS:
        part = getattr(model, name)
        params = list(part.parameters()) if part is not None else []
        total = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        activations = saved.bytes[name]
        result[name] = {
            "params_total": total,
            "params_trainable": trainable,
            "gflops_per_clip": flops.get(f"{root}.{name}", 0) / batch / 1e9,
            "activations_mb": activations / MB,
            "train_mem_estimate_mb": (4 * total + 12 * trainable + activations) / MB,
            "built": part is not None,
        }
    result["total"] = {field: sum(result[name][field] for name in PARTS) for field in FIELDS}
    # The whole count rather than the sum of the parts' rounded shares: exactly the same at
    # every batch size (the integer count grows with the batch), so a logged figure never
    # depends on the micro-batch a run was planned with.
    result["total"]["gflops_per_clip"] = counter.get_total_flops() / batch / 1e9
    result["total"]["built"] = True
    return result


def render_profile(result: dict) -> None:
    """Print ``profile_model``'s result as a rich table (parameters in millions; exact in the JSON)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="model profile: meta device; memory = weights + grads + AdamW + activations")
    table.add_column("component", no_wrap=True)
    for header in ("params M", "trainable M", "GFLOPs/clip", "activ. MB", "train MB"):
        table.add_column(header, justify="right", no_wrap=True)
    for name, row in result.items():
        if not row["built"]:
            table.add_row(name, "-", "-", "-", "-", "-", style="dim")
            continue
        table.add_row(name, f"{row['params_total'] / 1e6:.3f}", f"{row['params_trainable'] / 1e6:.3f}",
                      f"{row['gflops_per_clip']:.3f}", f"{row['activations_mb']:.1f}",
                      f"{row['train_mem_estimate_mb']:.1f}", style="bold" if name == "total" else None)
    Console().print(table)
