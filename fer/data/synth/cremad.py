"""Generate a synthetic CREMA-D: the corpus's layout and names, the synthetic RAVDESS's planted cues.

Written under ``out``: ``VideoFlash/<name>.flv`` (FLV1 video + MP3 audio), ``AudioWAV/<name>.wav``
(16 kHz mono), ``VideoDemographics.csv``, ``processedResults/summaryTable.csv`` and
``synth-manifest.json`` (per clip id: files, emotion, sex, planted cues, planted human votes).

- Actors ``1001..1000+actors``; sex by the pattern ``SEX_PATTERN`` (not odd/even, so the protocol's
  males-first dealing is exercised), each actor's voice pitch set by it.
- Per actor and emotion, ``clips_per_class`` (sentence, level) combinations of the real set, from
  a per-actor offset, one fewer where (actor + emotion) % 4 == 0: coverage is irregular as in
  CREMA-D, where not every actor has every combination.
- Cues: ``truth``'s, for the six CREMA-D emotions (all among RAVDESS's eight): the voice cannot tell
  angry from disgust (one voice group), the face tells all six apart. Level HI is the strong
  intensity, the others normal; the sentence picks one of the two synthetic statements.
- Human votes, drawn per clip: the voice vote ties angry and disgust (``A:D``) or picks one of them
  for those two emotions, and is mostly right otherwise; the face and multimodal votes are mostly
  right; some votes of every kind tie two letters.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fer.atomic import atomic_write_text
from fer.data import cremad
from fer.data.synth import truth
from fer.data.synth.generate import (KEYPOINT_NAMES, MANIFEST, Settings, media_problems, planted_cues, remove_stale,
                                     render_all, render_media)
from fer.data.synth.plan import ClipSpec
from fer.data.synth.voice import SAMPLE_RATE
from fer.data.synth.writer import FLV_AUDIO_RATE, write_flv, write_wav
from fer.labels import EMOTIONS, emotions

LABELS = emotions("crema-d")
SEX_PATTERN = "MFFMMFFMMF"  # actor 1001 + i is SEX_PATTERN[i % 10]
WAV_RATE = 16_000
# The real (sentence, level) combinations: IEO at three levels for every emotion but neutral, every
# other sentence unspecified (XX). Interleaved so that a few clips hold IEO and XX, strong and not.
_COMBOS = [c for pair in zip([("IEO", lv) for lv in ("HI", "LO", "MD")], [(s, "XX") for s in cremad.SENTENCES[1:4]])
           for c in pair] + [(s, "XX") for s in cremad.SENTENCES[4:]]
_NEUTRAL_COMBOS = [(s, "XX") for s in cremad.SENTENCES]
# Probabilities of the planted votes: (right, tie of the right letter and another); the rest is wrong.
_VOTE_ODDS = {"audio": (0.5, 0.15), "visual": (0.8, 0.1), "av": (0.9, 0.06)}


@dataclass(frozen=True)
class CremaSpec:
    """One clip: actor id, sentence code, emotion index (``LABELS``), level code."""

    actor: int
    sentence: str
    emotion: int
    level: str

    @property
    def clip_id(self) -> str:
        return f"{self.actor}_{self.sentence}_{cremad.EMOTION_CODES[self.emotion]}_{self.level}"

    @property
    def male(self) -> bool:
        return SEX_PATTERN[(self.actor - 1001) % len(SEX_PATTERN)] == "M"

    def planned(self) -> ClipSpec:
        """The synthetic RAVDESS spec whose cues this clip carries; ``repetition`` only keys the
        random draws (one value per sentence and level), so every clip draws its own."""
        return ClipSpec(emotion=EMOTIONS.index(LABELS[self.emotion]), intensity=2 if self.level == "HI" else 1,
                        statement=1 + cremad.SENTENCES.index(self.sentence) % 2,
                        repetition=1 + 4 * cremad.SENTENCES.index(self.sentence) + cremad.LEVELS.index(self.level),
                        actor=self.actor)


def clip_specs(actors: int, clips_per_class: int) -> list[CremaSpec]:
    """The clips of a synthetic CREMA-D (see the module docstring), sorted by clip id."""
    specs = []
    for i in range(actors):
        actor = 1001 + i
        for emotion, label in enumerate(LABELS):
            combos = _NEUTRAL_COMBOS if label == "neutral" else _COMBOS
            n = min(clips_per_class, len(combos)) - ((actor + emotion) % 4 == 0)
            for k in range(max(n, 1)):
                sentence, level = combos[(i + k) % len(combos)]
                specs.append(CremaSpec(actor, sentence, emotion, level))
    return sorted(specs, key=lambda s: s.clip_id)


def _letters(rng: np.random.Generator, right: int, modality: str) -> str:
    """One planted majority vote: letters of ``cremad.VOTE_LETTERS`` joined by ':' on a tie."""
    label = LABELS[right]
    letters = cremad.VOTE_LETTERS
    if modality == "audio" and truth.voice_group(label) == "tense":
        pair = sorted(letters[LABELS.index(e)] for e in truth.VOICE_GROUPS["tense"])
        return str(rng.choice([":".join(pair), *pair]))  # the voice cannot tell them apart
    p_right, p_tie = _VOTE_ODDS[modality]
    others = [x for j, x in enumerate(letters) if j != right]
    draw = rng.random()
    if draw < p_right:
        return letters[right]
    if draw < p_right + p_tie:
        return ":".join(sorted([letters[right], str(rng.choice(others))]))
    return str(rng.choice(others))


def human_votes(seed: int, spec: CremaSpec) -> dict[str, str]:
    """The planted votes of one clip, keyed audio / visual / av (drawn from seed and clip only)."""
    key = [seed, 3, spec.actor, spec.emotion, cremad.SENTENCES.index(spec.sentence), cremad.LEVELS.index(spec.level)]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    return {m: _letters(rng, spec.emotion, m) for m in cremad.VOTE_COLUMNS}


def render_clip(out: Path, spec: CremaSpec, settings: Settings) -> dict:
    """Render one clip and write its FLV and WAV; returns its manifest entry (without votes)."""
    clip = render_media(spec.planned(), settings, male=spec.male)
    flv, wav = f"VideoFlash/{spec.clip_id}.flv", f"AudioWAV/{spec.clip_id}.wav"
    write_flv(out / flv, clip.frames, clip.audio, fps=settings.fps, audio_rate=SAMPLE_RATE)
    write_wav(out / wav, clip.audio, audio_rate=SAMPLE_RATE, rate=WAV_RATE)
    label = LABELS[spec.emotion]
    return {"file": flv, "wav": wav, "emotion": label, "sentence": spec.sentence, "level": spec.level,
            "actor": spec.actor, "sex": "male" if spec.male else "female",
            "voice_group": truth.voice_group(label), "face_group": truth.face_group(label),
            **planted_cues(clip)}



def _csv(rows: list[list]) -> str:
    """CREMA-D's CSV dialect: strings quoted, numbers bare."""
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _demographics(actors: int, seed: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    rows = [["ActorID", "Age", "Sex", "Race", "Ethnicity"]]
    for i in range(actors):
        spec = CremaSpec(1001 + i, "IEO", 0, "XX")
        rows.append([spec.actor, int(rng.integers(20, 75)), "Male" if spec.male else "Female",
                     str(rng.choice(["Caucasian", "African American", "Asian", "Unknown"])),
                     str(rng.choice(["Not Hispanic", "Hispanic"]))])
    return _csv(rows)


def _summary_table(specs: list[CremaSpec], votes: dict[str, dict[str, str]], seed: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    rows = [["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote",
             "MultiModalLevel"]]
    for n, spec in enumerate(specs, start=1):
        v = votes[spec.clip_id]
        levels = [round(float(x), 1) for x in rng.uniform(20, 90, 3)]
        rows.append([str(n), spec.clip_id, v["audio"], levels[0], v["visual"], levels[1], v["av"], levels[2]])
    return _csv(rows)


def _validate(actors, clips_per_class, seconds, fps, size) -> None:
    problems = []
    if not 5 <= actors <= 91:
        problems.append(f"actors={actors}: must be 5..91 (five folds, ids 1001..1091)")
    if not 1 <= clips_per_class <= len(_COMBOS):
        problems.append(f"clips_per_class={clips_per_class}: must be 1..{len(_COMBOS)}")
    problems += media_problems(seconds, fps, size)
    if problems:
        raise ValueError("synthetic CREMA-D: " + "; ".join(problems))


def generate_cremad(out: Path, *, actors: int = 10, clips_per_class: int = 2, seconds: float = 2.0,
                    fps: int = 30, size: int = 256, seed: int = 0, workers: int | None = None) -> list[Path]:
    """Write a synthetic CREMA-D with planted ground truth (see the module docstring).

    Args:
        out: output folder (created).
        actors: actors 1001..1000+actors (5..91).
        clips_per_class: (sentence, level) combinations per actor and emotion, before the
            irregular gaps.
        seconds: clip length.
        fps: video frame rate.
        size: frame width and height, pixels (even).
        seed: dataset seed; the same seed gives the same files.
        workers: processes (default: 2, at most the CPU count); 1 renders in this process.

    Returns:
        The written ``.flv`` paths, sorted.

    Raises:
        ValueError: naming every invalid argument.
    """
    _validate(actors, clips_per_class, seconds, fps, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = clip_specs(actors, clips_per_class)
    remove_stale(out, {f"{folder}/{s.clip_id}.{ext}" for s in specs
                       for folder, ext in (("VideoFlash", "flv"), ("AudioWAV", "wav"))}, "CREMA-D")
    settings = Settings(seconds=float(seconds), fps=int(fps), size=int(size), seed=int(seed))
    entries = render_all(render_clip, [(out, spec, settings) for spec in specs], workers)
    votes = {s.clip_id: human_votes(seed, s) for s in specs}
    atomic_write_text(out / cremad.DEMOGRAPHICS, _demographics(actors, seed))
    atomic_write_text(out / cremad.SUMMARY_TABLE, _summary_table(specs, votes, seed))
    manifest = {
        "format": "fer-synth-manifest",
        "version": 1,
        "dataset": "crema-d",
        "settings": {**asdict(settings), "actors": actors, "clips_per_class": clips_per_class,
                     "audio_rate": FLV_AUDIO_RATE, "wav_rate": WAV_RATE},
        "keypoint_names": list(KEYPOINT_NAMES),
        "voice_groups": _groups(truth.VOICE_GROUPS),
        "face_groups": _groups(truth.FACE_GROUPS),
        "clips": {s.clip_id: {**entry, "human": votes[s.clip_id]} for s, entry in zip(specs, entries)},
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return sorted(out / entry["file"] for entry in entries)


def _groups(groups: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """``truth``'s groups restricted to the CREMA-D emotions (empty groups dropped)."""
    kept = {name: [e for e in members if e in LABELS] for name, members in groups.items()}
    return {name: members for name, members in kept.items() if members}
