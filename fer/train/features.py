"""Frozen-encoder feature cache: a frozen encoder's output for a clip is computed once and reused.

A frozen encoder whose input is not augmented maps a clip to the same tensor in every epoch,
cell, fold and study, and with SigLIP on 16 frames per clip that forward pass is nearly all of a
run's time. So it is computed once, stored in fp16, and the model is fed the stored features
instead (``FERModel.forward`` skips an encoder when the batch carries its slot's feature key,
``audio_feats`` / ``visual_feats``, see ``fer.slots``):

    <cache>/features/<key>/<clip_id>.npy    visual (T, N, Dv), audio (Ta, Da); float16

The key hashes everything the output depends on and nothing else. The model names its frozen
encoders (``FERModel.frozen_encoders``) and each states its own identity: its batch keys, class,
the settings it was built with and its weights. The dataset states how a prepared entry becomes
that encoder's input (``fer.data.dataset.input_settings``); the prepared-clip settings key and the
library versions complete it. Every cell, fold and study that uses the same encoder on the same
prepared clips therefore shares one folder, and a change of encoder, weights or preprocessing
gets a new one.

A file is written under a temporary name in the same folder and renamed over the final name, so
a reader never sees half a file; a killed build leaves at most temporary files, which the next
build removes before computing only the clips still missing.

    features = prepare_features(model, cfg, entries, cache_dir, prepare_key_of(entries))
    train_ds = PreparedClipDataset(paths, cfg.data, train=True, features=features)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fer.atomic import atomic_open, remove_stale_temps
from fer.data.config import DataConfig
from fer.data.dataset import FeatureHook, PreparedClipDataset, augments, input_settings
from fer.slots import AUDIO, VISUAL, FeatureSlot

if TYPE_CHECKING:  # fer.config pulls in every model config (and transformers); loader workers need none
    from fer.config import RunConfig
    from fer.models.model import FERModel, FrozenEncoder

# Bump when the stored layout or the way features are computed changes.
FORMAT_VERSION = 1
# Libraries whose code computes the features; an upgrade may change the numbers.
_LIBRARIES = ("torch", "timm", "transformers")


class FeatureCacheError(ValueError):
    """A feature file is missing, unreadable or not fp16; the message names the file."""


def cached_encoders(model: FERModel, cfg: RunConfig) -> list[FrozenEncoder]:
    """The encoders of ``model`` whose outputs are cached under ``cfg``, audio first.

    An encoder qualifies when the model built it frozen (``FERModel.frozen_encoders``), its input
    augmentation is off (an augmented input gives a new output every epoch) and
    ``train.feature_cache`` is on.
    """
    if not cfg.train.feature_cache:
        return []
    return [enc for enc in model.frozen_encoders() if not augments(cfg.data.augment, enc.slot)]


def _library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for lib in _LIBRARIES:
        try:
            found[lib] = version(lib)
        except PackageNotFoundError:
            found[lib] = None
    return found


def encoder_key(encoder: FrozenEncoder, data_cfg: DataConfig, prepare_key: str) -> str:
    """The cache folder name of one encoder's features.

    Args:
        encoder: a frozen encoder of the model; its ``identity()`` (batch keys, class, build
            settings, weights hash) is hashed.
        data_cfg: the data settings; those that shape the encoder's input are hashed
            (``fer.data.dataset.input_settings``).
        prepare_key: the prepared-clip settings key (``PrepareSettings.key()``).

    Returns:
        16 hex characters.
    """
    identity = {
        "format": FORMAT_VERSION,
        "encoder": encoder.identity(),
        "input": input_settings(data_cfg, encoder.slot),
        "prepare": prepare_key,
        "libraries": _library_versions(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class EntryInput:
    """Prepared entry -> one encoder's input, exactly as the evaluation dataset delivers it.

    A class rather than a closure so that loader workers can pickle it (and so slots are
    compared by value: a worker holds a copy).

    Args:
        data_cfg: frames, size, audio length, normalisation.
        slot: ``VISUAL`` -> normalised frames (T, 3, H, W); ``AUDIO`` -> waveform (L,).
    """

    def __init__(self, data_cfg: DataConfig, slot: FeatureSlot):
        self.data_cfg, self.slot = data_cfg, slot

    def __call__(self, path: Path) -> torch.Tensor:
        ds = PreparedClipDataset([path], self.data_cfg, train=False, load_frames=self.slot == VISUAL,
                                 load_audio=self.slot == AUDIO)
        return ds[0][self.slot.input_key]


class _Inputs(Dataset):
    def __init__(self, items: list[tuple[str, Path]], load_input: Callable[[Path], torch.Tensor]):
        self.items, self.load_input = items, load_input

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        clip_id, path = self.items[index]
        return clip_id, self.load_input(path)


def _stack(batch: list[tuple[str, torch.Tensor]]) -> tuple[list[str], torch.Tensor]:
    return [cid for cid, _ in batch], torch.stack([x for _, x in batch])


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)


class FeatureCache:
    """The stored features of one encoder key: ``<root>/features/<key>/<clip_id>.npy``, fp16.

    Args:
        root: cache root (the same as the prepared clips').
        key: :func:`encoder_key`.
    """

    def __init__(self, root: str | Path, key: str):
        self.key = key
        self.dir = Path(root) / "features" / key

    def path(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.npy"

    def has(self, clip_id: str) -> bool:
        """True when the clip's features are stored (a final name always holds a whole file)."""
        return self.path(clip_id).is_file()

    def write(self, clip_id: str, feats: np.ndarray) -> None:
        """Store one clip's features as fp16, atomically.

        Raises:
            FeatureCacheError: a value is not finite in fp16 (NaN, or beyond +-65504); nothing is written.
        """
        path = self.path(clip_id)
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            half = np.asarray(feats).astype(np.float16)
        if not np.isfinite(half).all():
            raise FeatureCacheError(f"{path}: encoder output is not finite in float16 (max |x| of the "
                                    f"float32 output = {np.nanmax(np.abs(feats)):.4g}); not cached")
        with atomic_open(path, "wb") as fh:
            np.save(fh, half, allow_pickle=False)

    def lookup(self, clip_id: str) -> torch.Tensor:
        """One clip's features as float32, read from the fp16 file through a memory map.

        Raises:
            FeatureCacheError: naming the file, when it is missing, unreadable or not fp16.
        """
        path = self.path(clip_id)
        try:
            stored = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise FeatureCacheError(f"{path}: no cached features for clip {clip_id}; build the cache "
                                    "first (prepare_features)") from None
        except (OSError, ValueError) as exc:
            raise FeatureCacheError(f"{path}: unreadable feature file ({type(exc).__name__}: {exc})") from exc
        if stored.dtype != np.float16:
            raise FeatureCacheError(f"{path}: features are {stored.dtype}, expected float16")
        return torch.from_numpy(np.array(stored, dtype=np.float32))

    def build(self, encoder: nn.Module, entries: Mapping[str, Path], load_input: Callable[[Path], torch.Tensor],
              batch_size: int, *, device: str | torch.device | None = None, num_workers: int = 0,
              progress: bool = True) -> list[str]:
        """Compute and store the features of every clip in ``entries`` not stored yet.

        The encoder runs in eval mode under ``torch.inference_mode`` in float32 (whatever precision
        a run trains in: the files are shared by runs of every precision). Inputs are loaded by
        ``num_workers`` loader processes while the encoder computes.

        Args:
            encoder: (B, ...) input -> (B, ...) features.
            entries: clip id -> prepared entry path.
            load_input: entry path -> one clip's encoder input, e.g. :class:`EntryInput`.
            batch_size: clips per encoder call.
            device: where to compute; the encoder is moved there and stays (None: where it is).
            num_workers: loader processes for the inputs.
            progress: show a progress bar.

        Returns:
            The clip ids computed now, sorted.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.dir)  # leftovers of a killed build
        todo = sorted(cid for cid in entries if not self.has(cid))
        if not todo:
            return []
        if device is not None:
            encoder.to(device)
        device = next(encoder.parameters()).device
        loader = DataLoader(_Inputs([(cid, Path(entries[cid])) for cid in todo], load_input),
                            batch_size=batch_size, num_workers=num_workers, collate_fn=_stack)
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.inference_mode(), _progress(progress) as bar:
                task = bar.add_task(f"features {self.key}", total=len(todo))
                for clip_ids, inputs in loader:
                    feats = encoder(inputs.to(device)).float().cpu().numpy()  # (B, ...)
                    for clip_id, one in zip(clip_ids, feats):
                        self.write(clip_id, one)
                    bar.advance(task, len(clip_ids))
        finally:
            encoder.train(was_training)
        return todo


def prepare_key_of(entries: Mapping[str, Path]) -> str:
    """The prepared-clip settings key of ``entries``: the name of the folder holding them
    (``<cache>/prepared/<settings_key>/<clip_id>.npz``, see ``fer.data.cache.entry_path``).

    Raises:
        ValueError: no entries, or entries from several settings folders.
    """
    keys = {Path(p).parent.name for p in entries.values()}
    if len(keys) != 1:
        raise ValueError(f"entries must come from one prepared-settings folder; found {sorted(keys) or 'none'}")
    return keys.pop()


def prepare_features(model: FERModel, cfg: RunConfig, entries: Mapping[str, Path], cache_dir: str | Path,
                     prepare_key: str, *, batch_size: int = 8, device: str | torch.device | None = None,
                     num_workers: int = 0, progress: bool = True) -> dict[str, FeatureHook]:
    """Build whatever features of ``entries`` are missing for each cached encoder of ``model``.

    Args:
        model: the ``FERModel`` of ``cfg`` (its frozen encoders compute the features).
        cfg: the resolved run config; :func:`cached_encoders` decides which encoders are cached.
        entries: clip id -> prepared entry, every clip the run will read (all splits).
        cache_dir: cache root; features go to ``<cache_dir>/features/<key>/``.
        prepare_key: the entries' prepared-settings key (:func:`prepare_key_of`).
        batch_size: clips per encoder call while building.
        device: where the encoders compute; they are moved there (None: where they are).
        num_workers: loader processes while building.
        progress: show a progress bar while building.

    Returns:
        The ``features`` argument of ``PreparedClipDataset``: ``{"audio_feats": fn, "visual_feats": fn}``
        (each cached encoder's ``slot.feature_key``), ``fn(clip_id)`` -> float32 features. Empty
        when nothing is cached.

    Raises:
        ValueError: an encoder the model built frozen has trainable parameters.
    """
    hooks: dict[str, FeatureHook] = {}
    for encoder in cached_encoders(model, cfg):
        if any(p.requires_grad for p in encoder.module.parameters()):
            raise ValueError(f"the model's {encoder.part} was built frozen but has trainable parameters; "
                             "its features cannot be cached")
        cache = FeatureCache(cache_dir, encoder_key(encoder, cfg.data, prepare_key))
        cache.build(encoder.module, entries, EntryInput(cfg.data, encoder.slot), batch_size, device=device,
                    num_workers=num_workers, progress=progress)
        hooks[encoder.slot.feature_key] = cache.lookup
    return hooks


class EncoderForwardCounter:
    """Counts forward calls of every audio and visual encoder in the process while active.

    A global module forward hook, so it also sees models built inside other code (``run_unit``).
    Passes on the meta device (profiling: shapes only, nothing computed) are not counted.

        with EncoderForwardCounter() as calls:
            run_unit(cfg, ...)
        assert calls.counts == {"audio": 0, "visual": 0}
    """

    def __enter__(self) -> EncoderForwardCounter:
        from fer.models.audio import AudioEncoder
        from fer.models.visual import VISUAL_BACKENDS

        self._kinds = ((AudioEncoder, AUDIO.modality),
                       (tuple(VISUAL_BACKENDS.get(n) for n in VISUAL_BACKENDS.names()), VISUAL.modality))
        self.counts = {AUDIO.modality: 0, VISUAL.modality: 0}
        self._handle = nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def _hook(self, module: nn.Module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.is_meta:
            return
        for classes, kind in self._kinds:
            if isinstance(module, classes):
                self.counts[kind] += 1

    def __exit__(self, *exc) -> None:
        self._handle.remove()
