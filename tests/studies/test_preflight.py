"""The preflight: `study` and `tune` check on disk that every checkpoint their cells (or search
points) read is present, before the first unit; a missing one exits 2 with one message naming each
checkpoint and the exact `weights fetch` command, having created nothing, imported no training
library and asked no hub. The dry run checks too (its table first)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from runner import cli  # noqa: E402
from studies.preflight import search_points  # noqa: E402
from studies.spec import ParamSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NEMO = "nvidia/stt_en_fastconformer_ctc_large"
SIGLIP = "timm/vit_base_patch16_siglip_224.v2_webli"
LFM700 = "LiquidAI/LFM2-700M"
NEMO_LINE = f"  - {NEMO} (model.audio.pretrained; NeMo .nemo, converted after download; 463 MB): not downloaded"
SIGLIP_LINE = f"  - {SIGLIP} (model.visual.pretrained; 372 MB): not downloaded"
LFM700_LINE = f"  - {LFM700} (model.fusion.pretrained; 1.48 GB): not downloaded"
ADVICE = ("(it honours HF_HOME, HF_HUB_CACHE and HF_TOKEN; for a machine without network, fetch on one with it "
          "and copy the Hugging Face cache and <cache>/weights over)")
# Libraries a unit's training or bookkeeping imports: none is loaded when the preflight stops.
TRAINING = ("torch", "transformers", "timm", "mlflow", "optuna")

RUN_CLI = """
import os, runpy, sys
sys.argv = sys.argv[1:]  # runner.py's path, then its arguments
sys.path.insert(0, os.path.dirname(sys.argv[0]))
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("LOADED=" + ",".join(m for m in {training!r} if m in sys.modules), flush=True)
"""


def ravdess(root: Path) -> Path:
    """Empty files with real names: enough to plan a study."""
    fake_worker.named_clips(root)
    return root


def run_cli(work: Path, hf_home: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """``python runner.py ARGS`` in a fresh interpreter in ``work``: offline, an empty Hugging Face
    home and project cache, no tracking URI from the environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "FER_", "MLFLOW_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), FER_CACHE_DIR=str(cache))
    code = RUN_CLI.format(training=TRAINING)
    return subprocess.run([sys.executable, "-c", code, str(ROOT / "runner.py"), *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def machine(tmp_path):
    """A machine without weights: a working folder, a data root, an empty HF home and cache (absent)."""
    work = tmp_path / "work"
    work.mkdir()
    return types.SimpleNamespace(work=work, data=ravdess(tmp_path / "ravdess"), hf_home=tmp_path / "hf-home",
                                 cache=tmp_path / "fer-cache")


def test_study_without_weights_exits_2_naming_each_checkpoint_and_the_fetch_command(machine):
    proc = run_cli(machine.work, machine.hf_home, machine.cache,
                   "study", "fusion-depth", "--preset", "rtx3050", "--data-root", str(machine.data))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: pretrained weights missing (3):", NEMO_LINE, SIGLIP_LINE, LFM700_LINE,
        "download them (about 2.31 GB) with:",
        "  python runner.py weights fetch --preset rtx3050 --study fusion-depth",
        ADVICE,
    ]
    # Nothing trained, no ledger trial claimed, no MLflow run, no hub asked: no training or tracking
    # library even imported, and nothing written anywhere.
    assert proc.stdout.strip().splitlines()[-1] == "LOADED="
    assert list(machine.work.iterdir()) == []  # no runs/ledger.journal, mlflow.db, mlartifacts
    assert not machine.hf_home.exists() and not machine.cache.exists()


def test_dry_run_prints_its_units_then_exits_2_on_missing_weights(machine):
    proc = run_cli(machine.work, machine.hf_home, machine.cache,
                   "study", "fusion-depth", "--preset", "rtx3050", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert "study fusion-depth: 30 units" in proc.stdout
    assert proc.stderr.splitlines()[0] == "error: pretrained weights missing (3):"
    assert "  python runner.py weights fetch --preset rtx3050 --study fusion-depth" in proc.stderr.splitlines()
    assert list(machine.work.iterdir()) == []


def test_random_weights_need_no_checkpoint(machine):
    proc = run_cli(machine.work, machine.hf_home, machine.cache,
                   "study", "fusion-depth", "--preset", "rtx3050", "--random-weights", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "study fusion-depth: 30 units" in proc.stdout and proc.stderr == ""


# --- in-process: which checkpoints, and the command repeats the --set values ---------------------


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def dry_run(tmp_path, *args: str):
    return CliRunner().invoke(cli, ["study", "fusion-depth", "--preset", "rtx3050", "--dry-run",
                                    "--storage", str(tmp_path / "l.journal"), "--cache", str(tmp_path / "cache"),
                                    *args])


def test_only_what_is_missing_is_named_and_the_command_repeats_each_set(tmp_path, empty_hub_cache):
    (tmp_path / "siglip").mkdir()
    sets = [f"model.visual.pretrained={tmp_path / 'siglip'}", "model.fusion.pretrained=LiquidAI/LFM2-350M"]
    result = dry_run(tmp_path, "--set", sets[0], "--set", sets[1])
    assert result.exit_code == 2, result.output
    message = result.output[result.output.index("error: "):].splitlines()
    assert message[:3] == ["error: pretrained weights missing (2):", NEMO_LINE,
                           "  - LiquidAI/LFM2-350M (model.fusion.pretrained; 709 MB): not downloaded"]
    assert message[4] == ("  python runner.py weights fetch --preset rtx3050 --study fusion-depth "
                          f"--set {sets[0]} --set {sets[1]}")


def test_dry_run_passes_when_every_checkpoint_is_on_disk(tmp_path, empty_hub_cache):
    from transformers import Lfm2Config

    from fer.models.fusion import PUBLISHED_LFM2

    for name in ("siglip", "lfm2"):
        (tmp_path / name).mkdir()
    # The dry run builds every cell: a local LFM2 needs its architecture (config.json) to build.
    Lfm2Config(**PUBLISHED_LFM2[LFM700]).to_json_file(tmp_path / "lfm2" / "config.json")
    converted = tmp_path / "cache" / "weights" / "nvidia--stt_en_fastconformer_ctc_large"  # what fetch writes
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / "model.safetensors").write_bytes(b"w")
    result = dry_run(tmp_path, "--set", f"model.visual.pretrained={tmp_path / 'siglip'}",
                     "--set", f"model.fusion.pretrained={tmp_path / 'lfm2'}")
    assert result.exit_code == 0, result.output
    assert "missing" not in result.output


# --- tune: the checkpoints of every point of the space ---------------------------------------------


def test_search_points_combine_categorical_choices_and_int_ends_and_skip_floats():
    space = {"train.lr": ParamSpec(type="float", low=1e-4, high=1e-2, log=True),
             "model.modality": ParamSpec(type="categorical", choices=["audio", "av"]),
             "model.fusion.layers": ParamSpec(type="int", low=0, high=7, step=2),  # 0, 2, 4, 6
             "model.fusion.init": ParamSpec(type="categorical", choices=["random", "pretrained"])}
    points = search_points(space)
    assert len(points) == 8
    assert {(p["model.modality"], p["model.fusion.layers"], p["model.fusion.init"]) for p in points} == {
        (m, n, i) for m in ("audio", "av") for n in (0, 6) for i in ("random", "pretrained")}
    assert all("train.lr" not in p for p in points)


SEARCH = {
    "defaults": {"preset": "tiny"},
    "searches": {"toy": {
        "description": "init",
        "space": {"model.fusion.init": {"type": "categorical", "choices": ["random", "pretrained"]},
                  "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "trials": 2, "sampler": "random", "pruner": "none", "folds": [0],
        "overrides": {"model.fusion.init": "random", "model.fusion.pretrained": "LiquidAI/LFM2-350M"},
    }},
}


def test_tune_stops_before_the_first_trial_when_one_choice_reads_missing_weights(tmp_path, empty_hub_cache,
                                                                                  monkeypatch):
    trained = []
    module = types.ModuleType("fer.train.run")
    module.run_unit = lambda cfg, **kw: trained.append(cfg) or fake_worker.FakeResult(metrics={"val/uar_best": 0.5})
    monkeypatch.setitem(sys.modules, "fer.train.run", module)
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(SEARCH))
    result = CliRunner().invoke(cli, ["--ablations", str(path), "tune", "toy", "--data-root",
                                      str(ravdess(tmp_path / "ravdess")), "--cache", str(tmp_path / "cache"),
                                      "--storage", str(tmp_path / "t.journal"),
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    # The base (init random) reads nothing; the choice init=pretrained reads LFM2-350M's weights.
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[:2] == [
        "error: pretrained weights missing (1):",
        "  - LiquidAI/LFM2-350M (model.fusion.pretrained; 709 MB): not downloaded"]
    assert "  python runner.py weights fetch --preset tiny --study toy" in result.output.splitlines()
    assert trained == []
    assert not (tmp_path / "t.journal").exists() and not (tmp_path / "mlflow.db").exists()
