"""crema-d-5fold: actors dealt by sex from VideoDemographics.csv, on the real 48-male / 43-female
pattern and on a small hand-worked one; demographics errors; protocol names per dataset."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fer.data.cremad import CremaDFileError, make_protocol, read_demographics
from fer.data.datasets import get_dataset, resolve_protocol
from fer.data.protocols import ProtocolError

HEADER = '"ActorID","Age","Sex","Race","Ethnicity"'


def write_demographics(root: Path, sexes: dict[int, str]) -> Path:
    rows = [HEADER] + [f'{a},40,"{s}","Caucasian","Not Hispanic"' for a, s in sexes.items()]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def real_pattern(tmp_path_factory) -> Path:
    """Ids 1001..1091, 43 of them female, scattered (as in CREMA-D: sex is not tied to the id)."""
    females = set(random.Random(15).sample(range(1001, 1092), 43))
    sexes = {a: "Female" if a in females else "Male" for a in range(1001, 1092)}
    return write_demographics(tmp_path_factory.mktemp("demo91"), sexes)


def test_real_pattern_blocks_are_18_or_19_with_balanced_sexes(real_pattern):
    sexes = read_demographics(real_pattern)
    assert (len(sexes), sum(s == "male" for s in sexes.values())) == (91, 48)
    folds = get_dataset("crema-d").protocol(None, real_pattern).folds()
    assert len(folds) == 5
    # 48 males fill blocks 0-2 with 10 and 3-4 with 9; the 43 females continue at block 3:
    # 9, 8, 8, 9, 9 in blocks 0..4.
    assert [len(f.test) for f in folds] == [19, 18, 18, 18, 18]
    assert [sum(sexes[a] == "male" for a in f.test) for f in folds] == [10, 10, 10, 9, 9]
    assert [sum(sexes[a] == "female" for a in f.test) for f in folds] == [9, 8, 8, 9, 9]
    tested = [a for f in folds for a in f.test]
    assert sorted(tested) == list(range(1001, 1092))  # every actor tested exactly once
    for k, f in enumerate(folds):
        assert f.val == folds[(k + 1) % 5].test and set(f.val).isdisjoint(f.test)
        assert f.train == tuple(sorted(set(range(1001, 1092)) - set(f.test) - set(f.val)))
        assert len(f.train) == 91 - len(f.test) - len(f.val)


def test_small_pattern_by_hand(tmp_path):
    sexes = {1001: "Female", 1002: "Male", 1003: "Male", 1004: "Female", 1005: "Male", 1006: "Female", 1007: "Male"}
    write_demographics(tmp_path, sexes)
    protocol = make_protocol(read_demographics(tmp_path))
    # Order 1002, 1003, 1005, 1007 (males), 1001, 1004, 1006 (females) -> blocks 0 1 2 3 4 0 1.
    assert [split[0] for split in protocol.splits] == [(1002, 1004), (1003, 1006), (1005,), (1007,), (1001,)]
    fold = protocol.folds([1001, 1002, 1003, 1006])[4]  # absent actors dropped, blocks kept
    assert (fold.test, fold.val, fold.train) == ((1001,), (1002,), (1003, 1006))


def test_actor_without_demographics_row_names_the_file(tmp_path):
    write_demographics(tmp_path, {1001: "Male", 1002: "Female"})
    protocol = get_dataset("crema-d").protocol("crema-d-5fold", tmp_path)
    with pytest.raises(ValueError, match=r"\[1003\].*VideoDemographics.csv"):
        protocol.folds([1001, 1003])


@pytest.mark.parametrize("row, words", [
    ('1001,40,"Other","x","y"', "line 2: Sex 'Other'"),
    ('999,40,"Male","x","y"', "line 2: ActorID '999'"),
    ('1001,40,"Male","x","y"\n1001,41,"Male","x","y"', "line 3: actor 1001 appears twice"),
])
def test_malformed_demographics_name_file_and_line(tmp_path, row, words):
    (tmp_path / "VideoDemographics.csv").write_text(f"{HEADER}\n{row}\n")
    with pytest.raises(CremaDFileError, match=words) as err:
        read_demographics(tmp_path)
    assert str(tmp_path / "VideoDemographics.csv") in str(err.value)


def test_missing_sex_column_is_named(tmp_path):
    (tmp_path / "VideoDemographics.csv").write_text('"ActorID","Age"\n1001,40\n')
    with pytest.raises(CremaDFileError, match="header lacks column.*Sex"):
        read_demographics(tmp_path)


def test_missing_demographics_names_the_file(tmp_path):
    with pytest.raises(CremaDFileError, match="VideoDemographics.csv: not found"):
        get_dataset("crema-d").protocol(None, tmp_path)


def test_protocol_names_per_dataset():
    assert resolve_protocol("crema-d", None) == resolve_protocol("crema-d", "ravdess-6fold") == "crema-d-5fold"
    assert resolve_protocol("ravdess", None) == "ravdess-6fold"
    assert resolve_protocol("ravdess", "mer-5fold") == "mer-5fold"
    with pytest.raises(ProtocolError, match="not a crema-d protocol; known: crema-d-5fold"):
        resolve_protocol("crema-d", "hicmae-6fold")
    with pytest.raises(ProtocolError, match="not a ravdess protocol"):
        resolve_protocol("ravdess", "crema-d-5fold")
    assert get_dataset("crema-d").fold_count(None) == 5
    assert get_dataset("ravdess").fold_count("mer-5fold") == 5
    assert get_dataset("ravdess").fold_count(None) == 6
    with pytest.raises(KeyError, match="known: ravdess, crema-d"):
        get_dataset("iemocap")
