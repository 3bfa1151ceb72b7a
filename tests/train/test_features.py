"""Frozen-encoder feature cache: when it applies, its key, fp16 fidelity, atomic writes, resume, reuse."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fer.config import resolve_config
from fer.data.cache import entry_path, save_entry
from fer.data.dataset import PreparedClipDataset, make_loader
from fer.models.model import build_model
from fer.slots import AUDIO, VISUAL
from fer.train.features import (EncoderForwardCounter, EntryInput, FeatureCache, FeatureCacheError,
                                cached_encoders, encoder_key, prepare_features, prepare_key_of)

T, SIZE, SECONDS, RATE = 4, 64, 0.5, 16000
L = round(SECONDS * RATE)
PREP_KEY = "prep0"
SMALL = {"data.frames": T, "data.size": SIZE, "data.audio_seconds": SECONDS, "data.sample_rate": RATE}
# fp16 keeps an 11-bit significand: a stored feature is within a relative 2**-11 (4.9e-4) of the
# float32 one. Through the tiny model that moves logits of order 1 by about 1e-4 (measured
# 6.5e-5 to 8.7e-5 for seeds 0-2); 2e-3 leaves room, while a wrong clip's features move them by > 0.04.
LOGIT_ATOL = 2e-3


def tiny_cfg(**overrides):
    return resolve_config("tiny", {**SMALL, **overrides})


def make_entries(root: Path, n: int = 6, key: str = PREP_KEY) -> dict[str, Path]:
    """n prepared entries with random frames, keypoints and audio, as fer.data.prepare stores them."""
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        cid = f"01-0{i % 8 + 1}-01-01-01-{i + 1:02d}"
        path = entry_path(root, key, cid)
        save_entry(path, frames=rng.integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8),
                   keypoints=rng.uniform(8, SIZE - 8, (T, 6, 2)).astype(np.float32),
                   audio=(0.2 * rng.standard_normal(L)).astype(np.float32),
                   meta={"clip": {"clip_id": cid, "emotion": i % 8, "actor": i + 1},
                         "settings": {"sample_rate": RATE}})
        out[cid] = path
    return out


def seeded_model(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def cache_keys(hooks: dict) -> dict[str, str]:
    return {name: fn.__self__.key for name, fn in hooks.items()}


def cached_modalities(cfg) -> set[str]:
    return {enc.slot.modality for enc in cached_encoders(seeded_model(cfg), cfg)}


def visual_encoder(model):
    """The model's frozen visual encoder spec (what the cache asks the model for)."""
    return next(enc for enc in model.frozen_encoders() if enc.slot == VISUAL)


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> dict[str, Path]:
    return make_entries(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def model():
    return seeded_model(tiny_cfg())


@pytest.mark.parametrize("overrides, expected", [
    ({}, {"audio", "visual"}),
    ({"model.modality": "audio"}, {"audio"}),
    ({"model.modality": "visual"}, {"visual"}),
    ({"model.visual.freeze": False}, {"audio"}),
    ({"model.audio.freeze": False}, {"visual"}),
    ({"data.augment.flip": True}, {"audio"}),
    ({"data.augment.crop": True, "data.augment.audio_noise": True}, set()),
    ({"data.augment.audio_shift": True}, {"visual"}),
])
def test_cached_encoders(overrides, expected):
    assert cached_modalities(tiny_cfg(**overrides)) == expected


def test_the_model_names_its_frozen_encoders_with_their_batch_keys(model):
    encoders = model.frozen_encoders()
    assert [(e.slot, e.part) for e in encoders] == [(AUDIO, "audio_encoder"), (VISUAL, "visual_encoder")]
    assert encoders[0].module is model.audio_encoder and encoders[1].module is model.visual_encoder
    assert (AUDIO.input_key, AUDIO.feature_key, VISUAL.input_key, VISUAL.feature_key) == \
        ("audio", "audio_feats", "frames", "visual_feats")  # the dataset's item keys


def test_feature_cache_switch_turns_everything_off(model, entries, tmp_path):
    off = tiny_cfg(**{"train.feature_cache": False})
    assert cached_encoders(model, off) == []
    assert prepare_features(model, off, entries, tmp_path, PREP_KEY, progress=False) == {}
    assert not (tmp_path / "features").exists()


def test_any_change_of_encoder_weights_or_preprocessing_changes_the_key(model):
    data, enc = tiny_cfg().data, visual_encoder(model)
    base = encoder_key(enc, data, PREP_KEY)
    assert encoder_key(enc, data, PREP_KEY) == base  # deterministic

    def twin():  # same seed, same weights, its own module to alter
        return visual_encoder(seeded_model(tiny_cfg()))

    assert encoder_key(twin(), data, PREP_KEY) == base
    nudged, resized, renamed = twin(), twin(), twin()
    with torch.no_grad():
        p = next(nudged.module.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))  # one ulp in one weight
    stated = resized.module.build_settings()
    resized.module.build_settings = lambda: {**stated, "image_size": 32}
    renamed.module.__class__ = type("OtherPatchEncoder", (type(enc.module),), {})
    changed = {
        "weights": encoder_key(nudged, data, PREP_KEY),
        "build settings": encoder_key(resized, data, PREP_KEY),
        "class": encoder_key(renamed, data, PREP_KEY),
        "normalisation": encoder_key(enc, data.model_copy(update={"mean": (0.4, 0.5, 0.5)}), PREP_KEY),
        "preprocessing": encoder_key(enc, data, "prep1"),
        "slot": encoder_key(replace(enc, slot=AUDIO), data, PREP_KEY),
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed)


def batches_logits(model, ds) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(b) for b in make_loader(ds, 4, shuffle=False, seed=0)])


def test_cached_and_uncached_logits_agree_within_fp16_tolerance(model, entries, tmp_path):
    cfg = tiny_cfg()
    paths = list(entries.values())
    features = prepare_features(model, cfg, entries, tmp_path, PREP_KEY, progress=False)
    assert set(features) == {"audio_feats", "visual_feats"}
    plain = batches_logits(model, PreparedClipDataset(paths, cfg.data, train=False))
    with EncoderForwardCounter() as calls:
        cached = batches_logits(model, PreparedClipDataset(paths, cfg.data, train=False, features=features))
    assert calls.counts == {"audio": 0, "visual": 0}  # the cached path really skipped both encoders
    assert torch.allclose(cached, plain, rtol=0, atol=LOGIT_ATOL), (cached - plain).abs().max()

    # The tolerance discriminates: the features of the wrong clips move the logits far beyond it.
    ids = list(entries)
    shifted = {k: (lambda cid, fn=fn: fn(ids[(ids.index(cid) + 1) % len(ids)])) for k, fn in features.items()}
    wrong = batches_logits(model, PreparedClipDataset(paths, cfg.data, train=False, features=shifted))
    assert (wrong - plain).abs().max() > 20 * LOGIT_ATOL


def test_stored_features_are_the_encoder_outputs_in_fp16(model, entries, tmp_path):
    cfg = tiny_cfg()
    features = prepare_features(model, cfg, entries, tmp_path, PREP_KEY, progress=False)
    keys = cache_keys(features)
    cid, path = next(iter(entries.items()))
    with torch.no_grad():
        frames = EntryInput(cfg.data, VISUAL)(path)[None]  # (1, T, 3, H, W)
        audio = EntryInput(cfg.data, AUDIO)(path)[None]  # (1, L)
        want = {"visual_feats": model.visual_encoder(frames)[0], "audio_feats": model.audio_encoder(audio)[0]}
    assert want["visual_feats"].shape == (T, (SIZE // 8) ** 2, 64)
    for name, expected in want.items():
        stored = np.load(tmp_path / "features" / keys[name] / f"{cid}.npy")
        assert stored.dtype == np.float16 and stored.shape == tuple(expected.shape)
        got = features[name](cid)
        assert got.dtype == torch.float32
        assert torch.allclose(got, expected, rtol=2**-10, atol=1e-5)


def test_entry_input_works_as_a_copy_in_a_spawned_loader_worker(entries):
    import pickle

    cfg = tiny_cfg()
    path = next(iter(entries.values()))
    for slot, shape in ((VISUAL, (T, 3, SIZE, SIZE)), (AUDIO, (L,))):
        copied = pickle.loads(pickle.dumps(EntryInput(cfg.data, slot)))  # what a spawned worker holds
        assert copied.slot is not slot
        assert torch.equal(copied(path), EntryInput(cfg.data, slot)(path)) and copied(path).shape == shape


def test_a_second_prepare_computes_no_encoder_forward(entries, tmp_path):
    """Another cell (other fusion depth) with the same seed shares the cache and computes nothing."""
    cfg = tiny_cfg()
    first = seeded_model(cfg)
    with EncoderForwardCounter() as calls:
        one = prepare_features(first, cfg, entries, tmp_path, PREP_KEY, batch_size=4, progress=False)
    assert calls.counts == {"audio": 2, "visual": 2}  # 6 clips in batches of 4, per encoder

    other_cfg = tiny_cfg(**{"model.fusion.layers": 0, "model.visual.roi.k": 8})
    second = seeded_model(other_cfg)
    hooked = []
    for enc in (second.audio_encoder, second.visual_encoder):
        enc.register_forward_hook(lambda *args: hooked.append(1))
    with EncoderForwardCounter() as calls:
        two = prepare_features(second, other_cfg, entries, tmp_path, PREP_KEY, progress=False)
    assert calls.counts == {"audio": 0, "visual": 0} and hooked == []
    assert cache_keys(two) == cache_keys(one)
    cid = next(iter(entries))
    assert all(torch.equal(two[k](cid), one[k](cid)) for k in one)


def test_the_counter_counts_real_passes_not_meta_ones(model, entries):
    from fer.models.profile import meta_batch

    cfg = tiny_cfg()
    with EncoderForwardCounter() as calls:
        build_model(cfg, device="meta")(meta_batch(cfg, 2))  # profiling: shapes only
    assert calls.counts == {"audio": 0, "visual": 0}
    with EncoderForwardCounter() as calls, torch.no_grad():
        model(next(iter(make_loader(PreparedClipDataset(list(entries.values()), cfg.data, train=False), 3,
                                    shuffle=False, seed=0))))
    assert calls.counts == {"audio": 1, "visual": 1}


def test_other_preprocessing_builds_its_own_cache(model, entries, tmp_path):
    one = cache_keys(prepare_features(model, tiny_cfg(), entries, tmp_path, PREP_KEY, progress=False))
    cfg = tiny_cfg(**{"data.mean": (0.4, 0.45, 0.5)})
    with EncoderForwardCounter() as calls:
        two = cache_keys(prepare_features(model, cfg, entries, tmp_path, PREP_KEY, progress=False))
    assert two["audio_feats"] == one["audio_feats"] and two["visual_feats"] != one["visual_feats"]
    assert calls.counts == {"audio": 0, "visual": 1}


@pytest.mark.parametrize("other", [
    {"model.fusion.layers": 0},
    {"model.audio.pooling": "max"},
    {"model.modality": "visual"},
])
def test_cells_with_the_same_seed_share_the_random_tiny_encoders(other):
    base, cfg = tiny_cfg(), tiny_cfg(**other)
    a, b = seeded_model(base), seeded_model(cfg)
    assert encoder_key(visual_encoder(b), cfg.data, PREP_KEY) == encoder_key(visual_encoder(a), base.data, PREP_KEY)


def test_unfrozen_encoder_is_refused(entries, tmp_path):
    cfg = tiny_cfg(**{"model.modality": "visual"})
    m = seeded_model(cfg)
    m.visual_encoder.requires_grad_(True)
    with pytest.raises(ValueError, match="visual_encoder was built frozen but has trainable parameters"):
        prepare_features(m, cfg, entries, tmp_path, PREP_KEY, progress=False)


class Interrupted(Exception):
    pass


class StopsAfter(nn.Module):
    """Wraps an encoder; raises on call ``n + 1``, as a kill between two batches would stop it."""

    def __init__(self, inner: nn.Module, n: int):
        super().__init__()
        self.inner, self.n, self.seen = inner, n, []

    def forward(self, x):
        if len(self.seen) == self.n:
            raise Interrupted
        self.seen.append(x.shape[0])
        return self.inner(x)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_interrupted_build_resumes_with_the_missing_clips(model, entries, tmp_path):
    cfg = tiny_cfg()
    load = EntryInput(cfg.data, VISUAL)
    cache = FeatureCache(tmp_path, "k")
    with pytest.raises(Interrupted):
        cache.build(StopsAfter(model.visual_encoder, 1), entries, load, batch_size=2, progress=False)
    ids = sorted(entries)
    assert [cache.has(c) for c in ids] == [True, True, False, False, False, False]
    # A writer killed in the middle of a file leaves its temporary file, never a final name.
    leftover = cache.dir / f".{ids[2]}.npy.{dead_pid()}.x1y2z3.tmp"
    leftover.write_bytes(b"\x93NUMPY half a file")

    encoder = StopsAfter(model.visual_encoder, 99)
    assert cache.build(encoder, entries, load, batch_size=2, progress=False) == ids[2:]
    assert encoder.seen == [2, 2]
    assert not leftover.exists() and sorted(p.name for p in cache.dir.iterdir()) == [f"{c}.npy" for c in ids]

    clean = FeatureCache(tmp_path / "clean", "k")
    clean.build(model.visual_encoder, entries, load, batch_size=6, num_workers=1, progress=False)
    for cid in ids:
        assert torch.allclose(cache.lookup(cid), clean.lookup(cid), rtol=2**-10, atol=1e-5)
    assert cache.build(encoder, entries, load, batch_size=2, progress=False) == []


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path, "k")
    cache.dir.mkdir(parents=True)

    def half_written(fh, arr, allow_pickle):
        fh.write(b"\x93NUMPY")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        cache.write("a", np.ones((2, 3), np.float32))
    assert list(cache.dir.iterdir()) == []


def test_values_outside_fp16_are_refused(tmp_path):
    cache = FeatureCache(tmp_path, "k")
    cache.dir.mkdir(parents=True)
    with pytest.raises(FeatureCacheError, match=r"a\.npy: encoder output is not finite in float16"):
        cache.write("a", np.array([1.0, 7e4], np.float32))
    assert not cache.has("a")


def test_lookup_errors_name_the_file(tmp_path):
    cache = FeatureCache(tmp_path, "k")
    cache.dir.mkdir(parents=True)
    with pytest.raises(FeatureCacheError, match=r"k/a\.npy: no cached features for clip a"):
        cache.lookup("a")
    np.save(cache.path("b"), np.ones(3, np.float32))
    with pytest.raises(FeatureCacheError, match=r"b\.npy: features are float32, expected float16"):
        cache.lookup("b")
    cache.path("c").write_bytes(b"not an array")
    with pytest.raises(FeatureCacheError, match=r"c\.npy: unreadable feature file"):
        cache.lookup("c")


def test_prepare_key_of(tmp_path):
    assert prepare_key_of(make_entries(tmp_path, n=2)) == PREP_KEY
    mixed = {"a": tmp_path / "prepared" / "k1" / "a.npz", "b": tmp_path / "prepared" / "k2" / "b.npz"}
    with pytest.raises(ValueError, match=r"one prepared-settings folder; found \['k1', 'k2'\]"):
        prepare_key_of(mixed)


@pytest.mark.slow
def test_a_second_study_over_the_same_data_computes_no_encoder_forward(synth_data, prepared_cache):
    """Two studies (another fusion depth, another fold) on the conftest's synthetic RAVDESS: the
    first builds the features, the second finds them and never runs an encoder."""
    import shutil

    from fer.train.run import run_unit

    # Other tests of the session share this cache and may have built these features already.
    shutil.rmtree(prepared_cache / "features", ignore_errors=True)
    first = resolve_config("tiny", {"train.precision": "no", "train.epochs": 1})
    with EncoderForwardCounter() as calls:
        run_unit(first, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0)
    assert calls.counts["audio"] > 0 and calls.counts["visual"] > 0

    second = resolve_config("tiny", {"train.precision": "no", "train.epochs": 1, "model.fusion.layers": 0})
    with EncoderForwardCounter() as calls:
        run_unit(second, data_root=synth_data, cache_dir=prepared_cache, fold=1, seed=0)
    assert calls.counts == {"audio": 0, "visual": 0}


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np, torch
    from torch import nn
    from fer.train.features import FeatureCache

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = nn.Linear(5, 3)
        def forward(self, x):
            time.sleep(0.4)
            return self.proj(x)

    root = Path(sys.argv[1])
    entries = {p.stem: p for p in sorted((root / "inputs").glob("*.npy"))}
    FeatureCache(root, "k").build(Slow(), entries, lambda p: torch.from_numpy(np.load(p)), batch_size=1,
                                  progress=False)
""")


@pytest.mark.slow
def test_a_build_killed_with_sigkill_resumes(tmp_path):
    (tmp_path / "inputs").mkdir()
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(8):
        entries[f"c{i}"] = tmp_path / "inputs" / f"c{i}.npy"
        np.save(entries[f"c{i}"], rng.standard_normal((4, 5)).astype(np.float32))
    script = tmp_path / "build.py"
    script.write_text(KILLED_BUILD)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=Path(__file__).parents[2])
    cache = FeatureCache(tmp_path, "k")
    deadline = time.monotonic() + 120
    while sum(cache.has(c) for c in entries) < 2:
        assert proc.poll() is None, "the build exited before it could be killed"
        assert time.monotonic() < deadline, "the build wrote nothing in 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {c for c in entries if cache.has(c)}
    assert 2 <= len(done) < len(entries)

    torch.manual_seed(0)
    proj = nn.Linear(5, 3)  # the script's weights
    computed = cache.build(proj, entries, lambda p: torch.from_numpy(np.load(p)), batch_size=3, progress=False)
    assert computed == sorted(set(entries) - done)
    assert not list(cache.dir.glob(".*.tmp"))
    with torch.no_grad():
        for cid, path in entries.items():
            want = proj(torch.from_numpy(np.load(path))).half().float()
            assert torch.allclose(cache.lookup(cid), want, rtol=2**-10, atol=1e-6)


@pytest.mark.gpu
def test_features_built_on_cuda_match_the_cpu_ones(entries, tmp_path):
    cfg = tiny_cfg()
    cpu = prepare_features(seeded_model(cfg), cfg, entries, tmp_path / "cpu", PREP_KEY, progress=False)
    gpu_model = seeded_model(cfg)
    gpu = prepare_features(gpu_model, cfg, entries, tmp_path / "gpu", PREP_KEY, device="cuda", progress=False)
    assert next(gpu_model.visual_encoder.parameters()).is_cuda
    assert cache_keys(gpu) == cache_keys(cpu)  # the weights hash reads them on the CPU either way
    for name in cpu:
        for cid in entries:
            # cuDNN convolutions (patch embedding, audio subsampling) may run in TF32 on the GPU.
            assert torch.allclose(gpu[name](cid), cpu[name](cid), rtol=1e-2, atol=1e-2), (name, cid)
