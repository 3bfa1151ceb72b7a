"""Training-time augmentation of one prepared clip, the same random draw for all T frames.

Visual: a random resized crop within the square face crop, a horizontal flip (keypoints mirrored
and left/right identities swapped), colour jitter. Audio: a time shift, a gain, additive noise at
a random SNR. Every random draw comes from a numpy Generator seeded from ``(seed, epoch, clip
index, stream)``: the result depends on nothing else (not on worker count or loading order), and
each augmentation has its own stream, so switching one on or off leaves the draws of the others
unchanged.

Frames here are float (T, 3, H, W) in [0, 1]; keypoints are (T, 6, 2) (x, y) fractions of the
crop, continuous coordinates (pixel i covers [i, i + 1) / W), so a flip is ``x -> 1 - x`` and a
crop of columns [x0, x0 + w) maps ``x -> (x * W - x0) / w``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fer.data.config import AugmentConfig

# BlazeFace order: right eye, left eye, nose tip, mouth centre, right ear, left ear. A mirror
# image shows the right eye where the left one was, so the identities swap with the flip.
FLIP_KEYPOINTS = (1, 0, 2, 3, 5, 4)

# Independent random streams, one per augmentation.
_CROP, _FLIP, _JITTER, _SHIFT, _GAIN, _NOISE = range(6)

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision uses


def sample_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """The generator for one augmentation of one clip in one epoch."""
    return np.random.default_rng([seed, epoch, index, stream])


def resized_crop(frames: torch.Tensor, keypoints: torch.Tensor,
                 box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop the same box from every frame and resize it back to the frame size.

    Args:
        frames: (T, 3, H, W) float.
        keypoints: (T, 6, 2) (x, y) fractions of the frame.
        box: (left, top, width, height) in pixels, inside the frame.

    Returns:
        Frames (T, 3, H, W) and keypoints as fractions of the cropped region (a keypoint outside
        the box falls outside [0, 1]).
    """
    left, top, width, height = box
    _, _, h, w = frames.shape
    crop = frames[:, :, top:top + height, left:left + width]
    out = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    scale = keypoints.new_tensor([w, h])
    offset = keypoints.new_tensor([left, top])
    size = keypoints.new_tensor([width, height])
    return out, (keypoints * scale - offset) / size


def hflip(frames: torch.Tensor, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: frames flipped, keypoint x mirrored and left/right identities swapped.

    Args:
        frames: (T, 3, H, W).
        keypoints: (T, 6, 2) (x, y) fractions.

    Returns:
        Flipped frames and keypoints, same shapes.
    """
    kp = keypoints[:, list(FLIP_KEYPOINTS)].clone()
    kp[..., 0] = 1.0 - kp[..., 0]
    return frames.flip(-1), kp


def grey(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) RGB -> (T, 1, H, W) luma."""
    weights = frames.new_tensor(_GREY).view(1, 3, 1, 1)
    return (frames * weights).sum(1, keepdim=True)


def jitter(frames: torch.Tensor, brightness: float, contrast: float,
           saturation: float) -> torch.Tensor:
    """Colour jitter with given factors (1 = unchanged), in that order, clamped to [0, 1].

    Contrast blends towards the mean grey of the whole clip rather than of each frame, so every
    frame goes through one and the same colour map.

    Args:
        frames: (T, 3, H, W) in [0, 1].
        brightness: multiplies every value.
        contrast: blend factor against the clip's mean grey level.
        saturation: blend factor against each pixel's grey level.

    Returns:
        (T, 3, H, W) in [0, 1].
    """
    out = (frames * brightness).clamp(0.0, 1.0)
    out = (contrast * out + (1.0 - contrast) * grey(out).mean()).clamp(0.0, 1.0)
    return (saturation * out + (1.0 - saturation) * grey(out)).clamp(0.0, 1.0)


def time_shift(audio: torch.Tensor, shift: int, circular: bool) -> torch.Tensor:
    """Shift a waveform by ``shift`` samples (positive = later).

    Args:
        audio: (L,).
        shift: samples, ``|shift| < L``.
        circular: wrap around; otherwise the vacated samples are zeros.

    Returns:
        (L,).
    """
    if circular:
        return torch.roll(audio, shift)
    out = torch.zeros_like(audio)
    if shift >= 0:
        out[shift:] = audio[:audio.shape[0] - shift]
    else:
        out[:shift] = audio[-shift:]
    return out


def gain(audio: torch.Tensor, db: float) -> torch.Tensor:
    """Scale a waveform by ``db`` decibels of amplitude."""
    return audio * 10.0 ** (db / 20.0)


def add_noise(audio: torch.Tensor, snr_db: float, noise: torch.Tensor) -> torch.Tensor:
    """Add ``noise`` rescaled so that the signal-to-noise power ratio is exactly ``snr_db``.

    A silent waveform has no level to set the noise against and is returned unchanged.

    Args:
        audio: (L,).
        snr_db: target 10 log10(P_signal / P_noise).
        noise: (L,) any non-zero noise, e.g. standard normal.

    Returns:
        (L,).
    """
    signal_power = audio.pow(2).mean()
    if signal_power == 0:
        return audio
    target = signal_power / 10.0 ** (snr_db / 10.0)
    return audio + noise * torch.sqrt(target / noise.pow(2).mean())


class VisualAugment:
    """Random crop, flip and colour jitter, drawn once per clip and applied to all its frames.

    Args:
        crop: random resized crop within the face crop.
        flip: horizontal flip with probability ``flip_p``.
        color_jitter: brightness, contrast and saturation factors from 1 +- their amplitude.
        crop_scale: range of the kept fraction of the crop's area; most of the face stays.
        crop_ratio: range of the kept region's width / height (log-uniform).
        flip_p: probability of a flip.
        brightness: amplitude of the brightness factor.
        contrast: amplitude of the contrast factor.
        saturation: amplitude of the saturation factor.
    """

    def __init__(self, *, crop: bool, flip: bool, color_jitter: bool,
                 crop_scale: tuple[float, float] = (0.75, 1.0),
                 crop_ratio: tuple[float, float] = (0.9, 1.0 / 0.9), flip_p: float = 0.5,
                 brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2):
        self.crop, self.flip, self.color_jitter = crop, flip, color_jitter
        self.crop_scale, self.crop_ratio, self.flip_p = crop_scale, crop_ratio, flip_p
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def crop_box(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw (left, top, width, height) of the region to keep."""
        area = rng.uniform(*self.crop_scale) * height * width
        ratio = math.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        return left, top, w, h

    def __call__(self, frames: torch.Tensor, keypoints: torch.Tensor, *, seed: int, epoch: int,
                 index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one clip.

        Args:
            frames: (T, 3, H, W) in [0, 1].
            keypoints: (T, 6, 2) (x, y) fractions of the crop.
            seed, epoch, index: identify the draw.

        Returns:
            Frames (T, 3, H, W) in [0, 1] and keypoints moved with the image content.
        """
        if self.crop:
            rng = sample_rng(seed, epoch, index, _CROP)
            box = self.crop_box(rng, frames.shape[-2], frames.shape[-1])
            frames, keypoints = resized_crop(frames, keypoints, box)
        if self.flip and sample_rng(seed, epoch, index, _FLIP).random() < self.flip_p:
            frames, keypoints = hflip(frames, keypoints)
        if self.color_jitter:
            rng = sample_rng(seed, epoch, index, _JITTER)
            b, c, s = (rng.uniform(1.0 - a, 1.0 + a)
                       for a in (self.brightness, self.contrast, self.saturation))
            frames = jitter(frames, b, c, s)
        return frames, keypoints


class AudioAugment:
    """Random time shift, gain and additive Gaussian noise, in that order.

    Args:
        shift: time shift by up to ``shift_fraction`` of the length either way.
        gain: gain drawn uniformly in +-``gain_db`` decibels.
        noise: Gaussian noise at an SNR drawn uniformly from ``snr_db``.
        shift_fraction: largest shift as a fraction of the waveform length.
        shift_circular: wrap the shifted waveform around instead of padding with zeros.
        gain_db: largest gain magnitude in dB.
        snr_db: (low, high) SNR range in dB; noise is added after the gain, so the SNR holds for
            the waveform the model sees.
    """

    def __init__(self, *, shift: bool, gain: bool, noise: bool, shift_fraction: float = 0.1,
                 shift_circular: bool = True, gain_db: float = 6.0,
                 snr_db: tuple[float, float] = (10.0, 30.0)):
        self.shift, self.gain, self.noise = shift, gain, noise
        self.shift_fraction, self.shift_circular = shift_fraction, shift_circular
        self.gain_db, self.snr_db = gain_db, snr_db

    def __call__(self, audio: torch.Tensor, *, seed: int, epoch: int, index: int) -> torch.Tensor:
        """Augment one waveform (L,); returns (L,)."""
        if self.shift:
            most = int(self.shift_fraction * audio.shape[0])
            n = int(sample_rng(seed, epoch, index, _SHIFT).integers(-most, most + 1))
            audio = time_shift(audio, n, self.shift_circular)
        if self.gain:
            audio = gain(audio, sample_rng(seed, epoch, index, _GAIN).uniform(-self.gain_db, self.gain_db))
        if self.noise:
            rng = sample_rng(seed, epoch, index, _NOISE)
            snr = rng.uniform(*self.snr_db)
            noise = torch.from_numpy(rng.standard_normal(audio.shape[0])).to(audio.dtype)
            audio = add_noise(audio, snr, noise)
        return audio


def build_visual_augment(cfg: AugmentConfig) -> VisualAugment | None:
    """The visual augmentation the config switches on, or None when all of it is off."""
    if not cfg.visual:
        return None
    return VisualAugment(crop=cfg.crop, flip=cfg.flip, color_jitter=cfg.color_jitter)


def build_audio_augment(cfg: AugmentConfig) -> AudioAugment | None:
    """The audio augmentation the config switches on, or None when all of it is off."""
    if not cfg.audio:
        return None
    return AudioAugment(shift=cfg.audio_shift, gain=cfg.audio_gain, noise=cfg.audio_noise)
