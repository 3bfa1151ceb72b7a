"""``python runner.py demo``: the main job end to end on synthetic data, on CPU cores.

    synth (once) -> prepare -> folds -> N workers sharing study ``modality`` -> (report)
    -> (predict --explain on two test clips of fold 0 with the audio-visual cell's model)

Everything lands under one folder (``DemoPaths``). The workers are ``runner.py study``
subprocesses on one ledger, each claiming the next unit, as on a real machine; each gets one CPU
thread (OMP/MKL), so N workers use N cores without oversubscribing them. The report is the last
step; the CLI writes it with the ``report`` command's code, which belongs to ``analysis``.

The synthetic set is fixed at 24 actors, 15 fps and 128 px (files that decode like real ones, at
a fraction of the cost); the prepared clips follow the ``tiny`` preset (frames, size, audio).
Changing any of these changes the demo's report (``reports/modality`` is its committed copy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

STUDY = "modality"
PRESET = "tiny"
ACTORS, FPS, SIZE, SEED = 24, 15, 128, 0
VOCAL_CHANNEL = "speech"
NOTE = "Synthetic data (python runner.py synth): planted ground truth, not RAVDESS results."
RUNNER = Path(__file__).resolve().parents[1] / "runner.py"
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo puts everything, under ``out``."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "ravdess"

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    @property
    def tracking(self) -> str:
        # Relative to the working folder, where the workers run too.
        return f"sqlite:///{self.out / 'mlflow.db'}"

    @property
    def storage(self) -> str:
        return str(self.out / "ledger.journal")

    @property
    def report(self) -> Path:
        return self.out / "reports" / STUDY

    @property
    def explain(self) -> Path:
        return self.out / "explain"

    def summary(self) -> str:
        """Where to look once the demo has finished."""
        return (f"\ndemo finished. data: {self.data}  cache: {self.cache}\n"
                f"MLflow: python runner.py ui --tracking-uri {self.tracking}\n"
                f"report: {self.report / 'README.md'}\n"
                f"explain figures: {self.explain}")


def prepare_data(paths: DemoPaths, *, clips_per_class: int, echo: Callable[[str], None] = print) -> None:
    """Write the synthetic set (unless it is there), prepare its clips, print its folds.

    Raises:
        FaceModelError: the face detector cannot be found or fetched.
    """
    from fer.config import resolve_config
    from fer.data.folds import folds_summary, render_folds
    from fer.data.prepare import PrepareSettings, run_prepare
    from fer.data.synth import generate

    tiny = resolve_config(PRESET).data
    if not (paths.data / "synth-manifest.json").exists():
        files = generate(paths.data, actors=ACTORS, clips_per_class=clips_per_class, seconds=tiny.audio_seconds,
                         fps=FPS, size=SIZE, seed=SEED)
        echo(f"wrote {len(files)} clips under {paths.data}")
    settings = PrepareSettings(frames=tiny.frames, size=tiny.size, audio_seconds=tiny.audio_seconds)
    run_prepare(paths.data, paths.cache, settings, workers=os.cpu_count() or 1, vocal_channel=VOCAL_CHANNEL)
    render_folds(folds_summary(paths.data, tiny.protocol, VOCAL_CHANNEL))


def worker_command(paths: DemoPaths, *, ablations: Path, max_epochs: int, runner: Path = RUNNER) -> list[str]:
    """The command line of one study worker (all workers run the same one)."""
    return [sys.executable, str(runner), "--ablations", str(ablations), "study", STUDY,
            "--data-root", str(paths.data), "--cache", str(paths.cache), "--preset", PRESET,
            "--max-epochs", str(max_epochs), "--storage", paths.storage, "--tracking-uri", paths.tracking]


def run_workers(paths: DemoPaths, *, ablations: Path, max_epochs: int, workers: int,
                runner: Path = RUNNER) -> list[int]:
    """Start ``workers`` study workers on the demo's ledger, wait for all; their exit codes."""
    cmd = worker_command(paths, ablations=ablations, max_epochs=max_epochs, runner=runner)
    env = {**os.environ, **WORKER_ENV}
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    return [p.wait() for p in procs]


EXAMPLE_CELL, EXAMPLE_FOLD = "modality=av", 0


def example_clips(paths: DemoPaths, n: int = 2) -> list[Path]:
    """``n`` videos of fold 0's test actors, each of another emotion: clips the fold-0 model of
    ``EXAMPLE_CELL`` never saw in training or selection, for ``predict --explain``."""
    from fer.config import resolve_config
    from fer.data.folds import folds_summary
    from fer.data.ravdess import index_clips

    protocol = resolve_config(PRESET).data.protocol
    test = set(folds_summary(paths.data, protocol, VOCAL_CHANNEL)["folds"][EXAMPLE_FOLD]["test"])
    picked: dict[int, Path] = {}
    for clip in index_clips(paths.data):
        if clip.actor in test and clip.emotion not in picked and clip.video_path is not None:
            picked[clip.emotion] = clip.video_path
    return list(picked.values())[:n]
