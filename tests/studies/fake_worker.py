"""A study worker whose training is a stand-in: records each training in a marker folder.

Used by the engine tests (in-process and as a subprocess) so that resume and concurrency are
tested on the real ledger and MLflow store without paying for real training.

    python fake_worker.py STORAGE TRACKING_URI DATA_ROOT MARKERS SECONDS
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fer.labels import EMOTIONS  # noqa: E402
from studies.spec import validate  # noqa: E402

ABLATIONS = {
    "defaults": {"preset": "tiny"},
    "studies": {
        "toy": {
            "description": "two cells",
            "axes": {"model.modality": ["audio", "av"]},
            "folds": [0, 1],
            "seeds": [0],
            "reference": {"model.modality": "av"},
        }
    },
}


@dataclass
class FakeResult:
    metrics: dict
    history: list = field(default_factory=list)
    predictions_val: list = field(default_factory=list)
    predictions_test: list = field(default_factory=list)
    confusion_test: np.ndarray = field(default_factory=lambda: np.eye(8, dtype=int))


def named_clips(root: Path) -> Path:
    """One empty speech clip with a real RAVDESS name per actor under ``root``: what the index,
    the folds and the data manifest read (names and sizes). Returns ``root``."""
    for actor in range(1, 25):
        d = root / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        (d / f"01-01-01-01-01-01-{actor:02d}.mp4").write_bytes(b"x")
    return root


def make_run_fn(markers: Path, seconds: float, fail_cells: tuple[str, ...] = ()):
    def run_fn(cfg, *, data_root, cache_dir, fold, seed, callback, max_epochs):
        cell = cfg.model.modality
        tag = f"{cell}-f{fold}-s{seed}"
        (markers / f"{tag}.{os.getpid()}.{time.monotonic_ns()}").touch()
        time.sleep(seconds)
        if cell in fail_cells:
            raise RuntimeError(f"planted failure in {tag}")
        for epoch in range(2):
            callback.on_epoch_end(epoch, {"train/loss": 1.0 / (epoch + 1), "val/uar": 0.5})
        uar = 0.5 + 0.1 * fold + (0.2 if cell == "av" else 0.0)
        row = {"clip_id": f"x{fold}", "actor": 1, "label": EMOTIONS[0], "pred": EMOTIONS[0],
               **{f"p_{e}": 0.125 for e in EMOTIONS}}
        return FakeResult(metrics={"test/uar": uar, "test/war": uar, "test/f1": uar,
                                   "val/uar_best": 0.4, "best_epoch": 1},
                          predictions_val=[row], predictions_test=[row])

    return run_fn


def main() -> None:
    from studies.engine import run_study
    from studies.options import RunOptions

    storage, tracking, data_root, markers, seconds = sys.argv[1:6]
    opts = RunOptions(data_root=Path(data_root), storage=storage, tracking_uri=tracking, retries=0)
    done = run_study("toy", validate(ABLATIONS), opts, run_fn=make_run_fn(Path(markers), float(seconds)),
                     echo=lambda s: print(s, flush=True))
    print("DONE", done, flush=True)


if __name__ == "__main__":
    main()
