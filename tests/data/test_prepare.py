"""prepare: frame sampling, crops and keypoints, audio length, the settings key, the cache.

Unit tests use a scripted detector; the end-to-end tests prepare a small synthetic RAVDESS
(built once per session) with the real BlazeFace model and check against the generator's
planted face boxes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fer.data import prepare as prep
from fer.data.cache import CacheError, entry_path, is_valid_entry, load_entry, save_entry, settings_dir
from fer.data.decode import sample_indices
from fer.data.face_model import MANUAL_STEPS, installed_face_model, sha256_of
from fer.data.faces import Face
from fer.data.ravdess import Clip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def face_model() -> Path:
    path = installed_face_model()
    if path is None:
        pytest.fail("BlazeFace model missing; tests never skip the face path.\n" + MANUAL_STEPS)
    return path


# ---------------------------------------------------------------- pieces


@pytest.mark.parametrize("n_frames, n, expected", [
    (100, 4, [12, 37, 62, 87]),  # centres of four spans of 25
    (10, 5, [1, 3, 5, 7, 9]),
    (3, 6, [0, 0, 1, 1, 2, 2]),  # fewer frames than asked: repeats, in order
    (1, 3, [0, 0, 0]),
])
def test_sample_indices_are_span_centres(n_frames, n, expected):
    assert sample_indices(n_frames, n).tolist() == expected


def test_audio_is_centre_cropped_or_padded_symmetrically():
    ramp = np.arange(10, dtype=np.float32)
    assert prep._fit_audio(ramp, 4).tolist() == [3, 4, 5, 6]
    assert prep._fit_audio(ramp, 14).tolist() == [0, 0] + list(range(10)) + [0, 0]
    assert prep._fit_audio(ramp, 13).tolist() == [0] + list(range(10)) + [0, 0]
    assert prep._fit_audio(ramp, 10).dtype == np.float32


def test_crop_square_pads_outside_the_frame_with_black():
    frame = np.zeros((20, 30, 3), np.uint8)
    frame[:, :, 0] = np.arange(30)[None, :]  # red = column index
    crop = prep.crop_square(frame, -5, 10, 20, 20)  # identity scale, half outside
    assert crop.shape == (20, 20, 3)
    assert (crop[:10, 5:, 0] == np.arange(15)[None, :]).all()  # rows 10..19, columns 0..14
    assert (crop[:, :5] == 0).all() and (crop[10:] == 0).all()


def test_fill_missing_interpolates_between_neighbours_and_holds_at_the_ends():
    values = np.array([[-1.0], [2.0], [-1.0], [6.0], [-1.0], [-1.0]], np.float32)  # -1: not found
    found = values[:, 0] >= 0
    assert prep._fill_missing(values, found)[:, 0].tolist() == [2, 2, 4, 6, 6, 6]


def test_settings_key_covers_every_setting():
    base = prep.PrepareSettings(face_model_sha="a" * 64)
    changes = {"frames": 8, "size": 112, "audio_seconds": 2.0, "sample_rate": 22050, "margin": 0.1,
               "min_confidence": 0.6, "face_model_sha": "b" * 64}
    assert set(changes) == set(prep.PrepareSettings.model_fields)  # a new field must be added here
    keys = {base.key()} | {base.model_copy(update={k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) + 1
    assert base.key() == prep.PrepareSettings(face_model_sha="a" * 64).key()  # stable
    with pytest.raises(ValueError, match="face_model_sha"):
        prep.PrepareSettings().key()


class ScriptedDetector:
    """Returns a given face (or None) per call, in order: the crop maths without MediaPipe."""

    def __init__(self, faces):
        self.faces = list(faces)

    def detect(self, frame):
        return self.faces.pop(0)


def _clip(tmp_path: Path, n_frames: int = 12, audio_seconds: float = 0.5) -> Clip:
    """A real little mp4 (plain grey frames, a tone) for prepare_clip to decode."""
    from test_prepare_bad_input import write_mp4

    frames = np.full((n_frames, 160, 160, 3), 90, np.uint8)
    t = np.arange(int(audio_seconds * 48000)) / 48000
    video = write_mp4(tmp_path / "Actor_03/01-01-04-02-01-02-03.mp4", frames,
                      (0.25 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    return Clip(clip_id="01-04-02-01-02-03", vocal_channel="speech", emotion=3, intensity=2,
                statement=1, repetition=2, actor=3, video_path=video, audio_path=video,
                audio_from_video=True)


def _face(x0, y0, side, score=0.9) -> Face:
    box = np.array([x0, y0, x0 + side, y0 + side], np.float32)
    layout = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.5, 0.75], [0.05, 0.45],
                       [0.95, 0.45]], np.float32)
    return Face(box=box, keypoints=box[:2] + layout * side, score=score)


def test_prepare_clip_crops_moves_keypoints_and_fills_gaps(tmp_path):
    settings = prep.PrepareSettings(frames=4, size=64, audio_seconds=1.0, margin=0.25,
                                    face_model_sha="0" * 64)
    faces = [_face(40, 40, 40), None, _face(60, 40, 40), _face(60, 40, 40)]
    entry = prep.prepare_clip(_clip(tmp_path), settings, ScriptedDetector(faces))
    # Face side 40 plus 25% margin each side: a 60-px square centred on the box, scaled to 64.
    squares = entry.meta["crop_squares"]
    assert squares[0] == [30, 30, 60] and squares[2] == [50, 30, 60]
    assert squares[1] == [40, 30, 60]  # the missing frame takes its neighbours' mean box
    assert entry.meta["face_detected"] == [True, False, True, True]
    scale = 64 / 60
    expected_right_eye = (np.array([40 + 0.3 * 40, 40 + 0.35 * 40]) - [30, 30]) * scale
    np.testing.assert_allclose(entry.keypoints[0, 0], expected_right_eye, atol=1e-4)
    # The face box spans 10..50 of the 60-px square in every frame: same crop coordinates.
    np.testing.assert_allclose(entry.keypoints, np.broadcast_to(entry.keypoints[0], (4, 6, 2)),
                               atol=1e-4)
    assert entry.frames.shape == (4, 64, 64, 3) and entry.frames.dtype == np.uint8
    assert abs(int(entry.frames[0, 32, 32, 0]) - 90) <= 3  # grey frame content inside the crop
    assert entry.audio.shape == (16000,)  # 0.5 s of audio padded to 1 s at 16 kHz
    assert np.abs(entry.audio[:3000]).max() == 0 and np.abs(entry.audio[6000:10000]).max() > 0.1
    assert entry.meta["flags"] == [] and entry.meta["frame_indices"] == [1, 4, 7, 10]
    assert entry.meta["clip"]["clip_id"] == "01-04-02-01-02-03"
    assert entry.meta["settings_key"] == settings.key()


def test_prepare_clip_without_any_face_uses_a_centre_box_and_flags(tmp_path):
    settings = prep.PrepareSettings(frames=3, size=32, audio_seconds=0.5, face_model_sha="0" * 64)
    entry = prep.prepare_clip(_clip(tmp_path), settings, ScriptedDetector([None] * 3))
    assert entry.meta["face_detected"] == [False] * 3
    assert entry.meta["face_boxes"][0] == [40.0, 40.0, 120.0, 120.0]  # half the 160-px frame
    assert len(entry.meta["flags"]) == 1 and "no face detected" in entry.meta["flags"][0]
    assert ((entry.keypoints >= 0) & (entry.keypoints <= 32)).all()


def test_cache_roundtrip_and_corrupt_entries_are_named(tmp_path):
    path = entry_path(tmp_path, "k", "01-01-01-01-01-01")
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    keypoints = np.linspace(0, 3, 24, dtype=np.float32).reshape(2, 6, 2)
    audio = np.linspace(-1, 1, 7, dtype=np.float32)
    save_entry(path, frames=frames, keypoints=keypoints, audio=audio, meta={"flags": ["x"]})
    entry = load_entry(path)
    assert (entry.frames == frames).all() and (entry.keypoints == keypoints).all()
    assert (entry.audio == audio).all() and entry.meta == {"flags": ["x"]}
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(CacheError, match="keypoints must be float32"):
        save_entry(path, frames=frames, keypoints=keypoints[:1], audio=audio, meta={})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CacheError, match=f"{path}: corrupt cache entry"):
        load_entry(path)
    assert not is_valid_entry(path) and prep._stored_flags(path) is None
