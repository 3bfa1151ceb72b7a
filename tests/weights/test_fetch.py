"""fer.weights.fetch against a stand-in hub on 127.0.0.1 (fakehub.py), in a fresh interpreter per
fetch with HF_ENDPOINT and HF_HOME set: only the needed files are downloaded into the Hugging Face
cache and then resolve there; offline mode makes no request; an interrupted download resumes on the
next fetch with a Range request; a corrupt one is detected and never used; a NeMo checkpoint is
downloaded and converted; one checkpoint's failure leaves the others fetched.
"""

import hashlib
import shutil

import pytest
import torch
from fakehub import git_blob_sha1, run_fetch, safetensors_bytes

from fer.weights import FetchResult, checkpoint, fetch_summary, resolve, resolve_pretrained
from fer.weights.download import CorruptDownloadError, verify_file

REPO = "test-org/tiny-model"
CONFIG = b'{"model_type": "test", "hidden_size": 8}\n'
WEIGHTS = safetensors_bytes(3_000_000)  # 12 MB: above huggingface_hub's 10 MiB write chunk
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes what it received in chunks of this size


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "hf-home", tmp_path / "fer-cache"


def snapshot_file(hf_home, name: str):
    (snapshot,) = (hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir()
    return snapshot / name


def blobs(hf_home) -> list[str]:
    folder = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_fetch_downloads_only_the_needed_files_and_they_resolve_from_the_hf_cache(hub, dirs):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS, "pytorch_model.bin": b"x" * 100,
                   "README.md": b"# card"})
    result = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert result["status"] == "fetched"
    assert snapshot_file(hf_home, "config.json").read_bytes() == CONFIG
    assert snapshot_file(hf_home, "model.safetensors").read_bytes() == WEIGHTS
    assert not snapshot_file(hf_home, "README.md").exists() and not snapshot_file(hf_home, "pytorch_model.bin").exists()
    assert hub.gets("README.md") == [] and hub.gets("pytorch_model.bin") == []

    found = resolve(checkpoint(REPO), cache, hub_cache=hf_home / "hub")
    assert found.where == "hf-cache"
    assert found.path == snapshot_file(hf_home, "config.json").parent
    assert found.size == len(CONFIG) + len(WEIGHTS)
    assert resolve_pretrained(REPO, cache, hub_cache=hf_home / "hub") == str(found.path)
    assert result["detail"] == f"hf-cache: {found.path}"

    hub.requests.clear()
    again = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert again["status"] == "present"
    assert hub.requests == []  # resolved from the disk: not even a HEAD


def test_offline_mode_reports_what_is_missing_without_a_request(hub, dirs):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    result = run_fetch(hub, hf_home, cache, [REPO, "LiquidAI/LFM2-700M"], offline=True)
    assert {r["status"] for r in result.values()} == {"offline"}
    assert result[REPO]["detail"] == "not downloaded (config.json, model.safetensors): HF_HUB_OFFLINE is set"
    assert hub.requests == []
    assert not (hf_home / "hub").exists()


def test_interrupted_download_resumes_on_the_next_fetch(hub, dirs):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    hub.cut_after(REPO, "model.safetensors", CHUNK + 500_000)  # then the hub answers 503: the fetch fails
    first = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert first["status"] == "failed"
    assert "download interrupted" in first["detail"] and "the next fetch resumes" in first["detail"]
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    assert blobs(hf_home) == sorted([git_blob_sha1(CONFIG), f"{sha}.incomplete"])
    partial = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs" / f"{sha}.incomplete"
    assert partial.read_bytes() == WEIGHTS[:CHUNK]  # what huggingface_hub had written when the connection dropped
    assert resolve(checkpoint(REPO), cache, hub_cache=hf_home / "hub").where == "missing"

    hub.up()
    hub.requests.clear()
    second = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert second["status"] == "fetched"
    assert hub.gets("model.safetensors") == [f"bytes={CHUNK}-"]  # resumed, not started over
    assert snapshot_file(hf_home, "model.safetensors").read_bytes() == WEIGHTS
    assert not partial.exists()


def test_connection_dropped_once_is_resumed_within_the_same_fetch(hub, dirs):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    hub.cut_after(REPO, "model.safetensors", CHUNK + 500_000, then_down=False)
    result = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert result["status"] == "fetched"
    assert hub.gets("model.safetensors") == [None, f"bytes={CHUNK}-"]
    assert snapshot_file(hf_home, "model.safetensors").read_bytes() == WEIGHTS


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_corrupt_download_is_detected_deleted_and_never_used(hub, dirs, name):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    hub.corrupt.add((REPO, name))  # right length, wrong bytes: only a hash tells
    result = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert result["status"] == "corrupt"
    kind = "sha256" if name.endswith(".safetensors") else "git blob sha1"
    assert result["detail"].startswith(f"{REPO}/{name}: corrupt download, {kind} ")
    etag = hub.repos[REPO].etag(name)
    assert etag not in blobs(hf_home) and f"{etag}.incomplete" not in blobs(hf_home)
    assert resolve(checkpoint(REPO), cache, hub_cache=hf_home / "hub").where == "missing"

    hub.corrupt.clear()
    hub.requests.clear()
    fixed = run_fetch(hub, hf_home, cache, [REPO])[REPO]
    assert fixed["status"] == "fetched"
    assert hub.gets(name) == [None]  # started over: nothing of the corrupt bytes was kept
    assert snapshot_file(hf_home, name).read_bytes() == hub.repos[REPO].files[name]


def test_one_failing_checkpoint_leaves_the_others_fetched(hub, dirs):
    hf_home, cache = dirs
    hub.add(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    hub.add("test-org/config-only", {"config.json": CONFIG})
    result = run_fetch(hub, hf_home, cache, ["test-org/no-such-repo", "test-org/config-only", REPO])
    assert result["test-org/no-such-repo"]["status"] == "failed"
    assert result["test-org/no-such-repo"]["detail"].startswith("RepositoryNotFoundError: ")
    assert result["test-org/config-only"]["status"] == "failed"
    assert result["test-org/config-only"]["detail"].startswith("RemoteEntryNotFoundError: ")
    assert "model.safetensors" in result["test-org/config-only"]["detail"]
    assert result[REPO]["status"] == "fetched"


# --- a NeMo checkpoint: the .nemo is downloaded, then converted into <cache>/weights/ ------------

NEMO_ID = "nvidia/stt_en_fastconformer_ctc_large"
NEMO_FILE = "stt_en_fastconformer_ctc_large.nemo"


@pytest.fixture(scope="module")
def nemo_source(tmp_path_factory):
    """A tiny FastConformer CTC as a .nemo archive in NeMo's layout (tests/weights/test_nemo.py)."""
    from test_nemo import nemo_config, nemo_weights, source_model, write_nemo

    model = source_model()
    path = write_nemo(tmp_path_factory.mktemp("nemo") / NEMO_FILE, nemo_config(), nemo_weights(model))
    return model, path.read_bytes()


def test_nemo_checkpoint_is_downloaded_converted_and_resolves_to_the_converted_copy(hub, dirs, nemo_source):
    from fer.models.audio import load_parakeet_encoder

    hf_home, cache = dirs
    model, nemo_bytes = nemo_source
    hub.add(NEMO_ID, {NEMO_FILE: nemo_bytes, "README.md": b"# card"})
    result = run_fetch(hub, hf_home, cache, [NEMO_ID])[NEMO_ID]
    converted = cache / "weights" / "nvidia--stt_en_fastconformer_ctc_large"
    assert result == {"id": NEMO_ID, "status": "fetched", "detail": f"converted: {converted}"}
    assert resolve_pretrained(NEMO_ID, cache, hub_cache=hf_home / "hub") == str(converted)
    assert {"config.json", "model.safetensors"} <= {p.name for p in converted.iterdir()}
    encoder = load_parakeet_encoder(str(converted))
    for name, tensor in model.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name

    hub.requests.clear()
    assert run_fetch(hub, hf_home, cache, [NEMO_ID])[NEMO_ID]["status"] == "present"
    assert hub.requests == []


def test_downloaded_nemo_is_converted_even_offline(hub, dirs, nemo_source):
    hf_home, cache = dirs
    hub.add(NEMO_ID, {NEMO_FILE: nemo_source[1]})
    run_fetch(hub, hf_home, cache, [NEMO_ID])
    converted = cache / "weights" / "nvidia--stt_en_fastconformer_ctc_large"
    shutil.rmtree(converted)  # as if the conversion had never run
    found = resolve(checkpoint(NEMO_ID), cache, hub_cache=hf_home / "hub")
    assert (found.where, found.note) == ("missing", "the .nemo file is downloaded but not converted yet")

    hub.requests.clear()
    result = run_fetch(hub, hf_home, cache, [NEMO_ID], offline=True)[NEMO_ID]
    assert result["status"] == "fetched"
    assert hub.requests == []
    assert resolve(checkpoint(NEMO_ID), cache, hub_cache=hf_home / "hub").where == "converted"


# --- the content check on its own ----------------------------------------------------------------


def test_verify_file_checks_the_hash_the_etag_names(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(CONFIG)
    verify_file(path, etag=git_blob_sha1(CONFIG), name="config.json")
    verify_file(path, etag=hashlib.sha256(CONFIG).hexdigest(), name="config.json")
    verify_file(path, etag="mirror-etag-not-a-hash", name="config.json")
    with pytest.raises(CorruptDownloadError, match="sha256"):
        verify_file(path, etag=hashlib.sha256(b"other").hexdigest(), name="config.json")
    with pytest.raises(CorruptDownloadError, match="git blob sha1"):
        verify_file(path, etag=hashlib.sha1(b"other").hexdigest(), name="config.json")


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1], "but its safetensors header describes"),
    (lambda b: b + b"\0", "but its safetensors header describes"),
    (lambda b: b[:4], "not a safetensors file"),
    (lambda b: b[:8] + b"{not json" + b[17:], "unreadable safetensors header"),
])  # fmt: skip
def test_safetensors_layout_is_checked_when_the_etag_is_no_hash(tmp_path, damage, message):
    path = tmp_path / "model.safetensors"
    good = safetensors_bytes(100)
    path.write_bytes(good)
    verify_file(path, etag="mirror-etag", name="model.safetensors")
    path.write_bytes(damage(good))
    with pytest.raises(CorruptDownloadError, match=message):
        verify_file(path, etag="mirror-etag", name="model.safetensors")


def test_fetch_summary_says_what_to_do_about_what_was_not_fetched():
    results = [FetchResult(checkpoint(REPO), "present", "hf-cache: /x"),
               FetchResult(checkpoint("LiquidAI/LFM2-700M"), "offline",
                           "not downloaded (config.json): HF_HUB_OFFLINE is set"),
               FetchResult(checkpoint("org/y"), "corrupt", "org/y/model.safetensors: corrupt download")]
    assert fetch_summary(results).splitlines() == [
        f"present  {REPO}  hf-cache: /x",
        "offline  LiquidAI/LFM2-700M  not downloaded (config.json): HF_HUB_OFFLINE is set",
        "corrupt  org/y  org/y/model.safetensors: corrupt download",
        "HF_HUB_OFFLINE is set: nothing was downloaded. Fetch on a connected machine and copy the Hugging Face "
        "cache (HF_HOME) and <cache>/weights here.",
        "run the same fetch again to retry: interrupted downloads resume, corrupt ones start over.",
    ]
    assert [r.ok for r in results] == [True, False, False]
