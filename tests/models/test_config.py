"""Model configs validate without torch, and their declared names equal the registries."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from fer.models import config as C
from fer.models.audio import AUDIO_ENCODERS
from fer.models.classifier import CLASSIFIER_POOLING
from fer.models.fusion import FUSION_FREEZE
from fer.models.pooling import SEGMENT_POOLING
from fer.models.roi import ROI_SELECTION
from fer.models.visual import VISUAL_BACKENDS, VISUAL_ENCODERS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("declared, registry", [
    (C.SEGMENT_POOLINGS, SEGMENT_POOLING),
    (C.AUDIO_ENCODER_LAYERS, AUDIO_ENCODERS),
    (C.VISUAL_BACKENDS, VISUAL_BACKENDS),
    (C.VISUAL_ENCODERS, VISUAL_ENCODERS),
    (C.ROI_SELECTIONS, ROI_SELECTION),
    (C.FUSION_FREEZES, FUSION_FREEZE),
    (C.CLASSIFIER_POOLINGS, CLASSIFIER_POOLING),
])
def test_declared_names_equal_the_registry(declared, registry):
    assert sorted(declared) == registry.names()


def test_audio_layer_counts_equal_the_presets():
    assert C.AUDIO_ENCODER_LAYERS == {n: AUDIO_ENCODERS.get(n)["num_hidden_layers"] for n in AUDIO_ENCODERS.names()}


def test_bad_names_list_the_known_ones():
    with pytest.raises(ValidationError, match="unknown segment pooling 'median'; known: attention, avg, learnable, max"):
        C.TemporalConfig(pooling="median")
    with pytest.raises(ValidationError, match="18 layers requested but encoder 'fastconformer-large' has 17"):
        C.AudioConfig(encoder="fastconformer-large", layers=18)


def test_resolving_a_config_imports_no_heavy_library():
    code = ("import sys\nfrom fer.config import resolve_config\nresolve_config('rtx3050')\n"
            "print(','.join(m for m in ('torch', 'transformers', 'timm', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
