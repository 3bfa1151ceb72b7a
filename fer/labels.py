"""Emotion labels per dataset, each in its fixed order (output index -> emotion name).

``EMOTIONS`` is RAVDESS's (code 01..08 -> index 0..7). A dataset's label set sizes the
classifier head, names the per-class metrics, the confusion rows and the prediction columns,
and is stored with every trained model (``model/labels.json``).
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
NUM_CLASSES = len(EMOTIONS)

DATASET_EMOTIONS: dict[str, tuple[str, ...]] = {
    "ravdess": EMOTIONS,
    # CREMA-D's codes ANG DIS FEA HAP NEU SAD, in that (alphabetical) order.
    "crema-d": ("angry", "disgust", "fearful", "happy", "neutral", "sad"),
}


def emotions(dataset: str) -> tuple[str, ...]:
    """The label set of ``dataset`` (``"ravdess"`` or ``"crema-d"``), in output-index order.

    Raises:
        KeyError: an unknown dataset, named with the known ones.
    """
    try:
        return DATASET_EMOTIONS[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASET_EMOTIONS)}") from None
