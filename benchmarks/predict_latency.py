"""B7: ``predict`` latency per clip on the CPU: decode + face + crop, then the model.

    .venv/bin/python benchmarks/predict_latency.py [--clips 3] [--presets tiny,rtx3050]

Each preset's model is built with ``model.random_weights=true`` (its exact architecture, no
checkpoint read; ``fer.models.model.build_model``) and runs the per-clip path of
``fer.inference.predict_files``: ``prepare_inputs`` (PyAV decode of the sampled frames and the audio,
BlazeFace, crop, entry write) and ``model_probabilities`` (the dataset's evaluation item and the loop's
``evaluate`` under the preset's precision), one clip at a time. The clips are synthetic
(``fer.data.synth.generate``): 2 s at 15 fps, 224 px frames. One warm-up clip per preset is not
counted; the figures are medians over the clips.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fer.config import resolve_config
from fer.data.synth import generate
from fer.inference import model_probabilities, prepare_inputs
from fer.labels import EMOTIONS
from fer.models.model import build_model
from fer.train.checkpoint import LoadedModel


def time_preset(preset: str, videos: list[Path], work: Path) -> dict:
    """Median seconds per clip of the prepare and model steps (the first clip is a warm-up)."""
    cfg = resolve_config(preset, {"model.random_weights": True})
    torch.manual_seed(0)
    start = time.perf_counter()
    loaded = LoadedModel(model=build_model(cfg).eval(), cfg=cfg, labels=EMOTIONS, seed=0, source=f"random {preset}")
    build = time.perf_counter() - start
    prepare, model = [], []
    for i, video in enumerate([videos[0], *videos]):
        folder = work / f"{preset}-{i}"
        folder.mkdir()
        t0 = time.perf_counter()
        entries, errors = prepare_inputs([video], cfg, folder, None)
        t1 = time.perf_counter()
        if errors:
            raise SystemExit(f"{video}: {errors[0]}")
        model_probabilities(loaded, [entries[0]], batch_size=1)
        t2 = time.perf_counter()
        if i:  # clip 0 warms up PyAV, BlazeFace and the model
            prepare.append(t1 - t0)
            model.append(t2 - t1)
    return {"preset": preset, "frames": cfg.data.frames, "size": cfg.data.size, "precision": cfg.train.precision,
            "build": build, "prepare": statistics.median(prepare), "model": statistics.median(model)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=3, help="timed clips per preset (plus one warm-up)")
    parser.add_argument("--presets", default="tiny,rtx3050")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fer-b7-") as tmp:
        root = Path(tmp) / "synth"
        videos = generate(root, actors=1, clips_per_class=1, seconds=2.0, fps=15, size=224, seed=0, workers=1)
        videos = [v for v in videos if v.suffix == ".mp4"][: args.clips]
        print(f"{len(videos)} synthetic clips (2 s, 15 fps, 224 px); torch threads: {torch.get_num_threads()}")
        print("| preset (random weights) | frames x px | precision | decode + face + crop (s) | model (s) | "
              "per clip (s) | model build (s) |")
        print("|---|---|---|---:|---:|---:|---:|")
        for preset in args.presets.split(","):
            r = time_preset(preset, videos, Path(tmp))
            print(f"| {r['preset']} | {r['frames']} x {r['size']} | {r['precision']} | {r['prepare']:.3f} | "
                  f"{r['model']:.3f} | {r['prepare'] + r['model']:.3f} | {r['build']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
