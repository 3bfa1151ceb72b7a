"""`prepare --workers 2` on a folder mixing good clips with every kind of bad file: the pool reports
each problem and prepares the good clips exactly as one worker does (same report, same arrays).

The bad files are those of test_prepare_bad_input.py (one worker, one bad file at a time), here
all in one data root, so that the two worker processes meet them side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer.data.cache import load_entry
from test_prepare_bad_input import CASES, FPS, SECONDS, _face_frames, _tone, write_mp4

ROOT = Path(__file__).resolve().parents[2]
GOOD = ["Actor_01/01-01-03-01-01-01-01.mp4", "Actor_01/01-01-04-01-01-01-01.mp4",
        "Actor_03/01-01-03-01-01-01-03.mp4"]


def _bad_name(i: int, name: str) -> str:
    """Each parseable bad file gets its own emotion code (a distinct clip of Actor_02)."""
    if name.endswith("-1-02.mp4"):  # the unparseable name stays as it is
        return name
    return f"Actor_02/01-01-{i + 2:02d}-01-01-01-02.mp4"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The data root and, per bad case, the file written for it."""
    root = tmp_path_factory.mktemp("mixed") / "ravdess"
    good = write_mp4(root / GOOD[0], _face_frames(int(SECONDS * FPS)), _tone(SECONDS))
    for name in GOOD[1:]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(good.read_bytes())
    files = {}
    for i, (case, write_bad, bad_name, _, _) in enumerate(CASES):
        path = root / _bad_name(i, bad_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bad(path, good)
        files[case] = str(path)
    return root, files


def _prepare(root: Path, cache: Path, face_model: Path, workers: int, *extra: str):
    cmd = [sys.executable, str(ROOT / "runner.py"), "prepare", "--data-root", str(root), "--cache", str(cache),
           "--workers", str(workers), "--frames", "4", "--size", "64", "--audio-seconds", "1.0",
           "--face-model", str(face_model), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prepared(data_root, face_model, tmp_path_factory) -> dict[int, Path]:
    """workers -> cache folder, after one `prepare` run each."""
    caches = {}
    for workers in (1, 2):
        cache = tmp_path_factory.mktemp(f"cache-{workers}")
        done = _prepare(data_root[0], cache, face_model, workers)
        assert done.returncode == 0, done.stdout + done.stderr
        caches[workers] = cache
    return caches


def _report(cache: Path) -> dict:
    return json.loads((cache / "prepare-report.json").read_text())


def test_two_workers_report_every_bad_file_as_one_worker_does(data_root, prepared):
    _, files = data_root
    report = _report(prepared[2])
    assert report == _report(prepared[1])
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    for case, _, _, reason, flag in CASES:
        if reason is not None:
            assert reason in skipped.pop(files[case]), case
    assert skipped == {}, "nothing else skipped"
    # The three good clips and the faceless one (a flagged centre crop) are prepared.
    assert report["prepared"] == 4
    no_face = next(c for c in CASES if c[0] == "no-face")
    assert [(f["clip"], no_face[4] in f["reason"]) for f in report["flagged"]] == [
        (Path(files["no-face"]).name[3:-4], True)]


def test_two_workers_prepare_the_good_clips_as_one_worker_does(prepared):
    entries = {w: sorted((c / "prepared").glob("*/*")) for w, c in prepared.items()}
    names = [p.name for p in entries[1]]
    assert names == [p.name for p in entries[2]]
    assert all(p.suffix == ".npz" for p in entries[1] + entries[2]), "no temp file left behind"
    assert len(names) == 4
    for one, two in zip(entries[1], entries[2]):
        a, b = load_entry(one), load_entry(two)
        assert a.meta == b.meta, one.name
        for field in ("frames", "keypoints", "audio"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (one.name, field)
    good = load_entry(next(p for p in entries[2] if p.name == "01-03-01-01-01-03.npz"))
    assert good.meta["face_detected"] == [True] * 4 and good.audio.shape == (16000,)


def test_two_workers_strict_exits_1_and_a_rerun_reports_the_same(data_root, prepared, face_model):
    strict = _prepare(data_root[0], prepared[2], face_model, 2, "--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "skipped" in strict.stdout and "already in the cache" in strict.stdout
    assert _report(prepared[2]) == _report(prepared[1])
