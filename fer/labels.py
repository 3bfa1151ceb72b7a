"""RAVDESS emotion labels in their fixed order (code 01..08 -> index 0..7)."""

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
