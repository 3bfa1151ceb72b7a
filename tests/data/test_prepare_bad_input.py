"""`prepare` on bad input: every good clip is prepared, the report names each problem, exit 0
(1 with --strict), and nothing half-written is left in the cache.

Each case is a data root holding one good clip (Actor_01) and one bad file (Actor_02).
"""

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import cbook
from PIL import Image

from fer.data.cache import load_entry
from runner import cli

GOOD = "Actor_01/01-01-03-01-01-01-01.mp4"
BAD = "Actor_02/01-01-05-01-01-01-02.mp4"
SIZE, FPS, SECONDS, RATE = 160, 15, 1.0, 48000


def _face_frames(n: int) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8: Grace Hopper's head, drifting right a pixel per frame."""
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        photo = np.asarray(Image.open(fh).convert("RGB"))[60:460, 56:456]  # head and shoulders
    still = cv2.resize(photo, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(still, t, axis=1) for t in range(n)])


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def write_mp4(path: Path, frames: np.ndarray | None, audio: np.ndarray | None) -> Path:
    """H.264 + AAC mp4, either stream optional; index at the front so a cut file is readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        video = audio_stream = None
        if frames is not None:
            video = out.add_stream("libx264", rate=FPS)
            video.width, video.height, video.pix_fmt = SIZE, SIZE, "yuv420p"
        if audio is not None:
            audio_stream = out.add_stream("aac", rate=RATE)
            audio_stream.layout = "mono"
        for frame in frames if frames is not None else []:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if video is not None:
            out.mux(video.encode())
        for start in range(0, len(audio) if audio is not None else 0, 1024):
            chunk = av.AudioFrame.from_ndarray(audio[None, start:start + 1024], format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = RATE, start
            out.mux(audio_stream.encode(chunk))
        if audio_stream is not None:
            out.mux(audio_stream.encode())
    return path


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("good") / "clip.mp4", _face_frames(int(SECONDS * FPS)),
                     _tone(SECONDS))


# Writers of the bad files: (path to write, the good clip to derive it from).
def _zero_byte(path: Path, good: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _corrupt(path: Path, good: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())


def _no_video_stream(path: Path, good: Path) -> None:
    write_mp4(path, None, _tone(SECONDS))


def _no_audio_stream(path: Path, good: Path) -> None:
    write_mp4(path, _face_frames(int(SECONDS * FPS)), None)


def _no_face(path: Path, good: Path) -> None:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (int(SECONDS * FPS), SIZE, SIZE, 3), dtype=np.uint8)
    write_mp4(path, noise, _tone(SECONDS))


# (case, writer of the bad file, file name, expected "skipped" reason or None, expected flag)
CASES = [
    ("zero-byte", _zero_byte, BAD, "empty file (0 bytes)", None),
    ("truncated", _truncated, BAD, "truncated", None),
    ("corrupt", _corrupt, BAD, "corrupt or unreadable media", None),
    ("no-video-stream", _no_video_stream, BAD, "no video stream", None),
    ("no-audio-stream", _no_audio_stream, BAD, "no audio stream", None),
    ("no-face", _no_face, BAD, None, "no face detected on any of the 4 sampled frames"),
    ("unparseable-name", _zero_byte, "Actor_02/01-01-05-01-01-1-02.mp4", "repetition '1'", None),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """Shared by the cases, so the good clip is prepared once and reused afterwards."""
    return tmp_path_factory.mktemp("cache")


def _prepare(root: Path, cache: Path, face_model: Path, *extra: str):
    args = ["prepare", "--data-root", str(root), "--cache", str(cache), "--workers", "1",
            "--frames", "4", "--size", "64", "--audio-seconds", "1.0", "--face-model", str(face_model),
            *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("case, write_bad, bad_name, reason, flag", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_and_good_clips_prepared(tmp_path, good_clip, cache_dir, face_model,
                                                      case, write_bad, bad_name, reason, flag):
    root = tmp_path / "ravdess"
    (root / GOOD).parent.mkdir(parents=True)
    (root / GOOD).write_bytes(good_clip.read_bytes())
    (root / bad_name).parent.mkdir(parents=True)
    write_bad(root / bad_name, good_clip)

    result = _prepare(root, cache_dir, face_model)
    assert result.exit_code == 0, result.output
    report = json.loads((cache_dir / "prepare-report.json").read_text())
    if reason is not None:
        assert report["prepared"] == 1 and report["flagged"] == []
        assert len(report["skipped"]) == 1, report
        assert report["skipped"][0]["file"] == str(root / bad_name)
        assert reason in report["skipped"][0]["reason"]
    else:
        assert report["prepared"] == 2 and report["skipped"] == []
        assert [f["clip"] for f in report["flagged"]] == ["01-05-01-01-01-02"]
        assert flag in report["flagged"][0]["reason"]
    assert "skipped" in result.output and str(cache_dir / "prepare-report.json") in result.output

    entries = sorted((cache_dir / "prepared").glob("*/*"))
    assert all(p.suffix == ".npz" for p in entries), entries  # no temp file left behind
    good = load_entry(next(p for p in entries if p.name == "01-03-01-01-01-01.npz"))
    assert good.meta["face_detected"] == [True] * 4 and good.meta["flags"] == []
    assert good.audio.shape == (16000,)

    strict = _prepare(root, cache_dir, face_model, "--strict")
    assert strict.exit_code == 1, strict.output
    assert json.loads((cache_dir / "prepare-report.json").read_text()) == report


def test_clean_input_passes_strict(tmp_path, good_clip, cache_dir, face_model):
    root = tmp_path / "ravdess"
    (root / GOOD).parent.mkdir(parents=True)
    (root / GOOD).write_bytes(good_clip.read_bytes())
    result = _prepare(root, cache_dir, face_model, "--strict")
    assert result.exit_code == 0, result.output
    report = json.loads((cache_dir / "prepare-report.json").read_text())
    assert report == {"prepared": 1, "skipped": [], "flagged": []}
