"""Log-mel front end of the FastConformer, in torch, batched, on the module's device.

Reproduces transformers' ``ParakeetFeatureExtractor`` (NeMo's ``AudioToMelSpectrogramPreprocessor``)
for a batch of equal-length waveforms: pre-emphasis 0.97, centred STFT (512-point FFT, 25 ms
symmetric Hann window, 10 ms hop, zero padding), power spectrum, Slaney mel filter bank,
log(x + 2^-24), then per-clip, per-mel-bin standardisation over the valid frames (unbiased
variance, std + 1e-5). The centred STFT yields 1 + L // hop frames of which the extractor counts
L // hop as valid; the last one is zeroed and masked, as there.

Running it inside the model keeps data loading to raw waveforms and lets the GPU do the STFT.
"""

from __future__ import annotations

import torch
from torch import nn

PREEMPHASIS = 0.97
LOG_GUARD = 2.0**-24  # added before the log so digital silence stays finite
STD_EPS = 1e-5


def stft_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(n_fft, window, hop) in samples: 25 ms window, 10 ms hop, FFT the next power of two."""
    window = round(0.025 * sample_rate)
    hop = round(0.010 * sample_rate)
    return 1 << (window - 1).bit_length(), window, hop


def valid_mel_frames(num_samples: int, sample_rate: int) -> int:
    """Frames the extractor counts as valid for a waveform of ``num_samples`` samples."""
    return num_samples // stft_sizes(sample_rate)[2]


class LogMelSpectrogram(nn.Module):
    """Waveform (B, L) -> normalised log-mel features (B, 1 + L // hop, n_mels) and valid mask.

    Args:
        sample_rate: Hz of the input waveform.
        n_mels: mel bins (the encoder's ``num_mel_bins``).
    """

    def __init__(self, sample_rate: int, n_mels: int):
        from transformers.audio_utils import mel_filter_bank  # the extractor's own filter bank

        super().__init__()
        self.n_fft, self.win_length, self.hop = stft_sizes(sample_rate)
        filters = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        # torch.tensor (not from_numpy) so a meta-device build stays on meta; not persistent, as
        # these are fixed functions of the sample rate and no checkpoint should carry them.
        self.register_buffer("filters", torch.tensor(filters.T, dtype=torch.float32), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=False), persistent=False)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            audio: (B, L) float waveform.
        Returns:
            features (B, Tm, n_mels) float32 with Tm = 1 + L // hop, and mask (B, Tm) bool of the
            L // hop valid frames (the final frame is zero and masked).
        """
        # The STFT and the log need float32 whatever the surrounding autocast says.
        with torch.autocast(device_type="cuda" if audio.is_cuda else "cpu", enabled=False):
            x = audio.float()
            x = torch.cat([x[:, :1], x[:, 1:] - PREEMPHASIS * x[:, :-1]], dim=1)  # (B, L)
            spec = torch.stft(
                x, self.n_fft, hop_length=self.hop, win_length=self.win_length, window=self.window,
                center=True, pad_mode="constant", return_complex=True,
            )  # (B, F, Tm)
            power = spec.real.square() + spec.imag.square()  # (B, F, Tm)
            mel = torch.log(self.filters @ power + LOG_GUARD).transpose(1, 2)  # (B, Tm, M)

            valid = audio.shape[1] // self.hop
            if valid < 2:
                raise ValueError(f"log-mel: {audio.shape[1]} samples give {valid} frames; need at least 2")
            mask = torch.arange(mel.shape[1], device=mel.device) < valid  # (Tm,)
            frames = mel[:, :valid]  # (B, valid, M)
            mean = frames.mean(1, keepdim=True)
            std = frames.var(1, keepdim=True, unbiased=True).sqrt()
            feats = ((mel - mean) / (std + STD_EPS)) * mask[None, :, None]
        return feats, mask.expand(audio.shape[0], -1)
