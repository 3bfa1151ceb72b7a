"""Synthetic RAVDESS: clip list, file layout and streams, manifest ground truth, determinism,
the planted-truth tables, and the voice and face building blocks on their own."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from fer.data.ravdess import index_clips, parse_name
from fer.data.synth import FACE_GROUPS, MANIFEST, VOICE_GROUPS, generate, truth
from fer.data.synth.face import PHOTO_BOX, PHOTO_KEYPOINTS, Pose, place_face
from fer.data.synth.plan import clip_specs
from fer.data.synth.voice import SAMPLE_RATE, plan_utterance, synthesize
from fer.labels import EMOTIONS

SMALL = dict(actors=2, clips_per_class=1, seconds=1.0, fps=12, size=96, seed=7)


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) and audio float32 (C, L) of an mp4."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        container.seek(0)
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return frames, audio


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-small")
    generate(out, **SMALL, workers=1)
    return out


def test_real_counts_by_default():
    specs = clip_specs(24, None)
    assert len(specs) == 1440
    assert set(Counter(s.actor for s in specs).values()) == {60}
    per_emotion = Counter(EMOTIONS[s.emotion] for s in specs)
    assert per_emotion == {e: (96 if e == "neutral" else 192) for e in EMOTIONS}
    assert {s.intensity for s in specs if s.emotion == 0} == {1}
    assert len({s.relpath for s in specs}) == 1440


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_clips_per_class_cycles_real_combinations(n):
    specs = clip_specs(24, n)
    per_cell = Counter((s.actor, s.emotion) for s in specs)
    assert all(count == (min(n, 4) if emotion == 0 else n) for (_, emotion), count in per_cell.items())
    assert len(per_cell) == 24 * 8
    assert len({s.relpath for s in specs}) == len(specs)
    assert {s.intensity for s in specs if s.emotion == 0} == {1}
    # Across actors even one clip per class covers both intensities and both statements.
    for emotion in range(1, 8):
        chosen = [s for s in specs if s.emotion == emotion]
        assert {s.intensity for s in chosen} == {1, 2}
        assert {s.statement for s in chosen} == {1, 2}


def test_files_names_and_index(small):
    files = sorted(small.rglob("*.mp4"))
    assert len(files) == SMALL["actors"] * 8
    for path in files:
        name = parse_name(path)
        assert (name.modality, name.vocal_channel) == (1, "speech")
        assert path.parent.name == f"Actor_{name.actor:02d}"
    clips = index_clips(small)
    manifest = json.loads((small / MANIFEST).read_text())
    assert [c.clip_id for c in clips] == sorted(manifest["clips"])
    assert all(c.audio_from_video and c.video_path == c.audio_path for c in clips)
    assert not list(small.rglob("*.tmp"))


def test_streams_rates_sizes_and_durations(small):
    seconds, fps, size = SMALL["seconds"], SMALL["fps"], SMALL["size"]
    for path in sorted(small.rglob("*.mp4"))[:4]:
        with av.open(str(path)) as container:
            assert [s.type for s in container.streams] == ["video", "audio"]
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264"
            assert video.codec_context.pix_fmt == "yuv420p"
            assert (video.width, video.height) == (size, size)
            assert video.average_rate == fps
            assert audio.codec_context.name == "aac"
            assert audio.rate == 48_000
            assert audio.channels == 2
            assert float(container.duration / av.time_base) == pytest.approx(seconds, abs=0.05)
        frames, samples = decode(path)
        assert frames.shape == (round(seconds * fps), size, size, 3)
        # AAC decodes whole 1024-sample frames.
        assert 0 <= samples.shape[1] - seconds * 48_000 < 1024
        # One voice on both channels; the AAC coder leaves them within -50 dB of each other.
        residual = np.sqrt(((samples[0] - samples[1]) ** 2).mean() / (samples[0] ** 2).mean())
        assert residual < 0.003


def test_manifest_ground_truth(small):
    manifest = json.loads((small / MANIFEST).read_text())
    size = SMALL["size"]
    assert manifest["voice_groups"] == {k: list(v) for k, v in VOICE_GROUPS.items()}
    assert manifest["face_groups"] == {k: list(v) for k, v in FACE_GROUPS.items()}
    assert manifest["settings"]["fps"] == SMALL["fps"]
    for clip_id, entry in manifest["clips"].items():
        assert entry["file"].endswith(f"01-{clip_id}.mp4")
        assert EMOTIONS.index(entry["emotion"]) == int(clip_id.split("-")[1]) - 1
        x0, y0, x1, y1 = entry["face_box"]
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert (y1 - y0) >= 0.35 * size
        kp = np.array(entry["keypoints"])
        assert kp.shape == (6, 2)
        assert kp[0, 0] < kp[2, 0] < kp[1, 0]  # right eye, nose, left eye from left to right
        assert kp[4, 0] < kp[0, 0] and kp[1, 0] < kp[5, 0]  # ears outside the eyes
        assert kp[0, 1] < kp[2, 1] < kp[3, 1]  # eyes above nose above mouth
        inside = (kp[:, 0] >= x0) & (kp[:, 0] <= x1) & (kp[:, 1] >= y0) & (kp[:, 1] <= y1)
        assert inside.all()
        assert entry["identity"]["male"] == (entry["actor"] % 2 == 1)
        assert entry["voice_group"] == truth.voice_group(entry["emotion"])
        assert set(entry["face_cues"]["actions"]) == set(truth.face_actions(entry["emotion"], 1))


def test_manifest_box_and_keypoints_follow_the_pixels(small):
    """Under the manifest's keypoints the frame shows the photo's eyes: dark pupils/frames
    inside a bright face, and the face box is the photo's box moved into the frame."""
    manifest = json.loads((small / MANIFEST).read_text())
    entry = next(iter(manifest["clips"].values()))
    frames, _ = decode(small / entry["file"])
    grey = frames[0].mean(axis=2)
    x0, y0, x1, y1 = entry["face_box"]
    face = grey[int(y0):int(y1), int(x0):int(x1)]
    scale = (y1 - y0) / (PHOTO_BOX[3] - PHOTO_BOX[1])
    assert (x1 - x0) / (PHOTO_BOX[2] - PHOTO_BOX[0]) == pytest.approx(scale, rel=0.02)
    for k in (0, 1):  # eye keypoints sit on darker pixels than the face's median
        x, y = np.array(entry["keypoints"][k]).astype(int)
        assert grey[y - 1:y + 2, x - 1:x + 2].mean() < np.median(face)


def test_same_seed_same_bytes_other_seed_other_clips(small, tmp_path):
    again = tmp_path / "again"
    generate(again, **SMALL, workers=2)  # other process layout, same clips
    subset = tmp_path / "subset"
    generate(subset, **{**SMALL, "actors": 1}, workers=1)  # a clip does not depend on the others
    other = tmp_path / "other"
    generate(other, **{**SMALL, "actors": 1, "seed": SMALL["seed"] + 1}, workers=1)
    for path in sorted(small.rglob("*.mp4")):
        rel = path.relative_to(small)
        frames, audio = decode(path)
        frames2, audio2 = decode(again / rel)
        assert np.array_equal(frames, frames2) and np.array_equal(audio, audio2), rel
        assert path.read_bytes() == (again / rel).read_bytes()  # encoder byte identity too
        if rel.parts[0] == "Actor_01":
            assert (subset / rel).read_bytes() == path.read_bytes()
            frames3, audio3 = decode(other / rel)
            assert not np.array_equal(audio, audio3)
            assert np.abs(frames.astype(int) - frames3).mean() > 2.0
    assert (small / MANIFEST).read_bytes() == (again / MANIFEST).read_bytes()


def test_regenerating_smaller_removes_clips_of_the_previous_manifest(tmp_path):
    generate(tmp_path, actors=1, clips_per_class=2, seconds=0.5, fps=5, size=64, workers=1)
    assert len(list(tmp_path.rglob("*.mp4"))) == 16
    files = generate(tmp_path, actors=1, clips_per_class=1, seconds=0.5, fps=5, size=64, workers=1)
    assert sorted(tmp_path.rglob("*.mp4")) == files
    assert len(json.loads((tmp_path / MANIFEST).read_text())["clips"]) == 8


def test_bad_arguments_are_named_together(tmp_path):
    with pytest.raises(ValueError) as err:
        generate(tmp_path, actors=25, clips_per_class=9, seconds=0.1, fps=0, size=101)
    for key in ("actors=25", "clips_per_class=9", "seconds=0.1", "fps=0", "size=101"):
        assert key in str(err.value)
    assert not list(tmp_path.iterdir())


def test_truth_tables_plant_the_intended_confusions():
    assert truth.confusable_pairs(VOICE_GROUPS) == [("happy", "surprised"), ("angry", "disgust")]
    assert truth.confusable_pairs(FACE_GROUPS) == [("calm", "sad")]
    # Fusion can tell every pair apart: the (voice, face) signature is unique per emotion.
    signatures = {(truth.voice_group(e), truth.face_group(e)) for e in EMOTIONS}
    assert len(signatures) == len(EMOTIONS)
    # Strong intensity moves further from neutral, in voice and face.
    for emotion in EMOTIONS[1:]:
        normal, strong = truth.voice_prosody(emotion, 1), truth.voice_prosody(emotion, 2)
        neutral = truth.voice_prosody("neutral", 1)
        for key in normal:
            expected = truth.STRONG_VOICE * (normal[key] - neutral[key])
            assert strong[key] - neutral[key] == pytest.approx(expected)
        assert truth.face_actions(emotion, 2) == pytest.approx(
            {k: truth.STRONG_FACE * v for k, v in truth.face_actions(emotion, 1).items()})
    with pytest.raises(KeyError, match="joyful"):
        truth.voice_group("joyful")


def _pitch_hz(x: np.ndarray) -> float:
    """Median autocorrelation pitch of the loud 40 ms frames of a 48 kHz signal."""
    n = 1920
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::480]
    energy = (frames ** 2).mean(axis=1)
    frames = frames[energy > 0.3 * energy.max()]
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * n)) ** 2)[:, :n]
    lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    return float(np.median(SAMPLE_RATE / (lo + np.argmax(ac[:, lo:hi], axis=1))))


@pytest.mark.parametrize("f0, shift", [(110.0, 0.0), (110.0, 7.0), (210.0, -3.5)])
def test_voice_pitch_and_level_follow_the_prosody(f0, shift):
    prosody = dict(truth.VOICE_PROSODY["neutral"], pitch_st=shift, range_st=0.0)
    syllables = plan_utterance(1, 1.0, 3.0, np.random.default_rng(0))
    quiet, loud = (synthesize(syllables, 3 * SAMPLE_RATE, f0=f0, formant_scale=1.0, level_db=db,
                              prosody=prosody, rng=np.random.default_rng(1)) for db in (0.0, 6.0))
    expected = f0 * 2 ** (shift / 12)
    # The contour adds declination (+-0.3 range, here 0) and a slow 0.3-semitone wander.
    assert _pitch_hz(quiet) == pytest.approx(expected, rel=0.06)
    speech = slice(int(syllables[0].start * SAMPLE_RATE), int(syllables[-1].end * SAMPLE_RATE))
    gain_db = 10 * np.log10((loud[speech] ** 2).mean() / (quiet[speech] ** 2).mean())
    assert gain_db == pytest.approx(6.0, abs=0.2)


def test_loudest_voice_stays_below_full_scale():
    prosody = truth.voice_prosody("angry", 2)
    syllables = plan_utterance(2, prosody["rate"], 3.0, np.random.default_rng(0))
    # Actor +2 dB and a 3-sigma energy jitter on top of the loudest planted prosody.
    x = synthesize(syllables, 3 * SAMPLE_RATE, f0=240.0, formant_scale=1.18,
                   level_db=prosody["energy_db"] + 2.0 + 4.5, prosody=prosody,
                   rng=np.random.default_rng(0))
    assert np.abs(x).max() < 0.95


def test_placement_scales_and_mirrors_the_box_and_keypoints():
    placed = {flip: place_face(Pose(face_height=0.45, centre=(0.5, 0.47), flip=flip), 200)
              for flip in (False, True)}
    for placement in placed.values():
        x0, y0, x1, y1 = placement.box
        assert y1 - y0 == pytest.approx(0.45 * 200)
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((100.0, 94.0))
        kp = placement.keypoints
        assert kp[0, 0] < kp[1, 0] and kp[4, 0] < kp[5, 0]  # "right" = smaller x, as BlazeFace
        eye_gap = placement.scale * np.linalg.norm(PHOTO_KEYPOINTS[1] - PHOTO_KEYPOINTS[0])
        assert np.linalg.norm(kp[1] - kp[0]) == pytest.approx(eye_gap)
    # The mirrored face's right eye is the mirror image of the unmirrored left eye, etc.
    plain, mirrored = placed[False].keypoints, placed[True].keypoints[[1, 0, 2, 3, 5, 4]]
    assert mirrored[:, 0] == pytest.approx(200 - plain[:, 0])
    assert mirrored[:, 1] == pytest.approx(plain[:, 1])


def test_blazeface_finds_the_manifest_face(small, face_model):
    """The photo's hard-coded keypoints and box were measured with BlazeFace; the detector
    must find the face at the manifest's box on the generated (warped, tinted) frames.

    The model comes from the project's resolution ($FER_FACE_MODEL, then the cache), through
    the ``face_model`` fixture, which fails rather than skips when it is missing."""
    from fer.data.faces import FaceDetector

    manifest = json.loads((small / MANIFEST).read_text())
    detector = FaceDetector(face_model)
    ious, errors = [], []
    try:
        for entry in manifest["clips"].values():
            frames, _ = decode(small / entry["file"])
            box, kp = np.array(entry["face_box"]), np.array(entry["keypoints"])
            for frame in frames[::3]:
                face = detector.detect(frame)
                if face is None:
                    ious.append(0.0)
                    continue
                lo, hi = np.maximum(face.box[:2], box[:2]), np.minimum(face.box[2:], box[2:])
                inter = np.prod(np.clip(hi - lo, 0, None))
                union = np.prod(face.box[2:] - face.box[:2]) + np.prod(box[2:] - box[:2]) - inter
                ious.append(inter / union)
                errors.append(np.linalg.norm(face.keypoints - kp, axis=1).max() / (box[3] - box[1]))
    finally:
        detector.close()
    assert np.mean(np.array(ious) >= 0.5) >= 0.95
    assert np.median(ious) >= 0.8
    assert np.median(errors) < 0.1


def test_a_rerun_with_fewer_clips_removes_the_files_only_the_old_manifest_lists(tmp_path):
    from fer.data.synth.generate import remove_stale

    entries = {"a": {"file": "VideoFlash/a.flv", "wav": "AudioWAV/a.wav"}, "b": {"file": "VideoFlash/b.flv"}}
    for entry in entries.values():
        for rel in entry.values():
            (tmp_path / rel).parent.mkdir(exist_ok=True)
            (tmp_path / rel).write_bytes(b"x")
    (tmp_path / MANIFEST).write_text(json.dumps({"clips": entries}))
    remove_stale(tmp_path, {"VideoFlash/a.flv"}, "CREMA-D")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*") if p.name != MANIFEST) == [
        "VideoFlash/a.flv"]
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match=rf"{MANIFEST}: not a synthetic CREMA-D manifest"):
        remove_stale(tmp_path, set(), "CREMA-D")
