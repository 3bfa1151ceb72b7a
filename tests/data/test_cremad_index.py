"""CREMA-D index from names: counts on a tree with the real name pattern and irregular coverage,
where each clip's frames and audio come from, malformed names, and ``folds --dataset crema-d``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer.data.cremad import CremaDIndexWarning, CremaDNameError, index_clips, parse_stem, scan_dataset
from fer.data.datasets import get_dataset
from fer.data.folds import folds_summary
from runner import cli

ACTORS = range(1001, 1007)
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SEX = {1001: "Male", 1002: "Female", 1003: "Male", 1004: "Male", 1005: "Female", 1006: "Female"}
MALFORMED = {
    "VideoFlash/1001_IEO_HAP.flv": "found 3 fields",
    "AudioWAV/0999_IEO_HAP_LO.wav": "actor '0999'",
    "VideoFlash/1001_XYZ_HAP_LO.flv": "unknown sentence 'XYZ'",
    "AudioMP3/1001_IEO_SUR_LO.mp3": "unknown emotion 'SUR'",
    "AudioWAV/1001_IEO_HAP_ZZ.wav": "unknown level 'ZZ'",
}


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def clip_names() -> list[str]:
    """IEO at LO/MD/HI (XX for neutral) and TIE_XX for every actor and emotion, except: actor 1006
    has no SAD, actor 1003 no HI."""
    names = []
    for actor in ACTORS:
        for emo in EMOTIONS:
            if actor == 1006 and emo == "SAD":
                continue
            levels = ["XX"] if emo == "NEU" else [lv for lv in ("LO", "MD", "HI") if not (actor == 1003 and lv == "HI")]
            names += [f"{actor}_IEO_{emo}_{lv}" for lv in levels] + [f"{actor}_TIE_{emo}_XX"]
    return names


def write_tree(root: Path) -> Path:
    """Empty files. Every clip has .flv and .wav, actors 1001-1003 also .mp3, except: actor 1005's
    TIE clips have no .flv, actor 1004's TIE clips no .wav, and 1002_TIE_NEU_XX only its .mp3."""
    for name in clip_names():
        actor, sentence = int(name[:4]), name[5:8]
        only_mp3 = name == "1002_TIE_NEU_XX"
        if not only_mp3 and not (actor == 1005 and sentence == "TIE"):
            touch(root / "VideoFlash" / f"{name}.flv")
        if not only_mp3 and not (actor == 1004 and sentence == "TIE"):
            touch(root / "AudioWAV" / f"{name}.wav")
        if actor <= 1003:
            touch(root / "AudioMP3" / f"{name}.mp3")
    for rel in MALFORMED:
        touch(root / rel)
    for rel in (".DS_Store", "README.txt", "AudioWAV/._1001_IEO_HAP_LO.wav", "__MACOSX/VideoFlash/1001_IEO_HAP_LO.flv"):
        touch(root / rel)
    touch(root / "extra" / "1001_IEO_ANG_LO.flv")  # a second .flv of a clip: the first in path order wins
    rows = ['"ActorID","Age","Sex","Race","Ethnicity"']
    rows += [f'{a},30,"{s}","Asian","Not Hispanic"' for a, s in SEX.items()]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("cremad"))


@pytest.fixture(scope="module")
def index(tree):
    return scan_dataset(tree)


def test_counts_every_clip_once(index):
    # 6 actors x (5 emotions x 4 + neutral 2) = 132, less 1006's 4 SAD and 1003's 5 HI.
    assert len(index.clips) == 123
    assert len({c.clip_id for c in index.clips}) == 123
    assert [c.clip_id for c in index.clips] == sorted(c.clip_id for c in index.clips)
    per_emotion = {e: sum(c.emotion == i for c in index.clips) for i, e in enumerate(EMOTIONS)}
    assert per_emotion == {"ANG": 23, "DIS": 23, "FEA": 23, "HAP": 23, "NEU": 12, "SAD": 19}
    per_actor = {a: sum(c.actor == a for c in index.clips) for a in ACTORS}
    assert per_actor == {1001: 22, 1002: 22, 1003: 17, 1004: 22, 1005: 22, 1006: 18}


def test_frames_from_flv_audio_from_wav_else_flv_else_mp3(index, tree):
    clips = {c.clip_id: c for c in index.clips}
    full = clips["1001_IEO_HAP_LO"]
    assert full.video_path == tree / "VideoFlash" / "1001_IEO_HAP_LO.flv"
    assert full.audio_path == tree / "AudioWAV" / "1001_IEO_HAP_LO.wav" and not full.audio_from_video
    assert (full.actor, full.sentence, full.emotion, full.level) == (1001, "IEO", 3, "LO")
    no_wav = clips["1004_TIE_SAD_XX"]
    assert no_wav.audio_path == no_wav.video_path == tree / "VideoFlash" / "1004_TIE_SAD_XX.flv"
    assert no_wav.audio_from_video
    no_flv = clips["1005_TIE_ANG_XX"]
    assert no_flv.video_path is None and no_flv.audio_path == tree / "AudioWAV" / "1005_TIE_ANG_XX.wav"
    only_mp3 = clips["1002_TIE_NEU_XX"]
    assert only_mp3.video_path is None and only_mp3.audio_path == tree / "AudioMP3" / "1002_TIE_NEU_XX.mp3"
    assert sum(c.video_path is None for c in index.clips) == 7  # 1005's six TIE clips and the mp3-only one
    assert sum(c.audio_from_video for c in index.clips) == 6


def test_malformed_names_are_reported_by_name_and_skipped(index, tree):
    reasons = {str(p.relative_to(tree)): r for p, r in index.problems}
    for rel, words in MALFORMED.items():
        assert Path(rel).name in reasons[rel] and words in reasons[rel]
    assert "using that one" in reasons["extra/1001_IEO_ANG_LO.flv"]
    assert str(tree / "VideoFlash" / "1001_IEO_ANG_LO.flv") in reasons["extra/1001_IEO_ANG_LO.flv"]
    assert len(reasons) == len(MALFORMED) + 1  # dot files, README, __MACOSX ignored


def test_index_clips_warns_per_problem(tree):
    with pytest.warns(CremaDIndexWarning) as caught:
        clips = index_clips(tree)
    assert len(clips) == 123 and len(caught) == len(MALFORMED) + 1


@pytest.mark.parametrize("stem, words", [
    ("1001_IEO_HAP_LO_X", "found 5 fields"), ("1092_IEO_HAP_LO", "1001..1091"), ("101_IEO_HAP_LO", "'101'"),
    ("1001_ieo_HAP_LO", "unknown sentence"), ("1001_IEO_hap_LO", "unknown emotion"),
])
def test_parse_stem_names_the_bad_field(stem, words):
    with pytest.raises(CremaDNameError, match=words):
        parse_stem(stem)


def test_sung_clips_do_not_exist(tree):
    with pytest.raises(ValueError, match="spoken clips only"):
        scan_dataset(tree, "song")
    assert len(scan_dataset(tree, "both").clips) == 123


def test_folds_json_same_schema_as_ravdess(tree):
    result = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(tree), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == folds_summary(tree, None, "speech", "crema-d")
    assert list(out) == ["protocol", "n_clips", "n_actors", "class_counts", "folds"]
    assert (out["protocol"], out["n_clips"], out["n_actors"]) == ("crema-d-5fold", 123, 6)
    assert out["class_counts"] == {"angry": 23, "disgust": 23, "fearful": 23, "happy": 23, "neutral": 12, "sad": 19}
    # Males 1001, 1003, 1004 then females 1002, 1005, 1006 dealt to blocks 0, 1, 2, 3, 4, 0.
    assert [f["test"] for f in out["folds"]] == [[1001, 1006], [1003], [1004], [1002], [1005]]
    fold0 = out["folds"][0]
    assert list(fold0) == ["fold", "train", "val", "test", "n_train", "n_val", "n_test"]  # no summary table
    assert (fold0["val"], fold0["train"]) == ([1003], [1002, 1004, 1005])
    assert (fold0["n_test"], fold0["n_val"], fold0["n_train"]) == (40, 17, 66)
    assert sum(f["n_test"] for f in out["folds"]) == 123
    assert "1001_IEO_HAP.flv" in result.stderr and "unknown level 'ZZ'" in result.stderr


def test_folds_without_demographics_names_the_file(tmp_path):
    touch(tmp_path / "VideoFlash" / "1001_IEO_HAP_LO.flv")
    result = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    assert str(tmp_path / "VideoDemographics.csv") in result.stderr and "not found" in result.stderr


def test_folds_refuses_a_ravdess_protocol_other_than_the_default(tree):
    result = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(tree),
                                      "--protocol", "mer-5fold"])
    assert result.exit_code == 2 and "not a crema-d protocol" in result.output
    assert "crema-d-5fold" in result.output


def test_dataset_interface_indexes_with_the_data_config(tree):
    from fer.data.config import DataConfig

    ds = get_dataset("crema-d")
    assert ds.emotions == ("angry", "disgust", "fearful", "happy", "neutral", "sad")
    with pytest.warns(CremaDIndexWarning):
        clips = ds.index(tree, DataConfig(dataset="crema-d"))
    assert [c.clip_id for c in clips] == [c.clip_id for c in scan_dataset(tree).clips]
