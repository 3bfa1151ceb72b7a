"""Audio branch encoder: waveform (B, L) -> log-mel (B, Tm, 80) -> FastConformer -> (B, Ta, Da).

The FastConformer is transformers' ``ParakeetEncoder`` (NeMo's architecture, not a copy of it).
``AUDIO_ENCODERS`` maps a preset name to its ``ParakeetEncoderConfig``; ``pretrained`` then loads a
hub id or local directory holding either a bare ``ParakeetEncoder`` or a Parakeet model with a head
(``ParakeetForCTC`` and friends, encoder weights under ``encoder.``), keeping the first ``layers``.

    enc = build_audio_encoder(AudioConfig(encoder="tiny"), sample_rate=16000)
    enc(torch.randn(2, 32000)).shape  # (2, audio_frames(32000, sample_rate=16000), enc.out_dim)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from transformers import ParakeetEncoderConfig

from fer.models.pooling import SEGMENT_POOLING
from fer.models.registry import Registry

AUDIO_ENCODERS: Registry = Registry("audio encoder")


def fastconformer_config(*, hidden: int, layers: int, heads: int, ff: int, subsampling_channels: int = 256) -> ParakeetEncoderConfig:
    """FastConformer with NeMo's fixed choices: 80 mel bins, conv kernel 9, 8x depthwise-striding
    subsampling (three stride-2 3x3 convolutions), biases on, dropout 0.1, no layer drop."""
    return ParakeetEncoderConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ff,
        conv_kernel_size=9,
        subsampling_factor=8,
        subsampling_conv_channels=subsampling_channels,
        num_mel_bins=80,
        attention_bias=True,
        convolution_bias=True,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        layerdrop=0.0,
    )


@AUDIO_ENCODERS.register("tiny")
def tiny() -> ParakeetEncoderConfig:
    """Toy width for tests and the demo (about 0.2M parameters)."""
    return fastconformer_config(hidden=64, layers=2, heads=4, ff=128, subsampling_channels=16)


@AUDIO_ENCODERS.register("fastconformer-large")
def fastconformer_large() -> ParakeetEncoderConfig:
    """FastConformer-L (NeMo ``stt_en_fastconformer_*_large``): 108,762,112 parameters."""
    return fastconformer_config(hidden=512, layers=17, heads=8, ff=2048)


@AUDIO_ENCODERS.register("parakeet-0.6b")
def parakeet_06b() -> ParakeetEncoderConfig:
    """The encoder of ``nvidia/parakeet-ctc-0.6b`` (FastConformer-XL): 607,749,120 parameters."""
    return fastconformer_config(hidden=1024, layers=24, heads=8, ff=4096)


class AudioConfig(BaseModel):
    """Audio branch: which FastConformer, its weights, how much of it, and segment pooling."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = "tiny"  # AUDIO_ENCODERS preset: the architecture
    pretrained: str | None = None  # hub id or local directory; None = random initialisation
    layers: int | None = Field(default=None, ge=1)  # keep the first N conformer layers; None = all
    freeze: bool = True  # encoder weights fixed and kept in eval mode
    pooling: str = "attention"  # SEGMENT_POOLING strategy

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        if name not in AUDIO_ENCODERS:
            raise ValueError(f"unknown audio encoder {name!r}; known: {', '.join(AUDIO_ENCODERS.names())}")
        return name

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, name: str) -> str:
        if name not in SEGMENT_POOLING:
            raise ValueError(f"unknown segment pooling {name!r}; known: {', '.join(SEGMENT_POOLING.names())}")
        return name

    @field_validator("layers")
    @classmethod
    def _layers_fit(cls, layers: int | None, info: ValidationInfo) -> int | None:
        encoder = info.data.get("encoder")  # absent when the encoder name itself was invalid
        if layers is None or encoder is None:
            return layers
        total = AUDIO_ENCODERS.get(encoder)().num_hidden_layers
        if layers > total:
            raise ValueError(f"{layers} layers requested but encoder {encoder!r} has {total}")
        return layers
