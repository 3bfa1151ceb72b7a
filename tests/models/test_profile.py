"""Meta-device profile: components, sums, FLOPs against hand counts, batch consistency, the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner

from fer.config import resolve_config
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
        assert row["train_mem_estimate_mb"] == pytest.approx(
            (4 * row["params_total"] + 12 * row["params_trainable"]) / MB + row["activations_mb"])
    for field in FIELDS:
        assert tiny["total"][field] == pytest.approx(sum(tiny[name][field] for name in PARTS))
    assert all(tiny[name]["gflops_per_clip"] > 0 for name in PARTS)


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
