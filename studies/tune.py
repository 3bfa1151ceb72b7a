"""Optuna search over a declared space; the objective is mean validation UAR over the search's folds.

Search space, trials and tracking stay apart (STYLE habit 10): Optuna suggests values, they become
a config delta, the config is trained by the same ``run_unit`` as a study's units, and each fold is
logged to MLflow as a unit whose run and trial point at each other by id. Test actors are never
evaluated in a search (``evaluate_test=False``): selection by test UAR would be leakage.

Pruning: with ``median`` each fold reports its validation UAR per epoch at step
``fold_position * max_epochs + epoch`` as a running mean over the folds seen so far, so the median
pruner stops a trial that trails the other trials at the same epoch of the same fold. Optuna's
median pruner weighs the trial's best report so far, so a trial that did well early and falls in a
later fold is not stopped by it: ``wilcoxon`` is the pruner that compares whole folds. With ``wilcoxon`` each fold reports its
best validation UAR at step = fold index and Optuna's Wilcoxon pruner compares the folds paired with
the best trial's.

Failures: a trial that raises is FAILED (in Optuna and MLflow) and the search goes on. Before the
first trial the preflight (``studies.preflight``) stops on missing pretrained weights, checked at
every point of the space that can read other checkpoints (``search_points``). An error every
trial would hit (``studies.failures``) ends the search at once with ``WorkerFailure``: the trial
goes back to WAITING with its parameters (the next ``tune`` runs it first; the validation values
its finished folds reported stay, the same folds report them again) and its MLflow runs are
deleted, so no trial after trial fails for a reason that is not theirs.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from fer.atomic import atomic_write_text
from fer.config import ConfigError, resolve_config
from studies.failures import discard_run, stop_worker, worker_failure
from studies.grid import override_clashes
from studies.options import RunOptions
from studies.preflight import (check_builds, check_protocols, check_store, check_weights, check_writable,
                               search_cells)

OBJECTIVE = "mean val UAR"  # the objective's name in the ledger, as the Optuna dashboard shows it


def suggest(trial, space: dict) -> dict[str, Any]:
    """Ask the trial for one value per declared dimension; returns a dotted config delta."""
    params = {}
    for path, p in space.items():
        if p.type == "categorical":
            params[path] = trial.suggest_categorical(path, p.choices)
        elif p.type == "int":
            params[path] = trial.suggest_int(path, int(p.low), int(p.high), log=p.log,
                                             step=int(p.step) if p.step else 1)
        else:
            params[path] = trial.suggest_float(path, p.low, p.high, log=p.log, step=p.step)
    return params


def _sampler(spec):
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 4)))


def _pruner(spec):
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if spec.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return optuna.pruners.NopPruner()


class _FoldReporter:
    """Training-loop callback: forwards epochs to MLflow and reports to the Optuna pruner."""

    def __init__(self, trial, logger, pruner: str, position: int, epochs: int, done: list[float]):
        self.trial, self.logger, self.pruner = trial, logger, pruner
        self.position, self.epochs, self.done = position, epochs, done

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        self.logger.on_epoch_end(epoch, metrics)
        if self.pruner != "median" or "val/uar" not in metrics:
            return
        running = statistics.fmean(self.done + [metrics["val/uar"]])
        self.trial.report(running, self.position * self.epochs + epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at fold position {self.position}, epoch {epoch}")


def run_search(name: str, ablations, opts: RunOptions, *, run_fn: Callable[..., Any] | None = None,
               echo: Callable[[str], None] = print):
    """Run trials until the search has ``opts.trials`` (default: the declared number) finished or
    pruned ones; returns the Optuna study.

    Raises:
        StudyError: unknown search, or no (readable) data root.
        ConfigError: overrides that do not resolve, or that set a searched parameter; an unknown
            protocol; a point of the space whose model does not build (before any trial).
        StoreError: the storage or the tracking store cannot be opened from here, or the cache written.
        MissingWeightsError: the preflight: a checkpoint some point of the space reads is not on
            this machine (before the Optuna study or the MLflow experiment is created).
        WorkerFailure: an error every trial would hit; the trial in progress is queued again.
        SearchFailed: not a single trial completed (each failed, or was pruned).
    """
    import optuna
    from mlflow import MlflowClient

    from fer.mlflow_conventions import quiet_store_setup, source_tags
    from fer.tracking import TrackedRun, ensure_experiment, git_commit, tracked_unit, unit_tags
    from studies.ledger import open_storage

    spec = ablations.search(name)
    data_root = opts.require_data_root("search")
    base = {**ablations.defaults.overrides, **spec.overrides, **opts.overrides}
    preset = opts.preset or ablations.defaults.preset
    # A bad --set or --preset fails here, before the study exists, not in every trial.
    errors = override_clashes(opts.overrides, spec.space, "a dimension of this search")
    try:
        resolve_config(preset, base)
    except ConfigError as exc:
        errors += exc.errors
    if errors:
        raise ConfigError(errors)
    points = search_cells(ablations, name, preset=preset, overrides=opts.overrides)
    check_protocols(points)
    check_weights(list(points.values()), opts.cache_dir, preset=preset, study=name, assignments=opts.assignments)
    check_builds(points, opts.cache_dir)
    check_store(opts.storage, "--storage")
    check_store(opts.tracking_uri, "--tracking-uri")
    check_writable(opts.cache_dir, "--cache")
    trials = opts.trials or spec.trials
    if run_fn is None:
        from fer.train.run import run_unit as run_fn
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(opts.storage)
        study = optuna.create_study(study_name=f"search:{name}", storage=storage, load_if_exists=True,
                                    direction="maximize", sampler=_sampler(spec), pruner=_pruner(spec))
        if study.metric_names != [OBJECTIVE]:
            with warnings.catch_warnings():  # experimental in Optuna 3.2+, stable in what it stores
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([OBJECTIVE])
        quiet_store_setup()
        client = MlflowClient(tracking_uri=opts.tracking_uri)
        experiment_id = ensure_experiment(client, f"search-{name}")
    except Exception as exc:
        reason = worker_failure(exc, data_root=data_root)
        if reason is None:
            raise
        raise stop_worker(exc, reason, put_back=None, preset=preset, study=name,
                          assignments=opts.assignments) from exc
    pruned = (optuna.TrialPruned,)  # a pruned trial's runs end KILLED, not FAILED

    def objective(trial, runs: list[str]) -> float:
        """Train the trial's folds; every MLflow run it starts is appended to ``runs``."""
        params = suggest(trial, spec.space)
        cfg = resolve_config(preset, {**base, **params})
        epochs = opts.max_epochs or cfg.train.epochs
        cell = f"trial{trial.number}"
        parent = client.create_run(experiment_id, run_name=cell,
                                   tags={"study": f"search-{name}", "kind": "trial",
                                         "optuna_trial": str(trial.number), "params": json.dumps(params),
                                         "git_commit": git_commit(), **source_tags(git_commit())}).info.run_id
        runs.append(parent)
        trial.set_user_attr("mlflow_run_id", parent)
        done: list[float] = []
        with TrackedRun(client, parent, killed_by=pruned):
            for position, fold in enumerate(spec.folds):
                tags = unit_tags(study=f"search-{name}", cell=cell, fold=fold, seed=spec.seed, config=cfg,
                                 axes=params, optuna_trial=trial.number)
                with tracked_unit(client, experiment_id, parent_run_id=parent, tags=tags, config=cfg,
                                  run_name=f"{cell}/fold{fold}", killed_by=pruned, data_root=data_root,
                                  fold=fold) as unit:
                    runs.append(unit.run_id)
                    reporter = _FoldReporter(trial, unit.logger, spec.pruner, position, epochs, done)
                    result = run_fn(cfg, data_root=data_root, cache_dir=opts.cache_dir, fold=fold,
                                    seed=spec.seed, callback=reporter, max_epochs=opts.max_epochs,
                                    evaluate_test=False)
                    unit.log(result)
                done.append(float(result.metrics["val/uar_best"]))
                if spec.pruner == "wilcoxon":
                    trial.report(done[-1], fold)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after fold {fold}")
            value = statistics.fmean(done)
            client.log_metric(parent, "val/uar_mean", value)
        echo(f"[{name}] trial {trial.number}: mean val UAR {value:.3f} {params}")
        return value

    TrialState = optuna.trial.TrialState
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    # At most the trials still missing when this worker starts (failed ones included), and none
    # once other workers sharing the storage have finished enough.
    for _ in range(trials - len(study.get_trials(deepcopy=False, states=finished))):
        if len(study.get_trials(deepcopy=False, states=finished)) >= trials:
            break
        trial = study.ask()  # a trial put back in the queue first, with its parameters
        runs: list[str] = []
        try:
            value = objective(trial, runs)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except Exception as exc:
            reason = worker_failure(exc, data_root=data_root)
            if reason is not None:
                for run_id in runs:
                    discard_run(client, run_id, reason)
                with contextlib.suppress(Exception):  # the storage may be what failed: the trial stays RUNNING
                    storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
                raise stop_worker(exc, reason, put_back=f"trial {trial.number}, with its parameters,",
                                  preset=preset, study=name, assignments=opts.assignments) from exc
            study.tell(trial, state=TrialState.FAIL)
            echo(f"[{name}] trial {trial.number}: FAILED: {type(exc).__name__}: {exc}")
            continue
        except BaseException:  # Ctrl-C: the trial ends FAILED, as Study.optimize ends it
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SearchFailed(f"search {name!r}: no trial completed; " + "; ".join(
            f"trial {t.number}: {_outcome(client, t)}" for t in study.get_trials(deepcopy=False)))
    return study


class SearchFailed(RuntimeError):
    """A search without a single completed trial; the message says how each trial ended."""


def _outcome(client, trial) -> str:
    """How a trial ended: its state, and for a failed one the first line of its MLflow fail reason."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    reason = client.get_run(run_id).data.tags.get("fail_reason", "") if run_id else ""
    return trial.state.name.lower() + (f" ({reason.splitlines()[0]})" if reason else "")


def export_best(study, path: Path, search: str) -> None:
    """Write the best trial's parameters as a YAML delta usable as study defaults."""
    best = study.best_trial
    doc = {"defaults": {"overrides": dict(best.params)}}
    header = (f"# Best trial {best.number} of search {search!r}: mean validation UAR {best.value:.4f}.\n"
              f"# Paste under `defaults:` in ablations.yaml, or pass each as --set KEY=VALUE.\n")
    atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=True))
