"""Which checkpoints a config reads (fer.weights.checkpoints) and where each resolves, offline
(fer.weights.resolver): a local path, the converted copy under <cache>/weights/, the Hugging Face
cache, or missing, with sizes; the preflight over every shipped study and its one message.

The Hugging Face cache is written here by hand in huggingface_hub's layout; test_fetch.py resolves
what huggingface_hub itself wrote.
"""

import hashlib
import os

import pytest

from fer.config import resolve_config
from fer.presets import PRESETS
from fer.weights import (KNOWN, Checkpoint, MissingWeightsError, checkpoint, checkpoints_for, checkpoints_needed,
                         fetch_command, missing_checkpoints, resolve, resolve_all, resolve_pretrained,
                         with_local_weights)
from fer.weights.checkpoints import PUBLISHED_LFM2_IDS, format_size, is_hub_id, merge
from studies.grid import expand_cells
from studies.spec import load_ablations

NEMO = "nvidia/stt_en_fastconformer_ctc_large"
SIGLIP = "timm/vit_base_patch16_siglip_224.v2_webli"
LFM700 = "LiquidAI/LFM2-700M"
# The FastConformer by its hub id, as rtx3050 names it; restated so these tests keep their meaning
# if the preset changes (test_every_shipped_preset_names_its_checkpoints_by_known_hub_id checks it).
RTX = {"model.audio.pretrained": NEMO}


def hf_cache(hub_cache, repo_id: str, files: dict[str, bytes], *, revision: str = "main"):
    """Files of ``repo_id`` in a Hugging Face cache as huggingface_hub lays it out: content in
    ``blobs/<sha256>``, ``snapshots/<commit>/<name>`` linking to it, ``refs/<revision>`` = commit."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, repo / "snapshots" / commit), repo / "snapshots" / commit / name)
    return repo / "snapshots" / commit


# --- what a config reads -------------------------------------------------------------------------


def test_rtx3050_reads_three_checkpoints_each_with_its_files_and_size():
    assert checkpoints_for(resolve_config("rtx3050", RTX)) == [
        Checkpoint(NEMO, kind="nemo", files=("stt_en_fastconformer_ctc_large.nemo",), size=463_000_000,
                   used_by=("model.audio.pretrained",)),
        Checkpoint(SIGLIP, files=("config.json", "model.safetensors"), size=372_000_000,
                   used_by=("model.visual.pretrained",)),
        Checkpoint(LFM700, files=("config.json", "model.safetensors"), size=1_480_000_000,
                   used_by=("model.fusion.pretrained",)),
    ]


def test_tiny_reads_no_checkpoint():
    assert checkpoints_for(resolve_config("tiny")) == []


@pytest.mark.parametrize("modality, expected", [
    ("audio", [NEMO, LFM700]), ("visual", [SIGLIP, LFM700]), ("av", [NEMO, SIGLIP, LFM700]),
])  # fmt: skip
def test_an_encoder_is_read_only_when_its_modality_is_on(modality, expected):
    cfg = resolve_config("rtx3050", {**RTX, "model.modality": modality})
    assert [c.id for c in checkpoints_for(cfg)] == expected


@pytest.mark.parametrize("overrides, files", [
    ({"model.fusion.init": "random"}, None),  # LFM2-700M's architecture is written in the code
    ({"model.fusion.layers": 0}, None),  # no LFM2 layer to initialise
    ({"model.fusion.init": "random", "model.fusion.pretrained": "org/lfm2-custom"}, ("config.json",)),
    ({"model.fusion.layers": 0, "model.fusion.pretrained": "org/lfm2-custom"}, ("config.json",)),
    ({"model.fusion.pretrained": "org/lfm2-custom"}, ("config.json", "model.safetensors")),
])  # fmt: skip
def test_fusion_reads_weights_only_when_they_initialise_layers(overrides, files):
    cfg = resolve_config("rtx3050", {**RTX, **overrides})
    fusion = [c.files for c in checkpoints_for(cfg) if c.used_by == ("model.fusion.pretrained",)]
    assert fusion == ([] if files is None else [files])


def test_published_lfm2_ids_are_the_architectures_fusion_writes_out():
    from fer.models.fusion import PUBLISHED_LFM2

    assert sorted(PUBLISHED_LFM2_IDS) == sorted(PUBLISHED_LFM2)


def test_one_checkpoint_read_for_its_config_and_for_its_weights_is_merged():
    cells = [resolve_config("tiny", {"model.fusion.pretrained": "org/x", "model.fusion.init": init})
             for init in ("random", "pretrained")]
    assert checkpoints_needed(cells) == [Checkpoint("org/x", used_by=("model.fusion.pretrained",))]
    # The table's size is that of all its files: a config alone has none, the union gets it back.
    config_only = checkpoint(LFM700, files=("config.json",))
    assert config_only.size is None
    assert merge([config_only, checkpoint(LFM700)]) == [KNOWN[LFM700]]


def test_timm_hub_prefix_names_the_same_checkpoint():
    assert checkpoint(f"hf-hub:{SIGLIP}") == KNOWN[SIGLIP]


@pytest.mark.parametrize("name, hub", [
    (LFM700, True), ("weights/stt_en_fastconformer_ctc_large", True), ("./weights/stt", False),
    ("/abs/dir", False), ("~/dir/x", False), ("a/b/c", False), ("org/na--me", False), ("LFM2", False),
])  # fmt: skip
def test_hub_ids_are_org_slash_name(name, hub):
    assert is_hub_id(name) is hub


def test_sizes_are_written_as_the_hub_lists_them():
    assert [format_size(s) for s in (None, 999, 999_000, 463_000_000, 1_480_000_000)] == [
        "size unknown", "999 B", "999 kB", "463 MB", "1.48 GB"]


# --- every shipped preset and study ---------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if p != "tiny"))
def test_every_shipped_preset_names_its_checkpoints_by_known_hub_id(preset):
    assert all(c.id in KNOWN for c in checkpoints_for(resolve_config(preset)))


ABLATIONS = load_ablations()


@pytest.mark.parametrize("preset, overrides", [(None, {}), ("rtx3050", RTX), ("full", RTX)])
@pytest.mark.parametrize("study", sorted(ABLATIONS.studies))
def test_preflight_of_every_shipped_study_lists_known_checkpoints_as_missing_in_empty_caches(
        study, preset, overrides, tmp_path):
    cells = expand_cells(ABLATIONS.study(study), ABLATIONS.defaults, preset=preset, overrides=overrides)
    configs = [c.config for c in cells]
    needed = checkpoints_needed(configs)
    assert all(c.id in KNOWN for c in needed)
    missing = missing_checkpoints(configs, tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert [r.checkpoint for r in missing] == needed
    assert all(r.note == "not downloaded" for r in missing)


def test_preflight_of_lfm2_freeze_on_tiny_reads_lfm2_350m_only_for_its_pretrained_cells(tmp_path):
    cells = expand_cells(ABLATIONS.study("lfm2-freeze"), ABLATIONS.defaults)
    assert [c.id for c in checkpoints_needed([c.config for c in cells])] == ["LiquidAI/LFM2-350M"]
    random_cells = [c.config for c in cells if c.config.model.fusion.init == "random"]
    assert missing_checkpoints(random_cells, tmp_path, hub_cache=tmp_path / "hub") == []


# --- where a checkpoint resolves --------------------------------------------------------------------


def test_existing_local_directory_resolves_to_itself_with_its_size(tmp_path):
    folder = tmp_path / "my-lfm2"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_bytes(b"{}")
    (folder / "sub" / "model.safetensors").write_bytes(b"x" * 100)
    found = resolve(checkpoint(str(folder)), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert (found.where, found.path, found.size) == ("local", folder, 102)
    assert resolve_pretrained(str(folder), tmp_path / "cache", hub_cache=tmp_path / "hub") == str(folder)


def test_local_path_that_does_not_exist_is_missing(tmp_path):
    found = resolve(checkpoint(str(tmp_path / "gone")), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert (found.where, found.path, found.size) == ("missing", None, 0)
    assert found.note == "no such file or directory (and not a hub id org/name)"


def test_converted_copy_under_the_cache_resolves_before_the_hf_cache(tmp_path):
    cache = tmp_path / "cache"
    converted = cache / "weights" / "nvidia--stt_en_fastconformer_ctc_large"
    converted.mkdir(parents=True)
    (converted / "config.json").write_bytes(b"{}")
    (converted / "model.safetensors").write_bytes(b"w" * 1000)
    hf_cache(tmp_path / "hub", NEMO, {"stt_en_fastconformer_ctc_large.nemo": b"n" * 50})
    found = resolve(checkpoint(NEMO), cache, hub_cache=tmp_path / "hub")
    assert (found.where, found.path, found.size) == ("converted", converted, 1002)


def test_converted_folder_without_weights_does_not_count(tmp_path):
    converted = tmp_path / "cache" / "weights" / "nvidia--stt_en_fastconformer_ctc_large"
    converted.mkdir(parents=True)
    (converted / "config.json").write_bytes(b"{}")
    assert resolve(checkpoint(NEMO), tmp_path / "cache", hub_cache=tmp_path / "hub").where == "missing"


def test_hf_cache_resolves_to_the_snapshot_counting_the_needed_files_only(tmp_path):
    snapshot = hf_cache(tmp_path / "hub", LFM700, {"config.json": b"{}" * 5, "model.safetensors": b"w" * 300,
                                                    "tokenizer.json": b"t" * 7000})
    found = resolve(checkpoint(LFM700), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert (found.where, found.path, found.size) == ("hf-cache", snapshot, 310)
    assert resolve_pretrained(LFM700, tmp_path / "cache", hub_cache=tmp_path / "hub") == str(snapshot)


def test_hf_cache_holding_part_of_the_files_is_missing_the_rest(tmp_path):
    hf_cache(tmp_path / "hub", LFM700, {"config.json": b"{}"})
    found = resolve(checkpoint(LFM700), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert (found.where, found.note) == ("missing", "model.safetensors not downloaded")
    # What an architecture-only fusion reads is there.
    config_only = resolve(checkpoint(LFM700, files=("config.json",)), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert config_only.where == "hf-cache"


def test_hf_cache_of_another_revision_does_not_count(tmp_path):
    hf_cache(tmp_path / "hub", LFM700, {"config.json": b"{}", "model.safetensors": b"w"}, revision="v2")
    assert resolve(checkpoint(LFM700), tmp_path / "cache", hub_cache=tmp_path / "hub").where == "missing"


def test_downloaded_but_unconverted_nemo_is_missing_and_says_why(tmp_path):
    hf_cache(tmp_path / "hub", NEMO, {"stt_en_fastconformer_ctc_large.nemo": b"n" * 50})
    found = resolve(checkpoint(NEMO), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert (found.where, found.note) == ("missing", "the .nemo file is downloaded but not converted yet")


# --- the preflight's message and the loaders' call ---------------------------------------------------


def test_resolve_pretrained_of_a_missing_checkpoint_names_the_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        resolve_pretrained(LFM700, tmp_path / "cache", preset="rtx3050", hub_cache=tmp_path / "hub")
    assert [r.checkpoint.id for r in err.value.missing] == [LFM700]
    assert str(err.value).splitlines() == [
        "pretrained weights missing (1):",
        f"  - {LFM700} (1.48 GB): not downloaded",
        "download them (about 1.48 GB) with:",
        "  python runner.py weights fetch --preset rtx3050",
        "(it honours HF_HOME, HF_HUB_CACHE and HF_TOKEN; for a machine without network, fetch on one with it and "
        "copy the Hugging Face cache and <cache>/weights over)",
    ]


def test_preflight_message_lists_each_missing_checkpoint_and_the_exact_command(tmp_path):
    cfg = resolve_config("rtx3050", {**RTX, "model.visual.pretrained": str(tmp_path / "no-siglip")})
    missing = missing_checkpoints([cfg], tmp_path / "cache", hub_cache=tmp_path / "hub")
    message = str(MissingWeightsError(missing, preset="rtx3050", study="fusion-depth",
                                      assignments=[f"model.visual.pretrained={tmp_path / 'no-siglip'}"]))
    lines = message.splitlines()
    assert lines[0] == "pretrained weights missing (3):"
    assert lines[1] == (f"  - {NEMO} (model.audio.pretrained; NeMo .nemo, converted after download; 463 MB): "
                        "not downloaded")
    assert lines[2] == (f"  - {tmp_path / 'no-siglip'} (model.visual.pretrained): "
                        "no such file or directory (and not a hub id org/name)")
    assert lines[3] == f"  - {LFM700} (model.fusion.pretrained; 1.48 GB): not downloaded"
    assert lines[4] == "download them (about 1.94 GB) with:"
    assert lines[5] == ("  python runner.py weights fetch --preset rtx3050 --study fusion-depth "
                        f"--set model.visual.pretrained={tmp_path / 'no-siglip'}")
    assert lines[-1] == "a local path that does not exist cannot be fetched: correct it with --set KEY=PATH"


def test_fetch_command_quotes_what_a_shell_would_split():
    assert fetch_command("rtx3050", "my study", ["model.fusion.pretrained=a b"]) == (
        "python runner.py weights fetch --preset rtx3050 --study 'my study' --set 'model.fusion.pretrained=a b'")
    assert fetch_command(None) == "python runner.py weights fetch --preset PRESET"


def test_with_local_weights_points_each_read_checkpoint_at_its_folder(tmp_path):
    cache, hub = tmp_path / "cache", tmp_path / "hub"
    converted = cache / "weights" / "nvidia--stt_en_fastconformer_ctc_large"
    converted.mkdir(parents=True)
    (converted / "config.json").write_bytes(b"{}")
    (converted / "model.safetensors").write_bytes(b"w")
    siglip = hf_cache(hub, SIGLIP, {"config.json": b"{}", "model.safetensors": b"w"})
    cfg = resolve_config("rtx3050", {**RTX, "model.fusion.init": "random"})  # LFM2-700M: architecture only
    local = with_local_weights(cfg, cache, hub_cache=hub)
    assert local.model.audio.pretrained == str(converted)
    assert local.model.visual.pretrained == str(siglip)
    assert local.model.fusion.pretrained == LFM700  # not read: left as named
    assert local.model_dump(exclude={"model": {"audio": {"pretrained"}, "visual": {"pretrained"}}}) == \
        cfg.model_dump(exclude={"model": {"audio": {"pretrained"}, "visual": {"pretrained"}}})


def test_with_local_weights_names_every_missing_checkpoint_at_once(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        with_local_weights(resolve_config("rtx3050", RTX), tmp_path / "cache", hub_cache=tmp_path / "hub")
    assert [r.checkpoint.id for r in err.value.missing] == [NEMO, SIGLIP, LFM700]
    assert "python runner.py weights fetch --preset rtx3050" in str(err.value)


def test_resolve_all_reports_each_place_once(tmp_path):
    cache, hub = tmp_path / "cache", tmp_path / "hub"
    hf_cache(hub, SIGLIP, {"config.json": b"{}", "model.safetensors": b"w" * 10})
    cfgs = [resolve_config("rtx3050", {**RTX, "model.modality": m}) for m in ("audio", "visual", "av")]
    assert [(r.checkpoint.id, r.where, r.size) for r in resolve_all(cfgs, cache, hub_cache=hub)] == [
        (NEMO, "missing", 0), (LFM700, "missing", 0), (SIGLIP, "hf-cache", 12)]
