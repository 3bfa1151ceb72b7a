"""The RAVDESS index on trees of empty files carrying the real names, in both extraction layouts.

Empty files also prove the index never opens or decodes a file.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from fer.data.ravdess import (Clip, RavdessIndex, RavdessIndexWarning,
                              RavdessNameError, index_clips,
                              parse_name, scan_dataset)
from fer.labels import EMOTIONS

CHANNELS = {"speech": (1, "Speech"), "song": (2, "Song")}


def real_clips(channel: str) -> list[tuple[int, ...]]:
    """(vocal, emotion, intensity, statement, repetition, actor) codes of the official release.

    Speech: 8 emotions; song: no disgust (07) or surprised (08) and no actor 18. Neutral (01)
    has normal intensity only.
    """
    vocal = CHANNELS[channel][0]
    emotions = range(1, 9) if channel == "speech" else range(1, 7)
    actors = [a for a in range(1, 25) if not (channel == "song" and a == 18)]
    return [(vocal, e, i, s, r, a)
            for a in actors for e in emotions for i in ((1,) if e == 1 else (1, 2))
            for s in (1, 2) for r in (1, 2)]


def name(modality: int, codes: tuple[int, ...]) -> str:
    ext = "wav" if modality == 3 else "mp4"
    return "-".join(f"{c:02d}" for c in (modality, *codes)) + "." + ext


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write_tree(root: Path, layout: str) -> Path:
    """Empty 01, 02 and 03 files of every speech and song clip, as the official zips extract.

    "side-by-side": each zip into its own folder (``Video_Speech_Actor_01/Actor_01``,
    ``Audio_Speech_Actors_01-24/Actor_01``, ...); "merged": all into ``root/Actor_NN``.
    Finder and readme clutter is added next to the media.
    """
    n = 0
    for channel, (_, title) in CHANNELS.items():
        for codes in real_clips(channel):
            actor_dir = f"Actor_{codes[-1]:02d}"
            for modality in (1, 2, 3):
                if layout == "merged":
                    folder = root / actor_dir
                elif modality == 3:
                    folder = root / f"Audio_{title}_Actors_01-24" / actor_dir
                else:
                    folder = root / f"Video_{title}_{actor_dir}" / actor_dir
                touch(folder / name(modality, codes))
                n += 1
    assert n == 7356  # the official release's file count
    touch(root / "README.txt")
    touch(root / "Actor_01" / ".DS_Store")
    touch(root / "__MACOSX" / "Actor_01" / ("._" + name(1, real_clips("speech")[0])))
    return root


@pytest.fixture(scope="module", params=["side-by-side", "merged"])
def tree(request, tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp(request.param), request.param)


# ---- names ----------------------------------------------------------------------------------

def test_parse_name_decodes_every_field():
    n = parse_name(Path("/x/Actor_05/02-02-06-02-01-02-05.mp4"))
    assert (n.modality, n.vocal_channel, n.emotion, n.intensity, n.statement, n.repetition,
            n.actor) == (2, "song", 5, 2, 1, 2, 5)
    assert EMOTIONS[n.emotion] == "fearful"
    assert n.clip_id == "02-06-02-01-02-05"
    assert parse_name("03-01-08-01-02-01-24.wav").clip_id == "01-08-01-02-01-24"


@pytest.mark.parametrize("fname, field", [
    ("04-01-01-01-01-01-01.mp4", "modality"),
    ("01-03-01-01-01-01-01.mp4", "vocal channel"),
    ("01-01-00-01-01-01-01.mp4", "emotion"),
    ("01-01-09-01-01-01-01.mp4", "emotion"),
    ("01-01-01-03-01-01-01.mp4", "intensity"),
    ("01-01-01-01-03-01-01.mp4", "statement"),
    ("01-01-01-01-01-03-01.mp4", "repetition"),
    ("01-01-01-01-01-01-25.mp4", "actor"),
    ("01-01-01-01-01-01-00.mp4", "actor"),
    ("01-01-x1-01-01-01-01.mp4", "emotion"),
    ("01-01-1-01-01-01-01.mp4", "emotion"),
    ("01-01-01-01-01-01.mp4", "7 two-digit fields"),
    ("03-01-01-01-01-01-01.mp4", ".wav"),
    ("01-01-01-01-01-01-01.wav", ".mp4"),
])
def test_parse_name_rejects_with_file_and_field(fname, field):
    with pytest.raises(RavdessNameError) as err:
        parse_name(Path("/data/Actor_01") / fname)
    assert fname in str(err.value) and field in str(err.value)


# ---- the real distribution -------------------------------------------------------------------

def test_speech_counts(tree):
    index = scan_dataset(tree)  # speech is the default
    assert index.problems == []
    clips = index.clips
    assert len(clips) == 1440
    assert [c.clip_id for c in clips] == sorted({c.clip_id for c in clips})  # sorted, each once
    assert Counter(c.actor for c in clips) == {a: 60 for a in range(1, 25)}
    assert Counter(EMOTIONS[c.emotion] for c in clips) == {
        e: 96 if e == "neutral" else 192 for e in EMOTIONS}
    assert {c.vocal_channel for c in clips} == {"speech"}
    assert not any(c.emotion == 0 and c.intensity == 2 for c in clips)


def test_song_counts(tree):
    clips = scan_dataset(tree, "song").clips
    assert len(clips) == 1012
    assert Counter(c.actor for c in clips) == {a: 44 for a in range(1, 25) if a != 18}
    assert Counter(EMOTIONS[c.emotion] for c in clips) == {
        "neutral": 92, "calm": 184, "happy": 184, "sad": 184, "angry": 184, "fearful": 184}
    assert {c.vocal_channel for c in clips} == {"song"}


def test_both_channels_is_the_union(tree):
    both = scan_dataset(tree, "both").clips
    assert len(both) == 1440 + 1012
    speech, song = scan_dataset(tree, "speech").clips, scan_dataset(tree, "song").clips
    assert both == sorted(speech + song, key=lambda c: c.clip_id)


def test_every_clip_takes_frames_and_audio_from_its_01_file(tree):
    for c in scan_dataset(tree, "both").clips:
        assert c.video_path == c.audio_path and c.audio_from_video
        assert c.video_path.name == "01-" + c.clip_id + ".mp4"
        assert c.video_path.parent.name == f"Actor_{c.actor:02d}"


def test_scan_of_the_full_tree_is_fast(tree):
    start = time.perf_counter()
    scan_dataset(tree, "both")
    # Names only: the 7,356-file tree takes well under a second; 5 s absorbs a busy machine.
    assert time.perf_counter() - start < 5.0


# ---- sources, fallbacks and problems ---------------------------------------------------------

CODES = (1, 3, 2, 1, 2, 7)  # speech, happy, strong, statement 1, repetition 2, actor 7


def test_frames_fall_back_to_02_and_audio_to_03(tmp_path):
    v = touch(tmp_path / "Video_Speech_Actor_07" / "Actor_07" / name(2, CODES))
    a = touch(tmp_path / "Audio_Speech_Actors_01-24" / "Actor_07" / name(3, CODES))
    (clip,) = scan_dataset(tmp_path).clips
    assert clip == Clip(clip_id="01-03-02-01-02-07", vocal_channel="speech", emotion=2,
                        intensity=2, statement=1, repetition=2, actor=7, video_path=v,
                        audio_path=a, audio_from_video=False)


@pytest.mark.parametrize("modality, has_video, has_audio", [(1, True, True), (2, True, False),
                                                            (3, False, True)])
def test_a_single_file_makes_a_clip(tmp_path, modality, has_video, has_audio):
    f = touch(tmp_path / "Actor_07" / name(modality, CODES))
    (clip,) = scan_dataset(tmp_path).clips
    assert clip.video_path == (f if has_video else None)
    assert clip.audio_path == (f if has_audio else None)
    assert clip.audio_from_video == (modality == 1)


def test_01_file_wins_over_02_and_03(tmp_path):
    files = {m: touch(tmp_path / "Actor_07" / name(m, CODES)) for m in (1, 2, 3)}
    (clip,) = scan_dataset(tmp_path).clips
    assert clip.video_path == clip.audio_path == files[1]


def test_actor_differing_from_its_folder_is_a_problem(tmp_path):
    good = touch(tmp_path / "Actor_07" / name(1, CODES))
    bad = touch(tmp_path / "Actor_08" / name(3, CODES))
    index = scan_dataset(tmp_path)
    assert [c.audio_path for c in index.clips] == [good]
    assert [(p, "Actor_08" in msg and "actor 07" in msg) for p, msg in index.problems] == [(bad, True)]


def test_unknown_code_and_bad_names_are_problems_other_files_ignored(tmp_path):
    touch(tmp_path / "Actor_07" / name(1, CODES))
    bad_code = touch(tmp_path / "Actor_07" / "01-01-09-01-01-01-07.mp4")
    bad_wav = touch(tmp_path / "Actor_07" / "take3.wav")
    for other in ("README.md", ".DS_Store", "notes.txt", "01-01-01-01-01-01-07.txt"):
        touch(tmp_path / "Actor_07" / other)
    index = scan_dataset(tmp_path)
    assert len(index.clips) == 1
    problems = dict(index.problems)
    assert set(problems) == {bad_code, bad_wav}
    assert "unknown emotion code 09" in problems[bad_code]
    assert "take3.wav" in problems[bad_wav]


def test_two_files_claiming_one_role_keep_the_first_and_name_both(tmp_path):
    first = touch(tmp_path / "a" / "Actor_07" / name(2, CODES))
    second = touch(tmp_path / "b" / "Actor_07" / name(2, CODES))
    touch(tmp_path / "b" / "Actor_07" / name(3, CODES))
    index = scan_dataset(tmp_path)
    (clip,) = index.clips
    assert clip.video_path == first
    ((path, msg),) = index.problems
    assert path == second and str(first) in msg


def test_media_outside_an_actor_folder_is_a_problem(tmp_path):
    stray = touch(tmp_path / "loose" / name(1, CODES))
    index = scan_dataset(tmp_path)
    assert index.clips == [] and [p for p, _ in index.problems] == [stray]


def test_unselected_channel_is_skipped_without_problems(tmp_path):
    song = (2, *CODES[1:])
    touch(tmp_path / "Actor_08" / name(1, song))  # folder mismatch, but song is not asked for
    assert scan_dataset(tmp_path, "speech") == RavdessIndex(clips=[], problems=[])
    assert len(scan_dataset(tmp_path, "song").problems) == 1


def test_index_clips_warns_naming_each_file(tmp_path):
    touch(tmp_path / "Actor_07" / name(1, CODES))
    bad = touch(tmp_path / "Actor_07" / "01-01-01-01-01-01-99.mp4")
    with pytest.warns(RavdessIndexWarning, match="01-01-01-01-01-01-99.mp4.*actor") as rec:
        clips = index_clips(tmp_path)
    assert len(rec) == 1 and str(bad) in str(rec[0].message)
    assert [c.clip_id for c in clips] == ["01-03-02-01-02-07"]


def test_unknown_vocal_channel_and_missing_root_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="'speech', 'song' or 'both'"):
        scan_dataset(tmp_path, "sung")
    with pytest.raises(NotADirectoryError, match="missing"):
        scan_dataset(tmp_path / "missing")
