"""Datasets over the prepared-clip cache: one cache entry -> the tensors the model eats.

An item is a dict: ``frames`` float (T, 3, H, W) normalised with ``DataConfig.mean/std``,
``keypoints`` float (T, 6, 2) (x, y) fractions of the face crop in [0, 1], ``audio`` float (L,),
``label`` long (emotion index), ``actor`` long, ``clip_id`` str. Training items are augmented
(``fer.data.augment``) with draws seeded from (seed, epoch, item index), so a batch depends only
on the seed and the epoch, never on the number of loader workers.

A modality that a model does not use can be left out (``load_frames`` / ``load_audio``), and an
encoder's input can be replaced by precomputed features: ``features={"visual_feats": fn}`` puts
``fn(clip_id)`` in the item instead of the frames (likewise ``"audio_feats"`` for the audio; the
names come from ``fer.slots``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fer.data.augment import build_audio_augment, build_visual_augment
from fer.data.cache import CacheError, PreparedClip, load_entry
from fer.data.config import AugmentConfig, DataConfig
from fer.labels import emotions
from fer.slots import AUDIO, FEATURE_SLOTS, VISUAL, FeatureSlot

FeatureHook = Callable[[str], torch.Tensor]
# The switches that augment each slot's input, for error messages.
_AUGMENT_SWITCHES = {VISUAL: "data.augment.crop/flip/color_jitter", AUDIO: "data.augment.audio_*"}
# DataConfig fields that do not change how one prepared entry becomes an encoder input: which
# clips there are, and training augmentation (refused for an input replaced by features).
_NOT_INPUT = {"protocol", "vocal_channel", "augment"}
_FRAME_NORMALISATION = {"mean", "std"}


def augments(aug: AugmentConfig, slot: FeatureSlot) -> bool:
    """Whether training augments ``slot``'s input under ``aug``."""
    return {VISUAL: aug.visual, AUDIO: aug.audio}[slot]


def input_settings(data_cfg: DataConfig, slot: FeatureSlot) -> dict:
    """The data settings that shape ``slot``'s input as an evaluation item delivers it.

    Every ``DataConfig`` field except those that only choose clips or augment training, and the
    frame normalisation except for the frames: a field added later counts until shown not to,
    so a cache keyed on these never misses one (``tests/train/test_feature_key.py`` checks each).

    Returns:
        JSON-able dict, part of the feature-cache key (``fer.train.features.encoder_key``).
    """
    skip = _NOT_INPUT if slot == VISUAL else _NOT_INPUT | _FRAME_NORMALISATION
    return data_cfg.model_dump(mode="json", exclude=skip)


def audio_length(data_cfg: DataConfig) -> int:
    """Samples in a prepared waveform."""
    return round(data_cfg.audio_seconds * data_cfg.sample_rate)


class PreparedClipDataset(Dataset):
    """Prepared clips as model inputs, augmented when training.

    Args:
        entries: cache entry files (``fer.data.cache.entry_path``), one per clip.
        data_cfg: frames, size, audio length, normalisation and augmentation switches.
        train: apply the augmentation ``data_cfg.augment`` switches on.
        seed: seeds the augmentation draws.
        load_frames: put ``frames`` in each item.
        load_audio: put ``audio`` in each item.
        features: precomputed encoder features by clip id, keyed ``"visual_feats"`` and/or
            ``"audio_feats"``; each replaces the frames or the audio in the item.

    Raises:
        ValueError: unknown feature key, or an augmentation switched on for an input that is
            replaced by precomputed features (they were computed from the unaugmented clip).
    """

    def __init__(self, entries: list[Path], data_cfg: DataConfig, *, train: bool, seed: int = 0,
                 load_frames: bool = True, load_audio: bool = True,
                 features: Mapping[str, FeatureHook] | None = None):
        self.features = dict(features or {})
        known = {slot.feature_key: slot for slot in FEATURE_SLOTS}
        unknown = sorted(set(self.features) - set(known))
        if unknown:
            raise ValueError(f"unknown feature keys {unknown}; known: {sorted(known)}")
        aug = data_cfg.augment
        replaced = {known[key] for key in self.features}
        for slot in FEATURE_SLOTS:  # features were computed from the unaugmented clip
            if train and slot in replaced and augments(aug, slot):
                raise ValueError(f"{slot.modality} augmentation is on but the {slot.input_key} input is replaced "
                                 f"by precomputed {slot.feature_key}; switch {_AUGMENT_SWITCHES[slot]} off")
        self.entries = [Path(p) for p in entries]
        self.frames, self.size, self.samples = data_cfg.frames, data_cfg.size, audio_length(data_cfg)
        self.sample_rate = data_cfg.sample_rate
        self.num_classes = len(emotions(data_cfg.dataset))
        self.mean = torch.tensor(data_cfg.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(data_cfg.std).view(1, 3, 1, 1)
        self.load_frames = load_frames and VISUAL not in replaced
        self.load_audio = load_audio and AUDIO not in replaced
        self.visual_aug = build_visual_augment(aug) if train else None
        self.audio_aug = build_audio_augment(aug) if train else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's augmentation. Loader workers are re-created every epoch
        (``make_loader`` keeps them non-persistent), so they see the new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def _check(self, path: Path, clip: PreparedClip) -> tuple[str, int, int]:
        """Validate an entry against the data config; return (clip_id, label, actor)."""
        want = (self.frames, self.size, self.size, 3)
        if clip.frames.shape != want:
            raise CacheError(f"{path}: frames {clip.frames.shape} do not match the data config "
                             f"(data.frames, data.size) -> {want}")
        if clip.audio.shape[0] != self.samples:
            raise CacheError(f"{path}: audio has {clip.audio.shape[0]} samples, the data config "
                             f"(data.audio_seconds * data.sample_rate) asks for {self.samples}")
        # Prepared entries keep the index's Clip fields under "clip" and their settings under
        # "settings" (fer.data.prepare).
        info, settings = clip.meta.get("clip", {}), clip.meta.get("settings", {})
        missing = [f"clip.{k}" for k in ("clip_id", "emotion", "actor") if k not in info]
        missing += [] if "sample_rate" in settings else ["settings.sample_rate"]
        if missing:
            raise CacheError(f"{path}: meta lacks {missing}")
        if settings["sample_rate"] != self.sample_rate:
            raise CacheError(f"{path}: audio prepared at {settings['sample_rate']} Hz, the data "
                             f"config (data.sample_rate) asks for {self.sample_rate} Hz")
        label = info["emotion"]
        if not (isinstance(label, int) and 0 <= label < self.num_classes):
            raise CacheError(f"{path}: meta clip.emotion {label!r} is not an index in "
                             f"0..{self.num_classes - 1} (the labels of data.dataset)")
        return str(info["clip_id"]), label, int(info["actor"])

    def __getitem__(self, index: int) -> dict:
        path = self.entries[index]
        clip = load_entry(path)
        clip_id, label, actor = self._check(path, clip)
        draw = dict(seed=self.seed, epoch=self.epoch, index=index)
        item = {"label": torch.tensor(label), "actor": torch.tensor(actor), "clip_id": clip_id}
        # Crop pixels -> fractions of the crop; (x, y) divide by (W, H).
        keypoints = torch.from_numpy(clip.keypoints) / self.size  # (T, 6, 2)
        if self.load_frames:
            frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
            if self.visual_aug is not None:
                frames, keypoints = self.visual_aug(frames, keypoints, **draw)
            item[VISUAL.input_key] = (frames - self.mean) / self.std
        # A keypoint the detector placed past the crop's edge, or one a random crop cut off, is
        # pinned to the edge: the batch contract is fractions in [0, 1].
        item["keypoints"] = keypoints.clamp(0.0, 1.0)
        if self.load_audio:
            audio = torch.from_numpy(clip.audio)  # (L,)
            item[AUDIO.input_key] = audio if self.audio_aug is None else self.audio_aug(audio, **draw)
        for key, hook in self.features.items():
            item[key] = hook(clip_id)
        return item


def collate(batch: list[dict]) -> dict:
    """Stack the tensors of a list of items along a new batch dimension; ``clip_id`` -> list.

    Args:
        batch: items of a :class:`PreparedClipDataset`.

    Returns:
        ``frames`` (B, T, 3, H, W), ``keypoints`` (B, T, 6, 2), ``audio`` (B, L), ``label`` (B,),
        ``actor`` (B,), features (B, ...), where present in the items; ``clip_id`` list[str].
    """
    out: dict = {"clip_id": [item["clip_id"] for item in batch]}
    for key in batch[0]:
        if key != "clip_id":
            out[key] = torch.stack([item[key] for item in batch])
    return out


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's global generators in a loader worker from its torch seed.

    The augmentation does not use them, but any library code that does then stays
    deterministic, and differs between workers instead of repeating the parent's state.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                num_workers: int = 0, pin_memory: bool = False,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` and how many epochs it has run.

    Args:
        dataset: usually a :class:`PreparedClipDataset`.
        batch_size: clips per batch.
        shuffle: reshuffle every epoch (from a generator seeded with ``seed``).
        seed: seeds the shuffling and the workers' base seeds.
        num_workers: loader processes; the batches are the same for any number.
        pin_memory: pin batches for faster host-to-GPU copies.
        drop_last: drop a last, smaller batch.

    Returns:
        The loader, batches collated by :func:`collate`.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
                      persistent_workers=False)
