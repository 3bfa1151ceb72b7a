"""Memory fit: budget parsing, micro-batch planning on fake estimates, back-off on CUDA OOM."""

import pytest
import torch

from fer.config import resolve_config
from fer.train.config import parse_budget
from fer.train.memory import (MIB, MemoryBudgetError, ProfileEstimate, divisors_descending, is_cuda_oom, plan_batch,
                              run_with_backoff)


@pytest.mark.parametrize("text, expected", [
    ("8GB", 8_000_000_000),
    ("8gb", 8_000_000_000),
    ("8 GiB", 8 * 1024**3),
    ("7.5GiB", int(7.5 * 1024**3)),
    ("512MiB", 512 * 1024**2),
    ("1500MB", 1_500_000_000),
    ("4096", 4096),
])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["8XB", "GB", "-1GB", "0GB", "eight GB", ""])
def test_parse_budget_rejects_bad_text(text):
    with pytest.raises(ValueError, match="memory budget"):
        parse_budget(text)


def cfg_with_batch(batch: int):
    return resolve_config("tiny", {"train.batch_size": batch})


def linear(fixed_mb: float, per_clip_mb: float):
    """Fake estimator: fixed weights/optimizer memory plus activations per clip; records its calls."""
    calls = []

    def estimate(micro: int) -> float:
        calls.append(micro)
        return fixed_mb + per_clip_mb * micro

    estimate.calls = calls
    return estimate


def test_whole_batch_kept_when_it_fits():
    est = linear(1000, 100)  # 1800 MiB at 8 clips
    assert plan_batch(cfg_with_batch(8), 2000 * MIB, est) == (8, 1)
    assert est.calls == [8]


def test_half_the_batch_when_only_half_fits():
    est = linear(1000, 100)  # 1800 at 8, 1400 at 4
    assert plan_batch(cfg_with_batch(8), 1500 * MIB, est) == (4, 2)
    assert est.calls == [8, 4]


def test_budget_equal_to_estimate_fits():
    assert plan_batch(cfg_with_batch(8), 1400 * MIB, linear(1000, 100)) == (4, 2)


@pytest.mark.parametrize("batch, budget_mb, expected", [
    (8, 1250, (2, 4)),
    (8, 1150, (1, 8)),
    (12, 1650, (6, 2)),  # 2200 MiB at 12 does not fit, 1600 at 6 does
    (12, 1450, (4, 3)),  # 4 is not a halving of 12: every divisor is a candidate
    (6, 1350, (3, 2)),
])
def test_effective_batch_is_preserved(batch, budget_mb, expected):
    micro, accum = plan_batch(cfg_with_batch(batch), budget_mb * MIB, linear(1000, 100))
    assert (micro, accum) == expected
    assert micro * accum == batch


def test_nothing_fits_is_an_error_naming_the_numbers():
    with pytest.raises(MemoryBudgetError, match=r"1100 MiB .* budget of 1000 MiB"):
        plan_batch(cfg_with_batch(8), 1000 * MIB, linear(1000, 100))


def test_plan_from_the_profile_estimate():
    """The default estimator: the tiny model's profiled memory grows with the micro-batch, and a
    budget that holds 4 clips but not 8 gets (4, 2)."""
    cfg = cfg_with_batch(8)
    est = ProfileEstimate(cfg)
    at4, at8 = est(4), est(8)
    assert 0 < at4 < at8
    budget = int(at4 * MIB) + 1
    assert budget < at8 * MIB
    assert plan_batch(cfg, budget) == (4, 2)
    assert plan_batch(cfg, int(at8 * MIB) + 1) == (8, 1)


def test_divisors_descending():
    assert divisors_descending(12) == [12, 6, 4, 3, 2, 1]
    assert divisors_descending(1) == [1]


def oom_above(limit: int, calls: list):
    """Fake training attempt: CUDA OOM whenever the micro-batch exceeds ``limit``."""

    def attempt(micro: int, accum: int) -> tuple[int, int]:
        calls.append((micro, accum))
        if micro > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return micro, accum

    return attempt


def test_backoff_halves_micro_batch_and_doubles_accumulation():
    calls = []
    with pytest.warns(UserWarning) as record:
        assert run_with_backoff(oom_above(2, calls), 8, 1) == (2, 4)
    assert calls == [(8, 1), (4, 2), (2, 4)]
    assert [str(w.message).split(" (")[0] for w in record] == [
        "CUDA out of memory at micro-batch 8; retrying with micro-batch 4 x 2 accumulation steps",
        "CUDA out of memory at micro-batch 4; retrying with micro-batch 2 x 4 accumulation steps"]
    assert all(m * a == 8 for m, a in calls)


def test_backoff_keeps_a_non_power_of_two_effective_batch():
    calls = []
    with pytest.warns(UserWarning):
        assert run_with_backoff(oom_above(3, calls), 6, 2) == (3, 4)
    assert calls == [(6, 2), (3, 4)]


def test_backoff_recognises_the_message_of_a_plain_runtime_error():
    calls = []

    def attempt(micro, accum):
        calls.append(micro)
        if micro > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return "done"

    with pytest.warns(UserWarning):
        assert run_with_backoff(attempt, 4, 1) == "done"
    assert calls == [4, 2, 1]


def test_backoff_gives_up_at_one_clip():
    calls = []
    with pytest.raises(torch.OutOfMemoryError), pytest.warns(UserWarning):
        run_with_backoff(oom_above(0, calls), 4, 2)
    assert calls == [(4, 2), (2, 4), (1, 8)]


def test_other_errors_are_not_retried():
    calls = []

    def attempt(micro, accum):
        calls.append(micro)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_backoff(attempt, 8, 1)
    assert calls == [8]
    assert not is_cuda_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory"))


@pytest.mark.gpu
def test_backoff_on_a_real_cuda_oom():
    """Each clip of a micro-batch holds 30% of the free GPU memory: 8 and 4 clips cannot fit, 2 can."""
    per_clip = int(0.3 * torch.cuda.mem_get_info()[0])
    calls = []

    def attempt(micro, accum):
        calls.append(micro)
        held = torch.empty(micro * per_clip, dtype=torch.uint8, device="cuda")
        return held.numel() // per_clip, accum

    with pytest.warns(UserWarning):
        assert run_with_backoff(attempt, 8, 1) == (2, 4)
    assert calls == [8, 4, 2]
