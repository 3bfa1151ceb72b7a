"""Which pretrained checkpoints a run configuration needs, and what each one is.

The config names a checkpoint in ``model.audio.pretrained``, ``model.visual.pretrained`` or
``model.fusion.pretrained``: a Hugging Face hub id (``LiquidAI/LFM2-700M``) or a local path.
``KNOWN`` describes the hub checkpoints the presets and studies use: which files of the repository
the loaders read, whether it is a NeMo ``.nemo`` file to convert after download, and its size. Any
other hub id is taken for a transformers or timm checkpoint (``config.json`` + ``model.safetensors``).

    [c.id for c in checkpoints_for(resolve_config("rtx3050"))]
    # ['nvidia/stt_en_fastconformer_ctc_large', 'timm/vit_base_patch16_siglip_224.v2_webli', 'LiquidAI/LFM2-700M']

Plain data: no torch, no hub client, so a study's preflight reads it in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fer.config import RunConfig

# What transformers' from_pretrained and the timm loader of fer.models.visual read from a folder.
WEIGHT_FILES = ("config.json", "model.safetensors")

# The LFM2 architectures fer.models.fusion.PUBLISHED_LFM2 writes out (tests check they agree):
# a random-init fusion of one of these reads nothing from the hub.
PUBLISHED_LFM2_IDS = ("LiquidAI/LFM2-350M", "LiquidAI/LFM2-700M")

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class Checkpoint:
    """One pretrained checkpoint as the config names it.

    Attributes:
        id: hub id ``org/name`` or a local path.
        kind: ``hf`` (the files load as they are) or ``nemo`` (one ``.nemo`` file that
            ``fer.weights.nemo.convert_nemo`` turns into ``config.json`` + ``model.safetensors``).
        files: the repository files the loaders read (not every file of the repository).
        size: bytes to download, when known (see ``KNOWN``).
        used_by: the config keys that name it, for messages.
        revision: branch, tag or commit on the hub.
    """

    id: str
    kind: Literal["hf", "nemo"] = "hf"
    files: tuple[str, ...] = WEIGHT_FILES
    size: int | None = None
    used_by: tuple[str, ...] = ()
    revision: str = "main"

    @property
    def folder_name(self) -> str:
        """``org--name``: the folder of its converted copy under ``<cache>/weights/``."""
        return self.id.replace("/", "--")


# Sizes: the hub's "Files and versions" listing (which rounds to three digits), summed over
# ``files``, looked up when this table was written; None when not looked up.
KNOWN: dict[str, Checkpoint] = {c.id: c for c in (
    # FastConformer-L CTC (fer.models.audio "fastconformer-large"); the repo holds only the .nemo: 463 MB.
    Checkpoint("nvidia/stt_en_fastconformer_ctc_large", kind="nemo",
               files=("stt_en_fastconformer_ctc_large.nemo",), size=463_000_000),
    # SigLIP2 B/16 image tower for timm: 92,884,224 float32 parameters (fer.models.visual) = 372 MB,
    # what the hub lists for its 256 px sibling vit_base_patch16_siglip_256.webli.
    Checkpoint("timm/vit_base_patch16_siglip_224.v2_webli", size=372_000_000),
    # The same tower for transformers' backend, inside the full SigLIP2 (text tower too): not looked up.
    Checkpoint("google/siglip2-base-patch16-224"),
    Checkpoint("LiquidAI/LFM2-700M", size=1_480_000_000),  # model.safetensors 1.48 GB, config.json 1 kB
    Checkpoint("LiquidAI/LFM2-350M", size=709_000_000),  # model.safetensors 709 MB, config.json 999 B
)}  # fmt: skip


def is_hub_id(name: str) -> bool:
    """``org/name`` as the hub spells repository ids (no path of its own: check the disk first)."""
    return bool(_HUB_ID.fullmatch(name)) and "--" not in name and ".." not in name and len(name) <= 96


def checkpoint(name: str, *, used_by: Iterable[str] = (), files: tuple[str, ...] | None = None) -> Checkpoint:
    """The checkpoint a config value names: the ``KNOWN`` entry, or a transformers/timm default.

    Args:
        name: hub id (timm's ``hf-hub:`` prefix allowed) or local path.
        used_by: config keys naming it.
        files: the files needed, when a part reads less than the weights (a config alone).
    """
    name = name.removeprefix("hf-hub:")
    known = KNOWN.get(name, Checkpoint(name))
    if files is not None and known.kind == "hf" and files != known.files:
        known = replace(known, files=files, size=None)  # the table's size is that of all its files
    return replace(known, used_by=tuple(used_by))


def checkpoints_for(cfg: RunConfig) -> list[Checkpoint]:
    """The checkpoints building ``cfg``'s model reads, as ``fer.models.model`` builds it.

    An encoder counts only when its modality is on. The fusion reads its checkpoint's weights
    when ``init`` is ``pretrained`` and it keeps at least one layer; otherwise only the
    architecture (``config.json``), and nothing for the published LFM2 sizes, written in the code.
    With ``model.random_weights`` no weights are read at all: what is left is the architecture of
    a fusion checkpoint outside the published sizes (its ``config.json``).
    """
    m = cfg.model
    load = not m.random_weights
    named: list[Checkpoint] = []
    if load and m.uses_audio and m.audio.pretrained is not None:
        named.append(checkpoint(m.audio.pretrained, used_by=["model.audio.pretrained"]))
    if load and m.uses_visual and m.visual.pretrained is not None:
        named.append(checkpoint(m.visual.pretrained, used_by=["model.visual.pretrained"]))
    fusion = m.fusion
    if fusion.pretrained is not None:
        if load and fusion.init == "pretrained" and fusion.layers > 0:
            named.append(checkpoint(fusion.pretrained, used_by=["model.fusion.pretrained"]))
        elif fusion.pretrained not in PUBLISHED_LFM2_IDS:
            named.append(checkpoint(fusion.pretrained, used_by=["model.fusion.pretrained"], files=("config.json",)))
    return merge(named)


def checkpoints_needed(configs: Iterable[RunConfig]) -> list[Checkpoint]:
    """Every checkpoint any of ``configs`` reads, once each (files and config keys merged)."""
    return merge(c for cfg in configs for c in checkpoints_for(cfg))


def merge(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """One entry per id, in first-seen order; files and ``used_by`` are the union."""
    out: dict[str, Checkpoint] = {}
    for c in checkpoints:
        seen = out.get(c.id)
        if seen is None:
            out[c.id] = c
        else:
            files = _union(seen.files, c.files)
            size = next((x.size for x in (seen, c) if x.files == files), None)
            out[c.id] = replace(seen, files=files, size=size, used_by=_union(seen.used_by, c.used_by))
    return list(out.values())


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return a + tuple(x for x in b if x not in a)


def local_path(name: str) -> Path | None:
    """The file or folder ``name`` is, when it exists on this machine (relative to the working directory)."""
    path = Path(name).expanduser()
    return path if path.exists() else None


def format_size(size: int | None) -> str:
    """``1480000000`` -> ``"1.48 GB"`` (decimal units, as the hub lists files); None -> ``"size unknown"``."""
    if size is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"
