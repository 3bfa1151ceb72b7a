"""Convert a NeMo FastConformer CTC checkpoint (``.nemo``) into the transformers Parakeet format.

    convert_nemo(Path("stt_en_fastconformer_ctc_large.nemo"), cache / "weights" / "nvidia--stt_en_fastconformer_ctc_large")
    # -> that folder: config.json + model.safetensors of a ParakeetForCTC, what model.audio.pretrained loads

A ``.nemo`` file is a tar archive holding ``model_config.yaml`` and ``model_weights.ckpt`` (a torch
state dict), often under ``./``, beside tokenizer files not needed here. It is read in memory, with
no NeMo import (``tarfile``, ``yaml.safe_load``, ``torch.load(weights_only=True)``); nothing is
extracted, yet an archive with a member at an absolute path or under ``..`` is refused outright.
``nemo_mapping`` holds the config and weight-name mapping.

The output folder appears complete or not at all: the model is saved into a temporary folder
beside it (:func:`fer.atomic.atomic_dir`) that is renamed onto it once complete. Every check
runs before anything is written, so a checkpoint that cannot convert leaves no trace on disk.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import torch
import yaml

from fer.atomic import atomic_dir
from fer.weights.nemo_mapping import CTC_HEAD_KEY, NemoConversionError, ctc_config_from_nemo, map_state_dict

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def _read_members(tar: tarfile.TarFile, nemo_path: Path) -> dict[str, bytes]:
    """The bytes of the config and weights members, every member's path checked first."""
    members = tar.getmembers()  # reads every header: an archive cut inside a member fails here
    # tarfile takes a header cut short for the end of the archive: ask for the end marker itself.
    end = tar.offset
    tar.fileobj.seek(end)
    if tar.fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
        raise NemoConversionError([(str(nemo_path), "truncated: the archive ends without its end-of-archive marker")])
    problems = [(m.name, "absolute or '..' path: refusing the archive") for m in members if _unsafe(m.name)]
    problems += [(m.name, f"link to {m.linkname!r}, an absolute or '..' path: refusing the archive")
                 for m in members if (m.issym() or m.islnk()) and _unsafe(m.linkname)]
    if problems:
        raise NemoConversionError(problems)
    found: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = str(PurePosixPath(member.name))  # "./model_config.yaml" -> "model_config.yaml"
        if name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
            if name in found:
                raise NemoConversionError([(member.name, f"{name} appears twice in {nemo_path}")])
            found[name] = member
    for name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
        if name not in found:
            raise NemoConversionError([(name, f"not in {nemo_path} (members: {sorted(m.name for m in members)[:10]})")])
        if not found[name].isfile():
            raise NemoConversionError([(found[name].name, "not a regular file")])
    data = {name: tar.extractfile(member).read() for name, member in found.items()}
    # Read on to the end, where a compressed stream checks its length and checksum.
    tar.fileobj.seek(end)
    while tar.fileobj.read(1 << 20):
        pass
    return data


def read_nemo(nemo_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The model config and the state dict inside a ``.nemo`` archive (plain or compressed tar).

    Raises:
        FileNotFoundError: no such file.
        NemoConversionError: an unsafe member path, a missing member, an archive that is truncated
            or corrupt, a config that is not a YAML mapping, weights that are not a state dict.
    """
    with open(nemo_path, "rb") as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:*") as tar:
                data = _read_members(tar, nemo_path)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            why = f"not a readable tar archive (truncated or corrupt?): {exc}"
            raise NemoConversionError([(str(nemo_path), why)]) from exc
    try:
        config = yaml.safe_load(data[CONFIG_MEMBER])
    except yaml.YAMLError as exc:
        raise NemoConversionError([(CONFIG_MEMBER, f"not valid YAML: {exc}")]) from exc
    if not isinstance(config, Mapping):
        raise NemoConversionError([(CONFIG_MEMBER, f"a {type(config).__name__}, not a mapping")])
    try:
        weights = torch.load(io.BytesIO(data.pop(WEIGHTS_MEMBER)), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        why = f"not a readable torch checkpoint (truncated or corrupt?): {exc}"
        raise NemoConversionError([(WEIGHTS_MEMBER, why)]) from exc
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise NemoConversionError([(WEIGHTS_MEMBER, "not a state dict (a mapping of names to tensors)")])
    return dict(config), dict(weights)


def _load_checked(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], renames: Mapping[str, str]) -> None:
    """Copy ``weights`` into ``model`` through ``renames`` ({model key: NeMo key}) after checking
    that every model weight gets one of the right shape.

    Raises:
        NemoConversionError: a NeMo key whose target the architecture lacks (say, a layer beyond
            n_layers) or whose shape differs, or a model weight no NeMo key fills.
    """
    expected = model.state_dict()
    problems = []
    for target, source in renames.items():
        if target not in expected:
            problems.append((source, f"maps to {target}, which the configured architecture lacks"))
        elif (got := tuple(weights[source].shape)) != (want := tuple(expected[target].shape)):
            problems.append((source, f"shape {got}; the config implies {want}"))
    # torch's BatchNorm fills a missing num_batches_tracked itself (it only counts training steps).
    problems += [(WEIGHTS_MEMBER, f"no weight for Parakeet's {key}") for key in expected
                 if key not in renames and not key.endswith("num_batches_tracked")]
    if problems:
        raise NemoConversionError(problems)
    model.load_state_dict({target: weights[source] for target, source in renames.items()}, strict=True)


def convert_nemo(nemo_path: Path, out_dir: Path) -> Path:
    """Convert a NeMo FastConformer CTC checkpoint into a transformers ``ParakeetForCTC`` folder.

    Args:
        nemo_path: the ``.nemo`` archive.
        out_dir: the folder to create (``config.json``, ``model.safetensors``); it must not exist.
    Returns:
        ``out_dir``, complete. Load it with ``model.audio.pretrained`` or ``ParakeetForCTC.from_pretrained``.
    Raises:
        FileNotFoundError: ``nemo_path`` does not exist.
        FileExistsError: ``out_dir`` exists.
        NemoConversionError: the checkpoint cannot be converted; the message names each member,
            config entry or weight key at fault. Nothing is written.
    """
    from transformers import ParakeetForCTC  # heavy

    nemo_path, out_dir = Path(nemo_path), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it to convert again")
    config, weights = read_nemo(nemo_path)
    if CTC_HEAD_KEY not in weights:
        raise NemoConversionError([(CTC_HEAD_KEY, f"missing from {WEIGHTS_MEMBER}: only CTC checkpoints convert")])
    ctc_config = ctc_config_from_nemo(config, head_rows=weights[CTC_HEAD_KEY].shape[0])
    renames = map_state_dict(weights, d_model=ctc_config.encoder_config.hidden_size)
    model = ParakeetForCTC(ctc_config)
    _load_checked(model, weights, renames)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
    return out_dir
