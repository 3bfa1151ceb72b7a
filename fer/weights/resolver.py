"""Where a checkpoint is on this machine, without a network call, and the preflight built on it.

A checkpoint resolves, in this order, to
1. ``local``: its name is an existing file or folder;
2. ``converted``: ``<cache>/weights/<org>--<name>/`` holds ``config.json`` and safetensors (what
   ``weights fetch`` writes for a NeMo checkpoint, or ``weights convert-nemo --out``);
3. ``hf-cache``: every file it needs is in the Hugging Face cache (``HF_HUB_CACHE``, by default
   ``$HF_HOME/hub``) at the revision it names; it resolves to that snapshot's folder;
4. ``missing``, with the reason.

``<cache>`` is the project's cache (``--cache``, ``$FER_CACHE_DIR`` or ``~/.cache/fer``), given by the caller.

    resolve_pretrained("LiquidAI/LFM2-700M", cache_dir)  # ".../models--LiquidAI--LFM2-700M/snapshots/<commit>"
    missing = missing_checkpoints(cells, cache_dir)        # the preflight: [] or what to fetch
    if missing: raise MissingWeightsError(missing, preset="rtx3050", study="fusion-depth")
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from fer.weights.checkpoints import (Checkpoint, checkpoint, checkpoints_for, checkpoints_needed, format_size,
                                    is_hub_id, local_path)

if TYPE_CHECKING:
    from fer.config import RunConfig

Where = Literal["local", "converted", "hf-cache", "missing"]


@dataclass(frozen=True)
class Resolution:
    """Where one checkpoint resolves.

    Attributes:
        checkpoint: what was looked for.
        where: ``local``, ``converted``, ``hf-cache`` or ``missing``.
        path: what a loader reads (a folder, or a weights file given as a local path); None when missing.
        size: bytes on disk of what was found (the needed files only, for the Hugging Face cache).
        note: why it is missing.
    """

    checkpoint: Checkpoint
    where: Where
    path: Path | None = None
    size: int = 0
    note: str = ""

    @property
    def present(self) -> bool:
        return self.where != "missing"


def hub_cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub and transformers read (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants  # light: the constants alone

    return Path(constants.HF_HUB_CACHE)


def converted_dir(cache_dir: str | Path, ckpt: Checkpoint) -> Path:
    """``<cache>/weights/<org>--<name>``: where a converted copy of ``ckpt`` lives."""
    return Path(cache_dir) / "weights" / ckpt.folder_name


def cached_files(ckpt: Checkpoint, hub_cache: str | Path | None = None) -> dict[str, Path]:
    """The files of ``ckpt`` present in the Hugging Face cache at its revision (a subset of ``files``)."""
    from huggingface_hub import try_to_load_from_cache

    found = {}
    for name in ckpt.files:
        path = try_to_load_from_cache(ckpt.id, name, cache_dir=hub_cache, revision=ckpt.revision)
        if isinstance(path, str):  # not None (never downloaded) nor _CACHED_NO_EXIST (absent upstream)
            found[name] = Path(path)
    return found


def resolve(ckpt: Checkpoint, cache_dir: str | Path, *, hub_cache: str | Path | None = None) -> Resolution:
    """Where ``ckpt`` is on this machine; reads the disk only.

    Args:
        ckpt: the checkpoint.
        cache_dir: the project's cache root (converted copies under ``weights/``).
        hub_cache: the Hugging Face cache; None = huggingface_hub's (``HF_HUB_CACHE``).
    """
    path = local_path(ckpt.id)
    if path is not None:
        return Resolution(ckpt, "local", path, _disk_size(path))
    if not is_hub_id(ckpt.id):
        return Resolution(ckpt, "missing", note="no such file or directory (and not a hub id org/name)")
    converted = converted_dir(cache_dir, ckpt)
    if (converted / "config.json").is_file() and any(converted.glob("*.safetensors")):
        return Resolution(ckpt, "converted", converted, _disk_size(converted))
    found = cached_files(ckpt, hub_cache)
    if ckpt.kind == "nemo" and found:
        return Resolution(ckpt, "missing", note="the .nemo file is downloaded but not converted yet")
    if found and len(found) == len(ckpt.files):
        name, file = next(iter(found.items()))
        snapshot = file.parents[len(PurePosixPath(name).parts) - 1]
        return Resolution(ckpt, "hf-cache", snapshot, sum(f.stat().st_size for f in found.values()))
    absent = [f for f in ckpt.files if f not in found]
    return Resolution(ckpt, "missing", note="not downloaded" if not found else f"{', '.join(absent)} not downloaded")


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def resolve_all(configs: Iterable[RunConfig], cache_dir: str | Path, *,
                hub_cache: str | Path | None = None) -> list[Resolution]:
    """Every checkpoint any of ``configs`` reads, resolved (what ``weights list`` shows)."""
    return [resolve(c, cache_dir, hub_cache=hub_cache) for c in checkpoints_needed(configs)]


def missing_checkpoints(configs: Iterable[RunConfig], cache_dir: str | Path, *,
                        hub_cache: str | Path | None = None) -> list[Resolution]:
    """The preflight: the checkpoints any of ``configs`` reads that are not on this machine.

    Offline (the disk only) and fast: run it before the first unit and stop on a non-empty answer
    with :class:`MissingWeightsError`.
    """
    return [r for r in resolve_all(configs, cache_dir, hub_cache=hub_cache) if not r.present]


def fetch_command(preset: str | None, study: str | None = None, assignments: Sequence[str] = ()) -> str:
    """``python runner.py weights fetch --preset P [--study NAME] [--set K=V ...]``."""
    words = ["python", "runner.py", "weights", "fetch", "--preset", preset or "PRESET"]
    if study is not None:
        words += ["--study", study]
    for assignment in assignments:
        words += ["--set", assignment]
    return shlex.join(words)


def missing_message(missing: Sequence[Resolution], *, preset: str | None = None, study: str | None = None,
                    assignments: Sequence[str] = ()) -> str:
    """One message naming each missing checkpoint, why, and the command that downloads them."""
    lines = [f"pretrained weights missing ({len(missing)}):"]
    for r in missing:
        c = r.checkpoint
        parts = [", ".join(c.used_by)] if c.used_by else []
        if c.kind == "nemo":
            parts.append("NeMo .nemo, converted after download")
        if c.size:
            parts.append(format_size(c.size))
        label = f"{c.id} ({'; '.join(parts)})" if parts else c.id
        lines.append(f"  - {label}: {r.note}")
    fetchable = [r.checkpoint for r in missing if is_hub_id(r.checkpoint.id)]
    if fetchable:
        sizes = [c.size for c in fetchable]
        total = f" (about {format_size(sum(sizes))})" if None not in sizes else ""
        lines += [f"download them{total} with:", f"  {fetch_command(preset, study, assignments)}",
                  "(it honours HF_HOME, HF_HUB_CACHE and HF_TOKEN; for a machine without network, fetch on one "
                  "with it and copy the Hugging Face cache and <cache>/weights over)"]
    if len(fetchable) < len(missing):
        lines.append("a local path that does not exist cannot be fetched: correct it with --set KEY=PATH")
    return "\n".join(lines)


class MissingWeightsError(Exception):
    """Checkpoints a run needs are not on this machine; the message lists them and the fetch command.

    Not an ``OSError``: every unit would hit it, so the caller stops rather than retries.
    """

    def __init__(self, missing: Sequence[Resolution], *, preset: str | None = None, study: str | None = None,
                 assignments: Sequence[str] = ()):
        self.missing = list(missing)
        super().__init__(missing_message(self.missing, preset=preset, study=study, assignments=assignments))


def resolve_pretrained(pretrained: str, cache_dir: str | Path, *, preset: str | None = None,
                       hub_cache: str | Path | None = None) -> str:
    """What a loader passes to ``from_pretrained`` for a config's ``pretrained`` value: a local path.

    A hub id in the Hugging Face cache resolves to its snapshot folder, so loading makes no network
    call and every unit of a study reads the same revision.

    Raises:
        MissingWeightsError: not on this machine; the message names the fetch command.
    """
    r = resolve(checkpoint(pretrained), cache_dir, hub_cache=hub_cache)
    if not r.present:
        raise MissingWeightsError([r], preset=preset)
    return str(r.path)


def with_local_weights(cfg: RunConfig, cache_dir: str | Path, *, hub_cache: str | Path | None = None) -> RunConfig:
    """``cfg`` with each ``pretrained`` its model reads replaced by the local path it resolves to.

    For building the model only: keys, hashes and tracking keep the config's own names.

    Raises:
        MissingWeightsError: every checkpoint that is not on this machine, at once.
    """
    from fer.config import RunConfig, merge

    resolutions = [resolve(c, cache_dir, hub_cache=hub_cache) for c in checkpoints_for(cfg)]
    missing = [r for r in resolutions if not r.present]
    if missing:
        raise MissingWeightsError(missing, preset=cfg.preset)
    paths = {key: str(r.path) for r in resolutions for key in r.checkpoint.used_by}
    return RunConfig.model_validate(merge(cfg.model_dump(), paths))
