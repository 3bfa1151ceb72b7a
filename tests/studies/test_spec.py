"""ablations.yaml: every shipped study and search validates and dry-runs; bad files exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from runner import cli
from studies.grid import axis_points, cell_name
from studies.spec import SpecError, load_ablations, validate

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_ablations(ROOT / "ablations.yaml")
RAW = yaml.safe_load((ROOT / "ablations.yaml").read_text())


def test_shipped_file_declares_the_issue_studies_and_search():
    assert set(SHIPPED.studies) == {"modality", "fusion-depth", "roi-tokens", "pooling",
                                    "lfm2-freeze", "temporal-mix"}
    assert set(SHIPPED.searches) == {"fusion-hparams"}
    assert SHIPPED.studies["fusion-depth"].axes == {"model.fusion.layers": [0, 1, 2, 4, 6]}


# What a shipped study reads on its preset (the default, tiny, unless it declares one): its dry run
# checks it, exit 2 when missing.
READS = {"lfm2-freeze": ("tiny", ["LiquidAI/LFM2-350M"]),
         "roi-tokens": ("rtx3050", ["nvidia/stt_en_fastconformer_ctc_large",
                                    "timm/vit_base_patch16_siglip_224.v2_webli", "LiquidAI/LFM2-700M"])}


@pytest.mark.parametrize("name", sorted(SHIPPED.studies))
def test_every_shipped_study_dry_runs(name, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty Hugging Face cache
    result = CliRunner().invoke(cli, ["study", name, "--dry-run", "--storage", str(tmp_path / "l.journal"),
                                      "--cache", str(tmp_path / "cache")])
    spec = SHIPPED.studies[name]
    n_cells = len(axis_points(spec.axes, spec.zip))
    assert f"{n_cells * 6 * len(spec.seeds)} units" in result.output
    if name in READS:
        preset, checkpoints = READS[name]
        assert result.exit_code == 2, result.output
        assert all(f"  - {c} (model." in result.output for c in checkpoints), result.output
        assert f"python runner.py weights fetch --preset {preset} --study {name}\n" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "weights missing" not in result.output
    assert not (tmp_path / "l.journal").exists(), "a dry run must not create a ledger"


def test_zip_groups_vary_together_and_product_elsewhere():
    spec = SHIPPED.studies["pooling"]
    points = axis_points(spec.axes, spec.zip)
    assert len(points) == 4 * 4
    assert all(p["model.audio.pooling"] == p["model.visual.temporal.pooling"] for p in points)
    assert cell_name(points[0]) == "audio.pooling=attention,temporal.pooling=attention,classifier.pooling=mean"


def test_cell_names_are_short_and_stable():
    assert cell_name({"model.fusion.layers": 2}) == "layers=2"
    assert cell_name({"model.visual.roi.k": None, "model.visual.roi.selection": "grid"}) == "k=none,selection=grid"
    assert cell_name({"model.visual.temporal.conv_share": 0.7}) == "conv_share=0.7"


def _bad(mutate) -> SpecError:
    raw = yaml.safe_load((ROOT / "ablations.yaml").read_text())
    mutate(raw)
    with pytest.raises(SpecError) as info:
        validate(raw)
    return info.value


def test_unknown_key_is_named_with_its_path():
    err = _bad(lambda r: r["studies"]["modality"].update(foldz="all"))
    assert ("studies.modality.foldz", "unknown key (no such config field)") in err.errors


def test_wrong_type_is_named_with_its_path():
    err = _bad(lambda r: r["studies"]["modality"].update(seeds="zero"))
    assert any(p == "studies.modality.seeds" for p, _ in err.errors)


def test_dotted_path_naming_no_config_field():
    def mutate(r):
        r["studies"]["fusion-depth"]["axes"] = {"model.fusion.layerz": [0, 1]}
        r["studies"]["fusion-depth"]["reference"] = {"model.fusion.layerz": 0}

    err = _bad(mutate)
    assert any(p == "studies.fusion-depth.axes.model.fusion.layerz" and "unknown key" in m
               for p, m in err.errors), err.errors


def test_every_error_is_reported_at_once():
    def mutate(r):
        r["studies"]["modality"]["axes"] = {"model.modality": ["audio", "smell"]}
        r["searches"]["fusion-hparams"]["space"]["train.lr"]["low"] = -1.0
        r["paper"]["tables"]["modality"]["study"] = "nope"

    paths = [p for p, _ in _bad(mutate).errors]
    assert "studies.modality.axes.model.modality" in paths
    assert "searches.fusion-hparams.space.train.lr.low" in paths
    assert "paper.tables.modality.study" in paths


def test_reference_must_match_a_cell():
    err = _bad(lambda r: r["studies"]["fusion-depth"].update(reference={"model.fusion.layers": 3}))
    assert any(p == "studies.fusion-depth.reference" for p, _ in err.errors)


def test_cli_exits_2_on_invalid_file_and_names_the_key(tmp_path):
    raw = dict(RAW)
    raw["studies"] = {**RAW["studies"], "modality": {**RAW["studies"]["modality"], "bogus": 1}}
    bad = tmp_path / "ablations.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["--ablations", str(bad), "study", "modality", "--dry-run"])
    assert result.exit_code == 2
    assert "studies.modality.bogus: unknown key" in result.output


def test_cli_exits_2_on_unknown_study():
    result = CliRunner().invoke(cli, ["study", "no-such-study", "--dry-run"])
    assert result.exit_code == 2
    assert "unknown study 'no-such-study'" in result.output and "fusion-depth" in result.output


def test_cli_exits_2_on_yaml_syntax_error(tmp_path):
    bad = tmp_path / "ablations.yaml"
    bad.write_text("studies: [unclosed\n")
    result = CliRunner().invoke(cli, ["--ablations", str(bad), "studies"])
    assert result.exit_code == 2 and "(yaml)" in result.output


def test_cli_needs_a_data_root_to_train(monkeypatch):
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    result = CliRunner().invoke(cli, ["study", "modality"])
    assert result.exit_code == 2 and "--data-root" in result.output
