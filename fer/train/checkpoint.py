"""A unit's trained model as an MLflow artifact folder, and the model rebuilt from it.

Each finished unit logs its best-epoch model once, at the end, as the folder ``model/``:

    model/weights.safetensors   the saved tensors (safetensors only, never pickle)
    model/config.yaml           the resolved config (the same text as the run's config.yaml)
    model/labels.json           the label map: output index -> emotion name (fer.labels.emotions)
    model/manifest.json         format, seed, save mode, and how each fixed part is rebuilt

``train.save_weights`` chooses what is saved. ``trainable`` (default): every trainable parameter
and every buffer outside the frozen encoders (BatchNorm running statistics of the trained parts
change in training; a frozen encoder runs in eval mode, so its buffers never change). What is not
saved is fixed: it is rebuilt from its checkpoint (``model.<part>.pretrained``) or, for a randomly
initialised part, from the unit's seed (``fer.models.model.part_seed`` draws each part from a
stream of (seed, part name), so it comes back bit-identical), and its content hash is checked on
loading. ``all``: the whole state dict, nothing rebuilt from a checkpoint. ``none``: no folder.

    loaded = load_unit_model(run_id, "sqlite:///mlflow.db", cache_dir)
    logits = loaded.model(batch)  # (B, 8), columns in loaded.labels order
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from fer.labels import emotions

if TYPE_CHECKING:
    from fer.config import RunConfig

SaveWeights = Literal["trainable", "all", "none"]
MODEL_DIR = "model"  # the artifact folder of a unit's run
WEIGHTS_FILE, CONFIG_FILE, LABELS_FILE, MANIFEST_FILE = (
    "weights.safetensors", "config.yaml", "labels.json", "manifest.json")
FORMAT_VERSION = 1


class WeightsError(ValueError):
    """A model folder that cannot be loaded: missing file, tensors that do not fit, a fixed part
    whose rebuilt weights differ from the ones trained with (the message names the part)."""


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _part(key: str) -> str:
    return key.split(".", 1)[0]  # FERModel's submodule name (fer.models.model.PARTS)


def saved_keys(model: nn.Module, mode: SaveWeights) -> list[str]:
    """The state-dict keys ``mode`` saves (see the module docstring); sorted."""
    state = model.state_dict()
    if mode == "all":
        return sorted(state)
    frozen = {enc.part for enc in model.frozen_encoders()}
    keys = {n for n, p in model.named_parameters() if p.requires_grad}
    keys |= {n for n, _ in model.named_buffers() if _part(n) not in frozen}
    return sorted(keys & set(state))


def part_sources(cfg: RunConfig) -> dict[str, str]:
    """Where each part's initial weights come from: a checkpoint id, else ``"random"``."""
    from fer.models.model import PARTS

    m = cfg.model
    named = {"audio_encoder": m.audio.pretrained, "visual_encoder": m.visual.pretrained,
             "fusion": m.fusion.pretrained if m.fusion.init == "pretrained" else None}
    if m.random_weights:
        named = {}
    return {part: named.get(part) or "random" for part in PARTS}


def _fixed_by_part(state: dict[str, torch.Tensor], saved: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    fixed: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key not in saved:
            fixed.setdefault(_part(key), {})[key] = tensor
    return fixed


@dataclass
class UnitWeights:
    """A unit's model, serialised and ready to be written as the ``model/`` folder."""

    blob: bytes  # safetensors of the saved tensors
    manifest: dict
    config: RunConfig

    @property
    def mb(self) -> float:
        """Size of the saved tensors, MiB (the run's ``model_mb``)."""
        return len(self.blob) / 2**20

    def write(self, folder: Path) -> None:
        """Write the four files into ``folder`` (created; the caller logs it in one piece)."""
        from fer.config import dump_yaml

        folder.mkdir(parents=True)
        (folder / WEIGHTS_FILE).write_bytes(self.blob)
        (folder / CONFIG_FILE).write_text(dump_yaml(self.config))
        (folder / LABELS_FILE).write_text(json.dumps(list(emotions(self.config.data.dataset))))
        (folder / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=1))


def unit_weights(model: nn.Module, cfg: RunConfig, *, seed: int, mode: SaveWeights) -> UnitWeights | None:
    """Serialise ``model`` (holding its best-epoch weights) as ``mode`` asks; None for ``none``.

    Args:
        model: the trained ``FERModel``.
        cfg: the unit's resolved config with the config's own checkpoint ids (not local paths).
        seed: the unit's seed, which rebuilds its randomly initialised fixed parts.
        mode: ``train.save_weights``.
    """
    from safetensors.torch import save

    if mode == "none":
        return None
    state = model.state_dict()
    keys = saved_keys(model, mode)
    # clone: tied parameters share storage, which safetensors refuses to serialise twice.
    blob = save({k: state[k].detach().to("cpu", copy=True).contiguous() for k in keys})
    sources = part_sources(cfg)
    fixed = {part: {"source": sources[part], "sha256": tensors_hash(tensors), "tensors": len(tensors)}
             for part, tensors in sorted(_fixed_by_part(state, set(keys)).items())}
    manifest = {"format": FORMAT_VERSION, "save_weights": mode, "seed": seed, "saved_tensors": len(keys),
                "fixed_parts": fixed}
    return UnitWeights(blob=blob, manifest=manifest, config=cfg)


@dataclass
class LoadedModel:
    """A unit's model rebuilt for inference (eval mode, on CPU unless moved)."""

    model: nn.Module
    cfg: RunConfig
    labels: tuple[str, ...]  # output column -> emotion name
    seed: int
    source: str  # the run id or folder it was loaded from


def _read(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise WeightsError(f"{folder}: no {name} (not a unit's model folder, or written by another version)")
    return path.read_text()


def load_model_dir(folder: str | Path, cache_dir: str | Path, *, source: str | None = None) -> LoadedModel:
    """Rebuild a unit's model from its ``model/`` folder.

    The architecture comes from ``config.yaml``; pretrained parts are read from this machine
    (``fer.weights.with_local_weights``), every part initialised from the unit's seed as in
    training. The fixed parts' hashes are checked, then the saved tensors loaded: every saved
    tensor must fit a model tensor and every model tensor is either saved or fixed and checked.

    Raises:
        WeightsError: a missing file, a tensor that does not fit, or a fixed part whose hash
            differs from the one recorded at training time (naming the part and its source).
        fer.weights.MissingWeightsError: a pretrained checkpoint is not on this machine.
    """
    import yaml
    from safetensors.torch import load

    from fer.config import RunConfig
    from fer.models.model import build_model
    from fer.weights import with_local_weights

    folder = Path(folder)
    where = source or str(folder)
    manifest = json.loads(_read(folder, MANIFEST_FILE))
    if manifest.get("format") != FORMAT_VERSION:
        raise WeightsError(f"{where}: model format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}")
    cfg = RunConfig.model_validate(yaml.safe_load(_read(folder, CONFIG_FILE)))
    labels = tuple(json.loads(_read(folder, LABELS_FILE)))
    if labels != emotions(cfg.data.dataset):
        raise WeightsError(f"{where}: {LABELS_FILE} holds {list(labels)}, not the label set of its dataset "
                           f"{cfg.data.dataset} {list(emotions(cfg.data.dataset))}")
    if not (folder / WEIGHTS_FILE).is_file():
        raise WeightsError(f"{where}: no {WEIGHTS_FILE}")
    saved = load((folder / WEIGHTS_FILE).read_bytes())
    seed = int(manifest["seed"])
    local = with_local_weights(cfg, cache_dir)
    with torch.random.fork_rng(devices=[]):  # as run_unit: every part's stream derives from the seed
        torch.manual_seed(seed)
        model = build_model(local)
    state = model.state_dict()
    unexpected = sorted(set(saved) - set(state))
    if unexpected:
        raise WeightsError(f"{where}: saved tensors the model of config.yaml does not have: {unexpected[:5]}")
    recorded = manifest["fixed_parts"]
    for part, tensors in sorted(_fixed_by_part(state, set(saved)).items()):
        if part not in recorded:
            raise WeightsError(f"{where}: part {part} has tensors neither saved nor recorded as fixed: "
                               f"{sorted(tensors)[:5]}")
        want = recorded[part]
        if tensors_hash(tensors) != want["sha256"]:
            raise WeightsError(
                f"{where}: part {part} rebuilt from {want['source']} (seed {seed}) differs from the weights "
                f"the unit was trained with (sha256 {want['sha256'][:12]}...): a different checkpoint or code "
                f"version; refusing to load")
    missing = sorted(set(recorded) - set(_fixed_by_part(state, set(saved))))
    if missing:
        raise WeightsError(f"{where}: fixed parts {missing} are recorded but the model has no such tensors")
    try:
        model.load_state_dict(saved, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        raise WeightsError(f"{where}: saved tensors do not fit the model: {exc}") from None
    model.eval()
    return LoadedModel(model=model, cfg=cfg, labels=labels, seed=seed, source=where)


def load_unit_model(run_id: str, tracking_uri: str, cache_dir: str | Path) -> LoadedModel:
    """Download run ``run_id``'s ``model/`` artifact and rebuild its model (``load_model_dir``).

    Raises:
        WeightsError: no such run in the store; the run has no model folder
            (``train.save_weights=none``, or an older run).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise WeightsError(f"no run {run_id!r} in the tracking store {tracking_uri}: copy the id from the "
                           "MLflow UI (python runner.py ui) or a report's units.csv, and pass the store "
                           "it was logged to (--tracking-uri)") from None
    with tempfile.TemporaryDirectory(prefix="fer-model-") as tmp:
        try:
            local = download_artifacts(run_id=run_id, artifact_path=MODEL_DIR, dst_path=tmp,
                                       tracking_uri=tracking_uri)
        except (MlflowException, OSError) as exc:
            raise WeightsError(f"run {run_id}: no {MODEL_DIR}/ artifact ({exc}); was it trained with "
                               "train.save_weights=none, or before weights were kept?") from None
        return load_model_dir(local, cache_dir, source=f"run {run_id}")
