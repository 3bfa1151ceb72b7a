"""Synthetic RAVDESS with planted ground truth: ``generate`` writes it, ``truth`` documents it.

``generate_cremad`` (module ``cremad``) writes a synthetic CREMA-D with the same planted cues.

Modules: ``truth`` (which emotions differ in voice / face), ``plan`` (clip list, identities,
random draws), ``face`` (photo and placement), ``motion`` (facial warps), ``voice`` (speech
synthesis), ``writer`` (mp4 muxing), ``generate`` (orchestration and manifest).
"""

from fer.data.synth.cremad import generate_cremad
from fer.data.synth.generate import MANIFEST, generate
from fer.data.synth.truth import FACE_GROUPS, VOICE_GROUPS

__all__ = ["FACE_GROUPS", "MANIFEST", "VOICE_GROUPS", "generate", "generate_cremad"]
