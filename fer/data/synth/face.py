"""The actor's face: a real photograph placed in the frame with a per-actor look.

The photo is ``matplotlib``'s ``grace_hopper.jpg`` (512 x 600). Every actor shows the same
person, told apart by scale, position, mirror flip, colour tint, gamma and background, and
every clip jitters scale and position a little. ``place_face`` gives the photo-to-frame
mapping and the face box and keypoints in frame pixels (the manifest's ground truth);
``compose_frame`` renders the still frame that ``motion.py`` then animates.

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), as MediaPipe
reports fractions of the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

PHOTO_SIZE = (512, 600)  # width, height

# BlazeFace keypoints of the photo (right eye, left eye, nose tip, mouth centre, right ear,
# left ear; "right" = the subject's right = smaller x), photo pixels. Measured once with
# MediaPipe FaceDetector (BlazeFace short range, blaze_face_short_range.tflite from
# ``python -m fer.data.face_model``) on the whole photo and on four square crops centred on
# (263, 245) with half-sizes 120, 160, 200 and 250 px; each value is the median of the five.
PHOTO_KEYPOINTS = np.array([[222.6, 193.2], [311.1, 188.9], [268.4, 238.4],
                            [266.9, 283.5], [176.4, 213.2], [354.6, 212.1]], dtype=np.float64)
# The detector's face box in the same five measurements (medians): brows to chin, ear to ear.
PHOTO_BOX = np.array([166.0, 143.0, 365.0, 340.0])
# The person (cap, head, shoulders) in the photo, traced by eye on a 10-px grid; the rest
# (flag and sky) is replaced by the actor's background.
PERSON_OUTLINE = np.array([
    (263, 22), (310, 28), (340, 48), (355, 75), (372, 110), (374, 150), (378, 200), (367, 250),
    (357, 290), (345, 318), (400, 345), (470, 375), (505, 400), (512, 420), (512, 600),
    (10, 600), (15, 520), (30, 430), (70, 395), (150, 365), (195, 335), (170, 300), (160, 260),
    (152, 210), (150, 160), (160, 100), (178, 60), (215, 32)], dtype=np.int32)
_FLIP_ORDER = [1, 0, 2, 3, 5, 4]  # a mirrored face swaps right/left eye and ear


@lru_cache(maxsize=1)
def load_photo() -> tuple[np.ndarray, np.ndarray]:
    """The photo as float32 RGB (600, 512, 3) in [0, 255] and its soft person mask (600, 512)."""
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != PHOTO_SIZE[::-1]:
        raise FileNotFoundError(f"{path}: expected a {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} photo")
    mask = np.zeros(PHOTO_SIZE[::-1], np.uint8)
    cv2.fillPoly(mask, [PERSON_OUTLINE], 255)
    blue, red = bgr[..., 0].astype(np.int16), bgr[..., 2].astype(np.int16)
    mask[(blue - red > 40) & (blue > 110)] = 0  # sky that the traced outline still holds
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 1.5)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32), mask


@dataclass(frozen=True)
class Look:
    """An actor's appearance: colour, exposure and background (fixed for all their clips)."""

    tint: tuple[float, float, float]
    gain: float
    gamma: float
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle: float


@dataclass(frozen=True)
class Pose:
    """Where the face sits in one clip: box height as a fraction of the frame, box centre as
    fractions of the frame, mirrored or not."""

    face_height: float
    centre: tuple[float, float]
    flip: bool


@dataclass(frozen=True)
class Placement:
    """The photo-to-frame mapping of one clip and the ground truth it implies.

    Attributes:
        scale: frame pixels per photo pixel.
        offset: (x, y) frame position of photo point (0, 0), or of (512, 0) when flipped.
        flip: mirrored horizontally.
        box: (4,) face box x0, y0, x1, y1 in frame pixels.
        keypoints: (6, 2) BlazeFace keypoints in frame pixels.
    """

    scale: float
    offset: tuple[float, float]
    flip: bool
    box: np.ndarray
    keypoints: np.ndarray

    def affine(self) -> np.ndarray:
        """(2, 3) mapping of continuous photo coordinates to frame coordinates."""
        sx = -self.scale if self.flip else self.scale
        tx = self.offset[0] + (self.scale * PHOTO_SIZE[0] if self.flip else 0.0)
        return np.array([[sx, 0.0, tx], [0.0, self.scale, self.offset[1]]])


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def place_face(pose: Pose, size: int) -> Placement:
    """Scale and move the photo so that its face box has the pose's height and centre.

    Args:
        pose: the clip's pose.
        size: frame width and height in pixels.

    Returns:
        The placement, with the face box and keypoints in frame pixels.
    """
    scale = pose.face_height * size / (PHOTO_BOX[3] - PHOTO_BOX[1])
    centre = np.array([(PHOTO_BOX[0] + PHOTO_BOX[2]) / 2, (PHOTO_BOX[1] + PHOTO_BOX[3]) / 2])
    if pose.flip:
        centre[0] = PHOTO_SIZE[0] - centre[0]
    offset = (pose.centre[0] * size - scale * centre[0], pose.centre[1] * size - scale * centre[1])
    draft = Placement(scale, offset, pose.flip, np.zeros(4), np.zeros((6, 2)))
    corners = _apply(draft.affine(), PHOTO_BOX.reshape(2, 2))
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
    keypoints = _apply(draft.affine(), PHOTO_KEYPOINTS)
    if pose.flip:
        keypoints = keypoints[_FLIP_ORDER]
    return Placement(scale, offset, pose.flip, box, keypoints)


def _background(look: Look, size: int) -> np.ndarray:
    """A two-colour linear gradient (size, size, 3) float32."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = np.clip(0.5 + np.cos(look.background_angle) * grid[None, :]
                   + np.sin(look.background_angle) * grid[:, None], 0.0, 1.0)[..., None]
    c0, c1 = (np.array(c, np.float32) for c in look.background)
    return c0 + (c1 - c0) * ramp


def compose_frame(placement: Placement, look: Look, size: int) -> np.ndarray:
    """Render the still frame of a clip: the placed photo over the actor's background.

    Returns:
        uint8 (size, size, 3) RGB.
    """
    photo, mask = load_photo()
    person = photo * mask[..., None]  # premultiplied: filtering never mixes in the old sky
    if placement.scale < 1.0:  # anti-alias before shrinking
        sigma = 0.5 * (1.0 / placement.scale - 1.0) + 1e-3
        person, mask = cv2.GaussianBlur(person, (0, 0), sigma), cv2.GaussianBlur(mask, (0, 0), sigma)
    # warpAffine works on pixel indices (centres at integers): shift continuous coords by 0.5.
    affine = placement.affine()
    affine[:, 2] += affine[:, :2].sum(axis=1) * 0.5 - 0.5
    warp = dict(dsize=(size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    person = cv2.warpAffine(person, affine, **warp)
    alpha = cv2.warpAffine(mask, affine, **warp)[..., None]
    frame = person + (1.0 - alpha) * _background(look, size)
    frame = 255.0 * (np.clip(frame, 0, 255) / 255.0) ** look.gamma
    frame *= look.gain * np.array(look.tint, np.float32)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)
