"""What to generate: the clip list, each actor's identity and each clip's random draws.

All randomness lives here and comes from ``numpy.random.SeedSequence`` keyed by the dataset
seed and the actor (identity) or the full clip (everything else), so a clip is the same
whichever worker renders it and whichever subset of clips is generated. Nothing drawn here
depends on the emotion except through ``truth.face_actions`` and ``truth.voice_prosody``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fer.data.ravdess import make_clip_id
from fer.data.synth import truth
from fer.data.synth.face import Look, Pose
from fer.data.synth.motion import ACTIONS, FaceMotion
from fer.data.synth.voice import Syllable, plan_utterance
from fer.labels import EMOTIONS

# Real RAVDESS speech combinations (intensity, statement, repetition) per emotion; neutral has
# normal intensity only. Intensity varies fastest so small sets still hold both.
_COMBOS = [(i, s, r) for r in (1, 2) for s in (1, 2) for i in (1, 2)]
_NEUTRAL_COMBOS = [c for c in _COMBOS if c[0] == 1]


@dataclass(frozen=True)
class ClipSpec:
    """One speech clip: emotion index (0..7), intensity, statement, repetition, actor."""

    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def clip_id(self) -> str:
        return make_clip_id("speech", self.emotion, self.intensity, self.statement, self.repetition, self.actor)

    @property
    def relpath(self) -> str:
        """``Actor_NN/01-<clip_id>.mp4``: modality 01 (audio + video)."""
        return f"Actor_{self.actor:02d}/01-{self.clip_id}.mp4"


def clip_specs(actors: int, clips_per_class: int | None) -> list[ClipSpec]:
    """The clips of a synthetic speech set.

    Args:
        actors: actors 1..actors.
        clips_per_class: None for the real counts (60 per actor); else N clips per actor and
            emotion, taking N of the real combinations, starting at a per-actor offset so
            that the set covers them all (neutral has only 4).

    Returns:
        Specs sorted by actor, then emotion.
    """
    specs = []
    for actor in range(1, actors + 1):
        for emotion in range(len(EMOTIONS)):
            combos = _NEUTRAL_COMBOS if emotion == 0 else _COMBOS
            n = len(combos) if clips_per_class is None else min(clips_per_class, len(combos))
            for k in range(n):
                combo = combos[(actor - 1 + k) % len(combos)] if clips_per_class else combos[k]
                specs.append(ClipSpec(emotion, *combo, actor))
    return specs


@dataclass(frozen=True)
class Actor:
    """An actor's identity: appearance (face) and voice. Odd actors are male (lower voice)."""

    actor: int
    male: bool
    look: Look
    face_height: float
    centre: tuple[float, float]
    flip: bool
    expressivity: float
    talk: float
    f0: float
    formant_scale: float
    loudness_db: float
    open_quotient_offset: float
    breath_offset: float

    def to_json(self) -> dict:
        """Plain JSON-ready fields (the manifest's identity parameters)."""
        return asdict(self)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def sample_actor(seed: int, actor: int, male: bool | None = None) -> Actor:
    """Draw actor ``actor``'s identity from the dataset seed; ``male`` None: odd ids (RAVDESS)."""
    rng = _rng(seed, 1, actor)
    male = actor % 2 == 1 if male is None else male
    look = Look(tint=tuple(float(x) for x in rng.uniform(0.88, 1.12, 3)),
                gain=float(rng.uniform(0.88, 1.08)), gamma=float(rng.uniform(0.85, 1.15)),
                background=tuple(tuple(float(x) for x in 0.6 * rng.uniform(25, 230, 3) + 50)
                                 for _ in range(2)),
                background_angle=float(rng.uniform(0, 2 * np.pi)))
    return Actor(
        actor=actor, male=male, look=look,
        face_height=float(rng.uniform(0.40, 0.52)),
        centre=(float(0.5 + rng.uniform(-0.06, 0.06)), float(0.47 + rng.uniform(-0.05, 0.05))),
        flip=bool(rng.random() < 0.5),
        expressivity=float(rng.uniform(0.8, 1.2)), talk=float(rng.uniform(0.5, 0.9)),
        f0=float(rng.uniform(100, 130) if male else rng.uniform(185, 235)),
        formant_scale=float(rng.uniform(0.95, 1.03) if male else rng.uniform(1.10, 1.18)),
        loudness_db=float(rng.uniform(-2, 2)),
        open_quotient_offset=float(rng.uniform(-0.03, 0.03)),
        breath_offset=float(rng.uniform(0, 0.03)),
    )


@dataclass(frozen=True)
class ClipPlan:
    """Every random choice of one clip, and generators for its audio and video noise."""

    spec: ClipSpec
    actor: Actor
    pose: Pose
    motion: FaceMotion
    prosody: dict[str, float]
    level_db: float
    syllables: list[Syllable]
    audio_rng: np.random.Generator
    video_rng: np.random.Generator


def plan_clip(spec: ClipSpec, actor: Actor, seconds: float, seed: int) -> ClipPlan:
    """Draw one clip's pose, facial motion, prosody and syllable timing.

    Args:
        spec: the clip.
        actor: its actor's identity (``sample_actor(seed, spec.actor)``).
        seconds: clip length.
        seed: dataset seed.
    """
    pose_rng, face_rng, voice_rng, utt_rng, audio_rng, video_rng = (
        _rng(seed, 2, spec.actor, spec.emotion, spec.intensity, spec.statement, spec.repetition, part)
        for part in range(6))
    pose = Pose(face_height=actor.face_height * float(np.exp(pose_rng.normal(0, 0.03))),
                centre=(actor.centre[0] + float(pose_rng.normal(0, 0.01)),
                        actor.centre[1] + float(pose_rng.normal(0, 0.01))),
                flip=actor.flip)
    emotion = EMOTIONS[spec.emotion]
    factors = dict(zip(ACTIONS, np.exp(face_rng.normal(0, 0.2, len(ACTIONS)))))
    actions = {name: float(amp * actor.expressivity * factors[name])
               for name, amp in truth.face_actions(emotion, spec.intensity).items()}
    blinks = face_rng.uniform(0.05, 0.95, 2) * seconds
    motion = FaceMotion(
        actions=actions,
        onset=float(face_rng.uniform(0.05, 0.2) * seconds),
        rise=float(face_rng.uniform(0.15, 0.3) * seconds),
        offset=float(face_rng.uniform(0.72, 0.88) * seconds),
        fall=0.25 * seconds,
        residual=float(face_rng.uniform(0.3, 0.6)),
        talk=float(actor.talk * np.exp(face_rng.normal(0, 0.1))),
        blinks=tuple(float(b) for b in blinks[:face_rng.integers(0, 3)]),
    )
    p = truth.voice_prosody(emotion, spec.intensity)
    prosody = {
        "pitch_st": p["pitch_st"] + float(voice_rng.normal(0, 0.6)),
        "range_st": p["range_st"] * float(np.exp(voice_rng.normal(0, 0.15))),
        "energy_db": p["energy_db"] + float(voice_rng.normal(0, 1.5)),
        "rate": p["rate"] * float(np.exp(voice_rng.normal(0, 0.04))),
        "open_quotient": float(np.clip(p["open_quotient"] + actor.open_quotient_offset
                                       + voice_rng.normal(0, 0.02), 0.35, 0.8)),
        "breath": (p["breath"] + actor.breath_offset) * float(np.exp(voice_rng.normal(0, 0.2))),
        "tremor_st": p["tremor_st"],
    }
    syllables = plan_utterance(spec.statement, prosody["rate"], seconds, utt_rng)
    return ClipPlan(spec, actor, pose, motion, prosody, actor.loudness_db + prosody["energy_db"],
                    syllables, audio_rng, video_rng)
