"""B9: ``folds --dataset crema-d`` on a full-size CREMA-D tree of empty files (names only).

    .venv/bin/python benchmarks/folds_cremad.py [--repeats 5]

Writes CREMA-D's layout in a temporary folder: 7,442 clips (91 actors, 48 male, 43 female; per
actor 11 sentences x 6 emotions at level XX and IEO at LO/MD/HI for the five non-neutral emotions
and XX for neutral, with 20 clips left out so that the class counts are the real ones: 1,271 per
emotion, 1,087 neutral) as ``VideoFlash/*.flv``, ``AudioWAV/*.wav`` and ``AudioMP3/*.mp3``:
22,326 files, plus ``VideoDemographics.csv``. Times, side by side: ``folds_summary`` in this
process (the command's work), ``runner.py folds --dataset crema-d --json`` in a fresh
interpreter (what a user waits for), and both again with a 7,442-row
``processedResults/summaryTable.csv`` (``folds --json`` then adds the human reference per fold).
Medians over ``repeats`` runs; the first in-process run is a warm-up of the file-system cache.
The in-process CPU time is printed beside the wall time, and the load average beside both, since
wall times on a shared machine grow with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer.data.cremad import EMOTION_CODES, SENTENCES, SUMMARY_TABLE, VOTE_LETTERS  # noqa: E402
from fer.data.folds import folds_summary  # noqa: E402

MISSING = {"ANG": 3, "DIS": 3, "FEA": 3, "HAP": 3, "SAD": 3, "NEU": 5}  # 91 x 82 - 20 = 7,442


def clip_names() -> list[str]:
    names = []
    for actor in range(1001, 1092):
        for emo in EMOTION_CODES:
            levels = ["XX"] if emo == "NEU" else ["LO", "MD", "HI"]
            names += [f"{actor}_IEO_{emo}_{lv}" for lv in levels]
            names += [f"{actor}_{s}_{emo}_XX" for s in SENTENCES[1:]]
    rng = random.Random(9)
    dropped = {n for emo, k in MISSING.items() for n in rng.sample([n for n in names if f"_{emo}_" in n], k)}
    return [n for n in names if n not in dropped]


def write_tree(root: Path, names: list[str]) -> int:
    for folder, ext in (("VideoFlash", "flv"), ("AudioWAV", "wav"), ("AudioMP3", "mp3")):
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / f"{name}.{ext}").touch()
    females = set(random.Random(15).sample(range(1001, 1092), 43))
    rows = ['"ActorID","Age","Sex","Race","Ethnicity"']
    rows += [f'{a},40,"{"Female" if a in females else "Male"}","Caucasian","Not Hispanic"' for a in range(1001, 1092)]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
    return 3 * len(names)


def write_summary_table(root: Path, names: list[str]) -> None:
    rng = random.Random(4)
    rows = ['"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"']
    for i, name in enumerate(names, 1):
        votes = [":".join(sorted(rng.sample(VOTE_LETTERS, 1 + (rng.random() < 0.1)))) for _ in range(3)]
        rows.append(f'"{i}","{name}","{votes[0]}",50,"{votes[1]}",50,"{votes[2]}",50')
    (root / SUMMARY_TABLE).parent.mkdir(parents=True)
    (root / SUMMARY_TABLE).write_text("\n".join(rows) + "\n")


def in_process(root: Path, repeats: int) -> tuple[float, float, dict]:
    """Median wall and CPU seconds of ``folds_summary``, and its result."""
    folds_summary(root, None, "speech", "crema-d")  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        summary = folds_summary(root, None, "speech", "crema-d")
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), summary


def cli(root: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "runner.py", "folds", "--dataset", "crema-d", "--data-root", str(root),
                        "--json"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load = f"{os.getloadavg()[0]:.1f}"  # the machine may be shared: wall times grow with its load
    with tempfile.TemporaryDirectory() as tmp:
        root, names = Path(tmp), clip_names()
        n_files = write_tree(root, names)
        rows = []
        for label in ("names only", "with summaryTable.csv"):
            if label != "names only":
                write_summary_table(root, names)
            wall, cpu, summary = in_process(root, args.repeats)
            rows.append((label, wall, cpu, cli(root, args.repeats)))
    print(f"{n_files} files, {summary['n_clips']} clips, {summary['n_actors']} actors; "
          f"class counts {json.dumps(summary['class_counts'])}; test actors per fold "
          f"{[len(f['test']) for f in summary['folds']]}")
    print(f"load average before: {load}, after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| tree | folds_summary wall (s) | folds_summary CPU (s) "
          "| `runner.py folds --dataset crema-d --json` wall (s) |")
    print("|---|---:|---:|---:|")
    for label, wall, cpu, cli_wall in rows:
        print(f"| {n_files} files, {label} | {wall:.3f} | {cpu:.3f} | {cli_wall:.3f} |")


if __name__ == "__main__":
    main()
