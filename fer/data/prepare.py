"""Prepare clips once: decode, crop the face, resample the audio, store in the cache.

Per clip: T frames sampled evenly over the video; the face detected on each (a frame without a
detection takes its neighbours' box, interpolated; a clip without any gets a centre box and a
flag); a square crop with margin around each box, resized to ``size``; the six keypoints moved
into crop pixels; the audio as mono float32 at ``sample_rate``, zero-padded or centre-cropped to
``audio_seconds``. Entries live under a key hashed from every setting, so a changed setting
builds new entries and a re-run only prepares clips whose entry is missing or unreadable.

Bad input never stops a run: each unusable file is reported in ``<cache>/prepare-report.json``
and the other clips are prepared.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fer.atomic import atomic_write_text, remove_stale_temps
from fer.data.cache import PreparedClip, entry_path, save_entry, settings_dir
from fer.data.decode import DecodeError, read_audio, read_frames
from fer.data.face_model import ensure_face_model, sha256_of
from fer.data.faces import FaceDetector
from fer.data.datasets import get_dataset
from fer.data.ravdess import Clip, scan_dataset  # noqa: F401 - scan_dataset: kept importable from here

# Bump when the preparation itself changes, so old entries are not mistaken for new ones.
FORMAT_VERSION = 1
REPORT_NAME = "prepare-report.json"
# Where the keypoints go, as fractions of a face box, when a clip has no face at all: a
# frontal layout, so downstream ROI pooling still looks at face-like places of the centre box.
_CANONICAL_KEYPOINTS = np.array(
    [[0.30, 0.35], [0.70, 0.35], [0.50, 0.55], [0.50, 0.75], [0.05, 0.45], [0.95, 0.45]],
    dtype=np.float32)
_CENTRE_BOX_FRACTION = 0.5  # side of the fallback box, as a fraction of the shorter frame side


class PrepareSettings(BaseModel):
    """Every setting that changes a prepared entry; ``key()`` hashes them all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(16, ge=1)  # T frames sampled evenly over the clip
    size: int = Field(224, ge=16)  # side of the square face crop, pixels
    audio_seconds: float = Field(3.0, gt=0)  # fixed audio length (pad or centre-crop)
    sample_rate: int = Field(16000, ge=1000)
    margin: float = Field(0.25, ge=0)  # added on each side of the face box, fraction of its side
    min_confidence: float = Field(0.5, gt=0, lt=1)  # face detections below this are ignored
    face_model_sha: str | None = None  # sha256 of the detector file; filled by run_prepare

    @property
    def audio_length(self) -> int:
        """Samples in the stored audio."""
        return round(self.audio_seconds * self.sample_rate)

    def key(self) -> str:
        """Short hash of every setting and the format version: the cache folder name.

        Raises:
            ValueError: when ``face_model_sha`` is not set (see :func:`resolve_settings`).
        """
        if self.face_model_sha is None:
            raise ValueError("PrepareSettings.key() needs face_model_sha; use resolve_settings()")
        blob = json.dumps({"format": FORMAT_VERSION, **self.model_dump()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_data_config(cls, data) -> PrepareSettings:
        """The settings a ``fer.data.config.DataConfig`` asks for."""
        return cls(frames=data.frames, size=data.size, audio_seconds=data.audio_seconds,
                   sample_rate=data.sample_rate)


def resolve_settings(settings: PrepareSettings,
                     face_model: str | Path | None = None) -> tuple[PrepareSettings, Path]:
    """Find the face model and record its checksum in the settings.

    Args:
        settings: settings, ``face_model_sha`` possibly unset.
        face_model: model file; None for the lookup of ``ensure_face_model``.

    Returns:
        The settings with ``face_model_sha`` set, and the model path.

    Raises:
        ValueError: when the settings name a different model than the one found.
    """
    model = ensure_face_model(face_model)
    sha = sha256_of(model)
    if settings.face_model_sha not in (None, sha):
        raise ValueError(f"settings ask for face model sha256 {settings.face_model_sha}, "
                         f"but {model} has {sha}")
    return settings.model_copy(update={"face_model_sha": sha}), model


def _fill_missing(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a detection, the nearest value at the ends.

    Args:
        values: (T, ...) per-frame values, rows where ``found`` is False are ignored.
        found: bool (T,).
    """
    t = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    filled = np.stack([np.interp(t, t[found], flat[found, j]) for j in range(flat.shape[1])], 1)
    return filled.reshape(values.shape).astype(np.float32)


def _square(box: np.ndarray, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square of side max(w, h) * (1 + 2 margin) centred on the box."""
    x0, y0, x1, y1 = box
    side = max(1, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    return round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2), side


def crop_square(frame: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """Crop ``frame[y0:y0+side, x0:x0+side]``, black where it leaves the frame, resized to size.

    Args:
        frame: uint8 (H, W, 3).
        x0, y0, side: the square in frame pixels (may reach outside the frame).
        size: output side.

    Returns:
        uint8 (size, size, 3).
    """
    import cv2

    height, width = frame.shape[:2]
    out = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, width), min(y0 + side, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


def _fit_audio(audio: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop, or zero-pad equally on both sides, to ``length`` samples."""
    if len(audio) >= length:
        start = (len(audio) - length) // 2
        return audio[start:start + length].astype(np.float32)
    before = (length - len(audio)) // 2
    return np.pad(audio, (before, length - len(audio) - before)).astype(np.float32)


def prepare_clip(clip: Clip, settings: PrepareSettings, detector: FaceDetector) -> PreparedClip:
    """Decode, detect, crop and resample one clip.

    Args:
        clip: the clip (needs ``video_path`` and ``audio_path``).
        settings: resolved settings (``face_model_sha`` set).
        detector: the face detector of this process.

    Returns:
        The entry to store; ``meta["flags"]`` lists what went wrong without stopping it.

    Raises:
        DecodeError: naming the file that cannot be used.
    """
    if clip.video_path is None:
        raise DecodeError(clip.audio_path, f"clip {clip.clip_id} has no video file (audio only)")
    if clip.audio_path is None:
        raise DecodeError(clip.video_path, f"clip {clip.clip_id} has no audio (video only)")
    video = read_frames(clip.video_path, settings.frames)
    audio = read_audio(clip.audio_path, settings.sample_rate)
    n_frames, height, width = video.frames.shape[:3]
    faces = [detector.detect(frame) for frame in video.frames]
    found = np.array([f is not None for f in faces])
    flags = []
    if found.any():
        boxes = np.zeros((n_frames, 4), np.float32)  # (T, 4) x0, y0, x1, y1, frame pixels
        points = np.zeros((n_frames, 6, 2), np.float32)  # (T, 6, 2) frame pixels
        for t, face in enumerate(faces):
            if face is not None:
                boxes[t], points[t] = face.box, face.keypoints
        boxes, points = _fill_missing(boxes, found), _fill_missing(points, found)
    else:
        side = _CENTRE_BOX_FRACTION * min(height, width)
        box = np.array([(width - side) / 2, (height - side) / 2, (width + side) / 2,
                        (height + side) / 2], np.float32)
        boxes = np.tile(box, (n_frames, 1))
        points = np.tile(box[:2] + _CANONICAL_KEYPOINTS * side, (n_frames, 1, 1))
        flags.append(f"no face detected on any of the {n_frames} sampled frames; centre crop used")
    crops = np.zeros((n_frames, settings.size, settings.size, 3), np.uint8)
    keypoints = np.zeros((n_frames, 6, 2), np.float32)
    squares = []
    for t in range(n_frames):
        x0, y0, side = _square(boxes[t], settings.margin)
        crops[t] = crop_square(video.frames[t], x0, y0, side, settings.size)
        keypoints[t] = (points[t] - (x0, y0)) * (settings.size / side)
        squares.append([x0, y0, side])
    meta = {
        "clip": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(clip).items()},
        "settings": settings.model_dump(),
        "settings_key": settings.key(),
        "frame_indices": video.indices.tolist(),
        "video_frames": video.n_frames,
        "fps": video.fps,
        "frame_size": [height, width],
        "face_boxes": boxes.tolist(),
        "crop_squares": squares,
        "face_detected": found.tolist(),
        "face_scores": [None if f is None else f.score for f in faces],
        "audio_samples": len(audio),
        "flags": flags,
    }
    return PreparedClip(frames=crops, keypoints=keypoints,
                        audio=_fit_audio(audio, settings.audio_length), meta=meta)


_DETECTOR: FaceDetector | None = None  # one per worker process, built by _init_worker


def _init_worker(model_path: str, min_confidence: float) -> None:
    global _DETECTOR
    _DETECTOR = FaceDetector(model_path, min_confidence)


def _prepare_one(clip: Clip, settings: PrepareSettings, path: Path) -> dict:
    """Prepare and store one clip; returns its outcome instead of raising, so a run goes on."""
    try:
        entry = prepare_clip(clip, settings, _DETECTOR)
        save_entry(path, frames=entry.frames, keypoints=entry.keypoints, audio=entry.audio,
                   meta=entry.meta)
    except DecodeError as exc:
        return {"clip": clip.clip_id, "file": str(exc.path), "reason": exc.reason}
    except Exception as exc:  # noqa: BLE001 - one broken clip must not stop the others
        return {"clip": clip.clip_id, "file": str(clip.video_path),
                "reason": f"unexpected {type(exc).__name__}: {exc}"}
    return {"clip": clip.clip_id, "flags": entry.meta["flags"]}


def _stored_flags(path: Path) -> list[str] | None:
    """The flags of a finished entry, or None when it is missing or unreadable.

    Reads only the entry's zip directory and its ``meta`` member, so skipping finished clips
    costs little; entries are written atomically, so a readable one is complete.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not {"frames", "keypoints", "audio", "meta"} <= set(npz.files):
                return None
            return list(json.loads(str(npz["meta"]))["flags"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _run(todo: list[tuple[Clip, Path]], settings: PrepareSettings, model: Path,
         workers: int) -> list[dict]:
    """Prepare clips with a rich progress bar, in a pool of ``workers`` processes (or inline)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    outcomes = []
    with Progress(*columns) as progress:
        bar = progress.add_task("preparing clips", total=len(todo))
        if workers == 1 or len(todo) <= 1:
            _init_worker(str(model), settings.min_confidence)
            try:
                for clip, path in todo:
                    outcomes.append(_prepare_one(clip, settings, path))
                    progress.advance(bar)
            finally:
                _DETECTOR.close()
            return outcomes
        # spawn: MediaPipe and PyAV hold threads that a forked child would inherit half-alive.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(str(model), settings.min_confidence)) as pool:
            futures = [pool.submit(_prepare_one, clip, settings, path) for clip, path in todo]
            for future in as_completed(futures):
                outcomes.append(future.result())
                progress.advance(bar)
    return outcomes


def _write_report(path: Path, report: dict) -> None:
    atomic_write_text(path, json.dumps(report, indent=2))


def _print_summary(report: dict, n_new: int, folder: Path, report_path: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"prepared {report['prepared']} clips ({n_new} new, "
                  f"{report['prepared'] - n_new} already in the cache) in {escape(str(folder))}")
    for item in report["skipped"]:
        console.print(f"[red]skipped[/] {escape(item['file'])}: {escape(item['reason'])}")
    for item in report["flagged"]:
        console.print(f"[yellow]flagged[/] {item['clip']}: {escape(item['reason'])}")
    console.print(f"{len(report['skipped'])} skipped, {len(report['flagged'])} flagged; "
                  f"report: {escape(str(report_path))}")


def run_prepare(data_root: str | Path | None, cache_dir: str | Path, settings: PrepareSettings, *,
                workers: int, vocal_channel: str = "speech", face_model: str | Path | None = None,
                clips: list[Clip] | None = None, dataset: str = "ravdess") -> dict:
    """Prepare every clip of a dataset folder (or the given clips) into the cache.

    Finished entries are kept; missing or unreadable ones are (re)built; temporary files of
    killed writers are removed first. The report is written atomically to
    ``<cache>/prepare-report.json`` and a summary is printed (for given ``clips``, only when
    some were missing).

    Args:
        data_root: dataset folder to index; unused when ``clips`` is given.
        cache_dir: cache root; entries go to ``<cache>/prepared/<settings key>/``.
        settings: preprocessing settings (``face_model_sha`` is filled in here).
        workers: processes; 1 prepares in this process.
        vocal_channel: "speech", "song" or "both", for indexing ``data_root``.
        face_model: BlazeFace model file; None for ``ensure_face_model``'s lookup.
        clips: clips to prepare instead of indexing ``data_root`` (RAVDESS or CREMA-D clips).
        dataset: what ``data_root`` holds (``fer.data.datasets``), for indexing it.

    Returns:
        ``{"prepared": int, "skipped": [{"file", "reason"}], "flagged": [{"clip", "reason"}]}``.
        ``prepared`` counts the clips of this run that have a valid entry afterwards, whether
        built now or reused from an earlier run; ``flagged`` lists them all too, so a re-run
        reports the same as the run that built the entries. ``skipped`` holds files the index
        rejected (unparseable names, ...) and files that could not be decoded.
    """
    settings, model = resolve_settings(settings, face_model)
    skipped = []
    indexed = clips is None
    if indexed:
        index = get_dataset(dataset).scan(data_root, vocal_channel)
        clips = index.clips
        skipped = [{"file": str(path), "reason": reason} for path, reason in index.problems]
    folder = settings_dir(Path(cache_dir), settings.key())
    remove_stale_temps(folder)
    flags: dict[str, list[str]] = {}
    todo = []
    for clip in clips:
        path = entry_path(Path(cache_dir), settings.key(), clip.clip_id)
        stored = _stored_flags(path)
        if stored is None:
            todo.append((clip, path))
        else:
            flags[clip.clip_id] = stored
    n_new = 0
    for outcome in _run(todo, settings, model, workers) if todo else []:
        if "reason" in outcome:
            skipped.append({"file": outcome["file"], "reason": outcome["reason"]})
        else:
            flags[outcome["clip"]] = outcome["flags"]
            n_new += 1
    report = {
        "prepared": len(flags),
        "skipped": sorted(skipped, key=lambda s: s["file"]),
        "flagged": [{"clip": cid, "reason": reason} for cid in sorted(flags) for reason in flags[cid]],
    }
    report_path = Path(cache_dir) / REPORT_NAME
    _write_report(report_path, report)
    if indexed or todo:  # a study's unit finding its clips all prepared has nothing to say
        _print_summary(report, n_new, folder, report_path)
    return report


def ensure_prepared(clips: list[Clip], cache_dir: str | Path, settings: PrepareSettings,
                    workers: int, face_model: str | Path | None = None) -> dict[str, Path]:
    """Prepare whichever of ``clips`` are missing from the cache; return the usable entries.

    Args:
        clips: the clips a study needs.
        cache_dir: cache root.
        settings: preprocessing settings.
        workers: processes for the clips still to prepare.
        face_model: BlazeFace model file; None for ``ensure_face_model``'s lookup.

    Returns:
        clip_id -> entry path, for every clip with a valid entry (flagged ones included: they
        hold a centre crop and are listed in the report). Clips that could not be prepared are
        absent; the report says why.
    """
    settings, model = resolve_settings(settings, face_model)
    run_prepare(None, cache_dir, settings, workers=workers, face_model=model, clips=clips)
    paths = {c.clip_id: entry_path(Path(cache_dir), settings.key(), c.clip_id) for c in clips}
    return {cid: path for cid, path in paths.items() if _stored_flags(path) is not None}
