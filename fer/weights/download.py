"""Download the checkpoints a run needs into the Hugging Face cache, checked; convert NeMo ones.

    results = fetch(checkpoints_needed(configs), cache_dir)
    print(fetch_summary(results))

huggingface_hub (2.x) honours ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE``, and so does everything here. What it does not do, and this module adds:

- **Resume across calls.** ``hf_hub_download`` resumes a connection dropped mid-file within the
  same call, but downloads into a file unique to that call and deletes it on failure: an
  interrupted fetch would start from zero. Here a file is downloaded into
  ``blobs/<etag>.incomplete`` of the cache (under huggingface_hub's own lock for that blob), and
  the next fetch resumes from there with a Range request (from the last whole 10 MiB block:
  huggingface_hub writes what it receives in blocks of that size).
- **A content check.** huggingface_hub compares the length received with the announced one and
  nothing else. Here the file is hashed before it takes its final name ``blobs/<etag>``: a large
  (LFS) file's etag is its sha256, a small file's its git blob sha1. A safetensors file must also
  parse: header, and data as long as the header says. A mismatch deletes the partial file and the
  checkpoint is reported ``corrupt``; nothing corrupt is ever linked into the cache.

Then ``hf_hub_download`` links the blob into ``snapshots/<commit>/`` and records the revision
(the blob is there: it downloads nothing), so transformers, timm and ``resolve`` find it as if
huggingface_hub had fetched it. A NeMo checkpoint is converted into ``<cache>/weights/<org>--<name>/``
(whole or not at all); one already converted is left alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fer.atomic import remove_stale_temps
from fer.weights.checkpoints import Checkpoint, format_size, is_hub_id, merge
from fer.weights.resolver import cached_files, converted_dir, hub_cache_dir, resolve

Status = Literal["present", "fetched", "offline", "failed", "corrupt"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20


class FetchError(Exception):
    """A checkpoint that could not be fetched; the message says why, without a traceback."""


class CorruptDownloadError(FetchError):
    """Downloaded bytes that are not the file the hub announced (hash, or safetensors layout)."""


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did for one checkpoint.

    Attributes:
        status: ``present`` (nothing to do), ``fetched`` (downloaded, converted if NeMo),
            ``offline`` (missing, and HF_HUB_OFFLINE forbids downloading), ``failed`` or ``corrupt``.
        detail: where it resolves now, or what is missing or went wrong.
    """

    checkpoint: Checkpoint
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("present", "fetched")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or now in {"1", "ON", "YES", "TRUE"}


def _transfer_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    # huggingface_hub raises its HTTP library's transport errors as they are (httpx2 in version 2,
    # httpx in 1); that library's base error is the base of huggingface_hub's own HTTP error.
    http_error = next(c for c in HfHubHTTPError.__mro__[1:] if c.__name__ == "HTTPError")
    return OSError, http_error


def fetch(checkpoints: Iterable[Checkpoint], cache_dir: str | Path, *, progress: bool = True,
          hub_cache: str | Path | None = None, log: Callable[[str], None] | None = None) -> list[FetchResult]:
    """Download what is missing of ``checkpoints``; convert NeMo checkpoints.

    Never raises for one checkpoint's failure: each gets a result, and the others are still fetched.
    With ``HF_HUB_OFFLINE`` set no request is made; the missing ones come back ``offline`` (a
    downloaded but unconverted ``.nemo`` is still converted: that needs no network).

    Args:
        checkpoints: what to fetch (``checkpoints_needed(configs)``); duplicates are merged.
        cache_dir: the project's cache root; converted checkpoints go to ``weights/`` in it.
        progress: a progress bar per file (huggingface_hub's: shown on a terminal unless
            ``HF_HUB_DISABLE_PROGRESS_BARS`` is set).
        hub_cache: the Hugging Face cache; None = huggingface_hub's (``HF_HUB_CACHE``).
        log: called with one line per step (download, resume, conversion).
    Returns:
        One ``FetchResult`` per checkpoint, in order.
    """
    hub_cache = Path(hub_cache) if hub_cache is not None else hub_cache_dir()
    log = log or (lambda line: None)
    return [_fetch_one(c, Path(cache_dir), hub_cache, progress=progress, log=log) for c in merge(checkpoints)]


def _fetch_one(ckpt: Checkpoint, cache_dir: Path, hub_cache: Path, *, progress: bool,
               log: Callable[[str], None]) -> FetchResult:
    found = resolve(ckpt, cache_dir, hub_cache=hub_cache)
    if found.present:
        return FetchResult(ckpt, "present", f"{found.where}: {found.path}")
    if not is_hub_id(ckpt.id):
        return FetchResult(ckpt, "failed", found.note)
    files = cached_files(ckpt, hub_cache)
    todo = [name for name in ckpt.files if name not in files]
    if todo and hub_offline():
        return FetchResult(ckpt, "offline", f"not downloaded ({', '.join(todo)}): HF_HUB_OFFLINE is set")
    try:
        for name in todo:
            files[name] = _download(ckpt, name, hub_cache, progress=progress, log=log)
        if ckpt.kind == "nemo":
            _convert(ckpt, files[ckpt.files[0]], cache_dir, log)
    except CorruptDownloadError as exc:
        return FetchResult(ckpt, "corrupt", str(exc))
    except FetchError as exc:
        return FetchResult(ckpt, "failed", str(exc))
    except _transfer_errors() as exc:
        return FetchResult(ckpt, "failed", _describe(exc))
    found = resolve(ckpt, cache_dir, hub_cache=hub_cache)
    return FetchResult(ckpt, "fetched" if found.present else "failed", f"{found.where}: {found.path or found.note}")


def _describe(exc: BaseException) -> str:
    """An HTTP or OS error on one line: its type and message (huggingface_hub's span several lines)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text[:400]}"


def _download(ckpt: Checkpoint, name: str, hub_cache: Path, *, progress: bool, log: Callable[[str], None]) -> Path:
    """One repository file into the Hugging Face cache, resumable and checked. Returns its snapshot path."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import WeakFileLock

    meta = get_hf_file_metadata(hf_hub_url(ckpt.id, name, revision=ckpt.revision))
    folder = repo_folder_name(repo_id=ckpt.id, repo_type="model")
    blob = hub_cache / folder / "blobs" / meta.etag
    if not blob.exists():
        lock = hub_cache / ".locks" / folder / f"{meta.etag}.lock"  # the lock hf_hub_download takes for it
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            if not blob.exists():
                url = hf_hub_url(ckpt.id, name, revision=meta.commit_hash)  # the commit the etag belongs to
                _download_blob(url, blob, size=meta.size, name=f"{ckpt.id}/{name}", progress=progress, log=log)
    # The blob is in place: this links it into snapshots/<commit>/ and writes refs/<revision>.
    path = Path(hf_hub_download(ckpt.id, name, revision=ckpt.revision, cache_dir=hub_cache))
    linked = path.resolve()
    if linked.parent.name == "blobs" and linked.name != blob.name:  # the revision moved on meanwhile: check it too
        verify_file(linked, etag=linked.name, name=f"{ckpt.id}/{name}")
    return path


def _download_blob(url: str, blob: Path, *, size: int | None, name: str, progress: bool,
                   log: Callable[[str], None]) -> None:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    from tqdm import tqdm

    partial = blob.with_name(blob.name + ".incomplete")
    done = partial.stat().st_size if partial.exists() else 0
    if size is not None and done > size:
        partial.unlink()
        done = 0
    need = (size or 0) - done
    free = shutil.disk_usage(blob.parent).free
    if need > free:
        raise FetchError(f"{name}: no space left: {format_size(need)} to download, "
                         f"{format_size(free)} free in {blob.parent}")
    log(f"{name}: downloading {format_size(size)}" + (f", resuming after {format_size(done)}" if done else ""))
    try:
        with open(partial, "ab") as fh:
            http_get(url, fh, resume_size=done, headers=build_hf_headers(), expected_size=size, displayed_filename=name,
                     tqdm_class=None if progress else functools.partial(tqdm, disable=True))
    except _transfer_errors() as exc:
        kept = partial.stat().st_size if partial.exists() else 0
        raise FetchError(f"{name}: download interrupted ({_describe(exc)}); "
                         f"{format_size(kept)} of {format_size(size)} kept, the next fetch resumes") from None
    try:
        verify_file(partial, etag=blob.name, name=name)
    except CorruptDownloadError:
        partial.unlink()
        raise
    os.replace(partial, blob)


def verify_file(path: Path, *, etag: str, name: str) -> None:
    """Check that ``path`` holds the file the hub announced with ``etag``.

    A 64-hex etag is the sha256 of an LFS file, a 40-hex one the git blob sha1 of a small file;
    another etag (a mirror's) is not a hash, and only the safetensors layout is checked.

    Raises:
        CorruptDownloadError: the hash differs, or a safetensors file does not parse or is cut short.
    """
    if _SHA256.fullmatch(etag):
        kind, digest = "sha256", _digest(path, hashlib.sha256())
    elif _GIT_SHA1.fullmatch(etag):
        kind, digest = "git blob sha1", _digest(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))
    else:
        kind = digest = None
    if digest is not None and digest != etag:
        raise CorruptDownloadError(f"{name}: corrupt download, {kind} {digest} is not the hub's {etag}; deleted")
    if path.name.endswith(".safetensors") or name.endswith(".safetensors"):
        check_safetensors(path, name=name)


def _digest(path: Path, h) -> str:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_safetensors(path: Path, *, name: str) -> None:
    """A safetensors file: 8-byte header length, a JSON header, then exactly the data it describes.

    Raises:
        CorruptDownloadError: it is not laid out so (truncated, padded or not safetensors).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise CorruptDownloadError(f"{name}: not a safetensors file ({size} bytes, header length {n})")
        try:
            header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CorruptDownloadError(f"{name}: unreadable safetensors header ({exc})") from None
    if 8 + n + end != size:
        raise CorruptDownloadError(f"{name}: {size} bytes, but its safetensors header describes {8 + n + end}")


def _convert(ckpt: Checkpoint, nemo_file: Path, cache_dir: Path, log: Callable[[str], None]) -> None:
    from fer.weights.nemo import convert_nemo
    from fer.weights.nemo_mapping import NemoConversionError

    out = converted_dir(cache_dir, ckpt)
    if out.parent.is_dir():
        remove_stale_temps(out.parent)  # the half-written folders of killed conversions
    log(f"{ckpt.id}: converting {nemo_file.name} into {out}")
    try:
        convert_nemo(nemo_file, out)
    except NemoConversionError as exc:
        raise FetchError(f"{ckpt.id}: {nemo_file.name} does not convert:\n{exc}") from None
    except OSError:
        if not resolve(ckpt, cache_dir).where == "converted":  # not another fetch converting it meanwhile
            raise


def fetch_summary(results: Iterable[FetchResult]) -> str:
    """One line per checkpoint (status, id, detail), then what to do about the ones not fetched."""
    results = list(results)
    lines = [f"{r.status:<8} {r.checkpoint.id}  {r.detail}" for r in results]
    if any(r.status == "offline" for r in results):
        lines.append("HF_HUB_OFFLINE is set: nothing was downloaded. Fetch on a connected machine and copy "
                     "the Hugging Face cache (HF_HOME) and <cache>/weights here.")
    if any(r.status in ("failed", "corrupt") for r in results):
        lines.append("run the same fetch again to retry: interrupted downloads resume, corrupt ones start over.")
    return "\n".join(lines)
