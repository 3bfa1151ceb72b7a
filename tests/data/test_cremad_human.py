"""Human reference from CREMA-D's summary table: the arithmetic on a hand-made table with ties
(values worked out by hand below), the table's errors, and ``folds --json``'s per-fold ``human``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer.data.cremad import CremaDFileError, HumanVotes, human_reference, read_summary_table
from runner import cli

HEADER = '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"'
# clip, voice, face, multimodal vote
VOTES = [
    ("1001_IEO_ANG_HI", "A", "A", "A"),
    ("1001_TIE_ANG_XX", "A:D", "D", "A"),
    ("1001_IOM_DIS_XX", "A:D", "D", "D:N"),
    ("1002_IEO_HAP_LO", "H:N:S", "H", "H"),
    ("1002_TIE_NEU_XX", "N", "H:N", "N"),
    ("1002_IOM_SAD_XX", "N", "S", "F:S"),
    ("1003_IEO_FEA_MD", "S", "S", "S"),  # in the table, not asked for below
]
ASKED = [v[0] for v in VOTES[:6]]


def write_table(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def table_rows(votes=VOTES) -> list[str]:
    return [f'"{i}","{c}","{v}",50.5,"{f}",60,"{m}",70.25' for i, (c, v, f, m) in enumerate(votes, 1)]


@pytest.fixture
def table(tmp_path) -> Path:
    return write_table(tmp_path / "processedResults" / "summaryTable.csv", table_rows())


def test_votes_are_read_with_ties(table):
    votes = read_summary_table(table)
    assert len(votes) == 7
    assert votes["1002_IEO_HAP_LO"] == HumanVotes(audio=(3, 4, 5), visual=(3,), av=(3,))
    assert votes["1001_TIE_ANG_XX"].audio == (0, 1)


def test_arithmetic_by_hand(table):
    ref = human_reference(ASKED, table)
    assert list(ref) == ["audio", "visual", "av"]
    # Voice credits 1, 1/2, 1/2, 1/3, 1, 0. WAR = (10/3) / 6 = 5/9. Per emotion: angry (1 + 1/2) / 2
    # = 3/4, disgust 1/2, happy 1/3, neutral 1, sad 0 (fearful absent): UAR = (31/12) / 5 = 31/60.
    assert ref["audio"] == {"uar": pytest.approx(31 / 60), "war": pytest.approx(5 / 9)}
    # Face credits 1, 0, 1, 1, 1/2, 1: WAR 4.5 / 6; per emotion 1/2, 1, 1, 1/2, 1: UAR 4 / 5.
    assert ref["visual"] == {"uar": pytest.approx(0.8), "war": pytest.approx(0.75)}
    # Both credits 1, 1, 1/2, 1, 1, 1/2: WAR 5/6; per emotion 1, 1/2, 1, 1, 1/2: UAR 4/5.
    assert ref["av"] == {"uar": pytest.approx(0.8), "war": pytest.approx(5 / 6)}


def test_clips_or_ids_and_rows_or_path_agree(table):
    from fer.data.cremad import scan_dataset

    root = table.parent.parent
    for name in ASKED[:3]:
        (root / "VideoFlash").mkdir(exist_ok=True)
        (root / "VideoFlash" / f"{name}.flv").touch()
    clips = scan_dataset(root).clips
    by_clip = human_reference(clips, read_summary_table(table))
    assert by_clip == human_reference(ASKED[:3], table)
    # Three angry/disgust clips: voice credits 1, 1/2, 1/2 -> WAR 2/3, UAR (3/4 + 1/2) / 2.
    assert by_clip["audio"] == {"uar": pytest.approx(0.625), "war": pytest.approx(2 / 3)}


def test_a_clip_without_a_row_is_named(table):
    with pytest.raises(ValueError, match="1 clips have no row.*1004_IEO_ANG_LO"):
        human_reference([*ASKED, "1004_IEO_ANG_LO"], table)
    with pytest.raises(ValueError, match="no clips"):
        human_reference([], table)


@pytest.mark.parametrize("vote, column, words", [
    (("1001_IEO_ANG_HI", "X", "A", "A"), "VoiceVote", "'X' is not emotion letters"),
    (("1001_IEO_ANG_HI", "A", "A:A", "A"), "FaceVote", "'A:A'"),
    (("1001_IEO_ANG_HI", "A", "A", ""), "MultiModalVote", "''"),
    (("1001_IEO_ANG", "A", "A", "A"), "FileName", "found 3 fields"),
])
def test_malformed_row_names_file_line_and_column(tmp_path, vote, column, words):
    path = write_table(tmp_path / "summaryTable.csv", table_rows([VOTES[1], vote]))
    with pytest.raises(CremaDFileError) as err:
        read_summary_table(path)
    assert f"{path}, line 3: {column}" in str(err.value) and words in str(err.value)


def test_repeated_clip_and_missing_column_are_named(tmp_path):
    path = write_table(tmp_path / "a.csv", table_rows([VOTES[0], VOTES[0]]))
    with pytest.raises(CremaDFileError, match="line 3: FileName 1001_IEO_ANG_HI appears twice"):
        read_summary_table(path)
    path.write_text('"FileName","VoiceVote","FaceVote"\n"1001_IEO_ANG_HI","A","A"\n')
    with pytest.raises(CremaDFileError, match="header lacks column.*MultiModalVote"):
        read_summary_table(path)
    with pytest.raises(CremaDFileError, match="b.csv: not found"):
        read_summary_table(tmp_path / "b.csv")


def test_folds_json_gives_each_fold_the_human_reference_of_its_test_clips(table):
    root = table.parent.parent
    for name in [*ASKED, "1002_WSI_SAD_XX"]:  # the last has no row in the table
        (root / "VideoFlash").mkdir(exist_ok=True)
        (root / "VideoFlash" / f"{name}.flv").touch()
    (root / "VideoDemographics.csv").write_text('"ActorID","Sex"\n1001,"Male"\n1002,"Female"\n')
    result = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    folds = json.loads(result.stdout)["folds"]
    assert [f["test"] for f in folds] == [[1001], [1002], [], [], []]
    assert result.stderr == ("warning: fold 1: 1 test clips have no row in the summary table; "
                             "its human reference leaves them out\n")
    assert folds[1]["n_test"] == 4
    assert list(folds[0]) == ["fold", "train", "val", "test", "n_train", "n_val", "n_test", "human"]
    assert folds[0]["human"]["audio"] == {"uar": pytest.approx(0.625), "war": pytest.approx(2 / 3)}
    # Actor 1002: happy, neutral, sad; voice credits 1/3, 1, 0 -> WAR = UAR = 4/9.
    assert folds[1]["human"]["audio"] == {"uar": pytest.approx(4 / 9), "war": pytest.approx(4 / 9)}
    assert folds[1]["human"]["visual"]["war"] == pytest.approx(2.5 / 3)
    assert [f["human"] for f in folds[2:]] == [None, None, None]
    assert all(0 <= v <= 1 for f in folds[:2] for m in f["human"].values() for v in m.values())
    table = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(root)]).stdout
    assert "human majority vote" in table
    assert "62.5 / 66.7" in table and "44.4 / 44.4" in table  # fold 0 and fold 1 audio
