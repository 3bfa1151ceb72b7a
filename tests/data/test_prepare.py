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
from fer.data.face_model import sha256_of
from fer.data.faces import Face
from fer.data.ravdess import Clip

ROOT = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------- end to end on synthetic RAVDESS

SYNTH = {"actors": 2, "clips_per_class": 1, "seconds": 1.0, "fps": 15, "size": 160, "seed": 0}
SETTINGS = prep.PrepareSettings(frames=8, size=96, audio_seconds=1.0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """16 clips (2 actors x 8 emotions) with the generator's manifest."""
    from fer.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, **SYNTH)
    return root


@pytest.fixture(scope="session")
def manifest(synth_root) -> dict:
    return json.loads((synth_root / "synth-manifest.json").read_text())["clips"]


@pytest.fixture(scope="session")
def prepared(synth_root, face_model, tmp_path_factory):
    """(cache dir, report) of one prepare run over the synthetic set, two workers."""
    cache = tmp_path_factory.mktemp("cache")
    report = prep.run_prepare(synth_root, cache, SETTINGS, workers=2, face_model=face_model)
    return cache, report


def _key(face_model: Path, **changes) -> str:
    return SETTINGS.model_copy(update={"face_model_sha": sha256_of(face_model), **changes}).key()


def _entries(cache: Path, key: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted(settings_dir(cache, key).glob("*.npz"))}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_faces_are_found_where_the_generator_put_them(prepared, manifest, face_model):
    cache, report = prepared
    assert report == {"prepared": 16, "skipped": [], "flagged": []}
    entries = _entries(cache, _key(face_model))
    assert sorted(entries) == sorted(manifest)
    detected, ious, kp_errors = [], [], []
    for clip_id, path in entries.items():
        entry, truth = load_entry(path), manifest[clip_id]
        detected += entry.meta["face_detected"]
        ious += [_iou(box, truth["face_box"]) for box, found
                 in zip(entry.meta["face_boxes"], entry.meta["face_detected"]) if found]
        # The generator's keypoints (neutral face, frame pixels) through each frame's crop.
        squares = np.array(entry.meta["crop_squares"], np.float64)  # (T, 3) x0, y0, side
        expected = (np.array(truth["keypoints"])[None] - squares[:, None, :2]) * 96 / squares[:, None, 2:]
        kp_errors.append(np.abs(expected - entry.keypoints).max() / 96)
        assert ((entry.keypoints >= 0) & (entry.keypoints <= 96)).all(), clip_id
        assert entry.frames.shape == (8, 96, 96, 3) and entry.frames.dtype == np.uint8
    print(f"faces on {np.mean(detected):.1%} of frames; IoU median {np.median(ious):.2f} "
          f"min {min(ious):.2f}; keypoint error max {max(kp_errors):.3f} mean {np.mean(kp_errors):.3f}")
    assert np.mean(detected) >= 0.95
    # The planted box is the neutral face; expressions move the jaw and brows, so a frame's box
    # may differ a little, never a lot.
    assert np.median(ious) > 0.8 and min(ious) > 0.5
    # Keypoints: within 12% of the crop of the neutral ones (mouth and brows move with emotion).
    assert max(kp_errors) < 0.12 and np.mean(kp_errors) < 0.06


def test_audio_has_the_rate_and_length_asked_for(prepared, manifest, face_model):
    cache, _ = prepared
    rate = SETTINGS.sample_rate
    for clip_id, path in _entries(cache, _key(face_model)).items():
        entry, truth = load_entry(path), manifest[clip_id]
        assert entry.audio.shape == (rate,) and entry.audio.dtype == np.float32
        # Decoded length before fitting: the clip's 1 s at 16 kHz (+ AAC priming).
        assert abs(entry.meta["audio_samples"] - rate) < 0.03 * rate
        # Speech sits where the generator put it: loud inside, quiet before and after.
        offset = (entry.meta["audio_samples"] - len(entry.audio)) // 2
        start, end = (int(s * rate) - offset for s in truth["voice_cues"]["speech_s"])
        rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
        inside = rms(entry.audio[start + 500:end - 500])
        assert inside > 5 * rms(entry.audio[:start - 500]), clip_id
        assert inside > 5 * rms(entry.audio[end + 800:]), clip_id


def test_rerun_does_no_work(prepared, synth_root, face_model, monkeypatch):
    cache, report = prepared
    entries = _entries(cache, _key(face_model))
    mtimes = {k: p.stat().st_mtime_ns for k, p in entries.items()}
    calls = []
    monkeypatch.setattr(prep, "prepare_clip", lambda *args: calls.append(args))
    again = prep.run_prepare(synth_root, cache, SETTINGS, workers=1, face_model=face_model)
    assert calls == [] and again == report
    assert {k: p.stat().st_mtime_ns for k, p in entries.items()} == mtimes


@pytest.mark.parametrize("change", [{"frames": 4}, {"size": 64}])
def test_changed_setting_builds_new_entries_and_keeps_the_old(prepared, synth_root, face_model,
                                                              change):
    cache, _ = prepared
    old = _entries(cache, _key(face_model))
    mtimes = {k: p.stat().st_mtime_ns for k, p in old.items()}
    clips = prep.scan_dataset(synth_root).clips[:3]
    report = prep.run_prepare(None, cache, SETTINGS.model_copy(update=change), workers=1,
                              face_model=face_model, clips=clips)
    assert report == {"prepared": 3, "skipped": [], "flagged": []}
    new = _entries(cache, _key(face_model, **change))
    assert sorted(new) == [c.clip_id for c in clips]
    frames, size = change.get("frames", 8), change.get("size", 96)
    assert load_entry(new[clips[0].clip_id]).frames.shape == (frames, size, size, 3)
    assert {k: p.stat().st_mtime_ns for k, p in old.items()} == mtimes
    assert all(is_valid_entry(p) for p in old.values())


def test_ensure_prepared_returns_entries_of_good_clips(prepared, synth_root, face_model, tmp_path):
    cache, _ = prepared
    clips = prep.scan_dataset(synth_root).clips
    broken = tmp_path / "01-01-01-01-01-09.mp4"
    broken.write_bytes(b"")
    missing = Clip(clip_id="01-01-01-01-01-09", vocal_channel="speech", emotion=0, intensity=1,
                   statement=1, repetition=1, actor=9, video_path=broken, audio_path=broken,
                   audio_from_video=True)
    paths = prep.ensure_prepared(clips + [missing], cache, SETTINGS, workers=1, face_model=face_model)
    assert paths == _entries(cache, _key(face_model))
    assert len(paths) == 16 and missing.clip_id not in paths


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_prepare_resumes_to_a_complete_cache(synth_root, manifest, face_model, tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "runner.py", "prepare", "--data-root", str(synth_root), "--cache",
            str(cache), "--frames", "6", "--size", "80", "--audio-seconds", "1.0",
            "--face-model", str(face_model)]
    proc = subprocess.Popen([*args, "--workers", "2"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = settings_dir(cache, _key(face_model, frames=6, size=80))
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.npz"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert 3 <= len(done_before) < 16, "the kill must land mid-run"
    assert all(is_valid_entry(folder / name) for name in done_before)  # atomic: no torn entry
    (folder / f".01-01-01-01-01-01.npz.{_dead_pid()}.abc123.tmp").write_bytes(b"torn")

    rerun = subprocess.run([*args, "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads((cache / "prepare-report.json").read_text())
    assert report == {"prepared": 16, "skipped": [], "flagged": []}
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}.npz" for c in manifest)
    assert all(is_valid_entry(p) for p in folder.iterdir())
    assert {n: (folder / n).stat().st_mtime_ns for n in done_before} == done_before  # resumed
    assert f"{16 - len(done_before)} new" in rerun.stdout
