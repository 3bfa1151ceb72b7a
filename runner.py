#!/usr/bin/env python
"""fer command line: parse, validate, dispatch.

Heavy libraries (torch, transformers, mlflow) are imported inside the commands, never at
start-up, so ``python runner.py --help`` answers at once. The work is done by the layers below
(``fer``, ``studies``, ``analysis``); here their typed errors become exit codes: bad input 2
(every configuration error with its key path), pretrained weights missing 2 (with the command
that fetches them), a report that cannot be made 1, a worker stopped by an error every unit would
hit 1 (2 when it is missing weights).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

import click

from studies.options import DEFAULT_CACHE, DEFAULT_STORAGE, DEFAULT_TRACKING

DEFAULT_ABLATIONS = Path(__file__).resolve().parent / "ablations.yaml"

data_root_option = click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
                                default=os.environ.get("FER_DATA_ROOT"), help="RAVDESS folder ($FER_DATA_ROOT).")
cache_option = click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE,
                            show_default="$FER_CACHE_DIR or ~/.cache/fer")
tracking_option = click.option("--tracking-uri", default=DEFAULT_TRACKING,
                               show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
dataset_option = click.option("--dataset", type=click.Choice(["ravdess", "crema-d"]), default="ravdess",
                              show_default=True, help="Which corpus the folder holds (data.dataset).")
vocal_channel_option = click.option("--vocal-channel", type=click.Choice(["speech", "song", "both"]),
                                    default="speech", show_default=True)
# study and tune
preset_option = click.option("--preset", default=None, help="Preset replacing the declared default.")
set_option = click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
max_epochs_option = click.option("--max-epochs", type=click.IntRange(1), default=None)
random_weights_option = click.option(
    "--random-weights", is_flag=True,
    help="Every part's exact architecture with random weights; nothing is read or downloaded "
         "(model.random_weights=true): try a preset before fetching its weights.")


system_metrics_option = click.option(
    "--system-metrics", is_flag=True,
    help="Log MLflow's system metrics (CPU, memory, disk; GPU with pynvml) beside each unit's run.")


def _fail(message, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _bad_input():
    """Bad input found by the layers below: exit 2, every configuration error with its key path."""
    from fer.config import ConfigError
    from studies.options import StudyError
    from studies.spec import SpecError

    try:
        yield
    except (SpecError, ConfigError) as exc:
        prefix = f"{exc.source}: " if isinstance(exc, SpecError) else ""
        for path, msg in exc.errors:
            click.echo(f"error: {prefix}{path}: {msg}", err=True)
        sys.exit(2)
    except StudyError as exc:
        _fail(exc, 2)


@contextlib.contextmanager
def _stopped():
    """What stops a study or search that is not a unit's own failure: pretrained weights missing
    (exit 2, the message names the fetch command), an error every unit would hit (its exit code)."""
    from fer.weights.resolver import MissingWeightsError
    from studies.failures import WorkerFailure

    try:
        yield
    except MissingWeightsError as exc:
        _fail(exc, 2)
    except WorkerFailure as exc:
        _fail(exc, exc.exit_code)


@contextlib.contextmanager
def _report_errors():
    """A report that cannot be made from the runs there are (no finished unit, ...): exit 1."""
    from analysis.load import ReportError

    try:
        yield
    except ReportError as exc:
        _fail(exc, 1)


def _ablations(ctx):
    from studies.spec import load_ablations

    with _bad_input():
        return load_ablations(ctx.obj["ablations"])


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _overrides(assignments, random_weights: bool) -> dict:
    """``--set`` values as a dotted dict, plus ``model.random_weights`` for ``--random-weights``."""
    from fer.config import parse_assignments

    overrides = parse_assignments(assignments)
    if random_weights:
        overrides["model.random_weights"] = True
    return overrides


def _command() -> str:
    return "python runner.py " + shlex.join(sys.argv[1:])


class _Commands(click.Group):
    """The command group: an error the user can fix that reaches it (a store that cannot be opened,
    a driver not installed, a folder that cannot be written: ``studies.failures.user_error``) is
    one ``error:`` line saying what to do, exit 1; anything else keeps its traceback (a bug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from studies.failures import user_error

            message = user_error(exc)
            if message is None:
                raise
            _fail(message, 1)


def _require_clips(data_root: Path, dataset: str, vocal_channel: str) -> None:
    """Exit 2 with one error line when ``data_root`` holds no clip of ``dataset``."""
    from studies.failures import empty_data_root

    problem = empty_data_root(data_root, dataset, vocal_channel)
    if problem:
        _fail(problem, 2)


def _stores(cache_dir: Path | None = None, **uris: str) -> None:
    """Stop at once (one error line, exit 1) when a store the command opens cannot be: ``storage=``,
    ``tracking_uri=`` (``studies.preflight.check_store``), rather than after minutes of retries; or
    when the cache it writes cannot be written."""
    from studies.preflight import check_store, check_writable

    for option, uri in uris.items():
        check_store(uri, "--" + option.replace("_", "-"))
    if cache_dir is not None:
        check_writable(cache_dir, "--cache")


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ablations", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_ABLATIONS,
              show_default="ablations.yaml beside runner.py", help="The declared studies and searches.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show native and library log lines (MediaPipe, transformers notices) on stderr.")
@click.pass_context
def cli(ctx, ablations, verbose) -> None:
    """fer: ablation studies for audio-visual emotion recognition on RAVDESS."""
    from fer.verbosity import set_verbose

    if verbose:  # else $FER_VERBOSE decides
        set_verbose(True)
    ctx.obj = {"ablations": ablations}


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@dataset_option
@click.option("--actors", type=click.IntRange(1, 91), default=None,
              show_default="24 for RAVDESS (1..24), 10 for CREMA-D (5..91)")
@click.option("--clips-per-class", type=click.IntRange(1, 14), default=None,
              help="Clips per actor and emotion (default: RAVDESS the real counts, 60 per actor, at "
                   "most 8; CREMA-D 2, at most 14).")
@click.option("--seconds", type=click.FloatRange(0.5, 10), default=None,
              show_default="3.0 for RAVDESS, 2.0 for CREMA-D")
@click.option("--fps", type=click.IntRange(5, 60), default=30, show_default=True)
@click.option("--size", type=click.IntRange(64, 1280), default=256, show_default=True,
              help="Frame width and height, pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out, dataset, actors, clips_per_class, seconds, fps, size, seed) -> None:
    """Write a synthetic RAVDESS or CREMA-D (video + voice with planted ground truth)."""
    from fer.data.synth import generate, generate_cremad

    given = {k: v for k, v in (("actors", actors), ("clips_per_class", clips_per_class),
                               ("seconds", seconds)) if v is not None}
    try:
        if dataset == "crema-d":
            files = generate_cremad(out, **given, fps=fps, size=size, seed=seed)
        else:
            files = generate(out, **given, fps=fps, size=size, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"wrote {len(files)} clips under {out}")


@cli.command()
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@dataset_option
@click.option("--protocol", default=None, show_default="the dataset's: ravdess-6fold, crema-d-5fold")
@vocal_channel_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def folds(data_root, dataset, protocol, vocal_channel, as_json) -> None:
    """Index a dataset folder from file names and print the speaker-independent folds."""
    from fer.data.folds import folds_summary, render_folds
    from fer.data.protocols import ProtocolError

    _require_clips(data_root, dataset, vocal_channel)
    try:
        summary = folds_summary(data_root, protocol, vocal_channel, dataset)
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="--protocol") from None
    except ValueError as exc:  # CREMA-D's demographics or summary table (named), a vocal channel it lacks
        _fail(exc, 2)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        render_folds(summary)


@cli.command()
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@cache_option
@click.option("--workers", type=click.IntRange(1, 64), default=min(os.cpu_count() or 1, 8),
              show_default="CPU count, at most 8")
@click.option("--frames", type=click.IntRange(1, 128), default=16, show_default=True)
@click.option("--size", type=click.IntRange(16, 1024), default=224, show_default=True)
@click.option("--audio-seconds", type=click.FloatRange(0.1, 30), default=3.0, show_default=True)
@vocal_channel_option
@dataset_option
@click.option("--face-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="BlazeFace .tflite (default: $FER_FACE_MODEL, the cache, then download).")
@click.option("--strict", is_flag=True, help="Exit 1 when any clip was skipped or flagged.")
def prepare(data_root, cache_dir, workers, frames, size, audio_seconds, vocal_channel, dataset, face_model,
            strict) -> None:
    """Decode, crop faces and resample audio for every clip, into the prepared-clip cache."""
    from fer.data.face_model import FaceModelError
    from fer.data.prepare import PrepareSettings, run_prepare

    settings = PrepareSettings(frames=frames, size=size, audio_seconds=audio_seconds)
    _require_clips(data_root, dataset, vocal_channel)
    _stores(cache_dir)
    try:
        report = run_prepare(data_root, cache_dir, settings, workers=workers,
                             vocal_channel=vocal_channel, face_model=face_model, dataset=dataset)
    except FaceModelError as exc:
        _fail(exc, 2)
    if strict and (report["skipped"] or report["flagged"]):
        sys.exit(1)


@cli.command()
@click.option("--preset", default="tiny", show_default=True)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override a config field by dotted path (repeatable).")
@click.option("--batch", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--precision", type=click.Choice(["bf16", "fp16", "no"]), default="bf16", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def profile(preset, assignments, batch, precision, as_json) -> None:
    """Parameters, GFLOPs and training memory per component (meta device, no weights)."""
    from fer.config import parse_assignments, resolve_config

    from studies.preflight import check_builds

    with _bad_input():
        cfg = resolve_config(preset, parse_assignments(assignments))
        check_builds({preset: cfg}, DEFAULT_CACHE, kind="preset")  # a model that cannot build: its key, no traceback
    from fer.models.profile import profile_model, render_profile

    result = profile_model(cfg, batch=batch, precision=precision)
    if as_json:
        click.echo(json.dumps(result))
    else:
        render_profile(result)


@cli.command("studies")
@click.pass_context
def list_studies(ctx) -> None:
    """List the declared studies and searches."""
    from studies.cli import print_declared

    print_declared(_ablations(ctx), echo=click.echo)


@cli.command()
@click.argument("name")
@data_root_option
@cache_option
@click.option("--folds", "folds_text", default=None, help="Comma-separated fold indices (default: the study's).")
@click.option("--seeds", "seeds_text", default=None, help="Comma-separated seeds (default: the study's).")
@preset_option
@set_option
@max_epochs_option
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
              help="Ledger: a journal file path (one machine) or an RDB URL (several machines).")
@tracking_option
@click.option("--retries", type=click.IntRange(0), default=1, show_default=True,
              help="How often a unit that raised is tried again.")
@click.option("--no-feature-cache", is_flag=True, help="Recompute frozen encoders every epoch.")
@click.option("--memory-budget", default=None, metavar="SIZE",
              help="GPU memory per run, e.g. 8GB: micro-batch and accumulation keep the effective "
                   "batch (default: the preset's train.memory_budget).")
@random_weights_option
@system_metrics_option
@click.option("--dry-run", is_flag=True,
              help="Print the unit table and check the pretrained weights (exit 2 if missing); train nothing.")
@click.pass_context
def study(ctx, name, data_root, cache_dir, folds_text, seeds_text, preset, assignments, max_epochs,
          storage, tracking_uri, retries, no_feature_cache, memory_budget, random_weights, system_metrics,
          dry_run) -> None:
    """Train every cell of study NAME on its folds and seeds (resumable; several workers may share it)."""
    from studies.engine import plan, run_study
    from studies.options import RunOptions

    if system_metrics:
        from fer.mlflow_conventions import enable_system_metrics

        enable_system_metrics()

    spec = _ablations(ctx)
    with _bad_input(), _stopped():
        overrides = _overrides(assignments, random_weights)
        if memory_budget is not None:
            overrides["train.memory_budget"] = memory_budget
        opts = RunOptions(data_root=data_root, cache_dir=cache_dir, folds=_int_list(folds_text),
                          seeds=_int_list(seeds_text), preset=spec.study_preset(name, preset), overrides=overrides,
                          assignments=assignments, max_epochs=max_epochs, storage=storage,
                          tracking_uri=tracking_uri, retries=retries, feature_cache=not no_feature_cache)
        from studies.preflight import check_study

        if dry_run:
            from studies.cli import print_unit_table
            from studies.preflight import check_weights

            check_study(name, spec, opts, weights=False)  # every cell builds, its weights fetched or not
            cells, units = plan(name, spec, opts)
            _stores(storage=storage)
            print_unit_table(name, units, storage)
            check_weights([c.config for c in cells], cache_dir, preset=opts.preset, study=name,
                          assignments=assignments)
            return
        opts.require_data_root("study")
        _stores(cache_dir, storage=storage, tracking_uri=tracking_uri)
        done = run_study(name, spec, opts, echo=click.echo)
    click.echo(f"[{name}] this worker: {done['finished']} finished, {done['failed']} failed, "
               f"{done['reclaimed']} reclaimed from dead workers. Results: mlflow ui "
               f"(python runner.py ui), report: python runner.py report {name}")


@cli.command()
@click.argument("name")
@click.option("--trials", type=click.IntRange(1), default=None, help="Finished trials wanted (default: declared).")
@data_root_option
@cache_option
@preset_option
@set_option
@max_epochs_option
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage: journal file or RDB URL.")
@tracking_option
@click.option("--export", "export_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the best parameters as a YAML delta usable as study defaults.")
@random_weights_option
@system_metrics_option
@click.pass_context
def tune(ctx, name, trials, data_root, cache_dir, preset, assignments, max_epochs, storage, tracking_uri,
         export_path, random_weights, system_metrics) -> None:
    """Optuna search NAME: objective = mean validation UAR over the search's folds (never test)."""
    from studies.options import RunOptions
    from studies.tune import SearchFailed, export_best, run_search

    if system_metrics:
        from fer.mlflow_conventions import enable_system_metrics

        enable_system_metrics()

    spec = _ablations(ctx)
    with _bad_input(), _stopped():
        opts = RunOptions(data_root=data_root, cache_dir=cache_dir, preset=preset,
                          overrides=_overrides(assignments, random_weights), assignments=assignments,
                          trials=trials, max_epochs=max_epochs, storage=storage, tracking_uri=tracking_uri)
        from studies.preflight import check_search

        check_search(name, spec, opts)
        try:
            search = run_search(name, spec, opts, echo=click.echo)
        except SearchFailed as exc:
            _fail(exc, 1)
    best = search.best_trial
    click.echo(f"[{name}] best trial {best.number}: mean val UAR {best.value:.4f} {best.params}")
    if export_path:
        export_best(search, export_path, name)
        click.echo(f"wrote {export_path}")


@cli.group()
def weights() -> None:
    """Pretrained checkpoints: what a preset or study reads, fetching them, converting NeMo files."""


weights_preset_option = click.option("--preset", default=None,
                                     help="Preset (default: the declared default preset of ablations.yaml).")
weights_study_option = click.option("--study", "study_name", default=None, metavar="NAME",
                                    help="Every cell of study NAME (or every point of search NAME).")


def _weights_configs(spec, preset, study_name, assignments, random_weights=False) -> list:
    from studies.preflight import configs_of

    with _bad_input():
        return configs_of(spec, preset=preset, study=study_name, overrides=_overrides(assignments, random_weights))


@weights.command("list")
@weights_preset_option
@weights_study_option
@set_option
@random_weights_option
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@click.pass_context
def weights_list(ctx, preset, study_name, assignments, random_weights, cache_dir, as_json) -> None:
    """Each checkpoint the preset or study reads: where it resolves (offline), sizes, what reads it."""
    from fer.weights.listing import render_resolutions, resolution_rows
    from fer.weights.resolver import fetch_command, resolve_all

    spec = _ablations(ctx)
    resolutions = resolve_all(_weights_configs(spec, preset, study_name, assignments, random_weights), cache_dir)
    if as_json:
        click.echo(json.dumps(resolution_rows(resolutions)))
    else:
        fetch = fetch_command(spec.study_preset(study_name, preset) if study_name in spec.studies
                              else preset or spec.defaults.preset, study_name, assignments)
        click.echo(render_resolutions(resolutions, fetch=fetch))


@weights.command("fetch")
@weights_preset_option
@weights_study_option
@set_option
@cache_option
@click.pass_context
def weights_fetch(ctx, preset, study_name, assignments, cache_dir) -> None:
    """Download what the preset or study reads and is missing (resumable, checked); convert NeMo files.

    Honours HF_HOME, HF_HUB_CACHE, HF_TOKEN and HF_ENDPOINT; with HF_HUB_OFFLINE=1 it only reports
    what is missing. Exit 1 unless every checkpoint is present afterwards.
    """
    from fer.weights.checkpoints import checkpoints_needed
    from fer.weights.download import fetch, fetch_summary

    needed = checkpoints_needed(_weights_configs(_ablations(ctx), preset, study_name, assignments))
    if not needed:
        click.echo("no pretrained checkpoint is read: nothing to fetch")
        return
    _stores(cache_dir)
    results = fetch(needed, cache_dir, log=click.echo)
    click.echo(fetch_summary(results))
    if not all(r.ok for r in results):
        sys.exit(1)


@weights.command("convert-nemo")
@click.argument("nemo_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to create (config.json + model.safetensors); it must not exist.")
def weights_convert_nemo(nemo_file, out_dir) -> None:
    """Convert a NeMo FastConformer CTC checkpoint (.nemo) into the transformers format."""
    from fer.weights.nemo import convert_nemo
    from fer.weights.nemo_mapping import NemoConversionError

    try:
        convert_nemo(nemo_file, out_dir)
    except NemoConversionError as exc:
        _fail(f"{nemo_file} does not convert (nothing written):\n{exc}", 2)
    except FileExistsError as exc:
        _fail(exc, 2)
    click.echo(f"wrote {out_dir}: use it with --set model.audio.pretrained={out_dir}")


@cli.command()
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def dashboard(storage, host, port) -> None:
    """Optuna dashboard over the ledger and searches (bound to 127.0.0.1 by default)."""
    from optuna_dashboard import run_server

    from studies.ledger import open_storage

    _stores(storage=storage)
    click.echo(f"optuna-dashboard on http://{host}:{port} ({storage})")
    run_server(open_storage(storage), host=host, port=port)


@cli.command()
@tracking_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
def ui(tracking_uri, host, port) -> None:
    """MLflow UI over the project's tracking store (bound to 127.0.0.1 by default)."""
    import subprocess

    _stores(tracking_uri=tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    # MLflow 3's UI starts on its GenAI side; this address opens the training runs.
    click.echo(f"mlflow ui on http://{host}:{port}/#/experiments?workflowType=machine_learning ({tracking_uri})")
    sys.exit(subprocess.call(cmd))


def _study_report(spec, name: str, **kwargs) -> list[Path]:
    from analysis.report import write_study_report

    study_spec = spec.study(name)
    return write_study_report(name, reference=study_spec.reference_cell(), cell_order=study_spec.cell_names(),
                              command=_command(), **kwargs)


@cli.command()
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              show_default="reports/NAME, reports/NAME-DATASET with --dataset")
@tracking_option
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage (searches).")
@click.option("--dataset", type=click.Choice(["ravdess", "crema-d"]), default=None,
              help="Report the study's units on this dataset (needed when it ran on both).")
@click.option("--metric", default="test/uar", show_default=True)
@click.option("--note", default=None, help="A line for the top of the report's README.")
@cache_option
@click.option("--face-model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Face detector of the cache key, for the ROI figures of a study varying model.visual.roi.*.")
@click.option("--examples", type=click.IntRange(0), default=0, show_default=True,
              help="Per cell, N test clips it and the reference cell label differently, with explain figures.")
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="CREMA-D folder whose processedResults/summaryTable.csv gives the human (majority vote) rows "
                   "(default: the data root the units logged).")
@click.pass_context
def report(ctx, name, out_dir, tracking_uri, storage, dataset, metric, note, cache_dir, face_model, examples,
           data_root) -> None:
    """Tables, figures and confusion matrices of study NAME (or search NAME) from MLflow alone."""
    spec = _ablations(ctx)
    out_dir = out_dir or Path("reports") / (name if dataset is None else f"{name}-{dataset}")
    if name not in spec.studies and name not in spec.searches:
        _fail(f"{name!r} is neither a declared study nor a search "
              f"(studies: {', '.join(spec.studies)}; searches: {', '.join(spec.searches)})", 2)
    _stores(**({"storage": storage} if name in spec.searches else {"tracking_uri": tracking_uri}))
    with _report_errors():
        if name in spec.searches:
            from analysis.search import write_search_report

            files = write_search_report(storage, f"search:{name}", out_dir=out_dir, command=_command())
        else:
            files = _study_report(spec, name, tracking_uri=tracking_uri, out_dir=out_dir, metric=metric, note=note,
                                  cache_dir=cache_dir, face_model=face_model, examples=examples,
                                  data_root=data_root, dataset=dataset)
    click.echo(f"wrote {len(files)} files to {out_dir}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("reports/paper"),
              show_default=True)
@tracking_option
@click.option("--strict", is_flag=True, help="Exit 1 when a table is missing (its study has no finished unit).")
@click.pass_context
def paper(ctx, out_dir, tracking_uri, strict) -> None:
    """Every table of the paper: section whose study has finished units, plus the efficiency table of
    its declared configurations; the tables not written yet are listed with the command that runs them."""
    from analysis.paper import measure_efficiency, write_paper

    spec = _ablations(ctx)
    _stores(tracking_uri=tracking_uri)
    rows = measure_efficiency(spec.efficiency_configs())
    with _report_errors():
        written = write_paper(spec.paper_tables(), tracking_uri=tracking_uri, out_dir=out_dir,
                              efficiency=rows or None, command=_command())
    click.echo(f"wrote {len(written.files)} files to {out_dir}")
    for table, reason in written.missing.items():
        click.echo(f"not written: table {table}: {reason}\n  run it: {written.commands[table]}", err=True)
    if strict and written.missing:
        _fail(f"--strict: {len(written.missing)} of {len(spec.paper.tables)} paper tables missing "
              f"({', '.join(written.missing)})", 1)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("demo"), show_default=True)
@click.option("--clips-per-class", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--max-epochs", type=click.IntRange(1), default=12, show_default=True)
@click.option("--study-workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Worker processes sharing the study (one CPU thread each).")
@click.pass_context
def demo(ctx, out, clips_per_class, max_epochs, study_workers) -> None:
    """The main job end to end on synthetic data: synth, prepare, folds, study modality, report."""
    from fer.data.face_model import FaceModelError
    from studies import demo as steps

    spec = _ablations(ctx)
    paths = steps.DemoPaths(out)
    try:
        steps.prepare_data(paths, clips_per_class=clips_per_class, echo=click.echo)
    except FaceModelError as exc:
        _fail(exc, 2)
    codes = steps.run_workers(paths, ablations=ctx.obj["ablations"], max_epochs=max_epochs, workers=study_workers)
    if any(codes):
        _fail("a study worker failed (see above); run `make demo` again to resume", 1)
    with _report_errors():
        files = _study_report(spec, steps.STUDY, tracking_uri=paths.tracking, out_dir=paths.report,
                              metric="test/uar", note=steps.NOTE)
    click.echo(f"wrote {len(files)} files to {paths.report}")
    examples = steps.example_clips(paths)
    if examples:  # a data set whose fold 0 tests no clip has nothing to show
        ctx.invoke(predict, videos=examples, study_name=steps.STUDY, cell=steps.EXAMPLE_CELL, fold=steps.EXAMPLE_FOLD,
                   tracking_uri=paths.tracking, cache_dir=paths.cache, explain_dir=paths.explain)
    click.echo(paths.summary())


@cli.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--study", "study_name", default=None, help="Study whose cell's fold models are averaged.")
@click.option("--cell", default=None, help="The cell (with --study), e.g. modality=av.")
@click.option("--fold", type=click.IntRange(0), default=None, help="Only this fold's model (default: every fold).")
@click.option("--run", "run_id", default=None, help="One unit's MLflow run id instead of --study/--cell.")
@tracking_option
@cache_option
@click.option("--face-model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None)
@click.option("--csv", "fmt", flag_value="csv", help="One CSV row per clip.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object {model, clips}.")
@click.option("--explain", "explain_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write one figure per clip (PNG and PDF) into this folder: what the model kept and weighted.")
def predict(videos, study_name, cell, fold, run_id, tracking_uri, cache_dir, face_model, fmt, explain_dir) -> None:
    """Emotion probabilities of each VIDEO from a cell's fold models (averaged) or one unit's run.

    Exit 1 after printing every clip when any clip could not be predicted.
    """
    if (run_id is None) == (study_name is None):
        raise click.UsageError("give either --run RUN_ID or --study NAME --cell CELL")
    if study_name is not None and cell is None:
        raise click.UsageError("--study needs --cell")
    if run_id is not None and (cell is not None or fold is not None):
        raise click.UsageError("--cell and --fold go with --study, not --run")
    from fer.inference import find_unit_runs, load_models, model_info, predict_files, render
    from fer.train.checkpoint import WeightsError
    from fer.weights.resolver import MissingWeightsError

    _stores(cache_dir, tracking_uri=tracking_uri)
    try:
        runs = [run_id] if run_id else find_unit_runs(study_name, cell, tracking_uri, fold)
        models = load_models(runs, tracking_uri, cache_dir)
    except (MissingWeightsError, WeightsError) as exc:
        _fail(exc, 2)
    clips = predict_files(videos, models, face_model=face_model, explain=explain_dir is not None)
    info = model_info(models, study=study_name, cell=cell, fold=fold)
    click.echo(render(clips, models[0].labels, fmt or "table", info))
    if explain_dir is not None:
        from analysis.explain import write_explain_figures

        written = write_explain_figures(clips, explain_dir, n_models=len(models))
        click.echo(f"wrote {len(written)} explain files to {explain_dir}", err=True)
    if any(c.error for c in clips):
        sys.exit(1)


@cli.command()
@click.option("--run", "run_id", required=True, help="MLflow run id of a finished unit.")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@tracking_option
@cache_option
def export(run_id, fmt, out, tracking_uri, cache_dir) -> None:
    """A unit's model from prepared tensors (frames, keypoints, audio) to logits, parity-checked
    against PyTorch before the file appears."""
    from fer.export import ExportError, export_onnx
    from fer.train.checkpoint import WeightsError, load_unit_model
    from fer.weights.resolver import MissingWeightsError

    _stores(tracking_uri=tracking_uri)
    try:
        loaded = load_unit_model(run_id, tracking_uri, cache_dir)
        summary = export_onnx(loaded.model, loaded.cfg, out)
    except (MissingWeightsError, WeightsError, ExportError) as exc:
        _fail(exc, 2 if not isinstance(exc, ExportError) else 1)
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    cli()
