"""`runner.py weights list | fetch | convert-nemo`, and what `--random-weights` reads.

`list` is read in-process with the Hugging Face cache pointed at a temporary folder; `fetch` runs
in a fresh interpreter against the stand-in hub (fakehub.py), as huggingface_hub reads HF_ENDPOINT
and HF_HOME once, at import; `convert-nemo` converts an archive in NeMo's layout (test_nemo.py).
"""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fakehub import REPO_ROOT, hub_env, safetensors_bytes
from test_checkpoints import LFM700, NEMO, SIGLIP, hf_cache

from fer.config import resolve_config
from fer.weights import checkpoints_for
from runner import cli

CUSTOM = "test-org/tiny-model"


# --- random weights read no weights ----------------------------------------------------------------


@pytest.mark.parametrize("preset", ["rtx3050", "full"])
def test_random_weights_read_nothing_for_a_shipped_preset(preset):
    assert checkpoints_for(resolve_config(preset, {"model.random_weights": True})) == []


def test_random_weights_still_read_the_architecture_of_an_unpublished_fusion_checkpoint():
    cfg = resolve_config("rtx3050", {"model.random_weights": True, "model.fusion.pretrained": CUSTOM})
    assert [(c.id, c.files) for c in checkpoints_for(cfg)] == [(CUSTOM, ("config.json",))]


# --- weights list ----------------------------------------------------------------------------------


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def weights(*args: str):
    return CliRunner().invoke(cli, ["weights", *args])


def test_list_shows_where_each_checkpoint_resolves_its_sizes_and_the_fetch_command(tmp_path, hub_cache):
    snapshot = hf_cache(hub_cache, SIGLIP, {"config.json": b"{}", "model.safetensors": b"w" * 1998})
    result = weights("list", "--preset", "rtx3050", "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    width = len(SIGLIP)
    assert result.output.splitlines() == [
        f"{NEMO:<{width}}  missing   expected 463 MB, a NeMo .nemo converted after download",
        "    used by: model.audio.pretrained",
        "    missing: not downloaded",
        f"{SIGLIP:<{width}}  hf-cache  2 kB on disk (expected 372 MB)",
        "    used by: model.visual.pretrained",
        f"    path:    {snapshot}",
        f"{LFM700:<{width}}  missing   expected 1.48 GB",
        "    used by: model.fusion.pretrained",
        "    missing: not downloaded",
        "3 checkpoints: 1 present, 2 missing (about 1.94 GB to download); fetch them with:",
        "  python runner.py weights fetch --preset rtx3050",
    ]


def test_list_as_json_of_a_study_on_the_default_preset(tmp_path, hub_cache):
    result = weights("list", "--study", "lfm2-freeze", "--cache", str(tmp_path / "cache"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{
        "id": "LiquidAI/LFM2-350M", "kind": "hf", "where": "missing", "path": None, "size_on_disk": 0,
        "expected_size": 709_000_000, "files": ["config.json", "model.safetensors"],
        "used_by": ["model.fusion.pretrained"], "note": "not downloaded"}]


def test_list_of_a_search_reads_its_space_and_random_weights_read_nothing(tmp_path, hub_cache):
    args = ["list", "--study", "fusion-hparams", "--preset", "rtx3050", "--cache", str(tmp_path / "cache")]
    assert [r["id"] for r in json.loads(weights(*args, "--json").output)] == [NEMO, SIGLIP, LFM700]
    assert weights(*args, "--random-weights").output == "no pretrained checkpoint is read: nothing to fetch\n"


def test_list_of_an_unknown_study_or_preset_exits_2_naming_what_there_is():
    result = weights("list", "--study", "nope")
    assert result.exit_code == 2
    assert "'nope' is neither a declared study nor a search" in result.output and "fusion-hparams" in result.output
    result = weights("list", "--preset", "huge")
    assert result.exit_code == 2 and "unknown preset 'huge'; known: full, rtx3050, tiny" in result.output


# --- weights fetch ---------------------------------------------------------------------------------


def run_runner(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "runner.py"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_fetch_downloads_what_a_config_reads_then_finds_it_present(hub, tmp_path):
    hub.add(CUSTOM, {"config.json": b'{"model_type": "lfm2"}\n', "model.safetensors": safetensors_bytes(1000),
                     "README.md": b"# card"})
    hf_home, cache = tmp_path / "hf-home", tmp_path / "cache"
    args = ["weights", "fetch", "--preset", "tiny", "--set", f"model.fusion.pretrained={CUSTOM}",
            "--set", "model.fusion.init=pretrained", "--cache", str(cache)]
    first = run_runner(hub_env(hub, hf_home), *args)
    assert first.returncode == 0, first.stderr
    snapshot = next((hf_home / "hub" / "models--test-org--tiny-model" / "snapshots").iterdir())
    assert first.stdout.splitlines()[-1] == f"fetched  {CUSTOM}  hf-cache: {snapshot}"
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]

    hub.requests.clear()
    again = run_runner(hub_env(hub, hf_home), *args)
    assert again.returncode == 0 and again.stdout.splitlines() == [f"present  {CUSTOM}  hf-cache: {snapshot}"]
    assert hub.requests == []


def test_fetch_offline_reports_what_is_missing_and_exits_1(hub, tmp_path):
    hf_home = tmp_path / "hf-home"
    result = run_runner(hub_env(hub, hf_home, offline=True), "weights", "fetch", "--preset", "rtx3050",
                        "--cache", str(tmp_path / "cache"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [["offline", NEMO], ["offline", SIGLIP], ["offline", LFM700]]
    assert lines[3].startswith("HF_HUB_OFFLINE is set: nothing was downloaded.")
    assert hub.requests == [] and not (hf_home / "hub").exists()


def test_fetch_of_a_preset_that_reads_nothing_says_so():
    result = weights("fetch", "--preset", "tiny")
    assert result.exit_code == 0 and result.output == "no pretrained checkpoint is read: nothing to fetch\n"


# --- weights convert-nemo ----------------------------------------------------------------------------


def test_convert_nemo_writes_the_folder_once_and_refuses_bad_input(tmp_path):
    from test_nemo import nemo_config, nemo_weights, source_model, write_nemo

    nemo = write_nemo(tmp_path / "tiny.nemo", nemo_config(), nemo_weights(source_model()))
    out = tmp_path / "weights" / "tiny"
    result = weights("convert-nemo", str(nemo), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: use it with --set model.audio.pretrained={out}\n"
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}

    again = weights("convert-nemo", str(nemo), "--out", str(out))
    assert again.exit_code == 2 and f"error: {out} exists; remove it to convert again" in again.output

    bad = tmp_path / "cut.nemo"
    bad.write_bytes(nemo.read_bytes()[:5000])
    result = weights("convert-nemo", str(bad), "--out", str(tmp_path / "other"))
    assert result.exit_code == 2 and f"error: {bad} does not convert (nothing written):" in result.output
    assert not (tmp_path / "other").exists()
