"""MLflow's own conventions, so its UI shows a study as training runs with their data and source.

- ``EXPERIMENT_TAGS``: ``mlflow.experimentKind = custom_model_development`` makes the UI (3.x)
  show an experiment as training runs, not as a GenAI app (traces, sessions). The UI's own
  switch between its two sides ("GenAI" / "Model training") starts on GenAI in 3.17 whatever
  the experiment; ``?workflowType=machine_learning`` in the address (``runner.py ui`` prints
  one) opens the training side.
- ``source_tags``: the standard ``mlflow.source.*`` and ``mlflow.user`` tags of every run the
  harness creates (the runs table's Source and User columns).
- ``dataset_input``: a unit's data as an MLflow dataset input (the Dataset column, dataset
  search): name ``<dataset>-<vocal channel>`` (``ravdess-speech``), a digest of the fold's clip
  index and the prepare settings, the data root as source, the clip counts per split as profile.
- ``system_metrics``: MLflow's system metrics (CPU, memory, disk, network; GPU where pynvml is
  installed) sampled beside a run, when ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is true (what
  ``runner.py study/tune --system-metrics`` sets); off by default.

These tags are for MLflow's UI; ``analysis.load`` reads none of them.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path

from fer.verbosity import verbose

EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"  # MLflow's own switch


def quiet_store_setup() -> None:
    """MLflow's INFO lines on creating or migrating a database store ("Creating initial MLflow
    database tables...") stay off the terminal, unless ``runner.py -v``."""
    if not verbose():
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)


def source_tags(commit: str) -> dict[str, str]:
    """``mlflow.source.{name,type,git.commit}`` and ``mlflow.user`` of a run started by this process.

    Args:
        commit: ``fer.tracking.git_commit()``: a sha, ``<sha>-dirty``, or ``unknown`` (no tag).
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        user = "unknown"
    tags = {"mlflow.source.name": Path(sys.argv[0]).name or "python", "mlflow.source.type": "LOCAL",
            "mlflow.user": user}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")  # the tag git_commit keeps -dirty
    return tags


def dataset_input(data, data_root: str | Path, fold: int):
    """The data of a unit trained on ``fold``, as an MLflow ``DatasetInput`` (context training).

    Args:
        data: the unit's ``DataConfig`` (dataset, vocal channel, protocol, prepare settings).
        data_root: the dataset's folder: the dataset's source.
        fold: the unit's fold of ``data.protocol``.

    Returns:
        ``DatasetInput`` named ``<dataset>-<vocal channel>``, its digest over the clip index
        (the fold's actors per split, clip counts per split and class) and the prepare settings;
        the profile holds ``n_train``, ``n_val``, ``n_test``, ``protocol`` and ``fold``.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from fer.data.folds import folds_summary
    from fer.data.prepare import PrepareSettings

    name = data.dataset
    kwargs = {} if name == "ravdess" else {"dataset": name}  # folds_summary's dataset= is new
    with contextlib.redirect_stderr(io.StringIO()):  # its warnings are the unit's to say, once
        summary = folds_summary(data_root, data.protocol, data.vocal_channel, **kwargs)
    split = summary["folds"][fold]
    counts = {f"n_{s}": split[f"n_{s}"] for s in ("train", "val", "test")}
    settings = PrepareSettings.from_data_config(data).model_dump(exclude={"face_model_sha"})
    index = {"dataset": name, "vocal_channel": data.vocal_channel, "protocol": summary["protocol"],
             "fold": fold, "actors": {s: split[s] for s in ("train", "val", "test")}, **counts,
             "class_counts": summary["class_counts"], "prepare": settings}
    digest = hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest()[:10]
    dataset = Dataset(name=f"{name}-{data.vocal_channel}", digest=digest, source_type="local",
                      source=json.dumps({"uri": str(Path(data_root).resolve())}),
                      profile=json.dumps({**counts, "protocol": summary["protocol"], "fold": fold}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def enable_system_metrics() -> None:
    """System metrics for every unit run of this process and the processes it starts."""
    os.environ[SYSTEM_METRICS_ENV] = "true"


def log_inputs(client, run_id: str, inputs: list) -> None:
    """``client.log_inputs``, tried twice: workers starting units of one fold at once both add its
    dataset to the experiment, and the slower one's insert fails; the second try finds it there."""
    from mlflow.exceptions import MlflowException

    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        client.log_inputs(run_id, datasets=inputs)


def system_metrics_on() -> bool:
    """True when ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` asks for system metrics."""
    return os.environ.get(SYSTEM_METRICS_ENV, "").lower() in ("true", "1")


def system_metrics(run_id: str, tracking_uri: str):
    """A started ``SystemMetricsMonitor`` logging ``system/*`` metrics to ``run_id`` until its
    ``finish()``; None when system metrics are off."""
    if not system_metrics_on():
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    if not verbose():  # "Started monitoring system metrics." per unit is MLflow's business
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(run_id, tracking_uri=tracking_uri)
    monitor.start()
    return monitor
