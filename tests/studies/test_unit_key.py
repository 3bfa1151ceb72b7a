"""A unit's key is its identity in the ledger: it changes when the data or the resolved config
change (so a changed study trains again) and stays equal otherwise (so a rerun resumes).

Keys are read from the ``study --dry-run`` table, the surface a user sees; the grid functions are
checked directly where a value is easier to set there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fer.config import resolve_config
from runner import cli
from studies.grid import expand_cells, study_units
from studies.spec import validate

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = {
    "defaults": {"preset": "tiny"},
    "studies": {
        "toy": {
            "description": "three cells",
            "axes": {"model.modality": ["audio", "visual", "av"]},
            "folds": [0, 1],
            "seeds": [0, 1],
            "reference": {"model.modality": "av"},
        }
    },
}
ROW = re.compile(r"^[│|] (\S+)\s+[│|] (\d+)\s+[│|] (\d+)\s+[│|] \S+\s+[│|] ([0-9a-f]{16}) [│|]$", re.M)


@pytest.fixture()
def data_root(tmp_path) -> Path:
    """One clip per actor, a few bytes each: the manifest reads names and sizes, never content."""
    root = tmp_path / "ravdess"
    for actor in range(1, 25):
        d = root / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        (d / f"01-01-01-01-01-01-{actor:02d}.mp4").write_bytes(b"x" * actor)
    return root


@pytest.fixture()
def ablations(tmp_path) -> Path:
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(ABLATIONS))
    return path


def _args(ablations: Path, data_root: Path, *extra: str) -> list[str]:
    return ["--ablations", str(ablations), "study", "toy", "--dry-run", "--data-root", str(data_root),
            "--storage", str(ablations.parent / "none.journal"), *extra]


def _parse(output: str) -> dict[tuple[str, int, int], str]:
    rows = {(cell, int(fold), int(seed)): key for cell, fold, seed, key in ROW.findall(output)}
    assert rows, output
    return rows


def keys(ablations: Path, data_root: Path, *extra: str) -> dict[tuple[str, int, int], str]:
    """(cell, fold, seed) -> unit key, from the dry-run table."""
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, _args(ablations, data_root, *extra))
    assert result.exit_code == 0, result.output
    return _parse(result.output)


def test_keys_are_distinct_and_equal_in_another_process(ablations, data_root):
    here = keys(ablations, data_root)
    assert len(here) == 3 * 2 * 2 and len(set(here.values())) == 12
    env = {**os.environ, "COLUMNS": "200", "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, str(ROOT / "runner.py"), *_args(ablations, data_root)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert _parse(out) == here
    assert not (ablations.parent / "none.journal").exists()


def test_keys_change_with_the_data(ablations, data_root):
    before = keys(ablations, data_root)
    # Neither a new timestamp nor a file that is not a clip changes what a unit trains on.
    clip = data_root / "Actor_03" / "01-01-01-01-01-01-03.mp4"
    os.utime(clip, (1_000_000_000, 1_000_000_000))
    (data_root / "README.txt").write_text("notes")
    assert keys(ablations, data_root) == before

    clip.write_bytes(b"y" * 100)  # resized
    resized = keys(ablations, data_root)
    assert set(resized.values()).isdisjoint(before.values())
    clip.write_bytes(b"x" * 3)  # back to the old size: back to the old keys
    assert keys(ablations, data_root) == before

    extra = data_root / "Actor_05" / "01-01-02-01-01-01-05.mp4"
    extra.write_bytes(b"x")  # a clip added
    added = keys(ablations, data_root)
    assert set(added.values()).isdisjoint(before.values()) and set(added.values()).isdisjoint(resized.values())


def test_keys_change_with_the_resolved_config(ablations, data_root):
    before = keys(ablations, data_root)
    for change in (["--set", "train.lr=0.001"], ["--set", "model.classifier.dropout=0.3"],
                   ["--no-feature-cache"], ["--memory-budget", "8GB"]):
        changed = keys(ablations, data_root, *change)
        assert list(changed) == list(before), change
        assert all(changed[u] != before[u] for u in before), change
    # The key is of the resolved config, not of the command line: restating a default is no change.
    default_lr = resolve_config("tiny").train.lr
    assert keys(ablations, data_root, "--set", f"train.lr={default_lr}") == before


def test_a_grown_grid_keeps_the_keys_of_the_units_it_had(tmp_path, data_root):
    """A value added to an axis, the axis reordered and a seed added: the old units resume."""
    def declare(layers: list[int], seeds: list[int]) -> Path:
        doc = {"defaults": {"preset": "tiny"},
               "studies": {"toy": {"description": "depth", "axes": {"model.fusion.layers": layers},
                                   "folds": [0, 1], "seeds": seeds,
                                   "reference": {"model.fusion.layers": 0}}}}
        path = tmp_path / f"{len(layers)}-{len(seeds)}" / "ablations.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(doc))
        return path

    before = keys(declare([0, 2], [0]), data_root)
    after = keys(declare([4, 0, 2], [0, 1]), data_root)
    assert len(before) == 4 and len(after) == 12
    assert {u: after[u] for u in before} == before


def test_keys_change_with_max_epochs(ablations, data_root):
    before = keys(ablations, data_root)
    capped = keys(ablations, data_root, "--max-epochs", "3")
    assert all(capped[u] != before[u] for u in before)
    # a cap at or above the configured epochs trains the same units: their keys stay
    assert keys(ablations, data_root, "--max-epochs", "1000") == before


def test_grid_keys_depend_on_manifest_fold_seed_and_config_only():
    spec = validate(ABLATIONS)
    cells = expand_cells(spec.studies["toy"], spec.defaults)
    units = study_units("toy", cells, [0, 1], [0], "manifest-a")
    again = study_units("toy", expand_cells(spec.studies["toy"], spec.defaults), [0, 1], [0], "manifest-a")
    assert [u.key for u in units] == [u.key for u in again]
    other_data = study_units("toy", cells, [0, 1], [0], "manifest-b")
    assert all(a.key != b.key for a, b in zip(units, other_data))
    assert len({u.key for u in units + study_units("toy", cells, [0, 1], [1], "manifest-a")}) == 12
    tweaked = expand_cells(spec.studies["toy"], spec.defaults, overrides={"train.weight_decay": 0.1})
    assert all(a.key != b.key for a, b in zip(units, study_units("toy", tweaked, [0, 1], [0], "manifest-a")))
