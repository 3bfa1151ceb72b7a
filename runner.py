#!/usr/bin/env python
"""fer command line: parse, validate, dispatch.

Heavy libraries (torch, transformers, mlflow) are imported inside the commands, never at
start-up, so ``python runner.py --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

DEFAULT_CACHE = os.environ.get("FER_CACHE_DIR") or str(Path.home() / ".cache" / "fer")


def _fail_config(exc) -> None:
    """Print every configuration error with its key path and exit 2."""
    for path, msg in exc.errors:
        click.echo(f"error: {path}: {msg}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """fer: ablation studies for audio-visual emotion recognition on RAVDESS."""


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

    files = generate(out, actors=actors, clips_per_class=clips_per_class, seconds=seconds,
                     fps=fps, size=size, seed=seed)
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
    from fer.data.prepare import PrepareSettings, run_prepare

    settings = PrepareSettings(frames=frames, size=size, audio_seconds=audio_seconds)
    report = run_prepare(data_root, cache_dir, settings, workers=workers,
                         vocal_channel=vocal_channel, face_model=face_model)
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


if __name__ == "__main__":
    cli()
