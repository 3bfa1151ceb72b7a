"""Run a declared study: enqueue its units in the ledger, claim them one by one, train, log.

Any number of workers may run ``run_study`` on the same study and storage at once, on one
machine (journal file) or several (RDB URL): each unit is claimed by exactly one of them. Running
it again resumes: finished units are skipped, units of dead workers are re-run, failed units are
retried up to ``retries`` times. A unit that raises (or hits a NaN loss) is marked FAILED in the
ledger and in MLflow, with the reason, and the study goes on.

Two checks keep a worker from failing unit after unit for a reason that is not the units':
before the first unit, the preflight (``studies.preflight``) stops on missing pretrained weights;
while training, an error every unit would hit (``studies.failures``: missing weights, a missing
database driver, no space left, the data root gone) stops the worker with ``WorkerFailure``, its
unit queued again (``Ledger.release``) and its MLflow run deleted: no FAILED run, no retry spent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import warnings
from pathlib import Path
from typing import Any, Callable

from studies.failures import discard_run, stop_worker, worker_failure
from studies.grid import Cell, Unit, expand_cells, resolve_folds, study_units
from studies.ledger import Ledger
from studies.options import RunOptions
from studies.preflight import check_study

SUMMARY_METRICS = ("test/war", "test/uar", "test/f1")
WORKER_LOST = "worker lost (process died or heartbeat expired)"


def data_manifest(data_root: Path | None, vocal_channel: str, dataset: str = "ravdess") -> str:
    """Hash of the clip list (ids, file names and sizes): a changed dataset makes new units."""
    if data_root is None:
        return "no-data"
    from fer.data.datasets import get_dataset

    index = get_dataset(dataset).scan(Path(data_root), vocal_channel)
    rows = []
    for clip in index.clips:
        files = [p for p in (clip.video_path, clip.audio_path) if p is not None]
        rows.append([clip.clip_id] + [[p.name, p.stat().st_size] for p in files])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def plan(name: str, ablations, opts: RunOptions) -> tuple[list[Cell], list[Unit]]:
    """The cells and units of study ``name`` under these options (no side effects).

    Raises:
        StudyError: unknown study (the message lists the declared ones).
        ConfigError: bad overrides, axis values, folds.
    """
    spec = ablations.study(name)
    overrides = dict(opts.overrides)
    if not opts.feature_cache:
        overrides["train.feature_cache"] = False  # part of the config, so of the unit key too
    preset = ablations.study_preset(name, opts.preset)
    cells = expand_cells(spec, ablations.defaults, preset=preset, overrides=overrides)
    cfg0 = cells[0].config
    folds = resolve_folds(opts.folds if opts.folds is not None else spec.folds, cfg0.data.protocol,
                          cfg0.data.dataset)
    seeds = opts.seeds if opts.seeds is not None else spec.seeds
    manifest = data_manifest(opts.data_root, cfg0.data.vocal_channel, cfg0.data.dataset)
    return cells, study_units(name, cells, folds, seeds, manifest, opts.max_epochs)


def unit_table(ledger: Ledger | None, units: list[Unit]) -> list[dict[str, Any]]:
    """Rows (cell, fold, seed, status, key) for ``--dry-run``."""
    status = ledger.status([u.key for u in units]) if ledger else {}
    return [{"cell": u.cell.name, "fold": u.fold, "seed": u.seed,
             "status": status.get(u.key, "new"), "key": u.key} for u in units]


def _default_run_fn():
    from fer.train.run import run_unit

    return run_unit


class _Tracker:
    """The MLflow side of a study: experiment, one parent run per cell, one run per unit."""

    def __init__(self, study: str, tracking_uri: str, ledger: Ledger):
        from mlflow import MlflowClient

        from fer.mlflow_conventions import quiet_store_setup, source_tags
        from fer.tracking import ensure_experiment, git_commit

        quiet_store_setup()
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = ensure_experiment(self.client, study)
        self.study = study
        self.ledger = ledger
        self.commit = git_commit()
        self.source_tags = source_tags(self.commit)

    def parent(self, cell: Cell) -> str:
        """The cell's parent run id, created once and remembered in the ledger."""
        key = f"parent:{cell.name}"
        with self.ledger.lock():
            run_id = self.ledger.get_study_attr(key)
            if run_id is None:
                run = self.client.create_run(
                    self.experiment_id, run_name=cell.name,
                    tags={"study": self.study, "cell": cell.name, "kind": "cell",
                          "axes": json.dumps(cell.axes), "git_commit": self.commit, **self.source_tags})
                run_id = run.info.run_id
                self.ledger.set_study_attr(key, run_id)
        return run_id

    def start(self, unit: Unit, trial, data_root: Path):
        """The unit's run, started as a child of its cell's run; ``with`` it around the training."""
        from fer.tracking import tracked_unit, unit_tags

        tags = unit_tags(study=unit.study, cell=unit.cell.name, fold=unit.fold, seed=unit.seed,
                         config=unit.cell.config, axes=unit.cell.axes, unit_key=unit.key,
                         ledger_trial=trial.number, ledger_storage=self.ledger.storage_path)
        return tracked_unit(self.client, self.experiment_id, parent_run_id=self.parent(unit.cell), tags=tags,
                            config=unit.cell.config, run_name=unit.label, data_root=data_root, fold=unit.fold)

    def lost(self, run_id: str) -> None:
        """The run of a unit whose worker died: KILLED (the unit is trained again)."""
        from fer.tracking import end_run

        end_run(self.client, run_id, "KILLED", WORKER_LOST)

    def summarise_cell(self, cell: Cell, units: list[Unit]) -> None:
        """When every unit of the cell is finished, its parent gets mean and std of test metrics."""
        from mlflow.entities import Metric
        from optuna.trial import TrialState

        trials = self.ledger.by_key()
        done = []
        for u in units:
            finished = [t for t in trials.get(u.key, []) if t.state == TrialState.COMPLETE]
            if not finished:
                return
            done.append(finished[0].user_attrs.get("test_metrics", {}))
        now = 0
        metrics = []
        for name in SUMMARY_METRICS:
            values = [d[name] for d in done if name in d]
            if not values:
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            metrics += [Metric(f"{name}_mean", statistics.fmean(values), now, 0),
                        Metric(f"{name}_std", std, now, 0)]
        metrics.append(Metric("n_units", float(len(done)), now, 0))
        parent = self.parent(cell)
        self.client.log_batch(parent, metrics=metrics)
        self.client.set_terminated(parent, "FINISHED")


def single_process_cpu_launch(environ=os.environ) -> bool:
    """True under ``accelerate launch --cpu --num_processes N`` (N > 1) without MPI: Accelerate's simple
    launcher sets the rendezvous address for N processes but starts one."""
    return (environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in environ
            and not {"WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"} & set(environ))


class _Processes:
    """Under ``accelerate launch`` (several processes, one unit at a time across all of them) the
    main process alone talks to the ledger and MLflow, and tells the others which unit is next.
    A plain ``python runner.py study`` is one process and all of this is a no-op."""

    def __init__(self):
        from fer.train.loop import distributed_state

        state = distributed_state()
        self.main, self.many = state.is_main_process, state.num_processes > 1
        if not self.many and single_process_cpu_launch():
            warnings.warn("accelerate launch --cpu starts ONE process (its several-process CPU mode needs "
                          "MPI); for N data-parallel processes on CPU: accelerate launch --multi_gpu "
                          "--num_processes N runner.py study ...", stacklevel=2)

    def close(self) -> None:
        """Leave the process group together: a gloo group left to interpreter exit may abort the
        process ("terminate called without an active exception") after its work is done."""
        if not self.many:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def share(self, value):
        """The main process's ``value`` on every process."""
        if not self.many:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]


def run_study(name: str, ablations, opts: RunOptions, *,
              run_fn: Callable[..., Any] | None = None, echo: Callable[[str], None] = print) -> dict:
    """Train every unclaimed unit of study ``name``; returns counts of what this worker did.

    Workers are processes started with the same command (one per GPU, or several per machine):
    each claims units from the ledger. Started under ``accelerate launch``, the launched processes
    form ONE worker that trains each unit data-parallel across them.

    Raises:
        StudyError: unknown study, or no (readable) data root.
        ConfigError: bad overrides, axis values, folds (before anything runs).
        MissingWeightsError: the preflight: a checkpoint a cell reads is not on this machine
            (before anything is created).
        WorkerFailure: an error every unit would hit; the unit in progress is queued again.
    """
    data_root = opts.require_data_root("study")
    check_study(name, ablations, opts)  # every cell builds and finds its weights, before the ledger
    cells, units = plan(name, ablations, opts)
    preset = ablations.study_preset(name, opts.preset)
    run_fn = run_fn or _default_run_fn()
    procs = _Processes()
    state = _WorkerState()
    try:
        if procs.main:
            state.ledger = Ledger(opts.storage, f"ledger:{name}", lease=opts.lease)
            with state.ledger.lock():  # workers starting together must not race to create the tracking store
                state.tracker = _Tracker(name, opts.tracking_uri, state.ledger)
        done = _work(name, cells, units, opts, data_root, run_fn, procs, state, echo)
        procs.close()  # not on an error: the other processes may never reach its barrier
        return done
    except Exception as exc:
        reason = worker_failure(exc, data_root=data_root)
        if reason is None:
            raise
        put_back = state.put_back(reason)
        raise stop_worker(exc, reason, put_back=put_back, preset=preset, study=name,
                          assignments=opts.assignments) from exc


class _WorkerState:
    """The main process's ledger and tracker, and the unit it holds: claimed, its run started,
    not yet completed or failed. What a worker failure puts back."""

    def __init__(self):
        self.ledger: Ledger | None = None
        self.tracker: _Tracker | None = None
        self.unit: Unit | None = None
        self.trial = None
        self.run_id: str | None = None

    def hold(self, unit: Unit, trial) -> None:
        self.unit, self.trial, self.run_id = unit, trial, None

    def done(self) -> None:
        self.unit = self.trial = self.run_id = None

    def put_back(self, reason: str) -> str | None:
        """Delete the held unit's run, queue the unit again; returns what was put back (None: nothing)."""
        if self.trial is None:
            return None
        if self.run_id is not None:
            discard_run(self.tracker.client, self.run_id, reason)
        with contextlib.suppress(Exception):  # else the ledger reclaims it as a lost worker's, no retry spent
            self.ledger.release(self.trial, reason)
        label = self.unit.label
        self.done()
        return f"unit {label}"


def _work(name: str, cells: list[Cell], units: list[Unit], opts: RunOptions, data_root: Path, run_fn,
          procs: _Processes, state: _WorkerState, echo: Callable[[str], None]) -> dict:
    """The worker's loop: claim a unit, train it, log it, until none is left."""
    import math

    ledger, tracker = state.ledger, state.tracker
    by_key = {u.key: u for u in units}
    units_of_cell = {c.name: [u for u in units if u.cell.name == c.name] for c in cells}
    done = {"finished": 0, "failed": 0, "reclaimed": 0}

    while True:
        trial = tracked = None  # the main process's ledger trial and MLflow run of the unit
        if procs.main:
            for stale in ledger.sync(units, opts.retries):
                done["reclaimed"] += 1
                if stale.user_attrs.get("mlflow_run_id"):
                    tracker.lost(stale.user_attrs["mlflow_run_id"])
            trial = ledger.claim(set(by_key))
            if trial is not None:
                state.hold(by_key[trial.user_attrs["unit_key"]], trial)
                tracked = tracker.start(state.unit, trial, data_root)
                state.run_id = tracked.run_id
                ledger.set_attrs(trial, mlflow_run_id=tracked.run_id)
        key = procs.share(None if trial is None else trial.user_attrs["unit_key"])
        if key is None:
            break
        unit = by_key[key]
        if procs.main:
            echo(f"[{name}] {unit.label}: training (mlflow run {tracked.run_id})")
        # The run ends FINISHED, or FAILED with the reason, as the block ends (fer.tracking.TrackedRun).
        tracking = tracked if procs.main else contextlib.nullcontext()
        beating = ledger.heartbeat(trial) if procs.main else contextlib.nullcontext()
        try:
            with tracking, beating:
                result = run_fn(unit.cell.config, data_root=data_root, cache_dir=opts.cache_dir,
                                fold=unit.fold, seed=unit.seed,
                                callback=tracked.logger if procs.main else None,
                                max_epochs=opts.max_epochs)
                if procs.main:
                    tracked.log(result)
        except Exception as exc:  # a unit's failure must not stop the study; a worker failure does
            if worker_failure(exc, data_root=data_root) is not None:
                raise
            reason = f"{type(exc).__name__}: {exc}"
            done["failed"] += 1
            if procs.main:
                echo(f"[{name}] {unit.label}: FAILED: {reason}")
                ledger.fail(trial, reason)
                state.done()
            continue
        done["finished"] += 1
        if not procs.main:
            continue
        val = float(result.metrics.get("val/uar_best", float("nan")))
        test = {k: float(v) for k, v in result.metrics.items() if k in SUMMARY_METRICS}
        ledger.complete(trial, val if math.isfinite(val) else 0.0, test_metrics=test)
        state.done()
        echo(f"[{name}] {unit.label}: test UAR {test.get('test/uar', float('nan')):.3f}")
        tracker.summarise_cell(unit.cell, units_of_cell[unit.cell.name])
    return done
