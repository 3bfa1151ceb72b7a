"""The `paper:` section of ablations.yaml: validated once, by studies.spec, then handed out as the
plain data analysis.paper takes (reference cell and cell order resolved to names)."""

from __future__ import annotations

import pytest

from studies.options import StudyError
from studies.spec import SpecError, validate

DOC = {
    "defaults": {"preset": "tiny"},
    "studies": {
        "depth": {"description": "fusion depth", "axes": {"model.fusion.layers": [0, 2, 1]},
                  "reference": {"model.fusion.layers": 2}},
        "grid": {"description": "two axes", "axes": {"model.modality": ["audio", "av"],
                                                     "model.classifier.pooling": ["mean", "max"]},
                 "reference": {"model.modality": "av"}},
    },
    "paper": {"tables": {"t-depth": {"study": "depth", "caption": "Depth."},
                         "t-grid": {"study": "grid", "metrics": ["test/f1"], "caption": "Grid."}},
              "efficiency": {"small": {"preset": "tiny"},
                             "small-bf16": {"overrides": {"train.precision": "bf16"}}}},
}


def _errors(paper: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate({**DOC, "paper": paper})
    return [p for p, _ in info.value.errors]


def test_paper_tables_come_out_with_reference_and_declared_cell_order():
    tables = validate(DOC).paper_tables()
    assert tables["t-depth"] == {"study": "depth", "metrics": ["test/uar", "test/war", "test/f1"],
                                 "caption": "Depth.", "reference": "layers=2",
                                 "cell_order": ["layers=0", "layers=2", "layers=1"]}
    # The reference is the first cell holding the declared values (two axes, one fixed).
    assert tables["t-grid"]["reference"] == "modality=av,pooling=mean"
    assert tables["t-grid"]["cell_order"] == ["modality=audio,pooling=mean", "modality=audio,pooling=max",
                                              "modality=av,pooling=mean", "modality=av,pooling=max"]
    assert tables["t-grid"]["metrics"] == ["test/f1"]


def test_efficiency_rows_resolve_without_the_defaults_overrides():
    doc = {**DOC, "defaults": {"preset": "tiny", "overrides": {"train.batch_size": 3}}}
    configs = validate(doc).efficiency_configs()
    assert list(configs) == ["small", "small-bf16"]
    assert configs["small"].train.precision == "no" and configs["small-bf16"].train.precision == "bf16"
    assert configs["small"].train.batch_size != 3  # a row names its whole configuration


def test_bad_tables_are_named_with_their_key_paths():
    paths = _errors({"tables": {"t1": {"study": "depth", "metrics": [], "colour": "red"},
                                "t2": {"study": "nope", "caption": "x"}}})
    assert paths == ["paper.tables.t1.metrics", "paper.tables.t1.caption", "paper.tables.t1.colour"]
    assert _errors({"tables": {"t2": {"study": "nope", "caption": "x"}}}) == ["paper.tables.t2.study"]


def test_bad_efficiency_rows_are_named_before_anything_is_measured():
    paths = _errors({"efficiency": {"a": {"preset": "huge"}, "b": {"overrides": {"train.lr": "fast"}},
                                    "c": {"presets": "tiny"}}})
    assert paths == ["paper.efficiency.c.presets"]  # the schema first, then the configs
    paths = _errors({"efficiency": {"a": {"preset": "huge"}, "b": {"overrides": {"train.lr": "fast"}}}})
    assert paths == ["paper.efficiency.a.preset", "paper.efficiency.b.overrides.train.lr"]


def test_unknown_study_or_search_names_the_declared_ones():
    spec = validate(DOC)
    assert spec.study("depth").reference_cell() == "layers=2"
    with pytest.raises(StudyError, match=r"unknown study 'dept'; declared studies: depth, grid"):
        spec.study("dept")
    with pytest.raises(StudyError, match=r"unknown search 'x'; declared searches: \(none\)"):
        spec.search("x")


def test_declared_folds_outside_the_protocol_are_named():
    doc = {**DOC, "studies": {**DOC["studies"], "depth": {**DOC["studies"]["depth"], "folds": [0, 6]}}}
    with pytest.raises(SpecError) as info:
        validate(doc)
    assert [(p, m) for p, m in info.value.errors] == [
        ("studies.depth.folds", "[6] out of range: protocol 'ravdess-6fold' has folds 0..5")]
