"""What ``weights list`` prints: each checkpoint a preset or study reads, where it resolves, sizes.

    rows = resolution_rows(resolve_all(configs, cache_dir))   # plain dicts (``--json``)
    text = render_resolutions(resolve_all(configs, cache_dir), fetch="python runner.py weights fetch ...")

Text only: no hub call, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fer.weights.checkpoints import format_size
from fer.weights.resolver import Resolution


def resolution_rows(resolutions: Sequence[Resolution]) -> list[dict[str, Any]]:
    """One JSON-able row per checkpoint.

    Keys: ``id``, ``kind`` (``hf`` or ``nemo``), ``where`` (local, converted, hf-cache, missing),
    ``path`` (what a loader reads; None when missing), ``size_on_disk`` (bytes found),
    ``expected_size`` (bytes to download, None when unknown), ``files``, ``used_by``, ``note``.
    """
    return [{"id": r.checkpoint.id, "kind": r.checkpoint.kind, "where": r.where,
             "path": None if r.path is None else str(r.path), "size_on_disk": r.size,
             "expected_size": r.checkpoint.size, "files": list(r.checkpoint.files),
             "used_by": list(r.checkpoint.used_by), "note": r.note} for r in resolutions]


def render_resolutions(resolutions: Sequence[Resolution], *, fetch: str) -> str:
    """A block per checkpoint, then one summary line (and ``fetch``, the command, when one is missing).

        LiquidAI/LFM2-700M  hf-cache  1.48 GB on disk (expected 1.48 GB)
            used by: model.fusion.pretrained
            path:    ~/.cache/huggingface/hub/models--LiquidAI--LFM2-700M/snapshots/<commit>
    """
    if not resolutions:
        return "no pretrained checkpoint is read: nothing to fetch"
    width = max(len(r.checkpoint.id) for r in resolutions)
    lines = []
    for r in resolutions:
        c = r.checkpoint
        expected = format_size(c.size) if c.size else "unknown"
        size = f"{format_size(r.size)} on disk (expected {expected})" if r.present else f"expected {expected}"
        nemo = ", a NeMo .nemo converted after download" if c.kind == "nemo" else ""
        lines.append(f"{c.id:<{width}}  {r.where:<9} {size}{nemo}")
        lines.append(f"    used by: {', '.join(c.used_by) or '-'}")
        lines.append(f"    path:    {r.path}" if r.present else f"    missing: {r.note}")
    missing = [r for r in resolutions if not r.present]
    summary = f"{len(resolutions)} checkpoints: {len(resolutions) - len(missing)} present, {len(missing)} missing"
    if missing:
        sizes = [r.checkpoint.size for r in missing]
        total = f" (about {format_size(sum(sizes))} to download)" if None not in sizes else ""
        summary += f"{total}; fetch them with:\n  {fetch}"
    return "\n".join(lines + [summary])
