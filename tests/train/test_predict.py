"""predict on video files: the recorded unit's logged test predictions come back, a cell's fold
models are averaged, any file name works, and unusable files are error entries (exit 1)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer.labels import EMOTIONS


def _logged(run, synth_data):
    """(video paths, logged probabilities (8,) per video) of four of a recorded unit's test clips."""
    from fer.data.ravdess import index_clips

    local = run.client.download_artifacts(run.run_id, "predictions_test.csv")
    with open(local) as fh:
        rows = list(csv.DictReader(fh))
    videos = {c.clip_id: c.video_path for c in index_clips(synth_data)}
    return ([videos[r["clip_id"]] for r in rows[:4]],
            [[float(r[f"p_{e}"]) for e in EMOTIONS] for r in rows[:4]])


@pytest.fixture(scope="module")
def logged_test(recorded_run, synth_data):
    return _logged(recorded_run, synth_data)


def _cli(*args):
    from click.testing import CliRunner

    import runner

    return CliRunner().invoke(runner.cli, ["predict", *map(str, args)], catch_exceptions=False)


def _faceless_video(path: Path) -> Path:
    """One second of grey frames with a tone: decodable, no face."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=8)
        video.width = video.height = 128
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 128, np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
        tone = (3000 * np.sin(np.arange(16000) * 0.05)).astype(np.int16)[None]  # (1, L) packed s16
        sound = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        sound.sample_rate = 16000
        out.mux(audio.encode(sound))
        out.mux(audio.encode())
    return path


def test_predict_run_reproduces_logged_test_predictions(recorded_run, logged_test, tmp_path):
    videos, logged = logged_test
    result = _cli(*videos, "--run", recorded_run.run_id, "--tracking-uri", recorded_run.client.tracking_uri,
                  "--cache", tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"]["runs"] == [recorded_run.run_id] and out["model"]["labels"] == list(EMOTIONS)
    assert [c["file"] for c in out["clips"]] == [str(v) for v in videos]
    for want, clip in zip(logged, out["clips"]):
        assert clip["error"] is None
        np.testing.assert_allclose([clip["probs"][e] for e in EMOTIONS], want, atol=1e-5, rtol=0)
        assert clip["pred"] == EMOTIONS[int(np.argmax(want))]


def test_predict_reproduces_a_unit_trained_on_cached_features(recorded_cached_run, synth_data, tmp_path):
    """That unit saw its frozen encoders' outputs as the feature cache stores them (float16)."""
    videos, logged = _logged(recorded_cached_run, synth_data)
    result = _cli(*videos, "--run", recorded_cached_run.run_id, "--tracking-uri",
                  recorded_cached_run.client.tracking_uri, "--cache", tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output
    for want, clip in zip(logged, json.loads(result.stdout)["clips"]):
        np.testing.assert_allclose([clip["probs"][e] for e in EMOTIONS], want, atol=1e-5, rtol=0)


def test_renamed_copy_and_unusable_files(recorded_run, logged_test, tmp_path):
    """A copy under another name and extension is predicted like the original; a faceless video
    and random bytes are error entries naming the problem, the others still predicted, exit 1."""
    videos, _ = logged_test
    renamed = tmp_path / "my clip.mkv"
    shutil.copy(videos[0], renamed)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(4096))
    faceless = _faceless_video(tmp_path / "grey.mkv")
    result = _cli(videos[0], noise, renamed, faceless, "--run", recorded_run.run_id,
                  "--tracking-uri", recorded_run.client.tracking_uri, "--cache", tmp_path / "cache", "--json")
    assert result.exit_code == 1
    clips = json.loads(result.stdout)["clips"]
    assert [c["error"] is None for c in clips] == [True, False, True, False]
    assert clips[2]["probs"] == clips[0]["probs"] and clips[2]["pred"] == clips[0]["pred"]
    assert str(noise) in clips[1]["error"] and clips[1]["probs"] is None and clips[1]["pred"] is None
    assert "no face detected" in clips[3]["error"] and clips[3]["probs"] is None


def test_table_and_csv_outputs(recorded_run, logged_test, tmp_path):
    videos, logged = logged_test
    common = ["--run", recorded_run.run_id, "--tracking-uri", recorded_run.client.tracking_uri,
              "--cache", tmp_path / "cache"]
    table = _cli(videos[0], *common)
    assert table.exit_code == 0
    want = logged[0]
    assert f"predicted: {EMOTIONS[int(np.argmax(want))]}" in table.output
    rows = list(csv.DictReader(_cli(videos[0], *common, "--csv").stdout.splitlines()))
    assert len(rows) == 1 and rows[0]["error"] == ""
    np.testing.assert_allclose([float(rows[0][f"p_{e}"]) for e in EMOTIONS], want, atol=2e-6)


def _log_unit(client, experiment, *, cell: str, fold: int, folder: Path) -> str:
    from fer.tracking import end_run

    run = client.create_run(experiment, tags={"kind": "unit", "study": "ens", "cell": cell,
                                              "fold": str(fold), "seed": "0"})
    client.log_artifacts(run.info.run_id, str(folder), "model")
    end_run(client, run.info.run_id, "FINISHED")
    return run.info.run_id


def test_fold_ensemble_is_the_mean_of_the_fold_models(recorded_run, logged_test, tmp_path):
    """Two fold models of one cell (the recorded unit and a differently seeded untrained one):
    --study/--cell averages them, --fold picks one."""
    import torch
    from mlflow import MlflowClient

    from fer.inference import find_unit_runs, load_models, predict_files
    from fer.models.model import build_model
    from fer.tracking import ensure_experiment
    from fer.train.checkpoint import unit_weights

    videos, _ = logged_test
    first = Path(recorded_run.client.download_artifacts(recorded_run.run_id, "model", str(tmp_path / "a")))
    cfg = recorded_run.result.weights.config
    torch.manual_seed(5)
    unit_weights(build_model(cfg), cfg, seed=5, mode="trainable").write(tmp_path / "b" / "model")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking)
    experiment = ensure_experiment(client, "ens")
    runs = [_log_unit(client, experiment, cell="modality=av", fold=0, folder=first),
            _log_unit(client, experiment, cell="modality=av", fold=1, folder=tmp_path / "b" / "model")]
    _log_unit(client, experiment, cell="modality=audio", fold=0, folder=first)  # another cell: not used
    assert find_unit_runs("ens", "modality=av", tracking) == runs
    assert find_unit_runs("ens", "modality=av", tracking, fold=1) == runs[1:]

    cache = tmp_path / "cache"
    single = [predict_files(videos[:2], load_models([r], tracking, cache)) for r in runs]
    result = _cli(*videos[:2], "--study", "ens", "--cell", "modality=av", "--tracking-uri", tracking,
                  "--cache", cache, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"]["runs"] == runs and out["model"]["cell"] == "modality=av"
    for i, clip in enumerate(out["clips"]):
        mean = [(single[0][i].probs[e] + single[1][i].probs[e]) / 2 for e in EMOTIONS]
        np.testing.assert_allclose([clip["probs"][e] for e in EMOTIONS], mean, atol=1e-6)
    assert single[0][0].probs != single[1][0].probs  # the two models differ: the mean is a real test


def test_visual_model_needs_no_audio_stream(logged_test, tmp_path):
    """A visual-only model predicts a video whose audio stream was removed; an audio model refuses it."""
    import av
    import torch

    from fer.config import resolve_config
    from fer.inference import predict_files
    from fer.models.model import build_model
    from fer.train.checkpoint import load_model_dir, unit_weights

    videos, _ = logged_test
    silent = tmp_path / "silent.mp4"
    with av.open(str(videos[0])) as src, av.open(str(silent), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    models = {}
    for modality in ("visual", "audio"):
        cfg = resolve_config("tiny", {"train.precision": "no", "model.modality": modality})
        torch.manual_seed(0)
        unit_weights(build_model(cfg), cfg, seed=0, mode="trainable").write(tmp_path / modality)
        models[modality] = load_model_dir(tmp_path / modality, tmp_path / "cache")
    visual = predict_files([silent], [models["visual"]])[0]
    assert visual.error is None and sum(visual.probs.values()) == pytest.approx(1.0, abs=1e-5)
    audio = predict_files([silent], [models["audio"]])[0]
    assert audio.probs is None and "no audio stream" in audio.error


def test_predict_needs_run_or_study_and_cell(tmp_path):
    video = tmp_path / "x.mp4"
    video.write_bytes(b"x")
    from click.testing import CliRunner

    import runner

    for args in ([], ["--study", "s"], ["--run", "r", "--cell", "c"]):
        result = CliRunner().invoke(runner.cli, ["predict", str(video), *args])
        assert result.exit_code == 2 and "--" in result.output
