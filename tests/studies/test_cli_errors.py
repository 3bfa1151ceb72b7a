"""`study` and `tune` on bad command lines: exit 2 with a message naming the key or value, before
anything trains, before a ledger or a tracking store is created; and `tune --export` end to end.

Training is a stand-in module put in place of ``fer.train.run``: it records each call, so "nothing
trained" is checked, and a search finishes in a second without torch."""

from __future__ import annotations

import statistics
import sys
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from fer.config import resolve_config  # noqa: E402
from runner import cli  # noqa: E402
from studies.spec import validate  # noqa: E402

ABLATIONS = {
    "defaults": {"preset": "tiny"},
    "studies": {
        "toy": {
            "description": "three cells",
            "axes": {"model.modality": ["audio", "visual", "av"]},
            "folds": [0, 1],
            "seeds": [0],
            "reference": {"model.modality": "av"},
        }
    },
    "searches": {
        "toy": {
            "description": "lr only",
            "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "trials": 3,
            "sampler": "random",
            "pruner": "none",
            "folds": [0, 2],
        }
    },
}


def val_uar(lr: float, fold: int) -> float:
    """What the stand-in training reports: depends on the trial's lr and on the fold."""
    return 0.2 + 10 * lr + 0.01 * fold


@pytest.fixture()
def trainings(monkeypatch) -> list[tuple[float, int]]:
    """Every (lr, fold) the command trained; the stand-in replaces fer.train.run for the test."""
    calls: list[tuple[float, int]] = []

    def run_unit(cfg, *, data_root, cache_dir, fold, seed, callback=None, max_epochs=None,
                 evaluate_test=True, **_):
        calls.append((cfg.train.lr, fold))
        val = val_uar(cfg.train.lr, fold)
        callback.on_epoch_end(0, {"train/loss": 1.0, "val/uar": val})
        return fake_worker.FakeResult(metrics={"val/uar_best": val, "best_epoch": 0})

    module = types.ModuleType("fer.train.run")
    module.run_unit = run_unit
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    return calls


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    """A working folder with the ablations file, a data root, and where ledger and store would go."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    fake_worker.named_clips(tmp_path / "ravdess")
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(ABLATIONS))
    return tmp_path


def invoke(ws: Path, command: str, *args: str, ablations: Path | None = None):
    base = ["--ablations", str(ablations or ws / "ablations.yaml"), command, "toy",
            "--storage", str(ws / "ledger.journal"), "--tracking-uri", f"sqlite:///{ws / 'mlflow.db'}"]
    return CliRunner().invoke(cli, [*base, *args])


def assert_usage_error(result, ws: Path, trainings: list, *named: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    for text in named:
        assert text in result.output, result.output
    assert trainings == []
    assert not (ws / "ledger.journal").exists() and not (ws / "mlflow.db").exists()


STUDY_ERRORS = [
    (["--set", "model.fusion.layerz=2"], ["error: model.fusion.layerz: unknown key"]),
    (["--set", "train.lr=abc"], ["error: train.lr: Input should be a valid number"]),
    (["--set", "train.epochs=0"], ["error: train.epochs: Input should be greater than or equal to 1"]),
    (["--set", "noequals"], ["error: noequals: expected key=value"]),
    (["--set", "model.modality=av"], ["error: model.modality: is an axis of this study"]),
    (["--set", "model={modality: av}"], ["error: model: overlaps model.modality, an axis of this study"]),
    (["--folds", "9"], ["error: folds: [9] out of range: protocol 'ravdess-6fold' has folds 0..5"]),
    (["--folds", "0,a"], ["'0,a'", "comma-separated integers"]),
    (["--seeds", "x"], ["'x'", "comma-separated integers"]),
    (["--preset", "nope"], ["error: preset: unknown preset 'nope'; known: full, rtx3050, tiny"]),
    (["--set", "model.modality=av", "--set", "bogus=1"],  # every error at once
     ["error: model.modality: is an axis", "error: bogus: unknown key"]),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
@pytest.mark.parametrize("args, named", STUDY_ERRORS, ids=[" ".join(a) for a, _ in STUDY_ERRORS])
def test_study_rejects_a_bad_command_line_before_training(ws, trainings, args, named, dry_run):
    extra = ["--dry-run"] if dry_run else ["--data-root", str(ws / "ravdess")]
    assert_usage_error(invoke(ws, "study", *args, *extra), ws, trainings, *named)


def test_study_override_next_to_an_axis_is_fine(ws):
    """A section beside an axis (model.fusion, not model.modality) is no clash."""
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["--ablations", str(ws / "ablations.yaml"), "study", "toy", "--dry-run",
              "--set", "model.fusion={layers: 1}", "--storage", str(ws / "ledger.journal")])
    assert result.exit_code == 0, result.output
    assert "study toy: 6 units" in result.output


SEARCH_ROOT = ["--trials", "2"]
TUNE_ERRORS = [
    pytest.param(["--set", "noequals"], ["error: noequals: expected key=value"], id="no-equals"),
    pytest.param(["--set", "model.fusion.layerz=2"], ["model.fusion.layerz", "unknown key"], id="unknown-key"),
    pytest.param(["--set", "train.lr=abc"], ["train.lr", "valid number"], id="bad-value"),
    pytest.param(["--preset", "nope"], ["unknown preset 'nope'"], id="unknown-preset"),
    pytest.param(["--set", "train.lr=0.01"], ["train.lr", "search"], id="clash-with-space"),
    pytest.param(["--set", "train={lr: 0.01}"], ["train", "overlaps train.lr"], id="section-clash"),
]


@pytest.mark.parametrize("args, named", TUNE_ERRORS)
def test_tune_rejects_a_bad_command_line_before_training(ws, trainings, args, named):
    result = invoke(ws, "tune", *SEARCH_ROOT, "--data-root", str(ws / "ravdess"), *args)
    assert_usage_error(result, ws, trainings, *named)


def test_tune_unknown_search_and_missing_data_root(ws, trainings):
    result = CliRunner().invoke(cli, ["--ablations", str(ws / "ablations.yaml"), "tune", "nope"])
    assert_usage_error(result, ws, trainings, "unknown search 'nope'", "declared searches: toy")
    assert_usage_error(invoke(ws, "tune"), ws, trainings, "--data-root")


def test_tune_out_of_range_search_folds(ws, trainings):
    doc = yaml.safe_load(yaml.safe_dump(ABLATIONS))
    doc["searches"]["toy"]["folds"] = [0, 9]
    path = ws / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = invoke(ws, "tune", *SEARCH_ROOT, "--data-root", str(ws / "ravdess"), ablations=path)
    assert_usage_error(result, ws, trainings, "searches.toy.folds", "9")


def test_tune_exports_the_best_trial_as_a_usable_defaults_delta(ws, trainings):
    out = ws / "best.yaml"
    result = invoke(ws, "tune", "--trials", "3", "--data-root", str(ws / "ravdess"), "--export", str(out))
    assert result.exit_code == 0, result.output
    assert len(trainings) == 3 * 2 and {f for _, f in trainings} == {0, 2}
    lrs = sorted({lr for lr, _ in trainings})
    assert len(lrs) == 3
    best_lr = max(lrs, key=lambda lr: statistics.fmean(val_uar(lr, f) for f in (0, 2)))
    best_value = statistics.fmean(val_uar(best_lr, f) for f in (0, 2))

    assert yaml.safe_load(out.read_text()) == {"defaults": {"overrides": {"train.lr": best_lr}}}
    header = out.read_text().splitlines()[0]
    assert header.startswith("# Best trial ") and f"{best_value:.4f}" in header and "'toy'" in header
    assert f"mean val UAR {best_value:.4f}" in result.output and f"wrote {out}" in result.output

    # Pasted under `defaults:`, the delta validates and becomes every cell's learning rate.
    doc = yaml.safe_load(yaml.safe_dump(ABLATIONS))
    doc["defaults"]["overrides"] = yaml.safe_load(out.read_text())["defaults"]["overrides"]
    spec = validate(doc)
    assert resolve_config(spec.defaults.preset, spec.defaults.overrides).train.lr == best_lr

    again = invoke(ws, "tune", "--trials", "3", "--data-root", str(ws / "ravdess"), "--export", str(out))
    assert again.exit_code == 0 and len(trainings) == 6, "a finished search trains nothing more"
    assert yaml.safe_load(out.read_text()) == {"defaults": {"overrides": {"train.lr": best_lr}}}


def test_tune_where_every_trial_fails_ends_with_an_error_not_a_traceback(ws, monkeypatch):
    def run_unit(cfg, **_):
        raise RuntimeError("planted failure")

    module = types.ModuleType("fer.train.run")
    module.run_unit = run_unit
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    result = invoke(ws, "tune", "--trials", "2", "--data-root", str(ws / "ravdess"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "planted failure" in result.output
