"""BlazeFace wrapper on a real photograph: the box and keypoints land on the face."""

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from fer.data.face_model import MANUAL_STEPS, installed_face_model
from fer.data.faces import KEYPOINT_NAMES, FaceDetector


@pytest.fixture(scope="module")
def detector():
    path = installed_face_model()
    if path is None:
        pytest.fail("BlazeFace model missing; tests never skip the face path.\n" + MANUAL_STEPS)
    with FaceDetector(path) as det:
        yield det


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """Grace Hopper's portrait, (600, 512, 3): her face fills the upper middle of the frame."""
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def test_face_box_and_keypoints_on_grace_hopper(detector, hopper):
    face = detector.detect(hopper)
    assert face is not None and face.score > 0.8
    kp = dict(zip(KEYPOINT_NAMES, face.keypoints))
    x0, y0, x1, y1 = face.box
    height, width = hopper.shape[:2]
    # A head-and-shoulders portrait: the face is a fifth to a half of the width, in the upper
    # middle of the picture.
    assert 0.2 * width < x1 - x0 < 0.5 * width and 0.7 < (x1 - x0) / (y1 - y0) < 1.4
    assert 0.3 * width < (x0 + x1) / 2 < 0.7 * width and 0.2 * height < (y0 + y1) / 2 < 0.6 * height
    # Face geometry: eyes side by side above the nose, the mouth below it, ears outside the eyes.
    assert kp["right_eye"][0] < kp["nose_tip"][0] < kp["left_eye"][0]  # subject's right = image left
    assert max(kp["right_eye"][1], kp["left_eye"][1]) < kp["nose_tip"][1] < kp["mouth_center"][1]
    assert kp["right_ear"][0] < kp["right_eye"][0] and kp["left_ear"][0] > kp["left_eye"][0]
    eye_gap = kp["left_eye"][0] - kp["right_eye"][0]
    assert 0.25 * (x1 - x0) < eye_gap < 0.6 * (x1 - x0)
    inner = np.stack([kp[n] for n in ("right_eye", "left_eye", "nose_tip", "mouth_center")])
    assert ((inner >= face.box[:2]) & (inner <= face.box[2:])).all()


@pytest.mark.parametrize("dx, dy", [(60, 40), (-40, 30), (20, -50)])
def test_detections_follow_the_face_when_it_moves(detector, hopper, dx, dy):
    """Shifting the picture by (dx, dy) inside the same frame shifts box and keypoints with it."""
    base = detector.detect(hopper)
    height, width = hopper.shape[:2]
    moved_img = np.zeros_like(hopper)
    moved_img[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        hopper[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    moved = detector.detect(moved_img)
    assert moved is not None
    # BlazeFace regresses from anchors, so a shift is matched to within ~5% of the face size.
    tol = 0.06 * (base.box[2] - base.box[0])
    np.testing.assert_allclose(moved.box - base.box, [dx, dy, dx, dy], atol=tol)
    np.testing.assert_allclose(moved.keypoints - base.keypoints, np.tile([dx, dy], (6, 1)), atol=tol)


def test_largest_face_is_chosen(detector, hopper):
    small = cv2.resize(hopper, (hopper.shape[1] // 2, hopper.shape[0] // 2), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((hopper.shape[0], hopper.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    canvas[:, small.shape[1]:] = hopper
    alone_small = detector.detect(small)
    face = detector.detect(canvas)
    assert alone_small is not None  # the small copy is detectable on its own ...
    assert face.box[0] > small.shape[1] - 10  # ... but the big copy on the right wins
    assert face.box[2] - face.box[0] > 1.5 * (alone_small.box[2] - alone_small.box[0])


def test_no_face_gives_none(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) is None
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) is None


@pytest.mark.parametrize("frame", [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.uint8),
                                   np.zeros((64, 64, 4), np.uint8)])
def test_wrong_frame_type_is_rejected(detector, frame):
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        detector.detect(frame)
