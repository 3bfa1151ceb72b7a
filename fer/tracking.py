"""MLflow logging of one unit, called from outside the training loop.

The loop reports through a callback (``on_epoch_end``); ``UnitLogger`` is that callback for MLflow
and sends one ``log_batch`` per epoch, never one round trip per value. Final metrics go in one
batch and the artifacts are written once per unit. mlflow is imported lazily (about 3 s).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fer.labels import EMOTIONS

VERSIONED_PACKAGES = ("torch", "torchvision", "transformers", "timm", "accelerate", "peft", "optuna",
                      "mlflow", "mediapipe", "av", "numpy", "scikit-learn", "fer")
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


@functools.cache
def git_commit(cwd: str | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when the tree has uncommitted changes."""
    root = cwd or str(Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def artifact_location(tracking_uri: str, name: str) -> str | None:
    """Artifacts of a ``sqlite:///DIR/mlflow.db`` store go to ``DIR/mlartifacts/NAME``.

    MLflow's default for a database store is ``./mlruns`` of whatever folder a worker happens to
    run in; keeping them beside the database keeps a study's runs and files together.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server decides where artifacts go
    db = Path(tracking_uri[len("sqlite:///"):]).resolve()
    return (db.parent / "mlartifacts" / name).as_uri()


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created when missing (race-safe between workers)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name))
    except Exception:  # another worker created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_unit_run(client, experiment_id: str, *, parent_run_id: str | None, tags: dict[str, str],
                   params: dict[str, Any], run_name: str | None = None) -> str:
    """Create the unit's run with its tags, the flattened config as params, package versions."""
    from mlflow.entities import Param

    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    all_tags.update({f"version.{k}": v for k, v in package_versions().items()})
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    items = [Param(k, "null" if v is None else str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
    return run.info.run_id


class UnitLogger:
    """Training-loop callback: one ``log_batch`` per epoch (step = epoch)."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def confusion_csv(matrix) -> str:
    """8x8 counts, rows = true emotion, columns = predicted, with emotion names."""
    lines = ["true\\pred," + ",".join(EMOTIONS)]
    for name, row in zip(EMOTIONS, matrix):
        lines.append(name + "," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"


PREDICTION_COLUMNS = ["clip_id", "actor", "label", "pred"] + [f"p_{e}" for e in EMOTIONS]


def log_unit_result(client, run_id: str, result, *, config=None) -> None:
    """Final metrics in one batch, then the unit's artifacts, each written once."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
    client.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if config is not None:
            from fer.config import dump_yaml

            (out / "config.yaml").write_text(dump_yaml(config))
        (out / "predictions_val.csv").write_text(_csv(result.predictions_val, PREDICTION_COLUMNS))
        if result.confusion_test is not None:  # a search never evaluates the test actors
            (out / "predictions_test.csv").write_text(_csv(result.predictions_test, PREDICTION_COLUMNS))
            (out / "confusion_test.csv").write_text(confusion_csv(result.confusion_test))
        (out / "history.json").write_text(json.dumps(result.history, indent=1))
        warnings = getattr(result, "warnings", [])
        if warnings:
            (out / "warnings.txt").write_text("\n".join(warnings) + "\n")
            client.set_tag(run_id, "warnings", " | ".join(warnings)[:5000])
        client.log_artifacts(run_id, str(out))
