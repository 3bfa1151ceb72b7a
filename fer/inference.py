"""Apply trained units to any video file: emotion probabilities per clip, averaged over models.

Each file goes through the path ``runner.py prepare`` takes (``fer.data.prepare.prepare_clip``:
decode, face, crop, audio at the model's data settings), then the dataset's item
(``fer.data.dataset.PreparedClipDataset``, evaluation mode) and the loop's ``evaluate`` under the
unit's precision, so a prepared RAVDESS clip gets the probabilities its unit logged. The file's
name and container do not matter (anything PyAV reads). A file that cannot be read, or that lacks
what the model needs (a face for a visual model, an audio stream for an audio model) becomes an
error entry; the other files are still predicted. A visual-only model never reads the audio.

    models = find_unit_models("modality", "modality=av", "sqlite:///mlflow.db", cache_dir)
    clips = predict_files(["talk.mkv", "x.mp4"], models)
    clips[0].pred, clips[0].probs  # "happy", {"neutral": 0.01, ...}
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.explain import Explanation, explain_clip
from fer.train.checkpoint import LoadedModel, WeightsError, load_unit_model


@dataclass
class ClipPrediction:
    """One input file's outcome: probabilities per emotion, or why there are none."""

    file: str
    probs: dict[str, float] | None
    error: str | None = None
    explanation: Explanation | None = None  # with predict_files(explain=True): the first model's view

    @property
    def pred(self) -> str | None:
        return None if self.probs is None else max(self.probs, key=self.probs.get)

    def as_dict(self) -> dict:
        return {"file": self.file, "pred": self.pred, "probs": self.probs, "error": self.error}


def find_unit_runs(study: str, cell: str, tracking_uri: str, fold: int | None = None) -> list[str]:
    """Run ids of the FINISHED units of ``cell`` in ``study`` (one fold, or all), fold then seed order;
    of several runs of one (fold, seed), the latest.

    Raises:
        WeightsError: no such study, or no finished unit of the cell (and fold).
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise WeightsError(f"no study {study!r} in {tracking_uri}")
    query = f"tags.kind = 'unit' and tags.cell = '{cell}' and attributes.status = 'FINISHED'"
    if fold is not None:
        query += f" and tags.fold = '{fold}'"
    latest: dict[tuple[int, int], object] = {}
    for run in client.search_runs([experiment.experiment_id], filter_string=query, max_results=10000,
                                  order_by=["attributes.start_time ASC"]):
        latest[int(run.data.tags["fold"]), int(run.data.tags["seed"])] = run
    if not latest:
        where = f"cell {cell!r}" + ("" if fold is None else f", fold {fold}")
        raise WeightsError(f"study {study!r}: no finished unit of {where} in {tracking_uri}")
    return [latest[key].info.run_id for key in sorted(latest)]


def load_models(run_ids: list[str], tracking_uri: str, cache_dir: str | Path) -> list[LoadedModel]:
    """Every run's model; they must read the same inputs (data settings, modality) to be averaged.

    Raises:
        WeightsError: a run without a model folder, or runs whose inputs differ.
    """
    models = [load_unit_model(run_id, tracking_uri, cache_dir) for run_id in run_ids]
    first = models[0]
    for other in models[1:]:
        if other.cfg.data != first.cfg.data or other.cfg.model.modality != first.cfg.model.modality:
            raise WeightsError(f"{other.source} reads other inputs than {first.source} (data settings or "
                               "modality differ): their probabilities cannot be averaged")
        if other.labels != first.labels:
            raise WeightsError(f"{other.source} has labels {other.labels}, {first.source} {first.labels}")
    return models


def _silence(folder: Path, sample_rate: int) -> Path:
    """A one-second silent WAV: the audio a visual-only model's clip carries but never reads."""
    path = folder / "silence.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"\0\0" * sample_rate)
    return path


def prepare_inputs(paths: list[Path], cfg, folder: Path, face_model) -> tuple[dict[int, Path], dict[int, str]]:
    """Each file through ``prepare_clip`` into an entry under ``folder``: (entries, errors) by index."""
    from fer.data.cache import save_entry
    from fer.data.decode import DecodeError
    from fer.data.faces import FaceDetector
    from fer.data.prepare import PrepareSettings, prepare_clip, resolve_settings
    from fer.data.ravdess import Clip

    m = cfg.model
    settings, detector_file = resolve_settings(PrepareSettings.from_data_config(cfg.data), face_model)
    silence = None if m.uses_audio else _silence(folder, settings.sample_rate)
    entries, errors = {}, {}
    with FaceDetector(detector_file, settings.min_confidence) as detector:
        for i, path in enumerate(paths):
            # The label fields are placeholders: the dataset reads them, nothing here uses them.
            clip = Clip(clip_id=f"clip{i}", vocal_channel="speech", emotion=0, intensity=1, statement=1,
                        repetition=1, actor=0, video_path=path, audio_path=silence or path,
                        audio_from_video=silence is None)
            try:
                entry = prepare_clip(clip, settings, detector)
            except DecodeError as exc:
                errors[i] = f"cannot use {exc.path}: {exc.reason}"
                continue
            except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others
                errors[i] = f"cannot use {path}: {type(exc).__name__}: {exc}"
                continue
            if m.uses_visual and not any(entry.meta["face_detected"]):
                errors[i] = (f"{path}: no face detected on any of the {len(entry.frames)} sampled frames "
                             "(the model reads the face)")
                continue
            entries[i] = folder / f"clip{i}.npz"
            save_entry(entries[i], frames=entry.frames, keypoints=entry.keypoints, audio=entry.audio,
                       meta=entry.meta)
    return entries, errors


def model_probabilities(loaded: LoadedModel, entries: list[Path], batch_size: int) -> np.ndarray:
    """(N, C) softmax probabilities of one model (columns in ``loaded.labels`` order), as its unit
    evaluated clips."""
    import torch

    from fer.data.dataset import PreparedClipDataset, make_loader
    from fer.train.loop import evaluate, make_accelerator

    cfg = loaded.cfg
    dataset = PreparedClipDataset(entries, cfg.data, train=False, load_frames=cfg.model.uses_visual,
                                  load_audio=cfg.model.uses_audio)
    accelerator = make_accelerator(cfg.train.precision, 1)
    model = accelerator.prepare(loaded.model)
    loader = accelerator.prepare(make_loader(dataset, batch_size, shuffle=False, seed=0))
    try:
        return evaluate(accelerator, model, loader, torch.nn.CrossEntropyLoss(), loaded.labels).probs
    finally:
        accelerator.free_memory()


def predict_files(paths: list[str | Path], models: list[LoadedModel], *, face_model: str | Path | None = None,
                  batch_size: int = 8, explain: bool = False) -> list[ClipPrediction]:
    """Emotion probabilities of every file, averaged over ``models`` (e.g. a cell's fold models).

    Args:
        paths: video files of any name and container.
        models: loaded units reading the same inputs (``load_models``).
        face_model: BlazeFace file; None for ``fer.data.face_model.ensure_face_model``'s lookup.
        batch_size: clips per forward pass.
        explain: also record, with the first model, what decided each clip (``fer.explain``).

    Returns:
        One ``ClipPrediction`` per path, in order: probabilities by emotion name, or an error.
    """
    paths = [Path(p) for p in paths]
    labels = models[0].labels
    with tempfile.TemporaryDirectory(prefix="fer-predict-") as tmp:
        entries, errors = prepare_inputs(paths, models[0].cfg, Path(tmp), face_model)
        order = sorted(entries)
        mean = None
        if order:
            mean = np.mean([model_probabilities(m, [entries[i] for i in order], batch_size) for m in models], axis=0)
        explained = {i: explain_clip(models[0], entries[i]) for i in order} if explain else {}
    probs = {i: {name: float(p) for name, p in zip(labels, mean[row])} for row, i in enumerate(order)}
    return [ClipPrediction(file=str(path), probs=probs.get(i), error=errors.get(i), explanation=explained.get(i))
            for i, path in enumerate(paths)]


def model_info(models: list[LoadedModel], **where) -> dict:
    """The ``model`` object of the JSON output: what was asked for, the runs, the labels."""
    return {**{k: v for k, v in where.items() if v is not None}, "runs": [m.source.removeprefix("run ") for m in models],
            "labels": list(models[0].labels)}


def render(clips: list[ClipPrediction], labels: tuple[str, ...], fmt: str, model: dict) -> str:
    """The clips as ``table`` (for people), ``csv`` or ``json`` (one object ``{"model", "clips"}``)."""
    if fmt == "json":
        return json.dumps({"model": model, "clips": [c.as_dict() for c in clips]}, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "pred", *(f"p_{e}" for e in labels), "error"])
        for c in clips:
            values = [f"{c.probs[e]:.6f}" for e in labels] if c.probs else [""] * len(labels)
            writer.writerow([c.file, c.pred or "", *values, c.error or ""])
        return buf.getvalue().rstrip("\n")
    lines = []
    for c in clips:
        lines.append(c.file)
        if c.error:
            lines.append(f"  error: {c.error}")
            continue
        lines.append(f"  predicted: {c.pred}")
        for name in sorted(labels, key=lambda e: -c.probs[e]):
            lines.append(f"  {name:<10} {c.probs[name]:6.3f}")
    return "\n".join(lines)
