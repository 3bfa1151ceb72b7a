"""Find, fetch and verify the BlazeFace short-range face-detector model (a ~230 KB .tflite).

Lookup order (first hit wins):

1. a configured path (argument, else ``$FER_FACE_MODEL``): used as given, it must exist;
2. the model cache ``~/.cache/fer/models/``, when the file's sha256 checks out;
3. the official MediaPipe download (short timeout), accepted when it loads in ``FaceDetector``;
4. the same network as shipped inside the ``mediapipe==0.10.21`` wheel from PyPI, fetched with
   ``pip download`` and checked against :data:`WHEEL_MODEL_SHA256`.

Sources 3 and 4 are written atomically into the cache. The official float16 file has no
published checksum, so it is pinned on first download: its sha256 goes into a ``.sha256`` file
beside it, and later cache hits are checked against that.

``python -m fer.data.face_model`` fetches the model and prints its path (``make setup``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from fer.atomic import atomic_write_bytes

OFFICIAL_URL = ("https://storage.googleapis.com/mediapipe-models/face_detector/"
                "blaze_face_short_range/float16/1/blaze_face_short_range.tflite")
WHEEL_SPEC = "mediapipe==0.10.21"
WHEEL_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
WHEEL_MODEL_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
MODEL_NAME = "blaze_face_short_range.tflite"
ENV_VAR = "FER_FACE_MODEL"
# When the running interpreter has no wheel of that release, ask pip for one that exists: the
# .tflite inside is the same in every platform wheel.
_FALLBACK_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                      "--implementation", "cp", "--abi", "cp311")

MANUAL_STEPS = f"""\
To install it by hand, do one of:
  - download {OFFICIAL_URL}
    and point ${ENV_VAR} (or --face-model) at the file;
  - python -m pip download --no-deps --only-binary=:all: {WHEEL_SPEC} -d /tmp/mp
    unzip -p /tmp/mp/mediapipe-*.whl {WHEEL_MEMBER} > ~/.cache/fer/models/{MODEL_NAME}
    (its sha256 must be {WHEEL_MODEL_SHA256});
then run `python -m fer.data.face_model` (or `make face-model`) to check."""


class FaceModelError(RuntimeError):
    """The face-detector model could not be found or fetched; the message says what to do."""


def default_model_dir() -> Path:
    """``~/.cache/fer/models``: shared by every prepared-clip cache of this user."""
    return Path.home() / ".cache" / "fer" / "models"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cached_ok(path: Path) -> bool:
    """A cached model is trusted when its sha256 is the wheel's or the one pinned beside it."""
    if not path.is_file():
        return False
    digest = sha256_of(path)
    pinned = path.with_name(path.name + ".sha256")
    known = {WHEEL_MODEL_SHA256}
    if pinned.is_file():
        known.add(pinned.read_text().strip())
    return digest in known


def _loads_in_detector(data: bytes) -> bool:
    """True when MediaPipe's FaceDetector accepts these model bytes."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=data),
                                         running_mode=vision.RunningMode.IMAGE)
    try:
        detector = vision.FaceDetector.create_from_options(options)
    except (RuntimeError, ValueError):
        return False
    detector.close()
    return True


def installed_face_model(model_dir: Path | None = None) -> Path | None:
    """The model already on this machine, without any download.

    Args:
        model_dir: the model cache (default ``~/.cache/fer/models``).

    Returns:
        ``$FER_FACE_MODEL`` when set and present, else the cached model when its checksum is
        right, else None.
    """
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    cached = Path(model_dir or default_model_dir()) / MODEL_NAME
    return cached if _cached_ok(cached) else None


def fetch_official(timeout: float = 5.0) -> bytes:
    """Download the official float16 model.

    Raises:
        FaceModelError: when the download fails or the bytes do not load as a face detector.
    """
    try:
        with urllib.request.urlopen(OFFICIAL_URL, timeout=timeout) as resp:
            data = resp.read()
    except OSError as exc:
        raise FaceModelError(f"official download failed: {exc}") from exc
    if not _loads_in_detector(data):
        raise FaceModelError(f"official download ({len(data)} bytes) does not load in FaceDetector")
    return data


def extract_from_wheel(wheel: Path) -> bytes:
    """Read the short-range model out of a mediapipe wheel and check its sha256.

    Raises:
        FaceModelError: naming the wheel when the member is missing or its checksum differs.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FaceModelError(f"{wheel}: cannot read {WHEEL_MEMBER}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_MODEL_SHA256:
        raise FaceModelError(f"{wheel}: {WHEEL_MEMBER} has sha256 {digest}, "
                             f"expected {WHEEL_MODEL_SHA256}")
    return data


def fetch_from_wheel(timeout: float = 600.0) -> bytes:
    """``pip download`` the mediapipe wheel into a temporary folder and extract the model.

    Raises:
        FaceModelError: when pip fails for both the native and the fallback platform.
    """
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", WHEEL_SPEC]
    errors = []
    with tempfile.TemporaryDirectory(prefix="fer-mediapipe-") as tmp:
        for extra in ((), _FALLBACK_PLATFORM):
            cmd = [*base, *extra, "-d", tmp]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                errors.append(f"{' '.join(cmd)}: timed out after {timeout:.0f} s")
                continue
            wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
            if proc.returncode == 0 and wheels:
                return extract_from_wheel(wheels[0])
            errors.append(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    raise FaceModelError("pip download of the wheel failed:\n  " + "\n  ".join(errors))


def ensure_face_model(path: str | Path | None = None, *, model_dir: Path | None = None,
                      timeout: float = 5.0) -> Path:
    """Return a verified BlazeFace short-range model file, fetching it when needed.

    Args:
        path: a configured model file; when None, ``$FER_FACE_MODEL`` if set.
        model_dir: the model cache (default ``~/.cache/fer/models``).
        timeout: seconds allowed for the official download.

    Returns:
        The model path.

    Raises:
        FaceModelError: when a configured path does not exist, or every source failed; the
            message lists each failure and the manual steps.
    """
    configured = path or os.environ.get(ENV_VAR)
    if configured:
        configured = Path(configured).expanduser()
        if not configured.is_file():
            origin = "face model path" if path else f"${ENV_VAR}"
            raise FaceModelError(f"{origin} {configured} does not exist.\n{MANUAL_STEPS}")
        return configured
    cached = Path(model_dir or default_model_dir()) / MODEL_NAME
    if _cached_ok(cached):
        return cached
    failures = []
    if cached.is_file():
        failures.append(f"cached {cached} has an unknown sha256 {sha256_of(cached)}")
    try:
        data = fetch_official(timeout)
        atomic_write_bytes(cached.with_name(cached.name + ".sha256"),
                      hashlib.sha256(data).hexdigest().encode())
        atomic_write_bytes(cached, data)
        return cached
    except FaceModelError as exc:
        failures.append(str(exc))
    try:
        atomic_write_bytes(cached, fetch_from_wheel())
        return cached
    except FaceModelError as exc:
        failures.append(str(exc))
    raise FaceModelError("no BlazeFace short-range model could be found or fetched:\n  - "
                         + "\n  - ".join(failures) + "\n" + MANUAL_STEPS)


def main() -> int:
    try:
        print(ensure_face_model())
    except FaceModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
