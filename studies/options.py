"""What the ``study`` and ``tune`` command lines say beyond the declaration in ``ablations.yaml``.

The defaults are defined here once; ``runner.py``'s click options read them. Importing this
module is cheap (no pydantic, torch or mlflow): ``runner.py --help`` imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CACHE = Path(os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fer")
DEFAULT_STORAGE = "runs/ledger.journal"
DEFAULT_TRACKING = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class StudyError(ValueError):
    """A study or search that cannot run as asked: an unknown name, no data root (CLI: exit 2)."""


@dataclass
class RunOptions:
    """Options of one ``study`` or ``tune`` invocation; None means "as declared".

    Study and search:
        data_root: RAVDESS folder (None: a study can still plan, a dry run needs no data).
        cache_dir: prepared clips and frozen-encoder features.
        preset: replaces the declared default preset.
        overrides: dotted config paths -> values, over the declared overrides.
        assignments: the ``--set`` values as typed, repeated in the ``weights fetch`` command a
            missing-weights message names.
        max_epochs: caps every unit's epochs.
        storage: ledger / Optuna storage, a journal file (one machine) or an RDB URL (several).
        tracking_uri: MLflow tracking store.

    Study only (a search declares its folds and seed; its trials are Optuna's):
        folds, seeds: replace the declared ones.
        retries: how often a unit that raised is tried again.
        lease: seconds without a heartbeat after which a claimed unit counts as abandoned.
        feature_cache: False recomputes the frozen encoders every epoch.

    Search only:
        trials: finished (or pruned) trials wanted; None: the declared number.
    """

    data_root: Path | None = None
    cache_dir: Path = DEFAULT_CACHE
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    assignments: tuple[str, ...] = ()
    max_epochs: int | None = None
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING
    folds: list[int] | None = None
    seeds: list[int] | None = None
    retries: int = 1
    lease: float = 120.0
    feature_cache: bool = True
    trials: int | None = None

    def require_data_root(self, what: str) -> Path:
        """The data root; a ``StudyError`` when a ``what`` ("study", "search") is asked to train
        without one, or with one that is not a readable folder."""
        if self.data_root is None:
            raise StudyError(f"a {what} needs --data-root (or $FER_DATA_ROOT): a RAVDESS folder or one "
                             "written by `python runner.py synth`")
        from studies.failures import data_root_problem

        problem = data_root_problem(self.data_root)
        if problem:
            raise StudyError(f"--data-root: {problem}")
        return Path(self.data_root)

