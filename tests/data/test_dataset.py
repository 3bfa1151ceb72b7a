"""PreparedClipDataset over fake cache entries: values, ranges, determinism, flips and crops."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fer.data.cache import CacheError, entry_path, save_entry
from fer.data.config import AugmentConfig, DataConfig
from fer.data.dataset import PreparedClipDataset, collate, make_loader

T, SIZE, SECONDS, RATE = 4, 32, 0.125, 16000
L = round(SECONDS * RATE)
RIGHT_EYE = np.array([10.0, 12.0])  # crop pixels; the blob sits here
LEFT_EYE = np.array([22.0, 12.0])
ALL_AUG = AugmentConfig(crop=True, flip=True, color_jitter=True, audio_gain=True,
                        audio_noise=True, audio_shift=True)


def data_cfg(**kw) -> DataConfig:
    return DataConfig(frames=T, size=SIZE, audio_seconds=SECONDS, sample_rate=RATE, **kw)


def blob_entry(rng: np.random.Generator):
    """Dim noisy frames with one bright blob at the right eye; keypoints near their places."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    blob = np.exp(-((xs - RIGHT_EYE[0]) ** 2 + (ys - RIGHT_EYE[1]) ** 2) / (2 * 1.5 ** 2))
    frames = (20 * rng.random((T, SIZE, SIZE, 3)) + 220 * blob[None, :, :, None]).astype(np.uint8)
    base = np.stack([RIGHT_EYE, LEFT_EYE, [16, 17], [16, 24], [4, 15], [28, 15]])
    keypoints = np.repeat(base[None], T, 0).astype(np.float32)
    return frames, keypoints


def meta(cid: str, emotion: int, actor: int, rate: int = RATE) -> dict:
    """What fer.data.prepare stores: the Clip fields and the preprocessing settings."""
    return {"clip": {"clip_id": cid, "emotion": emotion, "actor": actor, "vocal_channel": "speech"},
            "settings": {"frames": T, "size": SIZE, "audio_seconds": SECONDS, "sample_rate": rate}}


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[Path]:
    """Six entries with known emotion, actor, frames, keypoints and audio."""
    root = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        frames, keypoints = blob_entry(rng)
        if i == 5:
            keypoints[0, 4] = (-3.0, 40.0)  # an ear the detector put past the crop's edge
        audio = (0.3 * np.sin(np.arange(L) * 0.05 * (i + 1)) + 0.05).astype(np.float32)
        cid = f"01-{i + 1:02d}-01-01-01-{i + 10:02d}"
        path = entry_path(root, "k", cid)
        save_entry(path, frames=frames, keypoints=keypoints, audio=audio,
                   meta=meta(cid, i, i + 10))
        paths.append(path)
    return paths


def stored(path: Path):
    with np.load(path) as npz:
        return npz["frames"], npz["keypoints"], npz["audio"]


def test_item_values_match_the_entry(entries):
    cfg = data_cfg(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ds = PreparedClipDataset(entries, cfg, train=False)
    assert len(ds) == 6
    for i in (0, 5):
        item = ds[i]
        frames, keypoints, audio = stored(entries[i])
        assert item["frames"].shape == (T, 3, SIZE, SIZE) and item["frames"].dtype == torch.float32
        mean, std = torch.tensor(cfg.mean), torch.tensor(cfg.std)
        expected = (torch.from_numpy(frames).float() / 255 - mean) / std  # (T, H, W, 3)
        assert torch.allclose(item["frames"], expected.permute(0, 3, 1, 2), atol=1e-6)
        assert item["keypoints"].shape == (T, 6, 2) and item["keypoints"].dtype == torch.float32
        assert torch.allclose(item["keypoints"], (torch.from_numpy(keypoints) / SIZE).clamp(0, 1))
        assert torch.equal(item["audio"], torch.from_numpy(audio))
        assert item["label"].dtype == torch.long and item["label"].item() == i
        assert item["actor"].dtype == torch.long and item["actor"].item() == i + 10
        assert item["clip_id"] == entries[i].stem
    # The off-crop ear is pinned to the edge, the rest untouched.
    assert ds[5]["keypoints"][0, 4].tolist() == [0.0, 1.0]


def test_batch_shapes_and_ranges(entries):
    ds = PreparedClipDataset(entries, data_cfg(augment=ALL_AUG), train=True, seed=0)
    batch = next(iter(make_loader(ds, 4, shuffle=True, seed=0)))
    assert batch["frames"].shape == (4, T, 3, SIZE, SIZE)
    assert batch["keypoints"].shape == (4, T, 6, 2)
    assert batch["audio"].shape == (4, L)
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.long
    assert batch["actor"].shape == (4,) and batch["actor"].dtype == torch.long
    assert len(batch["clip_id"]) == 4 and all(isinstance(c, str) for c in batch["clip_id"])
    # mean = std = 0.5 maps [0, 1] onto [-1, 1].
    assert batch["frames"].min() >= -1.0 and batch["frames"].max() <= 1.0
    assert batch["frames"].max() > 0.5  # the blob survives normalisation
    assert batch["keypoints"].min() >= 0.0 and batch["keypoints"].max() <= 1.0
    assert [int(c.split("-")[1]) - 1 for c in batch["clip_id"]] == batch["label"].tolist()


def batches(entries, cfg, *, seed, workers=0, epoch=0, train=True):
    ds = PreparedClipDataset(entries, cfg, train=train, seed=seed)
    ds.set_epoch(epoch)
    return list(make_loader(ds, 4, shuffle=True, seed=seed, num_workers=workers))


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["clip_id"] == y["clip_id"]
        for key in ("frames", "keypoints", "audio", "label", "actor"):
            assert torch.equal(x[key], y[key]), key


def differs(a, b, key):
    return any(not torch.equal(x[key], y[key]) for x, y in zip(a, b))


def test_augmentation_off_is_identical_across_loaders_and_workers(entries):
    cfg = data_cfg()
    first = batches(entries, cfg, seed=7)
    assert_same(first, batches(entries, cfg, seed=7))
    assert_same(first, batches(entries, cfg, seed=7, workers=2))
    # Training without augmentation switches gives exactly the evaluation inputs.
    assert_same(first, batches(entries, cfg, seed=7, train=False))


def in_order(entries, cfg, *, seed, epoch):
    """Every item, in entry order, collated into one batch."""
    ds = PreparedClipDataset(entries, cfg, train=True, seed=seed)
    ds.set_epoch(epoch)
    return collate([ds[i] for i in range(len(ds))])


def test_augmentation_is_deterministic_and_varies_with_seed_and_epoch(entries):
    cfg = data_cfg(augment=ALL_AUG)
    first = batches(entries, cfg, seed=3)
    assert_same(first, batches(entries, cfg, seed=3))
    assert_same(first, batches(entries, cfg, seed=3, workers=2))
    assert_same(batches(entries, cfg, seed=3, epoch=1), batches(entries, cfg, seed=3, epoch=1, workers=2))
    # Same clips in the same order, without augmentation: frames and audio differ.
    plain = batches(entries, data_cfg(), seed=3)
    assert [b["clip_id"] for b in plain] == [b["clip_id"] for b in first]
    assert differs(first, plain, "frames") and differs(first, plain, "audio")
    # Another seed or epoch draws other augmentations for every clip.
    base = in_order(entries, cfg, seed=3, epoch=0)
    assert_same([base], [in_order(entries, cfg, seed=3, epoch=0)])
    for other in (in_order(entries, cfg, seed=4, epoch=0), in_order(entries, cfg, seed=3, epoch=1)):
        for key in ("frames", "audio"):
            assert all(not torch.equal(x, y) for x, y in zip(base[key], other[key])), key
        assert not torch.equal(base["keypoints"], other["keypoints"])


def blob_centre(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) normalised frames -> (T, 2) centre of the bright blob, fractions."""
    w = frames.mean(1)  # (T, H, W)
    w = torch.where(w > 0.3, w - 0.3, torch.zeros_like(w))
    h, wd = w.shape[-2:]
    xs, ys = (torch.arange(wd) + 0.5) / wd, (torch.arange(h) + 0.5) / h
    total = w.sum((1, 2))
    return torch.stack([(w.sum(1) * xs).sum(1) / total, (w.sum(2) * ys).sum(1) / total], -1)


@pytest.mark.parametrize("aug", [AugmentConfig(flip=True), AugmentConfig(flip=True, crop=True)])
def test_flip_and_crop_move_keypoints_with_the_face(entries, aug):
    ds = PreparedClipDataset(entries, data_cfg(augment=aug), train=True, seed=0)
    flips = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            centre = blob_centre(item["frames"])
            right, left = item["keypoints"][:, 0], item["keypoints"][:, 1]
            on_right = torch.allclose(centre, right, atol=0.3 / SIZE)
            on_left = torch.allclose(centre, left, atol=0.3 / SIZE)
            # The blob drawn at the right eye stays under a keypoint; after a flip it is the
            # left eye's (a mirrored face's right eye is on the other side).
            assert on_right != on_left
            flips += on_left
            if on_left and not aug.crop:
                assert torch.allclose(left, torch.tensor([1 - RIGHT_EYE[0] / SIZE, RIGHT_EYE[1] / SIZE]).float())
    assert 0 < flips < 18


def test_colour_jitter_leaves_keypoints_unchanged(entries):
    jit = PreparedClipDataset(entries, data_cfg(augment=AugmentConfig(color_jitter=True)), train=True)
    plain = PreparedClipDataset(entries, data_cfg(), train=False)
    for i in range(3):
        a, b = jit[i], plain[i]
        assert torch.equal(a["keypoints"], b["keypoints"])
        assert not torch.allclose(a["frames"], b["frames"])


def test_modalities_and_feature_hooks(entries):
    cfg = data_cfg()
    no_frames = PreparedClipDataset(entries, cfg, train=False, load_frames=False)
    item = no_frames[0]
    assert "frames" not in item and item["audio"].shape == (L,) and item["keypoints"].shape == (T, 6, 2)
    no_audio = PreparedClipDataset(entries, cfg, train=False, load_audio=False)
    assert "audio" not in no_audio[0] and no_audio[0]["frames"].shape == (T, 3, SIZE, SIZE)

    def visual_feats(cid: str) -> torch.Tensor:
        return torch.full((T, 5, 7), float(cid.split("-")[-1]))

    feats = PreparedClipDataset(entries, cfg, train=False, features={"visual_feats": visual_feats})
    batch = collate([feats[i] for i in range(3)])
    assert "frames" not in batch and batch["visual_feats"].shape == (3, T, 5, 7)
    assert batch["visual_feats"][:, 0, 0, 0].tolist() == [10.0, 11.0, 12.0]
    assert batch["audio"].shape == (3, L) and batch["clip_id"] == [p.stem for p in entries[:3]]

    with pytest.raises(ValueError, match="unknown feature keys.*text_feats"):
        PreparedClipDataset(entries, cfg, train=False, features={"text_feats": visual_feats})
    with pytest.raises(ValueError, match="visual augmentation"):
        PreparedClipDataset(entries, data_cfg(augment=AugmentConfig(flip=True)), train=True,
                            features={"visual_feats": visual_feats})
    with pytest.raises(ValueError, match="audio augmentation"):
        PreparedClipDataset(entries, data_cfg(augment=AugmentConfig(audio_gain=True)), train=True,
                            features={"audio_feats": visual_feats})


def test_entry_that_does_not_match_the_config_names_the_file(entries, tmp_path):
    with pytest.raises(CacheError, match=f"{entries[0].name}.*data.frames, data.size"):
        PreparedClipDataset(entries, DataConfig(frames=T, size=64, audio_seconds=SECONDS), train=False)[0]
    with pytest.raises(CacheError, match=f"{entries[0].name}.*audio has {L} samples"):
        PreparedClipDataset(entries, data_cfg().model_copy(update={"audio_seconds": 1.0}), train=False)[0]
    frames, keypoints, audio = stored(entries[0])
    bad = tmp_path / "bad.npz"
    for wrong, message in [({"clip": {"clip_id": "x", "actor": 1}, "settings": {"sample_rate": RATE}},
                            r"bad.npz: meta lacks \['clip.emotion'\]"),
                           ({"clip": {"clip_id": "x", "actor": 1, "emotion": 0}},
                            r"bad.npz: meta lacks \['settings.sample_rate'\]"),
                           (meta("x", 8, 1), "bad.npz: meta clip.emotion 8 is not an index"),
                           (meta("x", 0, 1, rate=8000), "bad.npz: audio prepared at 8000 Hz")]:
        save_entry(bad, frames=frames, keypoints=keypoints, audio=audio, meta=wrong)
        with pytest.raises(CacheError, match=message):
            PreparedClipDataset([bad], data_cfg(), train=False)[0]
