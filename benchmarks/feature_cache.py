"""B1: epoch time with the frozen-encoder feature cache on versus off, and the peak memory.

    .venv/bin/python benchmarks/feature_cache.py [--epochs 4] [--clips-per-class 2]   # tiny, 24 actors
    .venv/bin/python benchmarks/feature_cache.py --preset rtx3050 --random-weights \\
        --actors 1,5 --protocol hicmae-6fold --clips-per-class 1 --epochs 2 --source-size 256

Same synthetic data, fold 0, seed and config; only ``train.feature_cache`` differs. The cache-on
unit runs first and builds the cache before its first epoch; the first epoch of each unit (its
interval also holds preparation, model building and that build) is not timed, so the figures are
steady-state epochs: training plus validation. ``--random-weights`` builds the preset's exact
architecture without any checkpoint (``model.random_weights``). Each unit runs in a child
process of its own, whose peak resident set size (``getrusage`` max RSS: libraries, model,
optimizer, batches; loader workers are processes of their own) is the unit's peak memory. Also
prints the analytic forward-FLOPs ratio of the ``rtx3050`` preset (``fer.models.profile``): model
with encoders / model fed cached encoder outputs.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from fer.config import resolve_config
from fer.data.ravdess import index_clips
from fer.data.synth import generate
from fer.models.profile import profile_model
from fer.train.run import run_unit, split_clips

ENCODERS = ("audio_encoder", "visual_encoder")


class EpochTimer:
    def __init__(self):
        self.stamps = [time.perf_counter()]

    def on_epoch_end(self, epoch, metrics):
        self.stamps.append(time.perf_counter())

    def epochs(self) -> list[float]:  # the first interval also holds set-up: dropped
        return [b - a for a, b in zip(self.stamps[1:], self.stamps[2:])]


def flops_ratio(preset: str) -> tuple[float, float]:
    prof = profile_model(resolve_config(preset), batch=8, precision="bf16")
    total = prof["total"]["gflops_per_clip"]
    rest = total - sum(prof[name]["gflops_per_clip"] for name in ENCODERS)
    return total, total / rest


def parse_actors(text: str) -> list[int]:
    """``"1-24"`` or ``"1,5"`` (ranges and single ids, comma-separated) -> sorted actor ids."""
    actors = set()
    for item in text.split(","):
        first, _, last = item.partition("-")
        actors.update(range(int(first), int(last or first) + 1))
    return sorted(actors)


def synthetic_set(root: Path, actors: list[int], *, clips_per_class: int, size: int) -> None:
    """Synthetic clips of ``actors`` only (2 s, 15 fps, ``size`` px)."""
    generate(root, actors=max(actors), clips_per_class=clips_per_class, seconds=2.0, fps=15, size=size, seed=0)
    for folder in root.glob("Actor_*"):
        if int(folder.name.removeprefix("Actor_")) not in actors:
            shutil.rmtree(folder)


def time_unit(preset: str, overrides: dict, root: Path, cache: Path, epochs: int) -> dict:
    """One unit in this process: median epoch time, train clips/s, wall time, peak RSS (MiB)."""
    cfg = resolve_config(preset, overrides)
    timer, start = EpochTimer(), time.perf_counter()
    result = run_unit(cfg, data_root=root, cache_dir=cache, fold=0, seed=0, callback=timer, max_epochs=epochs)
    return {"epoch": statistics.median(timer.epochs()), "clips_per_s": result.metrics["train/clips_per_s"],
            "wall": time.perf_counter() - start,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux


def in_child_process(fn, *args):
    """``fn(*args)`` in a forked child, so its peak RSS is its own (nothing left by another unit).

    Forked, not spawned: a spawned child would spawn its DataLoader workers too, re-importing
    torch every epoch, where a CLI run (and a study worker) forks them.
    """
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--random-weights", action="store_true", help="the preset's architecture, random weights")
    parser.add_argument("--epochs", type=int, default=4, help="per unit; the first is not timed")
    parser.add_argument("--actors", default="1-24", help="actor ids, e.g. 1-24 or 1,5")
    parser.add_argument("--protocol", default="ravdess-6fold")
    parser.add_argument("--clips-per-class", type=int, default=2)
    parser.add_argument("--source-size", type=int, default=128, help="synthetic frame size, px")
    args = parser.parse_args()
    overrides = {"train.patience": None, "data.protocol": args.protocol, "model.random_weights": args.random_weights}
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "ravdess", Path(tmp) / "cache"
        synthetic_set(root, parse_actors(args.actors), clips_per_class=args.clips_per_class, size=args.source_size)
        _, splits = split_clips(index_clips(root), args.protocol, 0)
        rows = {}
        for cached in (True, False):  # the cache-on unit builds the cache before its first epoch
            rows[cached] = in_child_process(time_unit, args.preset, {**overrides, "train.feature_cache": cached},
                                            root, cache, args.epochs)
    weights = " (random weights)" if args.random_weights else ""
    val = f"{len(splits['val'])} val" if splits["val"] else f"{len(splits['test'])} val (= test)"
    print(f"| {args.preset}{weights}, fold 0 ({len(splits['train'])} train + {val} clips) "
          "| epoch wall time (s, median) | train clips/s | unit wall time (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for cached, name in ((False, "off"), (True, "on")):
        r = rows[cached]
        print(f"| feature cache {name} | {r['epoch']:.2f} | {r['clips_per_s']:.2f} | {r['wall']:.0f} | {r['peak_mb']:.0f} |")
    print(f"\nepoch time ratio off/on: {rows[False]['epoch'] / rows[True]['epoch']:.2f}x")
    total, ratio = flops_ratio("rtx3050")
    print(f"rtx3050 analytic forward FLOPs per clip: {total:.1f} GFLOPs with encoders, "
          f"ratio with/without encoders {ratio:.1f}x")


if __name__ == "__main__":
    main()
