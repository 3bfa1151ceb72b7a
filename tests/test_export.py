"""ONNX export: parity with PyTorch per modality, inputs per model, atomic write, failing part named.

Every export test exports a freshly built, seeded ``tiny`` model (20-60 s each on a CPU): marked slow.
"""

import numpy as np
import pytest
import torch
from torch import nn

from fer.config import resolve_config
from fer.data.dataset import audio_length
from fer.export import ExportError, export_onnx, input_shapes, random_inputs
from fer.models.model import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def tiny_model(**overrides):
    cfg = resolve_config("tiny", overrides)
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def test_input_shapes_follow_modality_and_roi_prior():
    model, cfg = tiny_model(**{"model.modality": "av"})
    t, size = cfg.data.frames, cfg.data.size
    assert input_shapes(model, cfg, batch_size=2) == {
        "frames": (2, t, 3, size, size), "keypoints": (2, t, 6, 2), "audio": (2, audio_length(cfg.data)),
    }
    audio, cfg_a = tiny_model(**{"model.modality": "audio"})
    assert list(input_shapes(audio, cfg_a)) == ["audio"]
    no_prior, cfg_l = tiny_model(**{"model.modality": "visual", "model.visual.roi.selection": "learned"})
    assert list(input_shapes(no_prior, cfg_l)) == ["frames"]  # the keypoints would be a dead input


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["av", "audio", "visual"])
def test_onnx_matches_pytorch(modality, tmp_path):
    model, cfg = tiny_model(**{"model.modality": modality})
    out = tmp_path / "model.onnx"
    summary = export_onnx(model, cfg, out)

    assert summary["max_abs_diff"] <= 1e-4
    assert summary["bytes"] == out.stat().st_size
    assert summary["outputs"] == {"logits": [1, 8]}
    assert not model.training  # mode restored
    onnx.checker.check_model(str(out))
    assert summary["opset"] == next(op.version for op in onnx.load(str(out)).opset_import if op.domain in ("", "ai.onnx"))

    # An independent batch, checked here rather than trusted from the summary.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(summary["inputs"])
    inputs = random_inputs(input_shapes(model, cfg), seed=123, device=torch.device("cpu"))
    got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
    batch = dict(inputs)
    batch.setdefault("keypoints", torch.zeros(1, cfg.data.frames, 6, 2))
    with torch.no_grad():
        want = model(batch).numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(want).max() > 1e-3  # logits that carry a signal, not a constant

    if "keypoints" in inputs:  # the prior's input is live in the graph: moving the face changes the logits
        moved = {k: v.numpy() for k, v in inputs.items()}
        moved["keypoints"] = np.clip(moved["keypoints"] + 0.3, 0.0, 1.0).astype(np.float32)
        assert np.abs(session.run(["logits"], moved)[0] - got).max() > 1e-6


@pytest.mark.slow
def test_failed_parity_leaves_previous_file(tmp_path):
    model, cfg = tiny_model(**{"model.modality": "audio"})
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportError, match="parity check failed"):
        export_onnx(model, cfg, out, atol=-1.0)  # no difference can pass
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left


@torch.library.custom_op("fer_test::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:
    """An operator torch.export can trace but ONNX has no translation for."""
    return x.clone()


@opaque.register_fake
def _(x):
    return torch.empty_like(x)


class OpaqueInput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        return self.inner(opaque(args[0]), *args[1:])


@pytest.mark.slow
@pytest.mark.parametrize("part", ["temporal", "classifier"])
def test_unexportable_part_is_named_and_nothing_written(part, tmp_path):
    model, cfg = tiny_model(**{"model.modality": "visual"})
    setattr(model, part, OpaqueInput(getattr(model, part)))
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=f"model part '{part}' \\(OpaqueInput\\) cannot be exported"):
        export_onnx(model, cfg, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_random_roi_selection_is_named(tmp_path):
    """``random`` draws its fixed evaluation subset from a fresh CPU generator inside forward,
    which the ONNX decomposition refuses: the error names the ROI part."""
    model, cfg = tiny_model(**{"model.modality": "visual", "model.visual.roi.selection": "random"})
    with pytest.raises(ExportError, match="model part 'roi' \\(RoiCompression\\) cannot be exported to ONNX: [^\\x1b]+$"):
        export_onnx(model, cfg, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
