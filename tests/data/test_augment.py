"""Clip augmentation: keypoints follow the image content, values and determinism."""

import math

import numpy as np
import pytest
import torch

from fer.data.augment import (
    FLIP_KEYPOINTS,
    AudioAugment,
    VisualAugment,
    add_noise,
    build_audio_augment,
    build_visual_augment,
    gain,
    grey,
    hflip,
    jitter,
    resized_crop,
    time_shift,
)
from fer.data.config import AugmentConfig

SIZE = 64
# Six distinct keypoint positions, (x, y) fractions, well inside the frame.
KEYPOINTS = torch.tensor([[0.35, 0.40], [0.62, 0.38], [0.50, 0.55],
                          [0.48, 0.72], [0.22, 0.47], [0.80, 0.52]])


def blob_frames(keypoints: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Black frames (T, 3, S, S) with a Gaussian blob at each keypoint, keypoint k in its own
    frame t = k (so each blob can be located on its own)."""
    t = keypoints.shape[0]
    centres = (torch.arange(size) + 0.5) / size
    frames = torch.zeros(t, 3, size, size)
    for i in range(t):
        x, y = keypoints[i, i]
        g = torch.exp(-((centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2) / (2 * 0.03 ** 2))
        frames[i] = g
    return frames


def centroid(frame: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre (x, y) of a (3, H, W) frame, as fractions, continuous coords."""
    w = frame.mean(0)
    w = torch.where(w > 0.2 * w.max(), w, torch.zeros_like(w))
    h, wd = w.shape
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(wd) + 0.5) / wd
    return torch.stack([(w.sum(0) * xs).sum() / w.sum(), (w.sum(1) * ys).sum() / w.sum()])


def clip_keypoints(t: int = 6) -> torch.Tensor:
    return KEYPOINTS.expand(t, 6, 2).clone()


def test_blob_helper_finds_the_keypoint():
    frames = blob_frames(clip_keypoints())
    for k in range(6):
        assert torch.allclose(centroid(frames[k]), KEYPOINTS[k], atol=0.5 / SIZE)


def test_hflip_moves_keypoints_with_the_face_and_swaps_sides():
    kp = clip_keypoints()
    frames = blob_frames(kp)
    out, out_kp = hflip(frames, kp)
    for k in range(6):
        mirrored = torch.tensor([1.0 - KEYPOINTS[k, 0], KEYPOINTS[k, 1]])
        # The blob drawn at keypoint k is now at the mirrored place ...
        assert torch.allclose(centroid(out[k]), mirrored, atol=0.5 / SIZE)
        # ... and that place carries the mirrored identity (right eye <-> left eye, ears).
        assert torch.allclose(out_kp[k, FLIP_KEYPOINTS[k]], mirrored)
    assert FLIP_KEYPOINTS[0] == 1 and FLIP_KEYPOINTS[4] == 5 and FLIP_KEYPOINTS[2] == 2
    back, back_kp = hflip(out, out_kp)
    assert torch.equal(back, frames) and torch.allclose(back_kp, kp)


@pytest.mark.parametrize("box", [(0, 0, SIZE, SIZE), (5, 3, 52, 56), (10, 8, 48, 48), (2, 9, 55, 50),
                                 (16, 14, 28, 28)])
def test_resized_crop_keeps_keypoints_on_the_same_content(box):
    kp = clip_keypoints()
    out, out_kp = resized_crop(blob_frames(kp), kp, box)
    assert out.shape == (6, 3, SIZE, SIZE)
    left, top, w, h = box
    expected = (KEYPOINTS * SIZE - torch.tensor([left, top])) / torch.tensor([w, h])
    checked = 0
    for k in range(6):
        assert torch.allclose(out_kp[k, k], expected[k])
        if ((expected[k] > 0.1) & (expected[k] < 0.9)).all():  # blob not cut by the box edge
            assert torch.allclose(centroid(out[k]), out_kp[k, k], atol=0.2 / SIZE)
            checked += 1
    assert checked >= 3


def test_full_box_crop_is_identity():
    kp = clip_keypoints()
    frames = blob_frames(kp)
    out, out_kp = resized_crop(frames, kp, (0, 0, SIZE, SIZE))
    assert torch.allclose(out, frames, atol=1e-6) and torch.allclose(out_kp, kp)


def test_crop_boxes_stay_inside_and_keep_most_of_the_face():
    aug = VisualAugment(crop=True, flip=False, color_jitter=False, crop_scale=(0.75, 1.0))
    boxes = [aug.crop_box(np.random.default_rng(i), SIZE, SIZE) for i in range(200)]
    for left, top, w, h in boxes:
        assert left >= 0 and top >= 0 and left + w <= SIZE and top + h <= SIZE
        assert 0.70 <= w * h / SIZE ** 2 <= 1.0
    assert len(set(boxes)) > 50


def test_visual_augment_flip_and_crop_follow_blobs():
    kp = clip_keypoints()
    frames = blob_frames(kp)
    crop_only = VisualAugment(crop=True, flip=False, color_jitter=False)
    crop_flip = VisualAugment(crop=True, flip=True, color_jitter=False, flip_p=0.5)
    flips = 0
    for index in range(8):
        out, out_kp = crop_flip(frames, kp, seed=3, epoch=0, index=index)
        # The flip has its own random stream, so the crop is the one drawn without the flip.
        cropped, cropped_kp = crop_only(frames, kp, seed=3, epoch=0, index=index)
        flipped = not torch.equal(out, cropped)
        if flipped:
            flips += 1
            assert torch.equal(out, cropped.flip(-1))
            assert torch.allclose(out_kp, hflip(cropped, cropped_kp)[1])
        for k in range(6):
            where = out_kp[k, FLIP_KEYPOINTS[k] if flipped else k]
            if ((where > 0.1) & (where < 0.9)).all():  # blob not cut by the crop's edge
                assert torch.allclose(centroid(out[k]), where, atol=1.0 / SIZE)
    assert 0 < flips < 8


def test_jitter_values_and_keypoints_unchanged():
    frames = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    assert torch.allclose(jitter(frames, 1.0, 1.0, 1.0), frames)
    assert torch.allclose(jitter(frames, 1.5, 1.0, 1.0), (frames * 1.5).clamp(0, 1))
    low = jitter(frames, 1.0, 0.5, 1.0)
    # Contrast keeps the clip's mean grey and halves the distance to it.
    assert torch.allclose(grey(low).mean(), grey(frames).mean(), atol=1e-6)
    assert torch.allclose(low - grey(frames).mean(), 0.5 * (frames - grey(frames).mean()), atol=1e-6)
    grey_out = jitter(frames, 1.0, 1.0, 0.0)
    assert torch.allclose(grey_out, grey(frames).expand_as(frames), atol=1e-6)

    kp = clip_keypoints(4)
    aug = VisualAugment(crop=False, flip=False, color_jitter=True)
    out, out_kp = aug(frames, kp, seed=0, epoch=0, index=0)
    assert torch.equal(out_kp, kp)
    assert not torch.allclose(out, frames) and out.min() >= 0 and out.max() <= 1
    # One colour map for the whole clip: a frame repeated T times stays repeated.
    same = frames[:1].expand(4, -1, -1, -1)
    out_same, _ = aug(same, kp, seed=0, epoch=0, index=5)
    assert torch.allclose(out_same, out_same[:1].expand_as(out_same))


def test_time_shift_values():
    audio = torch.arange(10, dtype=torch.float32)
    assert torch.equal(time_shift(audio, 3, True), torch.tensor([7., 8, 9, 0, 1, 2, 3, 4, 5, 6]))
    assert torch.equal(time_shift(audio, -2, True), torch.tensor([2., 3, 4, 5, 6, 7, 8, 9, 0, 1]))
    assert torch.equal(time_shift(audio, 3, False), torch.tensor([0., 0, 0, 0, 1, 2, 3, 4, 5, 6]))
    assert torch.equal(time_shift(audio, -2, False), torch.tensor([2., 3, 4, 5, 6, 7, 8, 9, 0, 0]))
    assert torch.equal(time_shift(audio, 0, False), audio)


def test_gain_and_noise_values():
    audio = torch.sin(torch.linspace(0, 200, 16000))
    assert torch.allclose(gain(audio, 20 * math.log10(2)), 2 * audio, atol=1e-6)
    assert torch.allclose(gain(audio, -20.0), audio / 10, atol=1e-7)
    noise = torch.randn(16000, generator=torch.Generator().manual_seed(0))
    for snr in (0.0, 10.0, 25.0):
        noisy = add_noise(audio, snr, noise)
        measured = 10 * torch.log10(audio.pow(2).mean() / (noisy - audio).pow(2).mean())
        assert abs(measured.item() - snr) < 1e-3
    silent = torch.zeros(100)
    assert torch.equal(add_noise(silent, 10.0, noise[:100]), silent)


def test_audio_augment_ranges_and_stream_independence():
    audio = torch.sin(torch.linspace(0, 300, 8000)) + 0.1
    shift_only = AudioAugment(shift=True, gain=False, noise=False, shift_fraction=0.1)
    shift_gain = AudioAugment(shift=True, gain=True, noise=False, gain_db=6.0)
    shifts, gains = set(), []
    for index in range(30):
        s = shift_only(audio, seed=1, epoch=2, index=index)
        n = next(k for k in range(-800, 801) if torch.equal(torch.roll(audio, k), s))
        shifts.add(n)
        g = shift_gain(audio, seed=1, epoch=2, index=index)
        ratio = (g / s)[s.abs() > 0.05]
        # Switching the gain on does not change the shift drawn for the same clip.
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
        gains.append(20 * math.log10(ratio[0].item()))
    assert len(shifts) > 10 and max(abs(n) for n in shifts) <= 800
    assert all(-6.0 <= g <= 6.0 for g in gains) and max(gains) - min(gains) > 3.0

    noisy = AudioAugment(shift=False, gain=False, noise=True, snr_db=(10.0, 30.0))
    for index in range(10):
        out = noisy(audio, seed=0, epoch=0, index=index)
        snr = 10 * torch.log10(audio.pow(2).mean() / (out - audio).pow(2).mean()).item()
        assert 10.0 - 1e-3 <= snr <= 30.0 + 1e-3


def test_augment_is_deterministic_and_varies_with_seed_and_epoch():
    frames = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    kp = clip_keypoints(3)
    audio = torch.randn(4000, generator=torch.Generator().manual_seed(2))
    vis = VisualAugment(crop=True, flip=True, color_jitter=True)
    aud = AudioAugment(shift=True, gain=True, noise=True)

    def run(seed, epoch, index):
        f, k = vis(frames, kp, seed=seed, epoch=epoch, index=index)
        return f, k, aud(audio, seed=seed, epoch=epoch, index=index)

    base = run(0, 0, 4)
    for a, b in zip(base, run(0, 0, 4)):
        assert torch.equal(a, b)
    for other in (run(1, 0, 4), run(0, 1, 4), run(0, 0, 5)):
        assert not torch.equal(base[0], other[0])
        assert not torch.equal(base[2], other[2])


def test_builders_follow_the_config():
    assert build_visual_augment(AugmentConfig()) is None
    assert build_audio_augment(AugmentConfig()) is None
    vis = build_visual_augment(AugmentConfig(flip=True))
    assert (vis.crop, vis.flip, vis.color_jitter) == (False, True, False)
    aud = build_audio_augment(AugmentConfig(audio_noise=True, audio_shift=True))
    assert (aud.shift, aud.gain, aud.noise) == (True, False, True)
