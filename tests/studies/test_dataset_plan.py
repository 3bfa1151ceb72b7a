"""A study on CREMA-D plans its own protocol's folds and hashes its own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from studies.engine import data_manifest, plan
from studies.options import RunOptions
from studies.spec import load_ablations

REPO = Path(__file__).resolve().parents[2]


def _folds(overrides: dict) -> list[int]:
    _, units = plan("modality", load_ablations(REPO / "ablations.yaml"), RunOptions(overrides=overrides))
    return sorted({u.fold for u in units})


def test_a_crema_d_study_runs_the_five_folds_of_crema_d_5fold():
    assert _folds({}) == [0, 1, 2, 3, 4, 5]  # RAVDESS: ravdess-6fold
    assert _folds({"data.dataset": "crema-d"}) == [0, 1, 2, 3, 4]


def test_the_data_manifest_hashes_the_datasets_own_file_names(tmp_path):
    root = tmp_path / "crema"
    (root / "AudioWAV").mkdir(parents=True)
    empty = data_manifest(root, "speech", "crema-d")
    (root / "AudioWAV" / "1001_IEO_HAP_LO.wav").write_bytes(b"x")
    one = data_manifest(root, "speech", "crema-d")
    assert one != empty
    assert data_manifest(root, "speech", "ravdess") == empty  # no RAVDESS name there: nothing to hash
    (root / "AudioWAV" / "1001_IEO_HAP_LO.wav").write_bytes(b"xy")  # same name, other size
    assert data_manifest(root, "speech", "crema-d") != one


def test_a_study_declaring_crema_d_is_checked_against_its_five_folds(tmp_path):
    import yaml

    from studies.spec import SpecError

    declared = {"defaults": {"preset": "tiny"},
                "studies": {"c": {"description": "CREMA-D", "axes": {"model.modality": ["audio", "av"]},
                                  "reference": {"model.modality": "av"}, "folds": [4, 5],
                                  "overrides": {"data.dataset": "crema-d"}}}}
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(declared))
    with pytest.raises(SpecError, match=r"studies\.c\.folds.*\[5\] out of range.*folds 0\.\.4"):
        load_ablations(path)
    declared["studies"]["c"]["folds"] = [4]
    path.write_text(yaml.safe_dump(declared))
    assert load_ablations(path).study("c").folds == [4]
