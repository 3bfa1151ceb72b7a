"""Facial motion: expression, talking and blinks as smooth warps around the face keypoints.

An *action* (brow raise, smile, jaw drop, ...) is a few Gaussian-weighted displacements at
anatomical points. Points and displacements live in the face frame: origin between the eyes,
x along the eye line towards the subject's left eye, y towards the chin, unit = inter-ocular
distance (IOD); displacements are per unit amplitude = 0.1 IOD. The anatomy was read off the
photo on a 10-px grid relative to the measured eye keypoints, and is left-right symmetric so a
mirrored actor needs no special case.

A frame is the still frame warped by ``e(t) * expression + talk(t) * jaw + blink(t) * lids``:
``e`` rises from onset to apex, holds and partly relaxes (offset); ``talk`` opens the jaw on
every syllable's vowel (lip-synced with ``voice.py``); a dark mouth interior fills the lip gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from fer.data.synth.voice import Syllable

_INNER_BROWS = ((-0.22, -0.22), (0.22, -0.22))
_OUTER_BROWS = ((-0.6, -0.2), (0.6, -0.2))
_UPPER_LIDS = ((-0.5, -0.11), (0.5, -0.11))
_LOWER_LIDS = ((-0.5, 0.05), (0.5, 0.05))
_CORNERS = ((-0.41, 0.98), (0.41, 0.98))
UPPER_LIP, LIP_LINE, LOWER_LIP, CHIN = (0.0, 0.92), (0.0, 0.97), (0.0, 1.04), (0.0, 1.57)


def _pair(points, dx_out: float, dy: float, sigma: float) -> list[tuple[float, ...]]:
    """Mirror-symmetric moves: dx_out > 0 moves both points away from the face midline."""
    return [(x, y, dx_out * np.sign(x), dy, sigma) for x, y in points]


# action -> moves (x, y, dx, dy, sigma), all in IOD units except dx, dy (0.1 IOD per amplitude).
ACTIONS: dict[str, list[tuple[float, ...]]] = {
    "brow_raise": _pair(_INNER_BROWS, 0.0, -1.0, 0.2) + _pair(_OUTER_BROWS, 0.0, -1.0, 0.2),
    "brow_lower": _pair(_INNER_BROWS, -0.6, 1.0, 0.18) + _pair(_OUTER_BROWS, 0.0, 0.6, 0.2),
    "brow_inner_raise": _pair(_INNER_BROWS, -0.3, -1.0, 0.16),
    "eye_widen": _pair(_UPPER_LIDS, 0.0, -1.0, 0.11) + _pair(_LOWER_LIDS, 0.0, 0.4, 0.1),
    "eye_narrow": _pair(_UPPER_LIDS, 0.0, 0.7, 0.11) + _pair(_LOWER_LIDS, 0.0, -0.7, 0.1),
    "blink": _pair(_UPPER_LIDS, 0.0, 1.0, 0.12),
    "smile": _pair(_CORNERS, 1.0, -1.0, 0.16) + _pair(((-0.5, 0.55), (0.5, 0.55)), 0.0, -0.6, 0.2),
    "lip_corner_depress": _pair(_CORNERS, 0.2, 1.0, 0.15),
    "jaw_drop": [(*LOWER_LIP, 0.0, 1.0, 0.3), (*CHIN, 0.0, 1.0, 0.4)] + _pair(_CORNERS, 0.0, 0.4, 0.15),
    "lip_press": _pair(_CORNERS, -0.8, 0.0, 0.15) + [(*UPPER_LIP, 0.0, 0.4, 0.12),
                                                     (*LOWER_LIP, 0.0, -0.4, 0.12)],
    "upper_lip_raise": [(*UPPER_LIP, 0.0, -1.0, 0.18)] + _pair(_CORNERS, 0.0, -0.2, 0.15)
    + _pair(((-0.18, 0.55), (0.18, 0.55)), 0.0, -0.6, 0.12),
    "lip_stretch": _pair(_CORNERS, 1.0, 0.3, 0.16),
}
MOUTH_INTERIOR = (40.0, 22.0, 24.0)  # RGB of the open mouth
BLINK_CLOSURE, BLINK_SIGMA_S = 1.3, 0.05  # lids move 0.13 IOD for about 100 ms
# Actions that open the mouth move only what lies below the lip line (face-frame y), so the
# lips part instead of sliding down together; the gap gets the mouth interior.
_BELOW_LIP_LINE = {"jaw_drop"}


def _gain(moves) -> float:
    """Scale that makes an action's largest displacement at its own points equal its largest
    step, so that overlapping Gaussians do not add up beyond the nominal amplitude."""
    pts = np.array([m[:2] for m in moves])
    steps = np.array([m[2:4] for m in moves])
    sigma = np.array([m[4] for m in moves])
    weight = np.exp(-((pts[:, None] - pts[None]) ** 2).sum(-1) / (2 * sigma[None] ** 2))
    return float(np.linalg.norm(steps, axis=1).max() / np.linalg.norm(weight @ steps, axis=1).max())


ACTION_GAIN = {name: _gain(moves) for name, moves in ACTIONS.items()}


@dataclass(frozen=True)
class FaceMotion:
    """Everything that moves in one clip.

    Attributes:
        actions: apex amplitude per action name (after per-clip jitter).
        onset, rise, offset, fall: envelope times in seconds (start of rise, its length,
            start of relaxation, its length).
        residual: fraction of the apex kept after relaxing.
        talk: jaw opening per syllable at full vowel openness, amplitude units.
        blinks: blink centre times in seconds.
    """

    actions: dict[str, float]
    onset: float
    rise: float
    offset: float
    fall: float
    residual: float
    talk: float
    blinks: tuple[float, ...]

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Expression strength in [0, 1] at times ``t`` (seconds)."""
        def smooth(x):
            x = np.clip(x, 0.0, 1.0)
            return x * x * (3 - 2 * x)
        return smooth((t - self.onset) / self.rise) * (
            1 - (1 - self.residual) * smooth((t - self.offset) / self.fall))

    def talking(self, t: np.ndarray, syllables: list[Syllable]) -> np.ndarray:
        """Jaw opening (amplitude units) at times ``t``: a bump over every vowel."""
        out = np.zeros_like(t)
        for syl in syllables:
            x = np.clip((t - syl.vowel_start) / (syl.end - syl.vowel_start), 0.0, 1.0)
            out += self.talk * syl.openness * np.sin(np.pi * x) ** 2
        return out

    def blinking(self, t: np.ndarray) -> np.ndarray:
        """Lid closure (amplitude units) at times ``t``."""
        return sum((BLINK_CLOSURE * np.exp(-0.5 * ((t - b) / BLINK_SIGMA_S) ** 2)
                    for b in self.blinks), np.zeros_like(t))


class FaceFrame:
    """The face frame of one placement: maps anatomy (IOD units) to frame pixels.

    Args:
        keypoints: (6, 2) BlazeFace keypoints in frame pixels.
    """

    def __init__(self, keypoints: np.ndarray):
        right_eye, left_eye = keypoints[0], keypoints[1]
        self.origin = (right_eye + left_eye) / 2
        self.iod = float(np.linalg.norm(left_eye - right_eye))
        self.u = (left_eye - right_eye) / self.iod
        self.v = np.array([-self.u[1], self.u[0]])

    def point(self, x: float, y: float) -> np.ndarray:
        """Frame pixel of face-frame point (x, y)."""
        return self.origin + self.iod * (x * self.u + y * self.v)

    def step(self, dx: float, dy: float) -> np.ndarray:
        """Frame pixel displacement of (dx, dy) amplitude units."""
        return 0.1 * self.iod * (dx * self.u + dy * self.v)


def action_field(name: str, frame: FaceFrame, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Forward displacement field of one unit of an action on a pixel grid.

    Args:
        name: a key of ``ACTIONS``.
        frame: the clip's face frame.
        xs, ys: (h, w) continuous pixel-centre coordinates.

    Returns:
        float32 (2, h, w) displacement (dx, dy) in pixels.
    """
    field = np.zeros((2, *xs.shape), np.float32)
    for x, y, dx, dy, sigma in ACTIONS[name]:
        px, py = frame.point(x, y)
        weight = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * (sigma * frame.iod) ** 2))
        step = frame.step(dx, dy) * ACTION_GAIN[name]
        field[0] += step[0] * weight
        field[1] += step[1] * weight
    if name in _BELOW_LIP_LINE:
        depth = ((xs - frame.origin[0]) * frame.v[0] + (ys - frame.origin[1]) * frame.v[1])
        # 0 above the lip line, 1 below, over a 0.05 IOD ramp
        cut = np.clip((depth / frame.iod - LIP_LINE[1]) / 0.05 + 0.5, 0.0, 1.0)
        field *= cut * cut * (3 - 2 * cut)
    return field


def _mouth_interior(img: np.ndarray, frame: FaceFrame, gap: float) -> None:
    """Darken the lip gap (``gap`` pixels tall) in place with a soft ellipse."""
    centre = frame.point(*LIP_LINE) + frame.v * gap / 2
    half = int(0.5 * frame.iod) + 2
    cx, cy = int(centre[0]), int(centre[1])
    x0, y0 = max(cx - half, 0), max(cy - half, 0)
    x1, y1 = min(cx + half, img.shape[1]), min(cy + half, img.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    angle = float(np.degrees(np.arctan2(frame.u[1], frame.u[0])))
    shift = 4  # sub-pixel ellipse: coordinates in 1/16 pixel
    c = (int(round((centre[0] - x0 - 0.5) * 16)), int(round((centre[1] - y0 - 0.5) * 16)))
    axes = (int(round(0.22 * frame.iod * 16)), max(int(round(gap / 2 * 16)), 1))
    cv2.ellipse(mask, c, axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.04 * frame.iod, 0.6))[..., None]
    patch = img[y0:y1, x0:x1].astype(np.float32)
    dark = np.array(MOUTH_INTERIOR, np.float32)
    img[y0:y1, x0:x1] = (patch + 0.85 * mask * (dark - patch)).astype(np.uint8)


def _taper(shape: tuple[int, int], margin: float = 0.12) -> np.ndarray:
    """float32 (h, w) window: 1 inside, smoothly 0 at the border over ``margin`` of each side."""
    def ramp(n):
        x = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / (margin * n)
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)
    return (ramp(shape[0])[:, None] * ramp(shape[1])[None, :]).astype(np.float32)


def render_frames(still: np.ndarray, box: np.ndarray, keypoints: np.ndarray, motion: FaceMotion,
                  syllables: list[Syllable], times: np.ndarray,
                  noise: np.ndarray) -> Iterator[np.ndarray]:
    """Animate a still frame.

    Args:
        still: uint8 (H, W, 3) from ``face.compose_frame``.
        box: (4,) face box in frame pixels; warps are computed around it.
        keypoints: (6, 2) BlazeFace keypoints in frame pixels.
        motion: the clip's motion.
        syllables: the utterance (for the talking mouth).
        times: (T,) frame times in seconds.
        noise: int16 (K, H, W, 3) sensor-noise bank, frame i adds ``noise[i % K]`` (saturating).

    Yields:
        uint8 (H, W, 3) frames.
    """
    height, width = still.shape[:2]
    frame = FaceFrame(keypoints)
    # Warps are computed on a region around the face box and tapered to zero at its border.
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(box[0] - 0.15 * w, 0)), int(max(box[1] - 0.2 * h, 0))
    x1, y1 = int(min(box[2] + 0.15 * w, width)), int(min(box[3] + 0.3 * h, height))
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    taper = _taper(gy.shape)
    expression = taper * sum((amp * action_field(name, frame, gx + 0.5, gy + 0.5)
                              for name, amp in motion.actions.items()),
                             np.zeros((2, *gx.shape), np.float32))
    jaw = taper * action_field("jaw_drop", frame, gx + 0.5, gy + 0.5)
    lids = taper * action_field("blink", frame, gx + 0.5, gy + 0.5)
    lower_lip = np.clip(np.round(frame.point(*LOWER_LIP) - (x0, y0) - 0.5).astype(int), 0,
                        (gx.shape[1] - 1, gx.shape[0] - 1))
    gap_per_unit = float(np.linalg.norm(jaw[:, lower_lip[1], lower_lip[0]]))
    strength = motion.envelope(times)
    talk = motion.talking(times, syllables)
    blink = motion.blinking(times)
    jaw_apex = motion.actions.get("jaw_drop", 0.0)
    brighten = np.clip(noise, 0, 255).astype(np.uint8)  # cv2.add/subtract saturate: fast uint8 noise
    darken = np.clip(-noise, 0, 255).astype(np.uint8)
    for i in range(len(times)):
        # (2, h, w) forward displacement of this frame
        field = float(strength[i]) * expression + float(talk[i]) * jaw + float(blink[i]) * lids
        img = still.copy()
        # Backward mapping: the pixel at q shows the still at q - D(q) (D is small and smooth).
        img[y0:y1, x0:x1] = cv2.remap(still, gx - field[0], gy - field[1], cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REFLECT)
        gap = (strength[i] * jaw_apex + talk[i]) * gap_per_unit
        if gap > 0.6:
            _mouth_interior(img, frame, gap)
        k = i % len(noise)
        yield cv2.subtract(cv2.add(img, brighten[k]), darken[k])
