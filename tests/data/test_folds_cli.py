"""``runner.py folds``: counts per fold on the real-name tree, JSON on stdout, warnings on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fer.data.folds import folds_summary
from fer.labels import EMOTIONS
from runner import cli
from test_ravdess_index import touch, write_tree  # same folder, on sys.path under pytest


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("merged"), "merged")


def run(*args: str):
    result = CliRunner().invoke(cli, ["folds", *args])
    return result


def test_json_speech_ravdess_6fold(tree):
    result = run("--data-root", str(tree), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == folds_summary(tree, "ravdess-6fold", "speech")
    assert list(out) == ["protocol", "n_clips", "n_actors", "class_counts", "folds"]
    assert (out["protocol"], out["n_clips"], out["n_actors"]) == ("ravdess-6fold", 1440, 24)
    assert list(out["class_counts"].items()) == [
        (e, 96 if e == "neutral" else 192) for e in EMOTIONS]
    assert len(out["folds"]) == 6
    for k, f in enumerate(out["folds"]):
        assert list(f) == ["fold", "train", "val", "test", "n_train", "n_val", "n_test"]
        assert f["fold"] == k
        assert f["test"] == list(range(4 * k + 1, 4 * k + 5))
        assert f["val"] == list(range(4 * ((k + 1) % 6) + 1, 4 * ((k + 1) % 6) + 5))
        assert (f["n_train"], f["n_val"], f["n_test"]) == (16 * 60, 4 * 60, 4 * 60)
    assert result.stderr == ""


def test_json_song_counts_the_missing_actor(tree):
    result = run("--data-root", str(tree), "--vocal-channel", "song", "--json")
    out = json.loads(result.stdout)
    assert (out["n_clips"], out["n_actors"]) == (1012, 23)
    assert out["class_counts"]["disgust"] == out["class_counts"]["surprised"] == 0
    fold4 = out["folds"][4]  # tests block 17-20, which holds actor 18
    assert fold4["test"] == [17, 19, 20] and fold4["n_test"] == 3 * 44
    assert 18 not in out["folds"][3]["val"] and out["folds"][3]["n_val"] == 3 * 44
    assert sum(f["n_test"] for f in out["folds"]) == 1012


def test_json_both_channels(tree):
    out = json.loads(run("--data-root", str(tree), "--vocal-channel", "both", "--json").stdout)
    assert (out["n_clips"], out["n_actors"]) == (2452, 24)
    assert out["folds"][0]["n_test"] == 4 * (60 + 44)


@pytest.mark.parametrize("protocol, n_folds, needle", [("hicmae-6fold", 6, "optimistic"),
                                                       ("mer-5fold", 5, "21-24")])
def test_protocol_warning_goes_to_stderr_only(tree, protocol, n_folds, needle):
    result = run("--data-root", str(tree), "--protocol", protocol, "--json")
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["protocol"] == protocol and len(out["folds"]) == n_folds
    assert needle in result.stderr and needle not in result.stdout
    # Same warning in human mode.
    assert needle in run("--data-root", str(tree), "--protocol", protocol).stderr


def test_mer_test_counts_leave_out_actors_21_to_24(tree):
    out = json.loads(run("--data-root", str(tree), "--protocol", "mer-5fold", "--json").stdout)
    assert sum(f["n_test"] for f in out["folds"]) == 20 * 60
    assert out["folds"][4]["val"] == [21, 22, 23, 24] and out["folds"][4]["n_train"] == 16 * 60


def test_index_problems_go_to_stderr(tmp_path):
    touch(tmp_path / "Actor_03" / "01-01-05-01-01-01-03.mp4")
    touch(tmp_path / "Actor_03" / "01-01-05-01-01-01-04.mp4")
    result = run("--data-root", str(tmp_path), "--json")
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert (out["n_clips"], out["n_actors"], out["class_counts"]["angry"]) == (1, 1, 1)
    assert out["folds"][0]["test"] == [3] and out["folds"][0]["n_test"] == 1
    assert "01-01-05-01-01-01-04.mp4" in result.stderr and "Actor_03" in result.stderr


def test_human_output_is_a_fold_table(tree):
    result = run("--data-root", str(tree))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "ravdess-6fold" in lines[0] and "1440 clips" in lines[0] and "24 actors" in lines[0]
    row = next(line for line in lines if "21-24" in line and "1-4" in line and "5-20" in line)
    assert row.split()[1] == "5"  # fold 5 tests 21-24, validates on 1-4, trains on 5-20
    assert "960" in row and row.count("240") == 2


def test_unknown_protocol_is_a_usage_error(tree):
    result = run("--data-root", str(tree), "--protocol", "nope")
    assert result.exit_code == 2
    assert "nope" in result.output and "ravdess-6fold" in result.output
