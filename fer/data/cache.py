"""The prepared-clip cache: one ``.npz`` file per clip, written atomically, validated on load.

Layout: ``<cache>/prepared/<settings_key>/<clip_id>.npz``. The settings key is a hash of every
preprocessing setting, so a changed setting never reads a stale entry. Each file holds
``frames`` uint8 (T, H, W, 3), ``keypoints`` float32 (T, 6, 2) in crop pixels (BlazeFace order:
right eye, left eye, nose tip, mouth centre, right ear, left ear), ``audio`` float32 (L,) mono, and
``meta``, a JSON string (clip fields, face boxes, flags, settings).

A file is first written under a temporary name in the same folder and then renamed over the final
name (:mod:`fer.atomic`), so a reader never sees a half-written entry and a killed writer leaves
only a temporary file, which :func:`fer.atomic.remove_stale_temps` clears.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.atomic import atomic_open

N_KEYPOINTS = 6
_ARRAYS = ("frames", "keypoints", "audio", "meta")


class CacheError(ValueError):
    """A cache entry is missing, corrupt or incomplete; the message names the file."""


@dataclass(frozen=True)
class PreparedClip:
    """One prepared clip as stored in the cache.

    Attributes:
        frames: uint8 (T, H, W, 3) square face crops, RGB.
        keypoints: float32 (T, 6, 2) BlazeFace keypoints (x, y) in crop pixels.
        audio: float32 (L,) mono waveform at the prepared sample rate.
        meta: clip fields, face boxes, flags and preprocessing settings.
    """

    frames: np.ndarray
    keypoints: np.ndarray
    audio: np.ndarray
    meta: dict


def settings_dir(cache_dir: Path, settings_key: str) -> Path:
    """``<cache>/prepared/<settings_key>``: the folder of every entry made with those settings."""
    return Path(cache_dir) / "prepared" / settings_key


def entry_path(cache_dir: Path, settings_key: str, clip_id: str) -> Path:
    """Where the entry for one clip under one set of preprocessing settings lives.

    Args:
        cache_dir: cache root (``FER_CACHE_DIR`` or ``~/.cache/fer``).
        settings_key: short hash of the preprocessing settings (``PrepareSettings.key()``).
        clip_id: RAVDESS clip id, e.g. ``"01-03-02-01-01-05"``.

    Returns:
        ``<cache>/prepared/<settings_key>/<clip_id>.npz``.
    """
    return settings_dir(cache_dir, settings_key) / f"{clip_id}.npz"


def _check_arrays(frames: np.ndarray, keypoints: np.ndarray, audio: np.ndarray) -> str | None:
    """Return what is wrong with the arrays of an entry, or None when they are consistent."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        return f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}"
    if frames.shape[0] == 0:
        return "frames is empty (T = 0)"
    if keypoints.dtype != np.float32 or keypoints.shape != (frames.shape[0], N_KEYPOINTS, 2):
        return (f"keypoints must be float32 ({frames.shape[0]}, {N_KEYPOINTS}, 2), "
                f"got {keypoints.dtype} {keypoints.shape}")
    if audio.dtype != np.float32 or audio.ndim != 1 or audio.shape[0] == 0:
        return f"audio must be non-empty float32 (L,), got {audio.dtype} {audio.shape}"
    if not (np.isfinite(keypoints).all() and np.isfinite(audio).all()):
        return "keypoints or audio contain NaN or inf"
    return None


def save_entry(path: Path, *, frames: np.ndarray, keypoints: np.ndarray, audio: np.ndarray,
               meta: dict) -> None:
    """Write one entry atomically (see :mod:`fer.atomic`).

    Args:
        path: final entry path (from :func:`entry_path`).
        frames: uint8 (T, H, W, 3).
        keypoints: float32 (T, 6, 2), crop pixels.
        audio: float32 (L,).
        meta: JSON-serialisable metadata.

    Raises:
        CacheError: when the arrays are inconsistent (nothing is written).
    """
    path = Path(path)
    problem = _check_arrays(frames, keypoints, audio)
    if problem:
        raise CacheError(f"{path}: refusing to write entry: {problem}")
    meta_json = json.dumps(meta, sort_keys=True)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, frames=frames, keypoints=keypoints, audio=audio, meta=np.array(meta_json))


def load_entry(path: Path) -> PreparedClip:
    """Read and validate one entry.

    Args:
        path: entry path.

    Returns:
        The stored :class:`PreparedClip`.

    Raises:
        CacheError: naming the file, when it is missing, unreadable, incomplete or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: cache entry does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _ARRAYS if k not in npz.files]
            if missing:
                raise CacheError(f"{path}: incomplete cache entry, missing {missing}")
            frames, keypoints, audio = npz["frames"], npz["keypoints"], npz["audio"]
            meta = json.loads(str(npz["meta"]))
    except CacheError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: corrupt cache entry ({type(exc).__name__}: {exc})") from exc
    problem = _check_arrays(frames, keypoints, audio)
    if problem:
        raise CacheError(f"{path}: invalid cache entry: {problem}")
    if not isinstance(meta, dict):
        raise CacheError(f"{path}: invalid cache entry: meta is not a JSON object")
    return PreparedClip(frames=frames, keypoints=keypoints, audio=audio, meta=meta)


def is_valid_entry(path: Path) -> bool:
    """True when ``path`` holds a complete, readable entry."""
    try:
        load_entry(path)
    except CacheError:
        return False
    return True
