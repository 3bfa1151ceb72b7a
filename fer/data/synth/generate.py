"""Generate a synthetic RAVDESS speech set: clips in parallel, then the manifest.

``<out>/Actor_NN/01-01-EE-II-SS-RR-NN.mp4`` holds each clip; ``<out>/synth-manifest.json``
holds, per clip id (``fer.data.ravdess`` convention: modality dropped), the ground truth a
test needs: face box and BlazeFace keypoints in frame pixels, the actor's identity, the
planted cues (``truth``) with the clip's jitter, and the timing of speech and expression.
The head does not move within a clip, so box and keypoints hold for every frame; they are
those of the face at rest (the expression moves brows, lids, lips and chin by at most a few
tenths of the inter-ocular distance).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from fer.atomic import atomic_write_text
from fer.data.synth import truth
from fer.data.synth.face import Placement, compose_frame, place_face
from fer.data.synth.motion import render_frames
from fer.data.synth.plan import ClipPlan, ClipSpec, clip_specs, plan_clip, sample_actor
from fer.data.synth.voice import SAMPLE_RATE, synthesize
from fer.data.synth.writer import AUDIO_RATE, write_clip
from fer.labels import EMOTIONS

MANIFEST = "synth-manifest.json"
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
NOISE_SD = 1.8  # sensor noise, grey levels
_NOISE_BANK = 4


@dataclass(frozen=True)
class Settings:
    """Dataset-wide settings (one per ``generate`` call)."""

    seconds: float
    fps: int
    size: int
    seed: int


def _round(values, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


@dataclass(frozen=True)
class Rendered:
    """One clip's frames (uint8 (N, size, size, 3) RGB), waveform (float32 at SAMPLE_RATE) and plan."""

    frames: np.ndarray
    audio: np.ndarray
    plan: ClipPlan
    placement: Placement


def render_media(spec: ClipSpec, settings: Settings, male: bool | None = None) -> Rendered:
    """Draw and render one clip (nothing written).

    Args:
        spec: the clip (``spec.emotion`` indexes ``fer.labels.EMOTIONS``).
        settings: dataset settings.
        male: the actor's sex; None for RAVDESS's (odd ids male).
    """
    actor = sample_actor(settings.seed, spec.actor, male)
    plan = plan_clip(spec, actor, settings.seconds, settings.seed)
    size = settings.size
    placement = place_face(plan.pose, size)
    still = compose_frame(placement, actor.look, size)
    times = np.arange(round(settings.seconds * settings.fps)) / settings.fps
    noise = np.round(plan.video_rng.normal(0, NOISE_SD, (_NOISE_BANK, size, size, 3))).astype(np.int16)
    frames = render_frames(still, placement.box, placement.keypoints, plan.motion, plan.syllables,
                           times, noise)
    audio = synthesize(plan.syllables, round(settings.seconds * SAMPLE_RATE), f0=actor.f0,
                       formant_scale=actor.formant_scale, level_db=plan.level_db,
                       prosody=plan.prosody, rng=plan.audio_rng)
    return Rendered(frames, audio, plan, placement)


def render_clip(out: Path, spec: ClipSpec, settings: Settings) -> dict:
    """Render and write one clip.

    Returns:
        Its manifest entry.
    """
    clip = render_media(spec, settings)
    write_clip(out / spec.relpath, clip.frames, clip.audio, fps=settings.fps, size=settings.size)
    emotion = EMOTIONS[spec.emotion]
    return {
        "file": spec.relpath,
        "emotion": emotion,
        "intensity": spec.intensity,
        "statement": spec.statement,
        "repetition": spec.repetition,
        "actor": spec.actor,
        "voice_group": truth.voice_group(emotion),
        "face_group": truth.face_group(emotion),
        **planted_cues(clip),
    }


def planted_cues(clip: Rendered) -> dict:
    """The manifest fields of a clip's face, identity and cues (see the module docstring)."""
    plan, placement, actor, motion = clip.plan, clip.placement, clip.plan.actor, clip.plan.motion
    return {
        "face_box": _round(placement.box),
        "keypoints": _round(placement.keypoints),
        "pose": asdict(plan.pose),
        "identity": actor.to_json(),
        "face_cues": {"actions": {k: round(v, 4) for k, v in motion.actions.items()},
                      "onset_s": motion.onset, "rise_s": motion.rise, "offset_s": motion.offset,
                      "fall_s": motion.fall, "residual": motion.residual, "talk": motion.talk,
                      "blinks_s": list(motion.blinks)},
        "voice_cues": {**{k: round(v, 4) for k, v in plan.prosody.items()},
                       "level_db": round(plan.level_db, 3), "f0_hz": actor.f0,
                       "speech_s": [plan.syllables[0].start, plan.syllables[-1].end],
                       "syllable_starts_s": [s.start for s in plan.syllables]},
    }


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism is over clips


def render_all(render, jobs: list[tuple], workers: int | None) -> list[dict]:
    """``render(*job)`` for every job, in order: in this process (one worker) or in spawned
    processes (default: 2, at most the CPU count)."""
    workers = min(workers or min(2, os.cpu_count() or 1), len(jobs))
    if workers == 1:
        return [render(*job) for job in jobs]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        return list(pool.map(render, *zip(*jobs), chunksize=4))


def media_problems(seconds, fps, size) -> list[str]:
    """What is wrong with a synthetic corpus's clip length, frame rate and frame size."""
    problems = []
    if not 0.5 <= seconds <= 60:
        problems.append(f"seconds={seconds}: must be 0.5..60")
    if not 1 <= fps <= 120:
        problems.append(f"fps={fps}: must be 1..120")
    if size < 32 or size % 2:
        problems.append(f"size={size}: must be even and at least 32 (yuv420p video)")
    return problems


def _validate(actors, clips_per_class, seconds, fps, size) -> None:
    problems = []
    if not 1 <= actors <= 24:
        problems.append(f"actors={actors}: must be 1..24")
    if clips_per_class is not None and not 1 <= clips_per_class <= 8:
        problems.append(f"clips_per_class={clips_per_class}: must be 1..8 or None (real counts)")
    problems += media_problems(seconds, fps, size)
    if problems:
        raise ValueError("synthetic RAVDESS: " + "; ".join(problems))


def remove_stale(out: Path, keep: set[str], corpus: str = "RAVDESS") -> None:
    """Delete the files (``file``, ``wav``) of clips a previous manifest in ``out`` lists, when this
    run does not write them (``keep``: paths relative to ``out``)."""
    old = out / MANIFEST
    if not old.is_file():
        return
    try:
        clips = json.loads(old.read_text())["clips"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{old}: not a synthetic {corpus} manifest ({exc}); "
                         "remove it or choose another --out") from exc
    for entry in clips.values():
        for key in ("file", "wav"):
            if key in entry and entry[key] not in keep:
                (out / entry[key]).unlink(missing_ok=True)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def generate(out: Path, *, actors: int = 24, clips_per_class: int | None = None,
             seconds: float = 3.0, fps: int = 30, size: int = 256, seed: int = 0,
             workers: int | None = None) -> list[Path]:
    """Write a synthetic RAVDESS speech set with planted ground truth (see ``truth``).

    Args:
        out: output folder (created).
        actors: actors 1..actors (odd male, even female).
        clips_per_class: None for the real counts (60 clips per actor); else N clips per
            actor and emotion (neutral has at most 4).
        seconds: clip length.
        fps: video frame rate.
        size: frame width and height, pixels (even).
        seed: dataset seed; the same seed gives the same frames and samples.
        workers: processes (default: 2, at most the CPU count); 1 renders in this process.
            Workers are spawned, so a script calling this needs ``if __name__ == "__main__"``.

    Returns:
        The written clip paths, sorted.

    Raises:
        ValueError: naming every invalid argument.
    """
    _validate(actors, clips_per_class, seconds, fps, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = clip_specs(actors, clips_per_class)
    remove_stale(out, {s.relpath for s in specs})
    settings = Settings(seconds=float(seconds), fps=int(fps), size=int(size), seed=int(seed))
    entries = render_all(render_clip, [(out, spec, settings) for spec in specs], workers)
    manifest = {
        "format": "fer-synth-manifest",
        "version": 1,
        "settings": {**asdict(settings), "actors": actors, "clips_per_class": clips_per_class,
                     "audio_rate": AUDIO_RATE},
        "keypoint_names": list(KEYPOINT_NAMES),
        "voice_groups": truth.VOICE_GROUPS,
        "face_groups": truth.FACE_GROUPS,
        "clips": {spec.clip_id: entry for spec, entry in zip(specs, entries)},
    }
    _write_json(out / MANIFEST, manifest)
    return sorted(out / spec.relpath for spec in specs)
