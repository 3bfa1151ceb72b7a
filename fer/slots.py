"""The encoders' places in a batch: which key each reads and the key of its precomputed output.

A frozen encoder's output can be computed once and fed back instead of its input
(``fer.train.features``): the dataset then puts ``audio_feats`` in the item instead of ``audio``,
and ``FERModel`` skips the encoder when it finds them. This table is the one place those names
are written; the dataset, the model and the feature cache all read it. Torch-free, so that
loader workers and config-only code import it for nothing.

    AUDIO.input_key, AUDIO.feature_key  # "audio" (B, L), "audio_feats" (B, Ta, Da)
    slot_of_feature("visual_feats")     # VISUAL
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSlot:
    """One encoder's input and output keys in a batch dict.

    Args:
        modality: ``"audio"`` or ``"visual"``: the branch the encoder opens.
        input_key: what the encoder reads.
        feature_key: its precomputed output, which replaces ``input_key`` in a batch.
    """

    modality: str
    input_key: str
    feature_key: str


AUDIO = FeatureSlot("audio", input_key="audio", feature_key="audio_feats")  # (B, L) -> (B, Ta, Da)
VISUAL = FeatureSlot("visual", input_key="frames", feature_key="visual_feats")  # (B, T, 3, H, W) -> (B, T, N, Dv)
FEATURE_SLOTS = (AUDIO, VISUAL)


def slot_of_feature(feature_key: str) -> FeatureSlot:
    """The slot whose precomputed output is called ``feature_key``.

    Raises:
        ValueError: no slot has that feature key; the message lists the known ones.
    """
    for slot in FEATURE_SLOTS:
        if slot.feature_key == feature_key:
            return slot
    known = ", ".join(sorted(s.feature_key for s in FEATURE_SLOTS))
    raise ValueError(f"unknown feature key {feature_key!r}; known: {known}")
