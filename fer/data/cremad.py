"""CREMA-D from its files: clips from names, actors' sex, the crema-d-5fold protocol, human votes.

CREMA-D (Cao et al. 2014): 7,442 clips of 91 actors (1001..1091), named
``ActorID_Sentence_Emotion_Level`` (``1001_IEO_HAP_LO``), as ``VideoFlash/<name>.flv`` (video with
sound), ``AudioWAV/<name>.wav`` and ``AudioMP3/<name>.mp3``. The files are found anywhere under
the data root by extension; a clip is counted once however many of them exist. Frames come from
the ``.flv``; audio from the ``.wav``, else the ``.flv``'s track, else the ``.mp3``.

``VideoDemographics.csv`` gives each actor's sex, from which ``crema-d-5fold`` deals the actors
(males, then females, each in id order) round-robin into five blocks. ``processedResults/
summaryTable.csv`` gives per clip the raters' majority vote from the voice, the face and both;
:func:`human_reference` turns it into UAR and WAR over a set of clips.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fer.data.protocols import Protocol, rotating, round_robin

SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
EMOTION_CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")  # index order of emotions("crema-d")
VOTE_LETTERS = "ADFHNS"  # the summary table's letter for each emotion, same order
LEVELS = ("LO", "MD", "HI", "XX")  # low, medium, high (sentence IEO only), unspecified
ACTORS = range(1001, 1092)
MEDIA_SUFFIXES = (".flv", ".wav", ".mp3")
DEMOGRAPHICS = "VideoDemographics.csv"
SUMMARY_TABLE = Path("processedResults") / "summaryTable.csv"
PROTOCOL = "crema-d-5fold"
N_BLOCKS = 5
# Modality of the human reference -> the summary table's vote column.
VOTE_COLUMNS = {"audio": "VoiceVote", "visual": "FaceVote", "av": "MultiModalVote"}
_METADATA_DIRS = {"__MACOSX"}


class CremaDNameError(ValueError):
    """A file name that is not a valid CREMA-D name; the message names the file and field."""


class CremaDIndexWarning(UserWarning):
    """A file the index skipped or had to choose between (see ``index_clips``)."""


class CremaDFileError(ValueError):
    """A demographics or summary table that is missing or cannot be read; names file and row."""


@dataclass(frozen=True)
class Clip:
    """One CREMA-D clip with the files that carry its frames and its audio.

    ``emotion`` is the label index (``EMOTION_CODES`` order); ``clip_id`` is the name without
    extension. The fields the training code reads are those of a RAVDESS clip: clip_id, emotion,
    actor, video_path, audio_path, audio_from_video.
    """

    clip_id: str
    actor: int
    sentence: str
    emotion: int
    level: str
    video_path: Path | None
    audio_path: Path | None
    audio_from_video: bool


@dataclass(frozen=True)
class CremaDIndex:
    """Clips sorted by clip_id, and every (file, reason) the scan could not take as is."""

    clips: list[Clip]
    problems: list[tuple[Path, str]]


def parse_stem(stem: str, name: str | None = None) -> tuple[int, str, int, str]:
    """Decode ``ActorID_Sentence_Emotion_Level`` into (actor, sentence, emotion index, level).

    Args:
        stem: the name without extension (a clip id).
        name: what to call it in errors (default: the stem).

    Raises:
        CremaDNameError: naming the file and the first malformed or unknown field.
    """
    name = name or stem
    parts = stem.split("_")
    if len(parts) != 4:
        raise CremaDNameError(f"{name}: expected ActorID_Sentence_Emotion_Level "
                              f"(e.g. 1001_IEO_HAP_LO), found {len(parts)} fields")
    actor, sentence, emotion, level = parts
    if not (len(actor) == 4 and actor.isdigit() and int(actor) in ACTORS):
        raise CremaDNameError(f"{name}: actor {actor!r} is not an id in 1001..1091")
    for field, value, known in (("sentence", sentence, SENTENCES), ("emotion", emotion, EMOTION_CODES),
                                ("level", level, LEVELS)):
        if value not in known:
            raise CremaDNameError(f"{name}: unknown {field} {value!r} (known: {', '.join(known)})")
    return int(actor), sentence, EMOTION_CODES.index(emotion), level


def _media_files(root: Path):
    """Yield (folder, file name) of every .flv/.wav/.mp3 under root, in path order.

    A Path per file would cost more than the rest of the scan: only the files a clip uses
    become Paths (``_clip``), as children of their folder's.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _METADATA_DIRS)
        folder = Path(dirpath)
        for fname in sorted(filenames):
            if not fname.startswith(".") and fname[-4:].lower() in MEDIA_SUFFIXES:
                yield folder, fname


def check_vocal_channel(vocal_channel: str) -> None:
    """CREMA-D is all speech: "speech" and "both" mean every clip, "song" is an error."""
    if vocal_channel not in ("speech", "both"):
        raise ValueError(f"vocal_channel {vocal_channel!r}: CREMA-D has spoken clips only "
                         "(use 'speech')")


def scan_dataset(root: str | Path, vocal_channel: str = "speech") -> CremaDIndex:
    """Index the CREMA-D clips under root from file names (one directory walk, no decoding).

    A .flv/.wav/.mp3 whose name is not a valid CREMA-D name is a problem and left out. When two
    files claim the same role (same extension and clip), the first in path order is used and the
    other is a problem naming both. Other files are ignored.

    Args:
        root: data root (``VideoFlash/``, ``AudioWAV/``, ``AudioMP3/`` anywhere below it).
        vocal_channel: "speech" or "both" (the same here).

    Returns:
        The clips, sorted by clip_id, and the (file, reason) problems in path order.

    Raises:
        NotADirectoryError: root is not a folder.
        ValueError: vocal_channel "song".
    """
    check_vocal_channel(vocal_channel)
    if not Path(root).is_dir():
        raise NotADirectoryError(f"CREMA-D data root {root} is not a folder")
    problems: list[tuple[Path, str]] = []
    roles: dict[str, dict[str, tuple[Path, str]]] = {}  # clip_id -> suffix -> (folder, file name)
    fields: dict[str, tuple[int, str, int, str]] = {}
    for folder, fname in _media_files(Path(root)):
        stem, suffix = fname[:-4], fname[-4:].lower()
        if stem not in fields:  # the clip's other files have the same stem: parsed once
            try:
                fields[stem] = parse_stem(stem, fname)
            except CremaDNameError as exc:
                problems.append((folder / fname, str(exc)))
                continue
        clip_roles = roles.setdefault(stem, {})
        if suffix in clip_roles:
            problems.append((folder / fname, f"same clip and file type as "
                                             f"{_path(clip_roles[suffix])}; using that one"))
            continue
        clip_roles[suffix] = (folder, fname)
    clips = [_clip(cid, fields[cid], roles[cid]) for cid in sorted(roles)]
    return CremaDIndex(clips=clips, problems=problems)


def _path(file: tuple[Path, str]) -> Path:
    return file[0] / file[1]


def _clip(clip_id: str, fields: tuple[int, str, int, str], files: dict[str, tuple[Path, str]]) -> Clip:
    """Pick the frame and audio sources of one clip from its files by extension."""
    actor, sentence, emotion, level = fields
    video = _path(files[".flv"]) if ".flv" in files else None
    if ".wav" in files:
        audio = _path(files[".wav"])
    else:  # the .flv's own track, else the .mp3 (a clip has at least one of the three)
        audio = video or _path(files[".mp3"])
    return Clip(clip_id=clip_id, actor=actor, sentence=sentence, emotion=emotion, level=level,
                video_path=video, audio_path=audio, audio_from_video=audio is video)


def index_clips(root: str | Path, vocal_channel: str = "speech") -> list[Clip]:
    """``scan_dataset`` that emits each problem as a ``CremaDIndexWarning`` naming the file."""
    index = scan_dataset(root, vocal_channel)
    for path, reason in index.problems:
        warnings.warn(f"{path}: {reason}", CremaDIndexWarning, stacklevel=2)
    return index.clips


def _rows(path: Path, required: tuple[str, ...], what: str):
    """Yield (line number, row dict) of a CSV whose header holds ``required``."""
    if not path.is_file():
        raise CremaDFileError(f"{path}: not found; {what}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CremaDFileError(f"{path}: header lacks column(s) {', '.join(missing)} "
                                  f"(found: {', '.join(reader.fieldnames or []) or 'nothing'})")
        for row in reader:
            yield reader.line_num, row


def read_demographics(root: str | Path) -> dict[int, str]:
    """Each actor's sex from ``<root>/VideoDemographics.csv``.

    Returns:
        actor id -> "male" or "female", sorted by id.

    Raises:
        CremaDFileError: the file is missing, lacks ActorID/Sex, or a row has an actor id outside
            1001..1091, a sex other than Male/Female, or a repeated actor (named by line).
    """
    path = Path(root) / DEMOGRAPHICS
    sexes: dict[int, str] = {}
    for line, row in _rows(path, ("ActorID", "Sex"), f"the {PROTOCOL} protocol deals actors by sex from it"):
        actor, sex = (row["ActorID"] or "").strip(), (row["Sex"] or "").strip()
        if not (actor.isdigit() and int(actor) in ACTORS):
            raise CremaDFileError(f"{path}, line {line}: ActorID {actor!r} is not an id in 1001..1091")
        if sex not in ("Male", "Female"):
            raise CremaDFileError(f"{path}, line {line}: Sex {sex!r} is neither 'Male' nor 'Female'")
        if int(actor) in sexes:
            raise CremaDFileError(f"{path}, line {line}: actor {actor} appears twice")
        sexes[int(actor)] = sex.lower()
    return dict(sorted(sexes.items()))


def make_protocol(sexes: Mapping[int, str], source: str | Path | None = None) -> Protocol:
    """``crema-d-5fold`` over these actors: males then females, each in id order, dealt to 5 blocks.

    Args:
        sexes: actor id -> "male" / "female" (``read_demographics``).
        source: the demographics file, named when clips have an actor it lacks.
    """
    ordered = [a for sex in ("male", "female") for a in sorted(sexes) if sexes[a] == sex]
    return rotating(PROTOCOL, "actors dealt round-robin (males, then females, by id) to 5 blocks; "
                              "test block k, validation block k+1 mod 5, train the other three",
                    round_robin(ordered, N_BLOCKS), actors_from=None if source is None else str(source))


@dataclass(frozen=True)
class HumanVotes:
    """The raters' majority vote of one clip per modality, as emotion indices (several on a tie)."""

    audio: tuple[int, ...]
    visual: tuple[int, ...]
    av: tuple[int, ...]


def _vote(value: str) -> tuple[int, ...]:
    """``"A"`` -> (0,), ``"D:H"`` -> (1, 3); ValueError on anything else."""
    letters = (value or "").strip().split(":")
    if not all(len(x) == 1 and x in VOTE_LETTERS for x in letters) or len(set(letters)) < len(letters):
        raise ValueError(f"{value!r} is not emotion letters ({', '.join(VOTE_LETTERS)}) joined by ':'")
    return tuple(sorted(VOTE_LETTERS.index(x) for x in letters))


def read_summary_table(path: str | Path) -> dict[str, HumanVotes]:
    """The majority votes of ``processedResults/summaryTable.csv``, by clip id.

    Args:
        path: the summary table (``<root>/processedResults/summaryTable.csv``).

    Returns:
        clip id (``FileName``) -> its votes.

    Raises:
        CremaDFileError: the file is missing, lacks a column, or a row has a malformed vote,
            file name or a repeated file name (named by line and column).
    """
    path = Path(path)
    votes: dict[str, HumanVotes] = {}
    for line, row in _rows(path, ("FileName", *VOTE_COLUMNS.values()), "it holds the human votes"):
        clip_id = (row["FileName"] or "").strip()
        try:
            parse_stem(clip_id)
        except CremaDNameError as exc:
            raise CremaDFileError(f"{path}, line {line}: FileName {exc}") from None
        if clip_id in votes:
            raise CremaDFileError(f"{path}, line {line}: FileName {clip_id} appears twice")
        parsed = {}
        for modality, column in VOTE_COLUMNS.items():
            try:
                parsed[modality] = _vote(row[column])
            except ValueError as exc:
                raise CremaDFileError(f"{path}, line {line}: {column} {exc}") from None
        votes[clip_id] = HumanVotes(**parsed)
    return votes


def human_reference(clips: Iterable[Clip | str],
                    votes: str | Path | Mapping[str, HumanVotes]) -> dict[str, dict[str, float]]:
    """How well the raters' majority vote recognises the displayed emotion of these clips.

    A vote that ties k emotions earns 1/k when the displayed emotion is among them, else 0.
    WAR is the mean credit over clips; UAR the mean over emotions of the mean credit of that
    emotion's clips (over the emotions present, as ``fer.train.metrics``).

    Args:
        clips: clips or clip ids (the displayed emotion is read from the id).
        votes: the summary table's path, or ``read_summary_table``'s result.

    Returns:
        ``{"audio": {"uar", "war"}, "visual": {...}, "av": {...}}``, fractions in [0, 1], from
        the voice, face and multimodal votes.

    Raises:
        ValueError: no clips, or clips without a row in the table (named).
    """
    if not isinstance(votes, Mapping):
        votes = read_summary_table(votes)
    ids = [c if isinstance(c, str) else c.clip_id for c in clips]
    if not ids:
        raise ValueError("human reference over no clips")
    missing = [cid for cid in ids if cid not in votes]
    if missing:
        raise ValueError(f"{len(missing)} clips have no row in the summary table, e.g. "
                         f"{', '.join(missing[:5])}")
    shown = [parse_stem(cid)[2] for cid in ids]
    out = {}
    for modality in VOTE_COLUMNS:
        credit = [1 / len(v) if e in v else 0.0
                  for e, v in zip(shown, (getattr(votes[cid], modality) for cid in ids))]
        per_emotion: dict[int, list[float]] = {}
        for e, c in zip(shown, credit):
            per_emotion.setdefault(e, []).append(c)
        out[modality] = {"uar": sum(sum(c) / len(c) for c in per_emotion.values()) / len(per_emotion),
                         "war": sum(credit) / len(credit)}
    return out
