"""RAVDESS file names -> clips, from names alone (nothing is opened or decoded).

A file name is ``MM-VV-EE-II-SS-RR-AA.ext``: modality (01 audio+video, 02 video only,
03 audio only), vocal channel (01 speech, 02 song), emotion (01..08, see ``fer.labels``),
intensity (01 normal, 02 strong), statement (01, 02), repetition (01, 02), actor (01..24,
odd male, even female). Files sit in ``Actor_NN`` folders anywhere under the data root, so
the official zips may be extracted side by side (``Video_Speech_Actor_01/Actor_01/...``,
``Audio_Speech_Actors_01-24/Actor_01/...``) or merged into one set of ``Actor_NN`` folders.

A clip is (vocal channel, emotion, intensity, statement, repetition, actor), counted once
however many of its 01/02/03 files exist. Frames come from the 01 file, else the 02 file;
audio from the 01 file's track, else the 03 wav.

Each field is validated on its own; combinations absent from the official set (strong
neutral, sung disgust) are accepted, because the synthetic dataset may generate them.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

VOCAL_CHANNELS = {1: "speech", 2: "song"}
MEDIA_SUFFIX = {1: ".mp4", 2: ".mp4", 3: ".wav"}  # modality code -> extension of its files
_ACTOR_DIR = re.compile(r"Actor_(\d{2})")
# Finder and zip-tool metadata (.DS_Store, ._name.mp4 resource forks, __MACOSX/) mirror real
# names without being media; they are skipped rather than reported.
_METADATA_DIRS = {"__MACOSX"}


class RavdessNameError(ValueError):
    """A file name that is not a valid RAVDESS name; the message names the file and field."""


class RavdessIndexWarning(UserWarning):
    """A file the index skipped or had to choose between (see ``index_clips``)."""


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of one file name, decoded.

    ``emotion`` is the label index (code - 1, as in ``fer.labels.EMOTIONS``); the other
    fields keep their codes, except ``vocal_channel`` which is "speech" or "song".
    """

    modality: int
    vocal_channel: str
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def clip_id(self) -> str:
        return make_clip_id(self.vocal_channel, self.emotion, self.intensity, self.statement,
                            self.repetition, self.actor)


def make_clip_id(vocal_channel: str, emotion: int, intensity: int, statement: int, repetition: int,
                 actor: int) -> str:
    """vocal-emotion-intensity-statement-repetition-actor codes, modality dropped (emotion 0..7)."""
    vocal = 1 if vocal_channel == "speech" else 2
    codes = (vocal, emotion + 1, intensity, statement, repetition, actor)
    return "-".join(f"{c:02d}" for c in codes)


@dataclass(frozen=True)
class Clip:
    """One RAVDESS clip with the files that carry its frames and its audio."""

    clip_id: str
    vocal_channel: str
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int
    video_path: Path | None
    audio_path: Path | None
    audio_from_video: bool


@dataclass(frozen=True)
class RavdessIndex:
    """Clips sorted by clip_id, and every (file, reason) the scan could not take as is."""

    clips: list[Clip]
    problems: list[tuple[Path, str]]


# (field name, allowed codes) in file-name order.
_FIELDS: tuple[tuple[str, range], ...] = (
    ("modality", range(1, 4)),
    ("vocal channel", range(1, 3)),
    ("emotion", range(1, 9)),
    ("intensity", range(1, 3)),
    ("statement", range(1, 3)),
    ("repetition", range(1, 3)),
    ("actor", range(1, 25)),
)


def parse_name(path: str | Path) -> RavdessName:
    """Decode a RAVDESS file name, validating all seven fields and the extension.

    Args:
        path: the file (only its name is read).

    Returns:
        The decoded name.

    Raises:
        RavdessNameError: naming the file and the first field that is malformed or unknown.
    """
    name = Path(path).name
    stem, suffix = os.path.splitext(name)
    parts = stem.split("-")
    if len(parts) != len(_FIELDS):
        raise RavdessNameError(f"{name}: expected 7 two-digit fields MM-VV-EE-II-SS-RR-AA, "
                               f"found {len(parts)}")
    codes = []
    for (field, allowed), part in zip(_FIELDS, parts):
        if len(part) != 2 or not part.isdigit():
            raise RavdessNameError(f"{name}: {field} {part!r} is not a two-digit code")
        code = int(part)
        if code not in allowed:
            raise RavdessNameError(f"{name}: unknown {field} code {part} "
                                   f"(known: {allowed.start:02d}..{allowed.stop - 1:02d})")
        codes.append(code)
    modality = codes[0]
    if suffix.lower() != MEDIA_SUFFIX[modality]:
        raise RavdessNameError(f"{name}: modality {modality:02d} files are "
                               f"{MEDIA_SUFFIX[modality]}, not {suffix or 'extensionless'}")
    return RavdessName(modality=modality, vocal_channel=VOCAL_CHANNELS[codes[1]],
                       emotion=codes[2] - 1, intensity=codes[3], statement=codes[4],
                       repetition=codes[5], actor=codes[6])


def _channels(vocal_channel: str) -> set[str]:
    if vocal_channel == "both":
        return set(VOCAL_CHANNELS.values())
    if vocal_channel not in VOCAL_CHANNELS.values():
        raise ValueError(f"vocal_channel {vocal_channel!r}: expected 'speech', 'song' or 'both'")
    return {vocal_channel}


def _media_files(root: Path):
    """Yield (file, Actor_NN folder number or None) for every .mp4/.wav under root, sorted."""
    suffixes = set(MEDIA_SUFFIX.values())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _METADATA_DIRS)
        match = _ACTOR_DIR.fullmatch(os.path.basename(dirpath))
        folder_actor = int(match.group(1)) if match else None
        for fname in sorted(filenames):
            if fname.startswith(".") or os.path.splitext(fname)[1].lower() not in suffixes:
                continue
            yield Path(dirpath) / fname, folder_actor


def scan_dataset(root: str | Path, vocal_channel: str = "speech") -> RavdessIndex:
    """Index the RAVDESS clips under root from file names (one directory walk, no decoding).

    A .mp4/.wav file becomes a problem, and is left out, when its name is not a valid
    RAVDESS name, when it is not inside an ``Actor_NN`` folder, or when its actor differs
    from that folder's. When two files claim the same role (same modality and clip), the
    first in path order is used and the other is a problem naming both. Files of a vocal
    channel not asked for are skipped once their name has been checked. Other files
    (.DS_Store, README, ...) are ignored.

    Args:
        root: data root; the official zips extracted anywhere below it.
        vocal_channel: "speech", "song" or "both".

    Returns:
        The clips, sorted by clip_id, and the (file, reason) problems in path order.

    Raises:
        NotADirectoryError: root is not a folder.
        ValueError: unknown vocal_channel.
    """
    channels = _channels(vocal_channel)
    if not Path(root).is_dir():
        raise NotADirectoryError(f"RAVDESS data root {root} is not a folder")
    problems: list[tuple[Path, str]] = []
    roles: dict[str, dict[int, Path]] = {}  # clip_id -> modality -> file
    names: dict[str, RavdessName] = {}
    for path, folder_actor in _media_files(Path(root)):
        try:
            name = parse_name(path)
        except RavdessNameError as exc:
            problems.append((path, str(exc)))
            continue
        if name.vocal_channel not in channels:
            continue
        if folder_actor is None:
            problems.append((path, "not inside an Actor_NN folder; skipped"))
            continue
        if folder_actor != name.actor:
            problems.append((path, f"actor {name.actor:02d} in the name but the folder is "
                                   f"Actor_{folder_actor:02d}; skipped"))
            continue
        clip_roles = roles.setdefault(name.clip_id, {})
        if name.modality in clip_roles:
            problems.append((path, f"same modality and clip as {clip_roles[name.modality]}; "
                                   "using that one"))
            continue
        clip_roles[name.modality] = path
        names[name.clip_id] = name
    clips = [_clip(names[cid], roles[cid]) for cid in sorted(roles)]
    return RavdessIndex(clips=clips, problems=problems)


def _clip(name: RavdessName, files: dict[int, Path]) -> Clip:
    """Pick the frame and audio sources of one clip from its files by modality."""
    video = files.get(1, files.get(2))
    audio = files.get(1, files.get(3))
    return Clip(clip_id=name.clip_id, vocal_channel=name.vocal_channel, emotion=name.emotion,
                intensity=name.intensity, statement=name.statement, repetition=name.repetition,
                actor=name.actor, video_path=video, audio_path=audio, audio_from_video=1 in files)


def index_clips(root: str | Path, vocal_channel: str = "speech") -> list[Clip]:
    """``scan_dataset`` that emits each problem as a ``RavdessIndexWarning`` naming the file.

    Args:
        root: data root.
        vocal_channel: "speech", "song" or "both".

    Returns:
        The clips, sorted by clip_id.
    """
    index = scan_dataset(root, vocal_channel)
    for path, reason in index.problems:
        warnings.warn(f"{path}: {reason}", RavdessIndexWarning, stacklevel=2)
    return index.clips
