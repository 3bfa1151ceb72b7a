#!/usr/bin/env python
"""fer command line: parse, validate, dispatch.

Heavy libraries (torch, transformers, mlflow) are imported inside the commands, never at
start-up, so ``python runner.py --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

DEFAULT_CACHE = os.environ.get("FER_CACHE_DIR") or str(Path.home() / ".cache" / "fer")
DEFAULT_ABLATIONS = Path(__file__).resolve().parent / "ablations.yaml"
DEFAULT_STORAGE = "runs/ledger.journal"
DEFAULT_TRACKING = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def _fail_config(exc, source: str = "") -> None:
    """Print every configuration error with its key path and exit 2."""
    prefix = f"{source}: " if source else ""
    for path, msg in exc.errors:
        click.echo(f"error: {prefix}{path}: {msg}", err=True)
    sys.exit(2)


def _load_ablations(path: Path):
    from studies.spec import SpecError, load_ablations

    try:
        return load_ablations(path)
    except SpecError as exc:
        _fail_config(exc, exc.source)


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ablations", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_ABLATIONS,
              show_default="ablations.yaml beside runner.py", help="The declared studies and searches.")
@click.pass_context
def cli(ctx, ablations) -> None:
    """fer: ablation studies for audio-visual emotion recognition on RAVDESS."""
    ctx.obj = {"ablations": ablations}


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--actors", type=click.IntRange(1, 24), default=24, show_default=True)
@click.option("--clips-per-class", type=click.IntRange(1, 8), default=None,
              help="Clips per actor and emotion (default: the real counts, 60 per actor).")
@click.option("--seconds", type=click.FloatRange(0.5, 10), default=3.0, show_default=True)
@click.option("--fps", type=click.IntRange(5, 60), default=30, show_default=True)
@click.option("--size", type=click.IntRange(64, 1280), default=256, show_default=True,
              help="Frame width and height, pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out, actors, clips_per_class, seconds, fps, size, seed) -> None:
    """Write a synthetic RAVDESS (video + voice with planted ground truth)."""
    from fer.data.synth import generate

    try:
        files = generate(out, actors=actors, clips_per_class=clips_per_class, seconds=seconds,
                         fps=fps, size=size, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"wrote {len(files)} clips under {out}")


@cli.command()
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--protocol", default="ravdess-6fold", show_default=True)
@click.option("--vocal-channel", type=click.Choice(["speech", "song", "both"]), default="speech",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def folds(data_root, protocol, vocal_channel, as_json) -> None:
    """Index a RAVDESS folder from file names and print the speaker-independent folds."""
    from fer.data.folds import folds_summary, render_folds
    from fer.data.protocols import ProtocolError

    try:
        summary = folds_summary(data_root, protocol, vocal_channel)
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="--protocol") from None
    if as_json:
        click.echo(json.dumps(summary))
    else:
        render_folds(summary)


@cli.command()
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE,
              show_default="$FER_CACHE_DIR or ~/.cache/fer")
@click.option("--workers", type=click.IntRange(1, 64), default=min(os.cpu_count() or 1, 8),
              show_default="CPU count, at most 8")
@click.option("--frames", type=click.IntRange(1, 128), default=16, show_default=True)
@click.option("--size", type=click.IntRange(16, 1024), default=224, show_default=True)
@click.option("--audio-seconds", type=click.FloatRange(0.1, 30), default=3.0, show_default=True)
@click.option("--vocal-channel", type=click.Choice(["speech", "song", "both"]), default="speech",
              show_default=True)
@click.option("--face-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="BlazeFace .tflite (default: $FER_FACE_MODEL, the cache, then download).")
@click.option("--strict", is_flag=True, help="Exit 1 when any clip was skipped or flagged.")
def prepare(data_root, cache_dir, workers, frames, size, audio_seconds, vocal_channel, face_model,
            strict) -> None:
    """Decode, crop faces and resample audio for every clip, into the prepared-clip cache."""
    from fer.data.face_model import FaceModelError
    from fer.data.prepare import PrepareSettings, run_prepare

    settings = PrepareSettings(frames=frames, size=size, audio_seconds=audio_seconds)
    try:
        report = run_prepare(data_root, cache_dir, settings, workers=workers,
                             vocal_channel=vocal_channel, face_model=face_model)
    except FaceModelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
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
    from fer.config import ConfigError, parse_assignments, resolve_config

    try:
        cfg = resolve_config(preset, parse_assignments(assignments))
    except ConfigError as exc:
        _fail_config(exc)
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
    spec = _load_ablations(ctx.obj["ablations"])
    for name, st in spec.studies.items():
        axes = ", ".join(f"{p} ({len(v)})" for p, v in st.axes.items())
        click.echo(f"study   {name:<14} {st.description}\n        axes: {axes}")
    for name, se in spec.searches.items():
        click.echo(f"search  {name:<14} {se.description}\n        {se.trials} trials over "
                   f"{', '.join(se.space)}; folds {se.folds}")


@cli.command()
@click.argument("name")
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=os.environ.get("FER_DATA_ROOT"), help="RAVDESS folder ($FER_DATA_ROOT).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE,
              show_default="$FER_CACHE_DIR or ~/.cache/fer")
@click.option("--folds", "folds_text", default=None, help="Comma-separated fold indices (default: the study's).")
@click.option("--seeds", "seeds_text", default=None, help="Comma-separated seeds (default: the study's).")
@click.option("--preset", default=None, help="Preset replacing the declared default.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--max-epochs", type=click.IntRange(1), default=None)
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
              help="Ledger: a journal file path (one machine) or an RDB URL (several machines).")
@click.option("--tracking-uri", default=DEFAULT_TRACKING, show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--retries", type=click.IntRange(0), default=1, show_default=True,
              help="How often a unit that raised is tried again.")
@click.option("--no-feature-cache", is_flag=True, help="Recompute frozen encoders every epoch.")
@click.option("--memory-budget", default=None, metavar="SIZE",
              help="GPU memory per run, e.g. 8GB: micro-batch and accumulation keep the effective "
                   "batch (default: the preset's train.memory_budget).")
@click.option("--dry-run", is_flag=True, help="Print the unit table and run nothing.")
@click.pass_context
def study(ctx, name, data_root, cache_dir, folds_text, seeds_text, preset, assignments, max_epochs,
          storage, tracking_uri, retries, no_feature_cache, memory_budget, dry_run) -> None:
    """Train every cell of study NAME on its folds and seeds (resumable; several workers may share it)."""
    from fer.config import ConfigError, parse_assignments
    from studies.engine import StudyOptions, plan

    spec = _load_ablations(ctx.obj["ablations"])
    try:
        overrides = parse_assignments(assignments)
        if memory_budget is not None:
            overrides["train.memory_budget"] = memory_budget
        opts = StudyOptions(data_root=data_root, cache_dir=cache_dir, folds=_int_list(folds_text),
                            seeds=_int_list(seeds_text), preset=preset, overrides=overrides,
                            max_epochs=max_epochs,
                            storage=storage, tracking_uri=tracking_uri, retries=retries,
                            feature_cache=not no_feature_cache)
        cells, units = plan(name, spec, opts)
    except KeyError as exc:
        click.echo(f"error: {exc.args[0]}", err=True)
        sys.exit(2)
    except ConfigError as exc:
        _fail_config(exc)
    if dry_run:
        from studies.cli import print_unit_table

        print_unit_table(name, units, storage)
        return
    if data_root is None:
        raise click.UsageError("a study needs --data-root (or $FER_DATA_ROOT): a RAVDESS folder or "
                               "one written by `python runner.py synth`")
    from studies.engine import run_study

    done = run_study(name, spec, opts, echo=click.echo)
    click.echo(f"[{name}] this worker: {done['finished']} finished, {done['failed']} failed, "
               f"{done['reclaimed']} reclaimed from dead workers. Results: mlflow ui "
               f"(python runner.py ui), report: python runner.py report {name}")


@cli.command()
@click.argument("name")
@click.option("--trials", type=click.IntRange(1), default=None, help="Finished trials wanted (default: declared).")
@click.option("--data-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=os.environ.get("FER_DATA_ROOT"), help="RAVDESS folder ($FER_DATA_ROOT).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE,
              show_default="$FER_CACHE_DIR or ~/.cache/fer")
@click.option("--preset", default=None, help="Preset replacing the declared default.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--max-epochs", type=click.IntRange(1), default=None)
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage: journal file or RDB URL.")
@click.option("--tracking-uri", default=DEFAULT_TRACKING, show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--export", "export_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the best parameters as a YAML delta usable as study defaults.")
@click.pass_context
def tune(ctx, name, trials, data_root, cache_dir, preset, assignments, max_epochs, storage, tracking_uri,
         export_path) -> None:
    """Optuna search NAME: objective = mean validation UAR over the search's folds (never test)."""
    from fer.config import ConfigError, parse_assignments

    spec = _load_ablations(ctx.obj["ablations"])
    if name not in spec.searches:
        click.echo(f"error: unknown search {name!r}; declared searches: {', '.join(spec.searches)}", err=True)
        sys.exit(2)
    try:
        overrides = parse_assignments(assignments)
    except ConfigError as exc:
        _fail_config(exc)
    if data_root is None:
        raise click.UsageError("a search needs --data-root (or $FER_DATA_ROOT)")
    from studies.tune import TuneOptions, export_best, run_search

    opts = TuneOptions(data_root=data_root, cache_dir=cache_dir, preset=preset, overrides=overrides,
                       trials=trials or spec.searches[name].trials, max_epochs=max_epochs,
                       storage=storage, tracking_uri=tracking_uri)
    study_ = run_search(name, spec, opts, echo=click.echo)
    best = study_.best_trial
    click.echo(f"[{name}] best trial {best.number}: mean val UAR {best.value:.4f} {best.params}")
    if export_path:
        export_best(study_, export_path, name)
        click.echo(f"wrote {export_path}")


@cli.command()
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def dashboard(storage, host, port) -> None:
    """Optuna dashboard over the ledger and searches (bound to 127.0.0.1 by default)."""
    from optuna_dashboard import run_server

    from studies.ledger import open_storage

    click.echo(f"optuna-dashboard on http://{host}:{port} ({storage})")
    run_server(open_storage(storage), host=host, port=port)


@cli.command()
@click.option("--tracking-uri", default=DEFAULT_TRACKING, show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
def ui(tracking_uri, host, port) -> None:
    """MLflow UI over the project's tracking store (bound to 127.0.0.1 by default)."""
    import subprocess

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    click.echo(f"mlflow ui on http://{host}:{port} ({tracking_uri})")
    sys.exit(subprocess.call(cmd))


def _reference_cell(study_spec) -> tuple[str, list[str]]:
    """The declared reference cell's name and every cell name in declared order."""
    from studies.grid import axis_points, cell_name

    points = axis_points(study_spec.axes, study_spec.zip)
    order = [cell_name(p) for p in points]
    ref = next(cell_name(p) for p in points if p == {**p, **study_spec.reference})
    return ref, order


@cli.command()
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              show_default="reports/NAME")
@click.option("--tracking-uri", default=DEFAULT_TRACKING, show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage (searches).")
@click.option("--metric", default="test/uar", show_default=True)
@click.option("--note", default=None, help="A line for the top of the report's README.")
@click.pass_context
def report(ctx, name, out_dir, tracking_uri, storage, metric, note) -> None:
    """Tables, figures and confusion matrices of study NAME (or search NAME) from MLflow alone."""
    from analysis.load import ReportError

    spec = _load_ablations(ctx.obj["ablations"])
    out_dir = out_dir or Path("reports") / name
    command = "python runner.py " + shlex.join(sys.argv[1:])
    try:
        if name in spec.searches:
            from analysis.search import write_search_report

            files = write_search_report(storage, f"search:{name}", out_dir=out_dir, command=command)
        elif name in spec.studies:
            from analysis.report import write_study_report

            reference, order = _reference_cell(spec.studies[name])
            files = write_study_report(name, tracking_uri=tracking_uri, out_dir=out_dir, metric=metric,
                                       reference=reference, command=command, cell_order=order, note=note)
        else:
            click.echo(f"error: {name!r} is neither a declared study nor a search "
                       f"(studies: {', '.join(spec.studies)}; searches: {', '.join(spec.searches)})", err=True)
            sys.exit(2)
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"wrote {len(files)} files to {out_dir}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("reports/paper"),
              show_default=True)
@click.option("--tracking-uri", default=DEFAULT_TRACKING, show_default="$MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.pass_context
def paper(ctx, out_dir, tracking_uri) -> None:
    """Every table of the paper: section, plus the efficiency table of its declared configurations."""
    from analysis.load import ReportError
    from analysis.paper import write_paper
    from fer.config import resolve_config
    from fer.models.profile import profile_model

    spec = _load_ablations(ctx.obj["ablations"])
    tables = {}
    for table, t in spec.paper.tables.items():
        reference, order = _reference_cell(spec.studies[t.study])
        tables[table] = {**t.model_dump(), "reference": reference, "cell_order": order}
    rows = []
    for row, decl in spec.paper.efficiency.items():
        cfg = resolve_config(decl.get("preset", spec.defaults.preset), decl.get("overrides", {}))
        total = profile_model(cfg, batch=cfg.train.batch_size, precision="bf16")["total"]
        rows.append({"name": row, "params": total["params_total"], "params_trainable": total["params_trainable"],
                     "gflops": total["gflops_per_clip"], "train_mem_mb": total["train_mem_estimate_mb"]})
    try:
        files = write_paper(tables, tracking_uri=tracking_uri, out_dir=out_dir, efficiency=rows or None,
                            command="python runner.py " + shlex.join(sys.argv[1:]))
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"wrote {len(files)} files to {out_dir}")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("demo"), show_default=True)
@click.option("--clips-per-class", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--max-epochs", type=click.IntRange(1), default=12, show_default=True)
@click.option("--study-workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Worker processes sharing the study (one CPU thread each).")
@click.pass_context
def demo(ctx, out, clips_per_class, max_epochs, study_workers) -> None:
    """The main job end to end on synthetic data: synth, prepare, folds, study modality, report."""
    import subprocess

    from fer.config import resolve_config

    data, cache = out / "ravdess", out / "cache"
    tracking = f"sqlite:///{out / 'mlflow.db'}"  # relative to the working folder, as the workers run here
    storage = str(out / "ledger.journal")
    tiny = resolve_config("tiny").data
    if not (data / "synth-manifest.json").exists():
        ctx.invoke(synth, out=data, actors=24, clips_per_class=clips_per_class, seconds=tiny.audio_seconds,
                   fps=15, size=128, seed=0)
    ctx.invoke(prepare, data_root=data, cache_dir=cache, workers=os.cpu_count() or 1, frames=tiny.frames,
               size=tiny.size, audio_seconds=tiny.audio_seconds, vocal_channel="speech", face_model=None,
               strict=False)
    ctx.invoke(folds, data_root=data, protocol=tiny.protocol, vocal_channel="speech", as_json=False)
    # Several workers share the study through its ledger, each claiming the next unit.
    worker = [sys.executable, str(Path(__file__).resolve()), "--ablations", str(ctx.obj["ablations"]),
              "study", "modality", "--data-root", str(data), "--cache", str(cache), "--preset", "tiny",
              "--max-epochs", str(max_epochs), "--storage", storage, "--tracking-uri", tracking]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen(worker, env=env) for _ in range(study_workers)]
    if any(p.wait() != 0 for p in procs):
        click.echo("error: a study worker failed (see above); run `make demo` again to resume", err=True)
        sys.exit(1)
    ctx.invoke(report, name="modality", out_dir=out / "reports" / "modality", tracking_uri=tracking,
               storage=storage, metric="test/uar",
               note="Synthetic data (python runner.py synth): planted ground truth, not RAVDESS results.")
    click.echo(f"\ndemo finished. data: {data}  cache: {cache}\n"
               f"MLflow: python runner.py ui --tracking-uri {tracking}\n"
               f"report: {out / 'reports' / 'modality' / 'README.md'}")


if __name__ == "__main__":
    cli()
