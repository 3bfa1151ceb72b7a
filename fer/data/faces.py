"""Face detection on RGB frames: MediaPipe Tasks ``FaceDetector`` with BlazeFace short range.

One detector per process (MediaPipe graphs are not shared across processes). Each frame gives
at most one face: the largest detected box, because the actor faces the camera and fills a
large part of the frame while false positives in the background are small.

MediaPipe logs from C++ (LiteRT environment, XNNPACK delegate, tensor alignment) on every new
detector: those lines go to ``mediapipe.log`` beside the model file, unless ``runner.py -v``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.verbosity import open_log, stderr_to

# BlazeFace keypoint order; "right" is the subject's right, which lies at smaller image x.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the frame it was found in.

    Attributes:
        box: float32 (4,) as x0, y0, x1, y1.
        keypoints: float32 (6, 2) as (x, y), in ``KEYPOINT_NAMES`` order.
        score: detector confidence in [0, 1].
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float


class FaceDetector:
    """Detects the main face in RGB uint8 frames (IMAGE mode, one frame at a time).

    Args:
        model_path: BlazeFace short-range ``.tflite`` (see ``fer.data.face_model``).
        min_confidence: detections scoring below this are discarded.
        log_path: where MediaPipe's native log lines go (default: ``mediapipe.log`` beside the
            model); with ``runner.py -v`` they stay on stderr.
    """

    def __init__(self, model_path: str | Path, min_confidence: float = 0.5, log_path: str | Path | None = None):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_confidence,
        )
        self._log = open_log(Path(log_path) if log_path else Path(model_path).parent / "mediapipe.log")
        with stderr_to(self._log):
            self._detector = vision.FaceDetector.create_from_options(options)

    def detect(self, frame: np.ndarray) -> Face | None:
        """Find the largest face in one frame.

        Args:
            frame: uint8 (H, W, 3) RGB.

        Returns:
            The face, or None when none is detected.
        """
        import mediapipe as mp

        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        height, width = frame.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        with stderr_to(self._log):  # the first call warns about tensor alignment
            detections = self._detector.detect(image).detections
        if not detections:
            return None
        best = max(detections, key=lambda d: (d.bounding_box.width * d.bounding_box.height,
                                              d.categories[0].score))
        bb = best.bounding_box
        box = np.array([bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height],
                       dtype=np.float32)
        # Tasks keypoints are fractions of the image; (6, 2) pixels.
        keypoints = np.array([[k.x * width, k.y * height] for k in best.keypoints], dtype=np.float32)
        return Face(box=box, keypoints=keypoints, score=float(best.categories[0].score))

    def close(self) -> None:
        """Release the MediaPipe graph (also done by the context manager)."""
        with stderr_to(self._log):
            self._detector.close()
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
