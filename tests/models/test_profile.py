"""Meta-device profile: components, sums, FLOPs against hand counts, batch consistency, the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fer.config import resolve_config
from fer.models import profile
from fer.models.model import PARTS, build_model
from fer.models.profile import FIELDS, MB, profile_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny():
    return profile_model(resolve_config("tiny"), batch=2, precision="bf16")


def test_every_component_and_totals_that_are_sums(tiny):
    assert list(tiny) == [*PARTS, "total"]
    for name in PARTS:
        row = tiny[name]
        assert row["built"] and set(row) == {*FIELDS, "built"}
    for field in FIELDS:
        assert tiny["total"][field] == pytest.approx(sum(tiny[name][field] for name in PARTS))
    assert all(tiny[name]["gflops_per_clip"] > 0 for name in PARTS)


class Toy(nn.Module):
    """Two parts small enough to count by hand: a frozen Linear(4, 3) as audio encoder, a
    trainable Linear(3, 8) as classifier; every other part absent."""

    def __init__(self):
        super().__init__()
        for name in PARTS:
            setattr(self, name, None)
        self.audio_encoder = nn.Linear(4, 3).requires_grad_(False)
        self.classifier = nn.Linear(3, 8)

    def forward(self, batch):
        return self.classifier(self.audio_encoder(batch["x"]))  # (B, 4) -> (B, 3) -> (B, 8)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(profile, "build_model", lambda cfg, device: Toy().to(device))
    monkeypatch.setattr(profile, "meta_batch", lambda cfg, batch: {"x": torch.empty(batch, 4, device="meta")})

    def run(batch: int, precision: str) -> dict:
        return profile_model(resolve_config("tiny"), batch=batch, precision=precision)

    return run


@pytest.mark.parametrize("precision, half", [("bf16", 2), ("no", 4)])
def test_a_toy_model_profiles_as_counted_by_hand(toy, precision, half):
    result = toy(batch=2, precision=precision)
    enc, head, total = result["audio_encoder"], result["classifier"], result["total"]
    # Frozen encoder: 4*3 + 3 = 15 weights at 4 B; nothing trains, its input needs no gradient,
    # so autograd keeps nothing; 2 * 4 * 3 = 24 FLOPs per clip.
    assert (enc["params_total"], enc["params_trainable"], enc["activations_mb"]) == (15, 0, 0)
    assert enc["train_mem_estimate_mb"] * MB == pytest.approx(60)
    assert enc["gflops_per_clip"] * 1e9 == pytest.approx(24)
    # Classifier: 3*8 + 8 = 32 trainable weights at 4 (weight) + 4 (gradient) + 8 (AdamW) B = 512 B,
    # plus its saved input, 2 clips x 3 values at ``half`` bytes; 2 * 3 * 8 = 48 FLOPs per clip.
    assert (head["params_total"], head["params_trainable"]) == (32, 32)
    assert head["activations_mb"] * MB == pytest.approx(2 * 3 * half)
    assert head["train_mem_estimate_mb"] * MB == pytest.approx(512 + 2 * 3 * half)
    assert head["gflops_per_clip"] * 1e9 == pytest.approx(48)
    assert total["gflops_per_clip"] * 1e9 == pytest.approx(72)
    assert total["train_mem_estimate_mb"] * MB == pytest.approx(60 + 512 + 2 * 3 * half)
    assert not result["fusion"]["built"] and result["fusion"]["params_total"] == 0


def test_the_frozen_tiny_audio_encoder_costs_its_float32_weights_only(tiny):
    # 147,136 FastConformer parameters (fer.models.audio), 4 B each; frozen and fed raw audio.
    assert tiny["audio_encoder"]["params_total"] == 147_136
    assert tiny["audio_encoder"]["train_mem_estimate_mb"] * MB == pytest.approx(4 * 147_136)


def test_parameter_counts_match_a_real_build(tiny):
    torch.manual_seed(0)
    model = build_model(resolve_config("tiny"))
    for name in PARTS:
        params = list(getattr(model, name).parameters())
        assert tiny[name]["params_total"] == sum(p.numel() for p in params)
        assert tiny[name]["params_trainable"] == sum(p.numel() for p in params if p.requires_grad)


def test_classifier_flops_equal_the_hand_count(tiny):
    cfg = resolve_config("tiny")
    tokens, width = 2 * cfg.model.segments, cfg.model.fusion.out_dim  # interleaved audio + visual segments
    sizes = [width, *cfg.model.classifier.hidden, 8]
    mlp = sum(2 * a * b for a, b in zip(sizes, sizes[1:]))
    attention_pool = 2 * tokens * width * 2  # score per token, then the weighted sum
    assert tiny["classifier"]["gflops_per_clip"] * 1e9 == pytest.approx(mlp + attention_pool)


def test_gflops_per_clip_do_not_depend_on_the_batch(tiny):
    bigger = profile_model(resolve_config("tiny"), batch=5, precision="bf16")
    for name in [*PARTS, "total"]:
        assert bigger[name]["gflops_per_clip"] == pytest.approx(tiny[name]["gflops_per_clip"], rel=1e-9)
        assert bigger[name]["activations_mb"] == pytest.approx(tiny[name]["activations_mb"] * 5 / 2, rel=0.05)


def test_activations_follow_freezing_and_precision(tiny):
    # tiny encoders are frozen and fed raw inputs: autograd keeps nothing for them
    assert tiny["audio_encoder"]["activations_mb"] == 0 and tiny["visual_encoder"]["activations_mb"] == 0
    unfrozen = profile_model(resolve_config("tiny", {"model.audio.freeze": False}), batch=2, precision="bf16")
    assert unfrozen["audio_encoder"]["activations_mb"] > 0
    fp32 = profile_model(resolve_config("tiny"), batch=2, precision="no")
    assert fp32["fusion"]["activations_mb"] == pytest.approx(2 * tiny["fusion"]["activations_mb"], rel=0.05)


def test_single_modality_profile_reports_absent_branches_as_zero():
    result = profile_model(resolve_config("tiny", {"model.modality": "audio"}), batch=2)
    for name in ("visual_encoder", "roi", "temporal"):
        assert not result[name]["built"] and result[name]["params_total"] == 0
        assert result[name]["gflops_per_clip"] == 0
    assert result["audio_encoder"]["built"] and result["total"]["gflops_per_clip"] > 0


@pytest.mark.slow
def test_full_preset_profiles_on_cpu_and_outweighs_rtx3050():
    rtx = profile_model(resolve_config("rtx3050"), batch=1)
    full = profile_model(resolve_config("full"), batch=1)
    assert rtx["total"]["params_trainable"] < full["total"]["params_trainable"] == full["total"]["params_total"]
    # SigLIP B/16 at 224 px: about 17.5 G multiply-adds per frame, 16 frames a clip
    assert rtx["visual_encoder"]["gflops_per_clip"] / 16 == pytest.approx(35, rel=0.05)
    assert full["total"]["train_mem_estimate_mb"] > rtx["total"]["train_mem_estimate_mb"]


def test_profile_command_prints_the_json():
    import runner

    out = CliRunner().invoke(runner.cli, ["profile", "--preset", "tiny", "--batch", "2", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert list(result) == [*PARTS, "total"]
    table = CliRunner().invoke(runner.cli, ["profile", "--preset", "tiny", "--batch", "2"])
    assert table.exit_code == 0 and "classifier" in table.output and "total" in table.output
