"""MLflow logging of one unit, called from outside the training loop.

A unit (one config trained on one fold with one seed) is one MLflow run, the child of a parent
run (a study's cell, a search's trial). ``tracked_unit`` owns that run from start to end: the tags
``analysis.load`` reads (``unit_tags``), the flattened config as params, the epoch callback, the
final metrics and artifacts, and the terminal status. Study and search both use it, so a unit
looks the same in MLflow whichever of them trained it. What MLflow's UI expects beyond that (the
experiment kind, source tags, the unit's dataset input, system metrics) is ``fer.mlflow_conventions``.

The loop reports through a callback (``on_epoch_end``); ``UnitLogger`` is that callback for MLflow
and sends one ``log_batch`` per epoch, never one round trip per value. Final metrics go in one
batch and the artifacts are written once per unit. mlflow is imported lazily (about 3 s).

A tracking server out of reach for a while is waited for by MLflow's own HTTP client (retries
with back-off, about 2 min: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR``); past
that a call raises and the unit fails as a unit, its ledger trial never COMPLETE (the study engine
completes it only after ``TrackedRun`` ended the run FINISHED). Logging to a database URI with no
server keeps artifacts on the worker's disk: ``warn_local_artifacts`` says so once.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import subprocess
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from fer.labels import EMOTIONS
from fer.mlflow_conventions import EXPERIMENT_TAGS, dataset_input, log_inputs, source_tags, system_metrics

VERSIONED_PACKAGES = ("torch", "torchvision", "transformers", "timm", "accelerate", "peft", "optuna",
                      "mlflow", "mediapipe", "av", "numpy", "scikit-learn", "fer")
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
MAX_TAG_CHARS = 5000  # a fail reason (with its traceback) is cut to this; MLflow refuses long tags


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


_warned_local_artifacts: set[str] = set()


def warn_local_artifacts(tracking_uri: str, location: str) -> None:
    """One warning line, once per process and store, when a worker logs straight to a database
    (``postgresql://``, ``mysql://``: no tracking server) and the experiment's artifacts live on
    a local path: each machine would keep its units' files in its own ``./mlruns``, where the
    other machines, ``report`` and ``predict`` cannot read them."""
    from urllib.parse import urlsplit

    scheme = urlsplit(tracking_uri).scheme
    if (not scheme or scheme.startswith(("sqlite", "http", "file", "databricks"))
            or urlsplit(location).scheme not in ("", "file") or tracking_uri in _warned_local_artifacts):
        return
    _warned_local_artifacts.add(tracking_uri)
    parts = urlsplit(tracking_uri)
    user = f"{parts.username}@" if parts.username else ""
    shown = f"{scheme}://{user}{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"  # no password
    logging.getLogger(__name__).warning(
        "warning: --tracking-uri %s is a database, not a tracking server: this machine's artifacts (models, "
        "predictions) go to %s, where other machines and `report` cannot read them; run `mlflow server "
        "--backend-store-uri %s --artifacts-destination DIR` once and give every worker --tracking-uri "
        "http://HOST:PORT (README, \"Several machines\")", shown, location, shown)


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created when missing (race-safe between workers)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name),
                                     tags=EXPERIMENT_TAGS)
        except Exception:  # another worker created it first
            if client.get_experiment_by_name(name) is None:
                raise
        exp = client.get_experiment_by_name(name)
    for key, value in EXPERIMENT_TAGS.items():  # experiments made before the tag: the UI's runs view too
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    warn_local_artifacts(client.tracking_uri, exp.artifact_location)
    return exp.experiment_id


def unit_tags(*, study: str, cell: str, fold: int, seed: int, config, axes: dict[str, Any],
              **extra: Any) -> dict[str, str]:
    """The tags of a unit's run: the contract ``analysis.load`` reads.

    Args:
        study: MLflow experiment and report name (``search-<name>`` for a search).
        cell: the cell's name (``layers=2``), or ``trial<N>`` for a search trial.
        fold, seed: the unit's fold index and seed.
        config: the unit's resolved ``RunConfig`` (its dataset and the protocol it runs become tags).
        axes: ``{dotted config path: value}`` that make this cell (a trial's suggested params).
        extra: further tags of the caller (ledger trial, unit key, Optuna trial), as strings.
    """
    from fer.data.datasets import resolve_protocol

    # The protocol the unit ran: data.protocol's RAVDESS default stands for another dataset's own.
    protocol = resolve_protocol(config.data.dataset, config.data.protocol)
    return {"study": study, "cell": cell, "fold": str(fold), "seed": str(seed),
            "dataset": config.data.dataset, "protocol": protocol, "kind": "unit",
            "git_commit": git_commit(),
            "axes": json.dumps(axes), **{k: str(v) for k, v in extra.items()}}


def start_unit_run(client, experiment_id: str, *, parent_run_id: str | None, tags: dict[str, str],
                   params: dict[str, Any], run_name: str | None = None) -> str:
    """Create the unit's run with its tags, the flattened config as params, package versions."""
    from mlflow.entities import Param

    all_tags = {**source_tags(git_commit()), **tags}
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


def confusion_csv(matrix, emotions: tuple[str, ...] = EMOTIONS) -> str:
    """CxC counts, rows = true emotion, columns = predicted, named by the label set ``emotions``."""
    lines = ["true\\pred," + ",".join(emotions)]
    for name, row in zip(emotions, matrix, strict=True):
        lines.append(name + "," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"


def prediction_columns(emotions: tuple[str, ...]) -> list[str]:
    """Columns of ``predictions_{val,test}.csv`` for the label set ``emotions``."""
    return ["clip_id", "actor", "label", "pred"] + [f"p_{e}" for e in emotions]


PREDICTION_COLUMNS = prediction_columns(EMOTIONS)  # RAVDESS's


def log_unit_result(client, run_id: str, result, *, config=None) -> None:
    """Final metrics in one batch, then the unit's artifacts, each written once: config,
    predictions, confusion, history, warnings and the model folder ``model/`` (when the result
    kept weights), all from one temporary folder in one ``log_artifacts`` call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
    client.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if config is not None:
            from fer.config import dump_yaml

            (out / "config.yaml").write_text(dump_yaml(config))
        emotions = getattr(result, "emotions", EMOTIONS)  # fer.train.run.UnitResult's label set
        columns = prediction_columns(emotions)
        (out / "predictions_val.csv").write_text(_csv(result.predictions_val, columns))
        if result.confusion_test is not None:  # a search never evaluates the test actors
            (out / "predictions_test.csv").write_text(_csv(result.predictions_test, columns))
            (out / "confusion_test.csv").write_text(confusion_csv(result.confusion_test, emotions))
        (out / "history.json").write_text(json.dumps(result.history, indent=1))
        weights = getattr(result, "weights", None)  # fer.train.checkpoint.UnitWeights
        if weights is not None:  # built complete here, logged with the rest in one call
            weights.write(out / "model")
        warnings = getattr(result, "warnings", [])
        if warnings:
            (out / "warnings.txt").write_text("\n".join(warnings) + "\n")
            client.set_tag(run_id, "warnings", " | ".join(warnings)[:5000])
        client.log_artifacts(run_id, str(out))


def end_run(client, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a run's terminal status (FINISHED, FAILED or KILLED); a reason goes to tag ``fail_reason``."""
    if reason:
        client.set_tag(run_id, "fail_reason", reason[:MAX_TAG_CHARS])
    client.set_terminated(run_id, status)


class TrackedRun:
    """A started MLflow run that ends with the ``with`` block around its work.

    The block ending normally -> FINISHED. An exception of a ``killed_by`` type (a pruned Optuna
    trial) or an interrupt (Ctrl-C, SystemExit) -> KILLED: the work was stopped, not broken. Any
    other exception -> FAILED with ``fail_reason`` = the exception and its traceback. The
    exception always propagates: what it means for the study or search is the caller's business.

    Attributes:
        run_id: the MLflow run id.
        logger: the training loop's epoch callback (``UnitLogger``) for this run.
        monitor: ``fer.mlflow_conventions.system_metrics(...)`` of this run, or None.
    """

    def __init__(self, client, run_id: str, *, config=None,
                 killed_by: tuple[type[BaseException], ...] = (), monitor=None):
        self.client, self.run_id, self.config, self.killed_by = client, run_id, config, killed_by
        self.logger = UnitLogger(client, run_id)
        self.monitor = monitor  # a started system-metrics monitor, finished before the run ends

    def log(self, result) -> None:
        """The unit's final metrics and artifacts (``log_unit_result``), with its config."""
        log_unit_result(self.client, self.run_id, result, config=self.config)

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.monitor is not None:
            self.monitor.finish()
        if exc is None:
            end_run(self.client, self.run_id, "FINISHED")
        elif isinstance(exc, self.killed_by) or not isinstance(exc, Exception):
            end_run(self.client, self.run_id, "KILLED", f"{type(exc).__name__}: {exc}")
        else:
            trace = "".join(traceback.format_exception(exc_type, exc, tb))
            end_run(self.client, self.run_id, "FAILED", f"{type(exc).__name__}: {exc}\n{trace}")
        return False


def tracked_unit(client, experiment_id: str, *, parent_run_id: str | None, tags: dict[str, str], config,
                 run_name: str, killed_by: tuple[type[BaseException], ...] = (),
                 data_root: str | Path | None = None, fold: int | None = None) -> TrackedRun:
    """Start a unit's run now (tags, flattened config as params, package versions, its dataset,
    system metrics when asked for); end it with ``with``.

        tags = unit_tags(study="modality", cell="modality=av", fold=0, seed=0, config=cfg, axes=...)
        with tracked_unit(client, experiment_id, parent_run_id=parent, tags=tags, config=cfg,
                          run_name="modality=av/fold0/seed0") as unit:
            result = run_unit(cfg, ..., callback=unit.logger)
            unit.log(result)

    The run is created by this call, before the ``with``: its id can be recorded (in the ledger,
    in an Optuna trial) before the work starts, and a tracking store that cannot be reached is
    an error of the caller, not a failed unit.

    Args:
        client: an ``MlflowClient``.
        experiment_id: the study's (or search's) experiment.
        parent_run_id: the cell's or trial's run; None for a top-level run.
        tags: ``unit_tags(...)``.
        config: the unit's resolved ``RunConfig``: params, ``config.yaml`` artifact.
        run_name: the run's display name.
        killed_by: exception types that end the run KILLED instead of FAILED.
        data_root, fold: the unit's data, logged as its dataset input (``mlflow_conventions``),
            on the parent run too (once per fold); None logs none.
    """
    from fer.config import flatten

    inputs = [] if data_root is None else [dataset_input(config.data, data_root, fold)]
    run_id = start_unit_run(client, experiment_id, parent_run_id=parent_run_id, tags=tags,
                            params=flatten(config), run_name=run_name)
    if inputs:
        log_inputs(client, run_id, inputs)
        if parent_run_id:  # the cell's or trial's run: the data of each of its folds
            log_inputs(client, parent_run_id, inputs)
    return TrackedRun(client, run_id, config=config, killed_by=killed_by,
                      monitor=system_metrics(run_id, client.tracking_uri))
