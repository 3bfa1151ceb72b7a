"""ONNX export of a trained model: prepared tensors in, (B, 8) logits out, checked against PyTorch.

    frames (B, T, 3, H, W)  normalised as ``fer.data.dataset`` delivers them  (visual and av models)
    keypoints (B, T, 6, 2)  face keypoints, crop fractions         (only when the ROI prior reads them)
    audio (B, L)            raw waveform at ``data.sample_rate``    (audio and av models)
        -> logits (B, 8)

Every shape is static, the batch size included (``batch_size``, default 1): T, H, W and L come
from the run's data config. A dynamic batch dimension does not export today: transformers'
Parakeet subsampling computes its output lengths in a way torch.export cannot keep symbolic.

Exporter: torch.export's ``draft_export`` then the dynamo ONNX translator (``onnxscript``). The
TorchScript exporter (``dynamo=False``) cannot export the log-mel front end (a complex STFT);
plain ``torch.export`` refuses the segment pooling's input check (``bool`` of a tensor, a
data-dependent guard). ``draft_export`` specialises such checks to the value seen while tracing,
which is why the parity check runs on a second, independently drawn batch.

The file is written through ``fer.atomic.atomic_path`` and appears only after the parity check
passed; a part that cannot be exported raises ``ExportError`` naming it (``FERModel`` part names).

    summary = export_onnx(model, cfg, Path("model.onnx"))
    summary["max_abs_diff"]  # ONNX Runtime vs PyTorch on the check batch
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fer.atomic import atomic_path
from fer.data.dataset import audio_length
from fer.models.model import PARTS, FERModel
from fer.slots import AUDIO, VISUAL

if TYPE_CHECKING:
    from fer.config import RunConfig

OUTPUT = "logits"


class ExportError(RuntimeError):
    """The model (or one part of it, named in the message) cannot be exported, or the exported
    graph disagrees with PyTorch beyond the tolerance."""


class TensorInputs(nn.Module):
    """Positional tensors -> the batch dict ``FERModel`` reads -> (B, 8) logits.

    Args:
        model: the model, in eval mode.
        names: the batch keys of the positional inputs, in order.
        keypoints_shape: (B, T, 6, 2) when the model reads keypoints it does not take as an input
            (the ROI selection ignores them): zeros are passed, as any value gives the same logits.
    """

    def __init__(self, model: FERModel, names: tuple[str, ...], keypoints_shape: tuple[int, ...] | None):
        super().__init__()
        self.model = model
        self.names = names
        self.keypoints_shape = keypoints_shape

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.names, tensors))
        if self.keypoints_shape is not None:
            batch["keypoints"] = torch.zeros(self.keypoints_shape, device=tensors[0].device)
        return self.model(batch)  # (B, 8)


def input_shapes(model: FERModel, cfg: RunConfig, batch_size: int = 1) -> dict[str, tuple[int, ...]]:
    """The exported graph's inputs, name -> shape, in input order.

    Keypoints are an input only when the ROI selection uses the keypoint prior.
    """
    data = cfg.data
    shapes = {}
    if model.temporal is not None:
        shapes[VISUAL.input_key] = (batch_size, data.frames, 3, data.size, data.size)
        if model.roi.mode.prior:
            shapes["keypoints"] = (batch_size, data.frames, 6, 2)
    if model.audio_pooling is not None:
        shapes[AUDIO.input_key] = (batch_size, audio_length(data))
    return shapes


def random_inputs(shapes: dict[str, tuple[int, ...]], seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Inputs of the given shapes with plausible values: normalised frames ~ N(0, 1), keypoints
    inside the crop, a waveform of amplitude ~0.1."""
    gen = torch.Generator().manual_seed(seed)
    makers = {
        VISUAL.input_key: lambda s: torch.randn(s, generator=gen),
        "keypoints": lambda s: 0.2 + 0.6 * torch.rand(s, generator=gen),
        AUDIO.input_key: lambda s: 0.1 * torch.randn(s, generator=gen),
    }
    return {name: makers[name](shape).to(device) for name, shape in shapes.items()}


def export_onnx(model: FERModel, cfg: RunConfig, out: Path, *, check: bool = True, atol: float = 1e-4,
                batch_size: int = 1, seed: int = 0) -> dict:
    """Export ``model`` to an ONNX file at ``out``, after checking it against PyTorch.

    Args:
        model: a built (trained) model; exported in eval mode, its mode restored afterwards.
        cfg: its run config (``data.frames/size/audio_seconds/sample_rate`` fix the input shapes).
        out: the ONNX file; written atomically, only once the check passed.
        check: run ONNX Runtime (CPU) and PyTorch on a batch drawn independently of the tracing
            batch and require max |difference| <= ``atol``.
        atol: tolerance of the check.
        batch_size: the graph's static batch size B.
        seed: seed of the random tracing (``seed``) and check (``seed + 1``) batches.
    Returns:
        {"file", "format", "opset", "inputs": {name: shape}, "outputs": {"logits": shape},
         "max_abs_diff" (None without check), "atol", "bytes", "exporter", "specialised"}:
        ``specialised`` lists the data-dependent checks fixed to their traced value.
    Raises:
        ExportError: a part cannot be exported (the message names it), or the parity check failed;
            ``out`` is then left as it was.
    """
    out = Path(out)
    shapes = input_shapes(model, cfg, batch_size)
    names = tuple(shapes)
    reads_keypoints = model.temporal is not None and "keypoints" not in shapes
    keypoints_shape = (batch_size, cfg.data.frames, 6, 2) if reads_keypoints else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        wrapper = TensorInputs(model, names, keypoints_shape).eval()
        trace_args = tuple(random_inputs(shapes, seed, device).values())
        with torch.no_grad():
            program, specialised = _to_onnx(wrapper, trace_args, names)
            opset = next(op.version for op in program.model_proto.opset_import if op.domain in ("", "ai.onnx"))
            with atomic_path(out) as tmp:
                program.save(tmp, external_data=False)  # one file: the 2 GB protobuf limit applies
                diff = _parity(wrapper, tmp, random_inputs(shapes, seed + 1, device), atol) if check else None
    finally:
        model.train(was_training)
    return {
        "file": str(out), "format": "onnx", "opset": opset,
        "inputs": {name: list(shape) for name, shape in shapes.items()},
        "outputs": {OUTPUT: _output_shape(program)},
        "max_abs_diff": diff, "atol": atol, "bytes": out.stat().st_size,
        "exporter": f"torch.export.draft_export + torch.onnx (dynamo), torch {torch.__version__}",
        "specialised": specialised,
    }


def _to_onnx(wrapper: TensorInputs, args: tuple[torch.Tensor, ...], names: tuple[str, ...]):
    """(ONNXProgram, specialised checks) of the whole model; on failure, find the part to blame."""
    try:
        program, specialised = _export_module(wrapper, args, names)
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one naming the part
        part = _failing_part(wrapper.model, wrapper, args)
        where = f"model part {part!r} ({type(getattr(wrapper.model, part)).__name__})" if part else "the model"
        raise ExportError(f"{where} cannot be exported to ONNX: {_first_line(exc)}") from exc
    return program, specialised


def _export_module(module: nn.Module, args: tuple, names: tuple[str, ...] | None = None, kwargs: dict | None = None):
    # draft_export logs its report as a warning; the specialisations are returned instead.
    logger = logging.getLogger("torch.export._draft_export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        ep = torch.export.draft_export(module, args, kwargs)
    finally:
        logger.setLevel(level)
    report = getattr(ep, "_report", None)
    specialised = sorted({_describe(f, report.str_to_filename) for f in report.failures}) if report else []
    program = torch.onnx.export(ep, args, kwargs=kwargs, dynamo=True, input_names=list(names) if names else None,
                                output_names=[OUTPUT] if names else None, verbose=False, optimize=True)
    return program, specialised


def _failing_part(model: FERModel, wrapper: TensorInputs, args: tuple) -> str | None:
    """The first part, in forward order, that does not export on its own with the inputs it
    received in a PyTorch run of ``args``; None when every part exports alone."""
    seen: dict[str, tuple[tuple, dict]] = {}
    hooks = []
    for name in PARTS:
        part = getattr(model, name)
        if part is not None:
            hooks.append(part.register_forward_pre_hook(
                lambda mod, a, kw, name=name: seen.setdefault(name, (a, kw)), with_kwargs=True))
    try:
        wrapper(*args)
    except Exception:  # noqa: BLE001 - a part that fails in PyTorch too is found below
        pass
    finally:
        for hook in hooks:
            hook.remove()
    for name in PARTS:
        if name not in seen:
            continue
        part_args, part_kwargs = seen[name]
        try:
            _export_module(getattr(model, name), part_args, kwargs=part_kwargs)
        except Exception:  # noqa: BLE001 - this is the part to name
            return name
    return None


def _parity(wrapper: TensorInputs, path: Path, inputs: dict[str, torch.Tensor], atol: float) -> float:
    """Max |ONNX Runtime - PyTorch| over the logits of ``inputs``; raises past ``atol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {name: t.cpu().numpy() for name, t in inputs.items()})[0]
    want = wrapper(*inputs.values()).float().cpu().numpy()
    if got.shape != want.shape:
        raise ExportError(f"ONNX logits have shape {got.shape}, PyTorch {want.shape}")
    diff = float(abs(got - want).max())
    if not diff <= atol:  # also catches NaN
        raise ExportError(f"ONNX parity check failed: max |ONNX - PyTorch| = {diff:.3g} > atol {atol:g}")
    return diff


def _describe(failure, filenames: dict[int, str]) -> str:
    """One line per draft-export finding: ``expr -> value at file:line``, or its kind."""
    data = failure.data
    if "expr" not in data:
        return failure.failure_type.name
    where = ""
    if data.get("user_stack"):
        frame = data["user_stack"][-1]
        where = f" at {filenames.get(frame['filename'], '?')}:{frame['line']} ({frame['name']})"
    return f"{data['expr']} -> {data.get('result', '?')}{where}"


def _output_shape(program) -> list[int]:
    dims = program.model_proto.graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims]


def _first_line(exc: Exception | str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the exporter colours its messages
    return text.splitlines()[0] if text else type(exc).__name__
