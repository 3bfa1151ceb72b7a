"""The torch log-mel front end against transformers' ParakeetFeatureExtractor.

Tolerance: 1e-4 absolute on the extractor's output. Those features are standardised per mel bin
(unit variance), so 1e-4 is a ten-thousandth of a feature's spread, far below anything a model
can tell apart, while leaving room for float32 rounding that legitimately differs: the power
spectrum is summed from squares here but squared from a square root there, and the filter-bank
matmul is batched differently. Measured difference: about 2e-6.

Not covered, on purpose: a clip so quiet that a mel bin stays below the 2^-24 log guard in every
frame. That bin's log-mel is then constant up to rounding, its standard deviation tiny, and the
standardisation magnifies float32 rounding (2e-6 before it) by 1/std in both implementations
alike: an ill-conditioned feature, not a disagreement. Speech with silences has no such bin.
"""

import numpy as np
import pytest
import torch
from scipy.signal import lfilter
from transformers import ParakeetFeatureExtractor

from fer.models.melspec import LogMelSpectrogram, stft_sizes

SR = 16000
ATOL = 1e-4


def speech_like(num_samples: int, seed: int) -> np.ndarray:
    """Voiced speech stand-in: a harmonic source with a gliding pitch through three vowel
    formants, syllable-rate loudness, breath noise, and a stretch of exact digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, np.pi))  # Hz
    phase = 2 * np.pi * np.cumsum(f0) / SR
    source = sum(np.sin(k * phase) / k for k in range(1, 28))  # harmonics up to ~4.5 kHz
    voice = source
    for freq, bw in ((700, 130), (1220, 70), (2600, 160)):  # formant resonators of an /a/
        r = np.exp(-np.pi * bw / SR)
        voice = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SR), r * r], voice)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5  # ~6 syllables a second
    wave = voice * envelope + 0.003 * rng.standard_normal(num_samples)
    wave[num_samples // 3 : num_samples // 3 + SR // 4] = 0.0  # digital silence: the log guard
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def noise(num_samples: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def reference(waves: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    out = ParakeetFeatureExtractor()(list(waves), sampling_rate=SR, return_tensors="pt", return_attention_mask=True)
    return out["input_features"], out["attention_mask"].bool()


@pytest.fixture(scope="module")
def melspec():
    return LogMelSpectrogram(SR, 80)


def test_stft_sizes_are_25ms_window_10ms_hop():
    assert stft_sizes(16000) == (512, 400, 160)


@pytest.mark.parametrize("kind", ["noise", "speech", "quiet-speech"])
@pytest.mark.parametrize("num_samples", [16000, 32000, 48037])
def test_matches_parakeet_feature_extractor(melspec, kind, num_samples):
    make = {
        "noise": noise,
        "speech": speech_like,
        "quiet-speech": lambda n, seed: speech_like(n, seed) * 0.01,  # -40 dB
    }[kind]
    waves = np.stack([make(num_samples, seed) for seed in range(3)])
    ref_feats, ref_mask = reference(waves)
    feats, mask = melspec(torch.from_numpy(waves))
    assert feats.shape == ref_feats.shape == (3, 1 + num_samples // 160, 80)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(feats, ref_feats, atol=ATOL, rtol=0)


def test_speech_like_signal_has_structure(melspec):
    """The synthetic speech must exercise what speech does: silent frames and formant peaks."""
    wave = torch.from_numpy(speech_like(32000, 0))[None]
    feats, mask = melspec(wave)
    valid = feats[0, mask[0]]
    assert (valid.std(0) > 0.5).all()  # every bin varies over time (syllables, silence)
    assert valid.mean(1).max() - valid.mean(1).min() > 1.0  # loud vs silent frames


def test_batch_equals_one_clip_at_a_time(melspec):
    waves = torch.from_numpy(np.stack([speech_like(24000, s) for s in range(4)]))
    batch, _ = melspec(waves)
    for i in range(4):
        torch.testing.assert_close(batch[i : i + 1], melspec(waves[i : i + 1])[0])


def test_padding_frame_is_zero_and_masked(melspec):
    feats, mask = melspec(torch.from_numpy(noise(16000, 0))[None])
    assert mask[0, :-1].all() and not mask[0, -1]
    assert (feats[0, -1] == 0).all()
    valid = feats[0, :-1]
    torch.testing.assert_close(valid.mean(0), torch.zeros(80), atol=1e-4, rtol=0)  # standardised
    torch.testing.assert_close(valid.std(0), torch.ones(80), atol=1e-3, rtol=0)


def test_float32_under_bf16_autocast(melspec):
    wave = torch.from_numpy(speech_like(16000, 1))[None]
    plain, _ = melspec(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, _ = melspec(wave.bfloat16())
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, melspec(wave.bfloat16().float())[0])
    assert (auto - plain).abs().max() < 0.1  # only the bf16 rounding of the input remains


def test_builds_and_runs_on_meta_device():
    with torch.device("meta"):
        m = LogMelSpectrogram(SR, 80)
        feats, mask = m(torch.empty(2, 32000))
    assert m.filters.is_meta and feats.is_meta
    assert feats.shape == (2, 201, 80) and mask.shape == (2, 201)


def test_too_short_input_is_an_error(melspec):
    with pytest.raises(ValueError, match="need at least 2"):
        melspec(torch.zeros(1, 300))


def test_no_persistent_state(melspec):
    assert melspec.state_dict() == {}
    assert sum(p.numel() for p in melspec.parameters()) == 0


@pytest.mark.gpu
def test_cuda_matches_cpu(melspec):
    waves = torch.from_numpy(np.stack([speech_like(48000, s) for s in range(4)]))
    cpu, _ = melspec(waves)
    gpu_module = LogMelSpectrogram(SR, 80).cuda()
    gpu, mask = gpu_module(waves.cuda())
    assert gpu.is_cuda and mask.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=ATOL, rtol=0)
