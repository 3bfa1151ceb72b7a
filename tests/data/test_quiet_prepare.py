"""Quiet by default: a prepare run prints its progress and summary, not MediaPipe's native log
lines (LiteRT, XNNPACK, glog), which go to ``mediapipe.log`` beside the face model; ``-v`` shows
them. Real MediaPipe in spawned workers, on a small synthetic RAVDESS. transformers' notice that
``causal_conv1d`` is missing (LFM2 fusion) is one line on a GPU and nothing on CPU."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE_LINES = ("environment.cc", "LiteRT", "XNNPACK", "inference_runner_litert", "InitGoogle", "W0000")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from fer.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, actors=2, clips_per_class=1, seconds=1.0, fps=10, size=96, seed=0)
    return root


def _prepare(synth_root: Path, model: Path, cache: Path, *flags: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "runner.py", *flags, "prepare", "--data-root", str(synth_root), "--cache",
            str(cache), "--frames", "4", "--size", "32", "--audio-seconds", "1", "--face-model", str(model),
            "--workers", "2"]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def own_model(face_model, tmp_path) -> Path:
    """A copy of the detector in a fresh folder, so its ``mediapipe.log`` belongs to this test."""
    model = tmp_path / "models" / face_model.name
    model.parent.mkdir()
    shutil.copyfile(face_model, model)
    return model


def test_prepare_output_holds_progress_and_summary_only(synth_root, own_model, tmp_path):
    proc = _prepare(synth_root, own_model, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "prepared 16 clips (16 new" in proc.stdout
    assert [w for w in NATIVE_LINES if w in output] == [], output
    assert "causal_conv1d" not in output
    log = (own_model.parent / "mediapipe.log").read_text()
    # Both workers created a detector: their lines are kept, in the log.
    assert log.count("Creating LiteRT environment") == 2, log


def test_verbose_shows_the_native_lines(synth_root, own_model, tmp_path):
    proc = _prepare(synth_root, own_model, tmp_path / "cache", "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Creating LiteRT environment") == 2, proc.stderr
    assert not (own_model.parent / "mediapipe.log").exists()


def _record(message: str):
    import logging

    return logging.LogRecord("transformers.integrations.hub_kernels", logging.WARNING, __file__, 1, message,
                             None, None)


FALLBACK = ("`causal_conv1d_fn` is falling back to its reference PyTorch implementation because "
            "`causal_conv1d` is not installed.")


@pytest.mark.parametrize("gpu", [False, True])
def test_short_conv_notice_is_one_line_on_gpu_and_silent_on_cpu(gpu, monkeypatch):
    """transformers' ``causal_conv1d`` fallback notice (one per kernel function): nothing on CPU,
    where the package cannot help; on a GPU one line naming the package, once per process."""
    import logging

    import torch

    from fer.models import fusion

    monkeypatch.delenv("FER_VERBOSE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    cfg = fusion.FusionConfig(pretrained=None, init="random", width=32, heads=2, kv_heads=1, ffn_dim=64,
                              layers=1)
    fusion.build_fusion(cfg, audio_dim=8, visual_dim=8)
    installed = [f for f in logging.getLogger("transformers.integrations.hub_kernels").filters
                 if isinstance(f, fusion._ShortConvNotice)]
    assert len(installed) == 1  # however often fusion is built
    notice = fusion._ShortConvNotice()
    first, second = _record(FALLBACK), _record(FALLBACK.replace("_fn", "_update"))
    assert [notice.filter(first), notice.filter(second)] == [gpu, False]
    if gpu:
        assert first.getMessage() == fusion.SHORT_CONV_NOTICE and "pip install causal-conv1d" in first.getMessage()
    assert notice.filter(_record("another transformers warning"))  # the rest passes


def test_verbose_keeps_transformers_own_notice(monkeypatch):
    from fer.models import fusion

    monkeypatch.setenv("FER_VERBOSE", "1")
    record = _record(FALLBACK)
    assert fusion._ShortConvNotice().filter(record) and record.getMessage() == FALLBACK


def test_a_units_prepare_is_silent_when_its_clips_are_all_in_the_cache(synth_root, face_model, tmp_path, capsys):
    from fer.data.prepare import PrepareSettings, ensure_prepared
    from fer.data.ravdess import scan_dataset

    clips = scan_dataset(synth_root).clips[:2]
    settings = PrepareSettings(frames=2, size=32, audio_seconds=1.0)
    first = ensure_prepared(clips, tmp_path / "cache", settings, workers=1, face_model=face_model)
    assert "prepared 2 clips (2 new, 0 already in the cache)" in capsys.readouterr().out
    again = ensure_prepared(clips, tmp_path / "cache", settings, workers=1, face_model=face_model)
    assert again == first and capsys.readouterr().out == ""
