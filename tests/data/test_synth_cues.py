"""The planted ground truth, checked on decoded clips with simple features.

Voice: pitch level and spread, energy and utterance length from the decoded AAC track,
centred per actor. Face: optical flow and frame differences between the first frame (before
the expression starts) and the apex frames, averaged over brow, eye-line and mouth regions
placed with the manifest keypoints. For every emotion pair a logistic regression on those
features (linear discriminant) is cross-validated over actors: pairs that the truth tables
make distinct in a modality must reach 90 % accuracy, pairs that share a signature must stay
at most 75 %. Chance is 50 %; with 48 clips per pair and random features the cross-validated
accuracy has a standard deviation of about 9 % and exceeds 75 % in fewer than 1 in 300 draws.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from scipy import signal
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fer.data.synth import FACE_GROUPS, MANIFEST, VOICE_GROUPS, generate, truth
from fer.labels import EMOTIONS

pytestmark = pytest.mark.slow  # ~190 clips generated and decoded: 20-60 s on two shared cores

SET = dict(actors=12, clips_per_class=2, seconds=1.5, fps=8, size=128, seed=0)
SEPARATE, CONFUSE = 0.9, 0.75


def voice_features(audio: np.ndarray) -> np.ndarray:
    """[median pitch (semitones), pitch spread (p90 - p10), voiced energy (dB), log length (s)].

    Args:
        audio: float (L,) mono at 48 kHz.
    """
    x = signal.resample_poly(audio, 1, 3)  # 16 kHz
    sr, n, hop = 16_000, 512, 160
    window = np.hanning(n)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * window
    db = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
    active = db > db.max() - 20
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * n)) ** 2)[:, :n]
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(window, 2 * n)) ** 2)[:n]
    ac = ac / (ac[:, :1] + 1e-12) / (win_ac / win_ac[0])  # undo the window's own decay
    lo, hi = sr // 500, sr // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = active & (ac[np.arange(len(ac)), lag] > 0.5)
    semitones = 12 * np.log2(sr / lag[voiced])
    span = np.flatnonzero(active)
    return np.array([np.median(semitones), np.percentile(semitones, 90) - np.percentile(semitones, 10),
                     db[voiced].mean(), np.log((span[-1] - span[0]) * hop / sr)])


# Regions in the face frame: x along the eye line (|x| for the mouth corners), y towards the
# chin, origin between the eyes, unit = inter-ocular distance.
REGIONS = {
    "brows": ((-0.8, 0.8), (-0.4, -0.1)),
    "inner_brows": ((-0.4, 0.4), (-0.4, -0.1)),
    "corners": ((0.25, 0.6), (0.85, 1.1)),
    "upper_lip": ((-0.2, 0.2), (0.8, 0.95)),
    "lower_lip": ((-0.25, 0.25), (1.0, 1.2)),
    "mouth": ((-0.35, 0.35), (0.9, 1.1)),
}


def face_features(frames: np.ndarray, keypoints, box, fps: float, seconds: float) -> np.ndarray:
    """Region motion between the first frame and the mean apex frame (40-70 % of the clip).

    Args:
        frames: uint8 (T, H, W) grey frames.
        keypoints: (6, 2) BlazeFace keypoints from the manifest.
        box: face box from the manifest.

    Returns:
        [brows dy, inner brows pulled in, corners dy, corners out, upper lip dy, lower lip dy,
         mouth darkening, |diff| brows, |diff| mouth]; displacements in IOD units.
    """
    right_eye, left_eye = np.asarray(keypoints[0]), np.asarray(keypoints[1])
    iod = np.linalg.norm(left_eye - right_eye)
    u = (left_eye - right_eye) / iod
    v = np.array([-u[1], u[0]])
    origin = (right_eye + left_eye) / 2
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(box[0] - 0.1 * w, 0)), int(max(box[1] - 0.1 * h, 0))
    x1, y1 = int(box[2] + 0.1 * w), int(box[3] + 0.2 * h)
    crop = frames[:, y0:y1, x0:x1].astype(np.float32)
    ys, xs = np.mgrid[y0:y0 + crop.shape[1], x0:x0 + crop.shape[2]] + 0.5
    fx = ((xs - origin[0]) * u[0] + (ys - origin[1]) * u[1]) / iod
    fy = ((xs - origin[0]) * v[0] + (ys - origin[1]) * v[1]) / iod
    t = np.arange(len(frames)) / fps
    apex = crop[(t >= 0.5 * seconds) & (t <= 0.7 * seconds)].mean(axis=0)
    flow = cv2.calcOpticalFlowFarneback(crop[0].astype(np.uint8), np.round(apex).astype(np.uint8),
                                        None, 0.5, 3, 9, 3, 5, 1.1, 0)
    du = (flow[..., 0] * u[0] + flow[..., 1] * u[1]) / iod
    dv = (flow[..., 0] * v[0] + flow[..., 1] * v[1]) / iod
    diff = apex - crop[0]
    outward = np.sign(fx)

    def region(name: str) -> np.ndarray:
        (ax, bx), (ay, by) = REGIONS[name]
        x = np.abs(fx) if name == "corners" else fx
        return (x >= ax) & (x <= bx) & (fy >= ay) & (fy <= by)

    return np.array([
        dv[region("brows")].mean(), -(du * outward)[region("inner_brows")].mean(),
        dv[region("corners")].mean(), (du * outward)[region("corners")].mean(),
        dv[region("upper_lip")].mean(), dv[region("lower_lip")].mean(),
        diff[region("mouth")].mean(),
        np.abs(diff[region("brows")]).mean(), np.abs(diff[region("mouth")]).mean(),
    ])


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict[str, np.ndarray]:
    root = tmp_path_factory.mktemp("synth-cues")
    generate(root, **SET)
    clips = json.loads((root / MANIFEST).read_text())["clips"]
    voice, face, label, actor, peaks = [], [], [], [], []
    for entry in clips.values():
        with av.open(str(root / entry["file"])) as container:
            frames = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
            container.seek(0)
            audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
        voice.append(voice_features(audio.mean(axis=0)))
        face.append(face_features(frames, entry["keypoints"], entry["face_box"], SET["fps"],
                                  SET["seconds"]))
        label.append(EMOTIONS.index(entry["emotion"]))
        actor.append(entry["actor"])
        peaks.append(np.abs(audio).max())
    voice, actor = np.array(voice), np.array(actor)
    for a in np.unique(actor):  # speakers differ in pitch and loudness: centre per actor
        voice[actor == a] -= voice[actor == a].mean(axis=0)
    return dict(voice=voice, face=np.array(face), label=np.array(label), actor=actor,
                peak=np.array(peaks))


def pair_accuracy(x: np.ndarray, label: np.ndarray, actor: np.ndarray, a: str, b: str) -> float:
    """Actor-grouped 4-fold accuracy of a linear classifier telling emotion a from b."""
    keep = np.isin(label, [EMOTIONS.index(a), EMOTIONS.index(b)])
    model = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis())
    scores = cross_val_score(model, x[keep], label[keep] == EMOTIONS.index(a),
                             groups=actor[keep], cv=GroupKFold(n_splits=4))
    return float(scores.mean())


PAIRS = list(combinations(EMOTIONS, 2))


@pytest.mark.parametrize("modality, groups", [("voice", VOICE_GROUPS), ("face", FACE_GROUPS)],
                         ids=["voice", "face"])
@pytest.mark.parametrize("a, b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_cue_separates_exactly_the_pairs_the_truth_makes_distinct(features, modality, groups, a, b):
    acc = pair_accuracy(features[modality], features["label"], features["actor"], a, b)
    if (a, b) in truth.confusable_pairs(groups):
        assert acc <= CONFUSE, f"{modality} tells {a} from {b} ({acc:.2f}) though they share a signature"
    else:
        assert acc >= SEPARATE, f"{modality} cannot tell {a} from {b} ({acc:.2f})"


def test_each_cue_moves_the_way_it_is_planted(features):
    """Directions, not just separability: the prosody and actions of ``truth`` show up."""
    voice, face, label = features["voice"], features["face"], features["label"]

    def means(x, column, *emotions):
        return [x[label == EMOTIONS.index(e), column].mean() for e in emotions]

    def mean(x, emotion, column):
        return means(x, column, emotion)[0]

    def descending(values):
        return all(a > b for a, b in zip(values, values[1:]))

    assert descending(means(voice, 0, "fearful", "happy", "neutral", "sad"))  # pitch
    assert descending(means(voice, 2, "angry", "neutral", "calm", "sad"))  # energy
    assert descending(means(voice, 3, "calm", "neutral", "fearful"))  # length: faster is shorter
    assert mean(face, "surprised", 0) < 0 < mean(face, "angry", 0)  # brows up / down
    assert mean(face, "happy", 2) < 0 < mean(face, "sad", 2)  # corners up / down
    assert mean(face, "fearful", 3) > 0 > mean(face, "angry", 3)  # lips stretched / pressed
    assert mean(face, "disgust", 4) < 0  # upper lip raised
    assert mean(face, "surprised", 6) < mean(face, "neutral", 6)  # open mouth darkens


def test_no_clip_is_clipped(features):
    assert features["peak"].max() < 0.99
