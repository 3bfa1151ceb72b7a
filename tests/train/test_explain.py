"""predict --explain: a figure per predicted clip (PNG and PDF), none for a failed one, the data
behind it keeps k patches per frame, and the same clips give the same PNG bytes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def test_videos(recorded_run, synth_data):
    """Two of the recorded unit's test clips."""
    from fer.data.ravdess import index_clips

    local = recorded_run.client.download_artifacts(recorded_run.run_id, "predictions_test.csv")
    with open(local) as fh:
        rows = list(csv.DictReader(fh))
    videos = {c.clip_id: c.video_path for c in index_clips(synth_data)}
    return [videos[r["clip_id"]] for r in rows[:2]]


def _explain(recorded_run, videos, out: Path, cache: Path):
    from click.testing import CliRunner

    import runner

    args = ["predict", *map(str, videos), "--run", recorded_run.run_id, "--tracking-uri",
            recorded_run.client.tracking_uri, "--cache", str(cache), "--json", "--explain", str(out)]
    return CliRunner().invoke(runner.cli, args, catch_exceptions=False)


def test_explain_writes_a_figure_per_predicted_clip_and_none_for_a_failed_one(recorded_run, test_videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    result = _explain(recorded_run, [*test_videos, broken], tmp_path / "explain", tmp_path / "cache")
    assert result.exit_code == 1, result.output  # the broken clip fails, the others are predicted
    clips = json.loads(result.stdout)["clips"]
    assert [c["error"] is None for c in clips] == [True, True, False]
    names = sorted(p.name for p in (tmp_path / "explain").iterdir())
    stems = [Path(v).stem for v in test_videos]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("pdf", "png"))
    for s in stems:
        assert (tmp_path / "explain" / f"{s}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "explain" / f"{s}.pdf").read_bytes()[:5] == b"%PDF-"


def test_explain_png_bytes_repeat(recorded_run, test_videos, tmp_path):
    first = _explain(recorded_run, test_videos[:1], tmp_path / "a", tmp_path / "cache")
    second = _explain(recorded_run, test_videos[:1], tmp_path / "b", tmp_path / "cache")
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    stem = Path(test_videos[0]).stem
    assert (tmp_path / "a" / f"{stem}.png").read_bytes() == (tmp_path / "b" / f"{stem}.png").read_bytes()


def test_explanation_keeps_k_patches_per_frame_as_the_model_does(recorded_run, test_videos, tmp_path):
    from fer.inference import load_models, predict_files
    from fer.data.dataset import audio_length
    from fer.models.melspec import valid_mel_frames

    loaded = load_models([recorded_run.run_id], recorded_run.client.tracking_uri, tmp_path / "cache")
    clips = predict_files(test_videos, loaded, explain=True)
    cfg = loaded[0].cfg
    k, frames = cfg.model.visual.roi.k, cfg.data.frames
    grid = loaded[0].model.visual_encoder.grid
    assert k < grid[0] * grid[1]  # a real compression, so which patches matters
    for clip in clips:
        ex = clip.explanation
        assert ex.kept.shape == (frames, k)
        assert all(len(np.unique(row)) == k for row in ex.kept)
        assert (np.diff(ex.kept, axis=1) > 0).all()  # raster order
        assert ex.prior is not None and ex.prior.shape == (frames, grid[0] * grid[1])
        assert ex.pooling == "attention"  # every segment's weights sum to 1 over its frames
        np.testing.assert_allclose(ex.pooling_weights.sum(1), 1.0, atol=1e-5)
        n_mels = loaded[0].model.audio_encoder.melspec.filters.shape[0]
        assert ex.mel.shape == (valid_mel_frames(audio_length(cfg.data), cfg.data.sample_rate), n_mels)
        assert clip.probs is not None and abs(sum(clip.probs.values()) - 1) < 1e-5


def test_kept_patches_are_the_tokens_the_model_passed_on(recorded_run, prepared_cache, tmp_path):
    """The ROI output's first k tokens per frame are the input tokens at the explained indices."""
    import torch

    from fer.data.dataset import PreparedClipDataset, collate
    from fer.explain import explain_clip
    from fer.inference import load_models

    loaded = load_models([recorded_run.run_id], recorded_run.client.tracking_uri, tmp_path / "cache")[0]
    entry = sorted(prepared_cache.rglob("*.npz"))[0]
    ex = explain_clip(loaded, entry)
    seen = {}
    hook = loaded.model.roi.register_forward_hook(lambda mod, args, out: seen.update(tokens=args[0], out=out))
    batch = collate([PreparedClipDataset([entry], loaded.cfg.data, train=False)[0]])
    with torch.no_grad():
        loaded.model.eval()(batch)
    hook.remove()
    tokens, out = seen["tokens"][0], seen["out"][0]  # (T, N, D), (T, k + g, D)
    k = ex.kept.shape[1]
    for t, index in enumerate(ex.kept):
        torch.testing.assert_close(out[t, :k], tokens[t, torch.from_numpy(index)], rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["max", "learnable"])
def test_figure_of_a_model_without_frame_weights_or_visual_branch(pooling, tmp_path):
    """An audio-only model with a pooling that has no frame weights still gets a figure, saying so."""
    from analysis.explain import explain_figure
    from analysis.files import save_figure
    from fer.explain import POOLING_NOTES, Explanation

    rng = np.random.default_rng(0)
    ex = Explanation(frames=rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
                     keypoints=rng.uniform(0, 32, (4, 6, 2)).astype(np.float32),
                     face_boxes=np.tile(np.float32([4, 4, 28, 28]), (4, 1)), face_detected=np.ones(4, bool),
                     mel=rng.normal(size=(200, 80)).astype(np.float32), mel_hop_s=0.01, pooling=pooling,
                     audio_frame_s=0.08)
    fig = explain_figure(ex, {"happy": 0.7, "sad": 0.3}, "clip.mp4: happy")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert POOLING_NOTES[pooling] in texts
    paths = save_figure(fig, tmp_path / "clip")
    assert [p.name for p in paths] == ["clip.png", "clip.pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_title_says_an_ensembles_panels_are_the_first_models():
    from analysis.explain import figure_title
    from fer.inference import ClipPrediction

    clip = ClipPrediction(file="/x/talk.mkv", probs={"happy": 0.75, "sad": 0.25})
    assert figure_title(clip, 1) == "talk.mkv: happy (0.75); one model"
    assert figure_title(clip, 3) == ("talk.mkv: happy (0.75); probabilities: mean of 3 models; "
                                     "ROI and pooling panels: first model")
