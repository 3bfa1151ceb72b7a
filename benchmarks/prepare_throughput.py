"""B3: ``prepare`` throughput (clips/s) versus decoding alone, and with 1 versus 2 workers.

    .venv/bin/python benchmarks/prepare_throughput.py [--clips-per-class 1] [--actors 4]

One synthetic set, measured side by side in one run: (a) PyAV decoding of the sampled frames and
the resampled audio only; (b) the full prepare (decode + face detection + crop + cache write) with
one worker; (c) the same with two workers, each into a fresh cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fer.data.decode import read_audio, read_frames
from fer.data.prepare import PrepareSettings, run_prepare
from fer.data.ravdess import scan_dataset
from fer.data.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--clips-per-class", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ravdess"
        generate(root, actors=args.actors, clips_per_class=args.clips_per_class, seconds=3.0, fps=30,
                 size=256, seed=0)
        clips = scan_dataset(root).clips
        settings = PrepareSettings(frames=args.frames, size=args.size, audio_seconds=3.0)

        t0 = time.perf_counter()
        for clip in clips:
            read_frames(clip.video_path, args.frames)
            read_audio(clip.audio_path, 16000)
        decode = len(clips) / (time.perf_counter() - t0)

        rates = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            run_prepare(root, Path(tmp) / f"cache{workers}", settings, workers=workers)
            rates[workers] = len(clips) / (time.perf_counter() - t0)

    print(f"{len(clips)} synthetic clips (256 px, 3 s, 30 fps) -> {args.frames} frames at {args.size} px")
    print("| step | clips/s | relative to decoding alone |")
    print("|---|---|---|")
    print(f"| decode only (PyAV frames + 16 kHz audio) | {decode:.2f} | 1.00 |")
    for workers, rate in rates.items():
        print(f"| prepare, {workers} worker{'s' if workers > 1 else ''} | {rate:.2f} | {rate / decode:.2f} |")
    print(f"\n2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
