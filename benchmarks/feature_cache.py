"""B1: epoch time of the tiny preset with the frozen-encoder feature cache on versus off.

    .venv/bin/python benchmarks/feature_cache.py [--epochs 3] [--clips-per-class 2]

Same synthetic data, fold, seed and config; only ``train.feature_cache`` differs. The cache is
built once before timing (a study pays that once for all its cells and folds), so the figures
are steady-state epochs. Also prints the analytic forward-FLOPs ratio for the ``rtx3050``
preset (``fer.models.profile``): model with encoders / model fed cached encoder outputs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fer.config import resolve_config
from fer.data.synth import generate
from fer.models.profile import profile_model
from fer.train.run import run_unit

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--clips-per-class", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "ravdess", Path(tmp) / "cache"
        generate(root, actors=24, clips_per_class=args.clips_per_class, seconds=2.0, fps=15, size=128, seed=0)
        times, clips_per_s = {}, {}
        for cached in (True, False, True):  # the first pass builds the cache and is not timed
            cfg = resolve_config("tiny", {"train.feature_cache": cached, "train.patience": None})
            timer = EpochTimer()
            result = run_unit(cfg, data_root=root, cache_dir=cache, fold=0, seed=0, callback=timer,
                              max_epochs=args.epochs)
            times[cached] = statistics.median(timer.epochs())
            clips_per_s[cached] = result.metrics["train/clips_per_s"]
    total, ratio = flops_ratio("rtx3050")
    print("| tiny preset, fold 0 (256 train + 64 val clips) | epoch wall time (s, median) | train clips/s |")
    print("|---|---|---|")
    print(f"| feature cache off | {times[False]:.2f} | {clips_per_s[False]:.1f} |")
    print(f"| feature cache on | {times[True]:.2f} | {clips_per_s[True]:.1f} |")
    print(f"\nepoch time ratio off/on: {times[False] / times[True]:.2f}x")
    print(f"rtx3050 analytic forward FLOPs per clip: {total:.1f} GFLOPs with encoders, "
          f"ratio with/without encoders {ratio:.1f}x")


if __name__ == "__main__":
    main()
