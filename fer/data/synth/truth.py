"""The planted ground truth of the synthetic RAVDESS: which emotions differ in voice, in face, or both.

Every emotion gets one *voice signature* (prosody) and one *face signature* (facial actions).
Emotions that share a signature are generated from the same distribution in that modality,
so no model can tell them apart from that modality alone:

==========  ===============  ============
emotion     voice group      face group
==========  ===============  ============
neutral     neutral          neutral
calm        calm             subdued
sad         sad              subdued
happy       bright           happy
surprised   bright           surprised
angry       tense            angry
disgust     tense            disgust
fearful     fearful          fearful
==========  ===============  ============

Consequences a study can assert:

- audio only must confuse happy/surprised and angry/disgust (same voice, different face);
- video only must confuse calm/sad (same face, different voice);
- audio + video can separate every pair.

Everything else that enters a clip (actor identity, per-clip jitter, blinks, the talking
mouth, sensor noise) is drawn independently of the emotion. The talking mouth is lip-synced
to the syllables, whose timing depends on the voice's speaking rate: calm and sad share a
rate so that this leaves video-identical emotions video-identical.

Units: ``FACE_ACTIONS`` amplitudes are the largest displacement of the action at the
expression's apex, in tenths of the inter-ocular distance (IOD); see
``fer.data.synth.motion.ACTIONS`` for what each action moves.
``VOICE_PROSODY``: pitch shift and range in semitones, energy in dB, rate as a factor on
syllables per second, open quotient of the glottal pulse (lower = pressed, brighter),
breath = aspiration-noise fraction, tremor = pitch tremor depth in semitones.
Strong intensity multiplies the deviation from neutral by ``STRONG_FACE`` / ``STRONG_VOICE``.

On top of these, ``plan.py`` draws per-actor identity (pitch, loudness +-2 dB, expressivity
x0.8-1.2) and per-clip jitter (sd: pitch 0.6 st, energy 1.5 dB, rate 4 %, range 15 %, each
action amplitude 20 %; expression onset and apex timing), the same for every emotion.
"""

from __future__ import annotations

from fer.labels import EMOTIONS

VOICE_GROUPS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral",),
    "calm": ("calm",),
    "sad": ("sad",),
    "bright": ("happy", "surprised"),
    "tense": ("angry", "disgust"),
    "fearful": ("fearful",),
}

FACE_GROUPS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral",),
    "subdued": ("calm", "sad"),
    "happy": ("happy",),
    "surprised": ("surprised",),
    "angry": ("angry",),
    "disgust": ("disgust",),
    "fearful": ("fearful",),
}

# Apex amplitude of each facial action per face group (normal intensity).
FACE_ACTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "subdued": {"brow_inner_raise": 0.8, "lip_corner_depress": 0.9, "eye_narrow": 0.5},
    "happy": {"smile": 1.1, "eye_narrow": 0.4, "jaw_drop": 0.4},
    "surprised": {"brow_raise": 1.1, "eye_widen": 0.6, "jaw_drop": 1.5},
    "angry": {"brow_lower": 1.0, "lip_press": 0.8, "eye_narrow": 0.5},
    "disgust": {"upper_lip_raise": 1.0, "brow_lower": 0.4, "lip_corner_depress": 0.4},
    "fearful": {"brow_raise": 0.7, "eye_widen": 0.8, "lip_stretch": 1.1, "jaw_drop": 0.5},
}

# Prosody per voice group (normal intensity); neutral is the reference for the strong scaling.
VOICE_PROSODY: dict[str, dict[str, float]] = {
    "neutral": {"pitch_st": 0.0, "range_st": 2.0, "energy_db": 0.0, "rate": 1.00,
                "open_quotient": 0.60, "breath": 0.02, "tremor_st": 0.0},
    "calm": {"pitch_st": -1.5, "range_st": 1.2, "energy_db": -4.5, "rate": 0.85,
             "open_quotient": 0.64, "breath": 0.05, "tremor_st": 0.0},
    "sad": {"pitch_st": -4.0, "range_st": 0.8, "energy_db": -11.0, "rate": 0.85,
            "open_quotient": 0.70, "breath": 0.12, "tremor_st": 0.0},
    "bright": {"pitch_st": 4.0, "range_st": 5.0, "energy_db": 5.0, "rate": 1.12,
               "open_quotient": 0.55, "breath": 0.03, "tremor_st": 0.0},
    "tense": {"pitch_st": 1.5, "range_st": 2.5, "energy_db": 9.0, "rate": 1.05,
              "open_quotient": 0.45, "breath": 0.02, "tremor_st": 0.0},
    "fearful": {"pitch_st": 7.0, "range_st": 3.0, "energy_db": 0.5, "rate": 1.30,
                "open_quotient": 0.55, "breath": 0.06, "tremor_st": 0.8},
}

STRONG_FACE = 1.5
STRONG_VOICE = 1.5


def _group_of(groups: dict[str, tuple[str, ...]], emotion: str) -> str:
    for name, members in groups.items():
        if emotion in members:
            return name
    raise KeyError(f"emotion {emotion!r} is in no group; known emotions: {', '.join(EMOTIONS)}")


def voice_group(emotion: str) -> str:
    """Name of the voice group holding ``emotion`` (a name from ``fer.labels.EMOTIONS``)."""
    return _group_of(VOICE_GROUPS, emotion)


def face_group(emotion: str) -> str:
    """Name of the face group holding ``emotion`` (a name from ``fer.labels.EMOTIONS``)."""
    return _group_of(FACE_GROUPS, emotion)


def face_actions(emotion: str, intensity: int) -> dict[str, float]:
    """Apex amplitudes of the facial actions planted for one emotion and intensity.

    Args:
        emotion: a name from ``fer.labels.EMOTIONS``.
        intensity: 1 normal, 2 strong.

    Returns:
        {action name: amplitude in tenths of the IOD}; empty for neutral.
    """
    scale = STRONG_FACE if intensity == 2 else 1.0
    return {name: amp * scale for name, amp in FACE_ACTIONS[face_group(emotion)].items()}


def voice_prosody(emotion: str, intensity: int) -> dict[str, float]:
    """Prosody planted for one emotion and intensity (before per-clip jitter).

    Args:
        emotion: a name from ``fer.labels.EMOTIONS``.
        intensity: 1 normal, 2 strong (the deviation from neutral grows by ``STRONG_VOICE``).

    Returns:
        The ``VOICE_PROSODY`` fields for the emotion's group.
    """
    scale = STRONG_VOICE if intensity == 2 else 1.0
    ref = VOICE_PROSODY["neutral"]
    params = VOICE_PROSODY[voice_group(emotion)]
    return {key: ref[key] + scale * (value - ref[key]) for key, value in params.items()}


def confusable_pairs(groups: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """Emotion pairs that share a group, i.e. a model of that modality alone must confuse.

    Returns:
        Sorted pairs (a, b) with a before b in ``EMOTIONS`` order.
    """
    pairs = []
    for members in groups.values():
        ordered = sorted(members, key=EMOTIONS.index)
        pairs += [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    return sorted(pairs, key=lambda p: (EMOTIONS.index(p[0]), EMOTIONS.index(p[1])))


def _check_groups() -> None:
    """Each grouping must partition the eight emotions (guards edits of the tables above)."""
    for name, groups in (("VOICE_GROUPS", VOICE_GROUPS), ("FACE_GROUPS", FACE_GROUPS)):
        members = sorted(e for group in groups.values() for e in group)
        if members != sorted(EMOTIONS):
            raise AssertionError(f"{name} must hold each of {EMOTIONS} exactly once, got {members}")
    if set(FACE_ACTIONS) != set(FACE_GROUPS) or set(VOICE_PROSODY) != set(VOICE_GROUPS):
        raise AssertionError("FACE_ACTIONS / VOICE_PROSODY keys must match the group names")


_check_groups()
