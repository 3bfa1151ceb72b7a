"""The harness finds the planted ground truth of the synthetic RAVDESS (issue: study modality).

The synthetic voices make happy/surprised and angry/disgust identical, the synthetic faces make
calm/sad identical (``fer.data.synth.truth``). Two study workers train the ``modality`` study on
two folds with the tiny preset, through the real CLI, ledger and MLflow store; then:

- audio + video beats both single modalities on test UAR (every fold);
- the audio-only model cannot tell the voice-identical pairs apart, the video-only model can;
- the video-only model cannot tell calm from sad, the audio-only model can.

Pair discrimination = the pair's balanced accuracy restricted to the two emotions: for each
emotion of the pair, the share of its clips predicted as itself among those predicted as either,
averaged (0.5 = cannot tell them apart, also when a model puts every clip of the pair on one side).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer.data.synth import FACE_GROUPS, VOICE_GROUPS, generate
from fer.labels import EMOTIONS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FOLDS = "0,3"


def _pairs(groups: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    return [g for g in groups.values() if len(g) == 2]


def pair_discrimination(confusion: np.ndarray, a: str, b: str) -> float:
    i, j = EMOTIONS.index(a), EMOTIONS.index(b)
    recall_i = confusion[i, i] / max(confusion[i, i] + confusion[i, j], 1)
    recall_j = confusion[j, j] / max(confusion[j, j] + confusion[j, i], 1)
    return (recall_i + recall_j) / 2


@pytest.fixture(scope="module")
def modality_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    data = tmp / "ravdess"
    generate(data, actors=24, clips_per_class=2, seconds=2.0, fps=15, size=128, seed=0)
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "runner.py"), "study", "modality", "--data-root", str(data),
           "--cache", str(tmp / "cache"), "--folds", FOLDS, "--preset", "tiny", "--max-epochs", "12",
           "--storage", str(tmp / "ledger.journal"), "--tracking-uri", tracking]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd[:2] + ["prepare", "--data-root", str(data), "--cache", str(tmp / "cache"),
                              "--frames", "8", "--size", "64", "--audio-seconds", "2", "--workers", "2"],
                   check=True, cwd=tmp, capture_output=True)
    workers = [subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outs = [w.communicate(timeout=1800)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outs[-1][-3000:]
    from analysis.load import load_confusions, load_study_runs

    units = load_study_runs("modality", tracking)
    return units, load_confusions(units, tracking)


def test_audio_video_beats_each_single_modality_on_every_fold(modality_study):
    units, _ = modality_study
    assert (units["status"] == "FINISHED").sum() == 6
    uar = units.pivot_table(index="fold", columns="modality", values="test/uar")
    assert (uar["av"] > uar["audio"]).all() and (uar["av"] > uar["visual"]).all(), uar


def test_audio_only_confuses_the_voice_identical_pairs(modality_study):
    _, confusions = modality_study
    audio, visual = confusions["modality=audio"].to_numpy(), confusions["modality=visual"].to_numpy()
    for a, b in _pairs(VOICE_GROUPS):
        assert pair_discrimination(audio, a, b) < 0.7, (a, b)
        assert pair_discrimination(visual, a, b) > pair_discrimination(audio, a, b) + 0.15, (a, b)


def test_video_only_confuses_the_face_identical_pair(modality_study):
    _, confusions = modality_study
    audio, visual = confusions["modality=audio"].to_numpy(), confusions["modality=visual"].to_numpy()
    for a, b in _pairs(FACE_GROUPS):
        assert pair_discrimination(visual, a, b) < 0.65, (a, b)
        assert pair_discrimination(audio, a, b) > pair_discrimination(visual, a, b) + 0.1, (a, b)
