"""Every cell builds before anything trains: `study --dry-run`, `study` and `tune` build each cell's
model on the meta device (random weights, no data, nothing read) and exit 2 with one error per
failure, naming the cells and the config key, before a ledger or a tracking store exists.

Every cell of every shipped study (on the preset it declares) and every point of every shipped
search builds: a new grid is checked for free."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from fer.config import ConfigError  # noqa: E402
from runner import cli  # noqa: E402
from studies.grid import expand_cells  # noqa: E402
from studies.preflight import check_builds, search_cells  # noqa: E402
from studies.spec import SpecError, load_ablations, validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_ablations(ROOT / "ablations.yaml")
K128 = "cells k=128,selection=prior+learned; k=128,selection=learned; k=128,selection=random"


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and no checkpoint file may be opened."""
    from huggingface_hub import constants

    import fer.models.fusion

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_read(pretrained):
        raise AssertionError(f"the build check read {pretrained}")

    monkeypatch.setattr(fer.models.fusion, "read_lfm2_config", no_read)
    return tmp_path / "cache"


@pytest.mark.parametrize("name", sorted(SHIPPED.studies))
def test_every_cell_of_every_shipped_study_builds_on_its_preset(name, offline_hub):
    spec = SHIPPED.study(name)
    cells = expand_cells(spec, SHIPPED.defaults, preset=SHIPPED.study_preset(name))
    assert [c.name for c in cells] == spec.cell_names()
    check_builds({c.name: c.config for c in cells}, offline_hub)


@pytest.mark.parametrize("name", sorted(SHIPPED.searches))
def test_every_point_of_every_shipped_search_builds(name, offline_hub):
    points = search_cells(SHIPPED, name)
    assert len(points) > 1
    check_builds(points, offline_hub)


def test_roi_tokens_declares_a_preset_whose_grid_holds_its_k():
    assert SHIPPED.study_preset("roi-tokens") == "rtx3050"
    assert SHIPPED.study_preset("roi-tokens", "tiny") == "tiny"  # --preset beats the declaration
    assert SHIPPED.study_preset("modality") == SHIPPED.defaults.preset == "tiny"
    cells = expand_cells(SHIPPED.study("roi-tokens"), SHIPPED.defaults, preset="tiny")
    with pytest.raises(ConfigError) as info:
        check_builds({c.name: c.config for c in cells}, "unused")
    assert info.value.errors == [(K128, "model.visual.roi.k = 128 exceeds the 64 patches of the 8x8 grid "
                                        "(preset tiny)")]


def test_a_study_preset_is_validated_at_its_key():
    raw = yaml.safe_load((ROOT / "ablations.yaml").read_text())
    raw["studies"]["modality"]["preset"] = "huge"
    with pytest.raises(SpecError) as info:
        validate(raw)
    assert info.value.errors == [("studies.modality.preset", "unknown preset 'huge'; known: full, rtx3050, tiny")]


def test_a_build_check_leaves_the_global_random_state_alone(offline_hub):
    import torch

    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    cells = expand_cells(SHIPPED.study("modality"), SHIPPED.defaults)
    check_builds({c.name: c.config for c in cells}, offline_hub)
    assert torch.equal(torch.random.get_rng_state(), before)


# --- the command line: exit 2 before anything trains ----------------------------------------------

TOY = {
    "defaults": {"preset": "tiny"},
    "studies": {
        "toy": {"description": "modality", "axes": {"model.modality": ["audio", "visual", "av"]},
                "folds": [0], "reference": {"model.modality": "av"}},
        "deep": {"description": "fusion depth over LFM2-350M's 16 layers",
                 "axes": {"model.fusion.layers": [2, 20, 30]}, "folds": [0],
                 "reference": {"model.fusion.layers": 2},
                 "overrides": {"model.fusion.pretrained": "LiquidAI/LFM2-350M"}},
    },
    "searches": {
        "deep": {"description": "depth", "space": {"model.fusion.layers": {"type": "categorical", "choices": [2, 30]}},
                 "trials": 2, "sampler": "random", "pruner": "none", "folds": [0],
                 "overrides": {"model.fusion.pretrained": "LiquidAI/LFM2-350M"}},
    },
}

STUDY_CASES = [
    pytest.param("toy", ["--set", "data.size=60"],
                 ["error: cells modality=visual; modality=av: data.size 60 is not a multiple of the 'tiny' patch "
                  "size 8 (preset tiny)"], id="frame-size"),
    pytest.param("toy", ["--set", "model.visual.roi.k=100"],
                 ["error: cells modality=visual; modality=av: model.visual.roi.k = 100 exceeds the 64 patches "
                  "of the 8x8 grid (preset tiny)"], id="roi-k"),
    pytest.param("toy", ["--set", "data.protocol=nope"],
                 ["error: every cell: data.protocol: protocol 'nope' is not a ravdess protocol; known: "],
                 id="protocol"),
    pytest.param("deep", [],
                 ["error: cell layers=20: model.fusion.layers: 20 > the 16 layers of this LFM2 (preset tiny)",
                  "error: cell layers=30: model.fusion.layers: 30 > the 16 layers of this LFM2 (preset tiny)"],
                 id="fusion-layers"),
]


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    """A working folder with the toy ablations, a data root, and a stand-in for training."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    fake_worker.named_clips(tmp_path / "ravdess")
    (tmp_path / "ablations.yaml").write_text(yaml.safe_dump(TOY))
    trained = []
    module = types.ModuleType("fer.train.run")
    module.run_unit = lambda cfg, **kw: trained.append(cfg) or fake_worker.FakeResult(metrics={"val/uar_best": 0.5})
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    return types.SimpleNamespace(path=tmp_path, trained=trained)


def invoke(ws, command: str, name: str, *args: str):
    return CliRunner().invoke(cli, ["--ablations", str(ws.path / "ablations.yaml"), command, name,
                                    "--storage", str(ws.path / "ledger.journal"), "--cache", str(ws.path / "cache"),
                                    "--tracking-uri", f"sqlite:///{ws.path / 'mlflow.db'}", *args])


def assert_stopped(result, ws, lines: list[str]) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(lines), result.output
    assert all(e.startswith(line) for e, line in zip(errors, lines)), result.output
    assert "Traceback" not in result.output
    assert ws.trained == []
    assert not (ws.path / "ledger.journal").exists() and not (ws.path / "mlflow.db").exists()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
@pytest.mark.parametrize("name, args, lines", STUDY_CASES)
def test_study_stops_on_cells_that_cannot_build(ws, name, args, lines, dry_run):
    extra = ["--dry-run"] if dry_run else ["--data-root", str(ws.path / "ravdess")]
    assert_stopped(invoke(ws, "study", name, *args, *extra), ws, lines)


def test_tune_stops_on_a_point_of_the_space_that_cannot_build(ws):
    result = invoke(ws, "tune", "deep", "--data-root", str(ws.path / "ravdess"))
    assert_stopped(result, ws, ["error: cell layers=30: model.fusion.layers: 30 > the 16 layers of this LFM2"])


def test_roi_tokens_dry_runs_on_its_own_preset_with_random_weights(tmp_path, offline_hub):
    result = CliRunner().invoke(cli, ["study", "roi-tokens", "--dry-run", "--random-weights",
                                      "--storage", str(tmp_path / "l.journal"), "--cache", str(offline_hub)])
    assert result.exit_code == 0, result.output
    assert "study roi-tokens: 90 units" in result.output
    on_tiny = CliRunner().invoke(cli, ["study", "roi-tokens", "--dry-run", "--preset", "tiny",
                                       "--storage", str(tmp_path / "l.journal"), "--cache", str(offline_hub)])
    assert on_tiny.exit_code == 2
    assert on_tiny.output.splitlines() == [f"error: {K128}: model.visual.roi.k = 128 exceeds the 64 patches of "
                                           "the 8x8 grid (preset tiny)"]
