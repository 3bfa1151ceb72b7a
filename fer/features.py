"""Frozen-encoder feature cache: a frozen encoder's output for a clip is computed once and reused.

A frozen encoder whose input is not augmented maps a clip to the same tensor in every epoch,
cell, fold and study, and with SigLIP on 16 frames per clip that forward pass is nearly all of a
run's time. So it is computed once, stored in fp16, and the model is fed the stored features
instead (``FERModel.forward`` skips an encoder when the batch carries ``audio_feats`` /
``visual_feats``):

    <cache>/features/<key>/<clip_id>.npy    visual (T, N, Dv), audio (Ta, Da); float16

The key hashes everything the output depends on and nothing else: the encoder slot, its class and
the config fields that shape its output, the bytes of every weight and buffer, the input
normalisation, the prepared-clip settings key and the library versions. Every cell, fold and
study that uses the same encoder on the same prepared clips therefore shares one folder, and a
change of encoder, weights or preprocessing gets a new one.

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
from fer.data.dataset import FeatureHook, PreparedClipDataset

if TYPE_CHECKING:  # fer.config pulls in every model config (and transformers); loader workers need none
    from fer.config import RunConfig

# Bump when the stored layout or the way features are computed changes.
FORMAT_VERSION = 1
# Encoder slot -> the batch key of its features, the FERModel submodule, the input it replaces.
FEATURE_KEYS = {"audio": "audio_feats", "visual": "visual_feats"}
ENCODER_MODULES = {"audio": "audio_encoder", "visual": "visual_encoder"}
INPUT_KEYS = {"audio": "audio", "visual": "frames"}
# Libraries whose code computes the features; an upgrade may change the numbers.
_LIBRARIES = ("torch", "timm", "transformers")


class FeatureCacheError(ValueError):
    """A feature file is missing, unreadable or not fp16; the message names the file."""


def cacheable(cfg: RunConfig) -> set[str]:
    """The encoders of ``cfg`` whose outputs may be cached: a subset of ``{"audio", "visual"}``.

    An encoder qualifies when its modality is used, it is frozen, its input augmentation is off
    (an augmented input gives a new output every epoch) and ``train.feature_cache`` is on.
    """
    if not cfg.train.feature_cache:
        return set()
    m, aug = cfg.model, cfg.data.augment
    out = set()
    if m.uses_audio and m.audio.freeze and not aug.audio:
        out.add("audio")
    if m.uses_visual and m.visual.freeze and not aug.visual:
        out.add("visual")
    return out


def encoder_config(cfg: RunConfig, name: str) -> dict:
    """The config fields that shape encoder ``name``'s output, apart from its weights and the
    prepared clips (those have their own parts of the key).

    ``pretrained`` is left out: the weights hash already says which weights were loaded, and a
    checkpoint moved to another folder should not recompute anything. Pooling, ROI, temporal,
    fusion and head settings are left out because they act after the encoder.
    """
    if name == "audio":
        a = cfg.model.audio
        return {"encoder": a.encoder, "layers": a.layers, "sample_rate": cfg.data.sample_rate}
    if name == "visual":
        v, d = cfg.model.visual, cfg.data
        return {"backend": v.backend, "encoder": v.encoder, "size": d.size, "mean": list(d.mean),
                "std": list(d.std)}
    raise KeyError(f"unknown encoder {name!r}; known: {', '.join(FEATURE_KEYS)}")


def weights_hash(module: nn.Module) -> str:
    """sha256 of the names, dtypes, shapes and bytes of every parameter and buffer of ``module``."""
    h = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())  # non-persistent ones too (e.g. mel filters)
    for tname in sorted(tensors):
        t = tensors[tname].detach().cpu().contiguous()
        h.update(f"{tname}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for lib in _LIBRARIES:
        try:
            found[lib] = version(lib)
        except PackageNotFoundError:
            found[lib] = None
    return found


def encoder_key(name: str, module: nn.Module, cfg_part: dict, prepare_key: str) -> str:
    """The cache folder name of one encoder's features.

    Args:
        name: encoder slot, ``"audio"`` or ``"visual"``.
        module: the encoder itself; its class and weights are hashed.
        cfg_part: what :func:`encoder_config` returns for it.
        prepare_key: the prepared-clip settings key (``PrepareSettings.key()``).

    Returns:
        16 hex characters.
    """
    identity = {
        "format": FORMAT_VERSION,
        "name": name,
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "config": cfg_part,
        "weights": weights_hash(module),
        "prepare": prepare_key,
        "libraries": _library_versions(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class EntryInput:
    """Prepared entry -> one encoder's input, exactly as the evaluation dataset delivers it.

    A class rather than a closure so that loader workers can pickle it.

    Args:
        data_cfg: frames, size, audio length, normalisation.
        name: ``"visual"`` -> normalised frames (T, 3, H, W); ``"audio"`` -> waveform (L,).
    """

    def __init__(self, data_cfg: DataConfig, name: str):
        self.data_cfg, self.name = data_cfg, name

    def __call__(self, path: Path) -> torch.Tensor:
        ds = PreparedClipDataset([path], self.data_cfg, train=False, load_frames=self.name == "visual",
                                 load_audio=self.name == "audio")
        return ds[0][INPUT_KEYS[self.name]]


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


def prepare_features(model: nn.Module, cfg: RunConfig, entries: Mapping[str, Path], cache_dir: str | Path,
                     prepare_key: str, *, batch_size: int = 8, device: str | torch.device | None = None,
                     num_workers: int = 0, progress: bool = True) -> dict[str, FeatureHook]:
    """Build whatever features of ``entries`` are missing for each cacheable encoder of ``model``.

    Args:
        model: the ``FERModel`` of ``cfg`` (its frozen encoders compute the features).
        cfg: the resolved run config; :func:`cacheable` decides which encoders are cached.
        entries: clip id -> prepared entry, every clip the run will read (all splits).
        cache_dir: cache root; features go to ``<cache_dir>/features/<key>/``.
        prepare_key: the entries' prepared-settings key (:func:`prepare_key_of`).
        batch_size: clips per encoder call while building.
        device: where the encoders compute; they are moved there (None: where they are).
        num_workers: loader processes while building.
        progress: show a progress bar while building.

    Returns:
        The ``features`` argument of ``PreparedClipDataset``: ``{"visual_feats": fn, "audio_feats": fn}``
        for the cached encoders, ``fn(clip_id)`` -> float32 features. Empty when nothing is cacheable.

    Raises:
        ValueError: the config says an encoder is frozen but the model's has trainable parameters.
    """
    hooks: dict[str, FeatureHook] = {}
    for name in sorted(cacheable(cfg)):
        encoder = getattr(model, ENCODER_MODULES[name])
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(f"model.{name}.freeze is true but the model's {ENCODER_MODULES[name]} has trainable "
                             "parameters; its features cannot be cached")
        key = encoder_key(name, encoder, encoder_config(cfg, name), prepare_key)
        cache = FeatureCache(cache_dir, key)
        cache.build(encoder, entries, EntryInput(cfg.data, name), batch_size, device=device,
                    num_workers=num_workers, progress=progress)
        hooks[FEATURE_KEYS[name]] = cache.lookup
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

        self._kinds = ((AudioEncoder, "audio"),
                       (tuple(VISUAL_BACKENDS.get(n) for n in VISUAL_BACKENDS.names()), "visual"))
        self.counts = {"audio": 0, "visual": 0}
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
