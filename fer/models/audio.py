"""Audio branch encoder: waveform (B, L) -> log-mel (B, Tm, 80) -> FastConformer -> (B, Ta, Da).

The FastConformer is transformers' ``ParakeetEncoder`` (NeMo's architecture, not a copy of it).
``AUDIO_ENCODERS`` maps a preset name to its ``ParakeetEncoderConfig`` fields; ``pretrained`` loads a
hub id or local directory holding either a bare ``ParakeetEncoder`` or a Parakeet model with a head
(``ParakeetForCTC`` and friends, encoder weights under ``encoder.``), keeping the first ``layers``.

    enc = build_audio_encoder(AudioConfig(encoder="tiny"), sample_rate=16000)
    enc(torch.randn(2, 32000)).shape  # (2, audio_frames(32000, sample_rate=16000), enc.out_dim)
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from fer.models.config import AudioConfig
from fer.models.melspec import LogMelSpectrogram, valid_mel_frames
from fer.models.registry import Registry

if TYPE_CHECKING:
    from transformers import ParakeetEncoder, ParakeetEncoderConfig

AUDIO_ENCODERS: Registry[dict] = Registry("audio encoder")


def fastconformer(*, hidden: int, layers: int, heads: int, ff: int, subsampling_channels: int = 256) -> dict:
    """``ParakeetEncoderConfig`` fields of a FastConformer with NeMo's fixed choices: 80 mel bins,
    conv kernel 9, 8x depthwise-striding subsampling (three stride-2 3x3 convolutions), biases on,
    dropout 0.1, no layer drop."""
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ff,
        conv_kernel_size=9,
        subsampling_factor=8,
        subsampling_conv_channels=subsampling_channels,
        subsampling_conv_kernel_size=3,
        subsampling_conv_stride=2,
        num_mel_bins=80,
        attention_bias=True,
        convolution_bias=True,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        layerdrop=0.0,
    )


# Toy width for tests and the demo (147,136 parameters).
AUDIO_ENCODERS.register("tiny")(fastconformer(hidden=64, layers=2, heads=4, ff=128, subsampling_channels=16))
# FastConformer-L (NeMo stt_en_fastconformer_*_large): 108,762,112 parameters.
AUDIO_ENCODERS.register("fastconformer-large")(fastconformer(hidden=512, layers=17, heads=8, ff=2048))
# The encoder of nvidia/parakeet-ctc-0.6b (FastConformer-XL): 607,749,120 parameters.
AUDIO_ENCODERS.register("parakeet-0.6b")(fastconformer(hidden=1024, layers=24, heads=8, ff=4096))


def encoder_config(name: str, *, layers: int | None = None) -> ParakeetEncoderConfig:
    """The ``ParakeetEncoderConfig`` of preset ``name``, keeping the first ``layers`` (None = all)."""
    from transformers import ParakeetEncoderConfig  # heavy; configs import this module

    fields = dict(AUDIO_ENCODERS.get(name))
    fields["num_hidden_layers"] = layers or fields["num_hidden_layers"]
    return ParakeetEncoderConfig(**fields)


# Fields a pretrained checkpoint must share with the named preset, so a run's logged
# ``model.audio.encoder`` always describes the weights it used. Depth may differ (``layers``).
ARCHITECTURE_FIELDS = (
    "hidden_size", "num_attention_heads", "intermediate_size", "conv_kernel_size", "subsampling_factor",
    "subsampling_conv_channels", "subsampling_conv_kernel_size", "subsampling_conv_stride", "num_mel_bins",
)


# ParakeetEncoderConfig.to_dict() entries that say nothing about the function computed.
_CONFIG_BOOKKEEPING = ("transformers_version", "architectures", "dtype", "torch_dtype")


def audio_frames(num_samples: int, *, sample_rate: int, subsampling_factor: int = 8) -> int:
    """Encoder output length Ta for ``num_samples`` of audio (what ``AudioEncoder`` returns).

    Valid mel frames L // hop, then each stride-2, kernel-3, padding-1 subsampling convolution
    maps n frames to floor((n - 1) / 2) + 1, as ``ParakeetEncoder`` counts its output mask.
    """
    frames = valid_mel_frames(num_samples, sample_rate)
    for _ in range(subsampling_factor.bit_length() - 1):
        frames = (frames - 1) // 2 + 1
    return frames


class AudioEncoder(nn.Module):
    """Waveform (B, L) -> FastConformer frames (B, Ta, Da), log-mel front end included.

    Args:
        encoder: a ``ParakeetEncoder`` (random or pretrained, already truncated).
        sample_rate: Hz of the incoming waveform.
        frozen: fix the encoder's weights and keep it in eval mode (no dropout, BatchNorm
            running statistics untouched) even when the model around it trains.
    """

    def __init__(self, encoder: ParakeetEncoder, *, sample_rate: int, frozen: bool):
        super().__init__()
        config = encoder.config
        self.melspec = LogMelSpectrogram(sample_rate, config.num_mel_bins)
        self.encoder = encoder
        self.sample_rate = sample_rate
        self.subsampling_factor = config.subsampling_factor
        self.out_dim = config.hidden_size
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> AudioEncoder:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def build_settings(self) -> dict:
        """What the output depends on besides the weights: the sample rate and the FastConformer's
        whole config, read from the built encoder (so nothing its builder set can be missed).

        Left out: the checkpoint's folder (``_name_or_path``; a moved checkpoint computes the same)
        and the config's bookkeeping (library version, architectures, dtype), which the weights
        hash and the library versions in the feature-cache key already cover.
        """
        config = {k: v for k, v in self.encoder.config.to_dict().items()
                  if not k.startswith("_") and k not in _CONFIG_BOOKKEEPING}
        return {"sample_rate": self.sample_rate, "encoder": config}

    def frames(self, num_samples: int) -> int:
        """Output length Ta for ``num_samples`` of audio."""
        return audio_frames(num_samples, sample_rate=self.sample_rate, subsampling_factor=self.subsampling_factor)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        feats, mask = self.melspec(audio)  # (B, Tm, M), (B, Tm)
        # The mask hides the extractor's padding frame from attention and convolution, as in
        # the pipeline the checkpoints were trained with.
        hidden = self.encoder(input_features=feats, attention_mask=mask).last_hidden_state  # (B, Ta', D)
        # Ta' can exceed Ta by one frame, computed from the padding frame alone: drop it.
        return hidden[:, : self.frames(audio.shape[1])]  # (B, Ta, D)


class _DropLoadReport(logging.Filter):
    """Drops transformers' per-key load report: dropped layers and a head's weights are expected
    there, and ``load_parakeet_encoder`` checks the one thing that matters (nothing missing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _quiet_load_report():
    # A filter, not a higher level: transformers runs extra checks when this logger's level is raised.
    log = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def pretrained_encoder_config(source: str) -> ParakeetEncoderConfig:
    """The encoder config inside a checkpoint: a bare ``ParakeetEncoder`` or a Parakeet model with
    a head (CTC, RNN-T, TDT) whose ``encoder_config`` it is.

    Raises:
        OSError: ``source`` cannot be read (with ``HF_HUB_OFFLINE=1``: not in the local cache).
        ValueError: the checkpoint holds no Parakeet encoder.
    """
    from transformers import AutoConfig, ParakeetEncoderConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise OSError(f"audio encoder weights {source!r}: {exc}") from exc
    encoder_config = config if config.model_type == "parakeet_encoder" else getattr(config, "encoder_config", None)
    if not isinstance(encoder_config, ParakeetEncoderConfig):
        raise ValueError(f"audio encoder weights {source!r}: a {config.model_type!r} checkpoint holds no ParakeetEncoder")
    return copy.deepcopy(encoder_config)


def load_parakeet_encoder(source: str, *, layers: int | None = None) -> ParakeetEncoder:
    """Pretrained FastConformer weights from a hub id or a local directory, first ``layers`` kept.

    Accepts what ``pretrained_encoder_config`` accepts; a head's weights (``ctc_head``, decoder,
    joint) and those of dropped layers are ignored, any missing encoder weight is an error. The
    hub is reached only as ``HF_HUB_OFFLINE`` allows (transformers reads it). Loaded in float32.

    Args:
        source: hub id (``nvidia/parakeet-ctc-0.6b``) or directory written by ``save_pretrained``.
        layers: keep the first N conformer layers; None keeps all.
    Returns:
        the encoder, with ``config.num_hidden_layers`` equal to the layers kept.
    Raises:
        ValueError: no Parakeet encoder inside, fewer layers than asked, or weights missing.
    """
    from transformers import ParakeetEncoder

    config = pretrained_encoder_config(source)
    if layers is not None and layers > config.num_hidden_layers:
        raise ValueError(f"audio encoder weights {source!r}: {layers} layers requested, checkpoint has {config.num_hidden_layers}")
    config.num_hidden_layers = layers or config.num_hidden_layers
    with _quiet_load_report():
        encoder, info = ParakeetEncoder.from_pretrained(source, config=config, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"audio encoder weights {source!r}: checkpoint lacks {sorted(info['missing_keys'])[:5]} ...")
    return encoder


def build_audio_encoder(cfg: AudioConfig, *, sample_rate: int, load_weights: bool = True) -> AudioEncoder:
    """The audio encoder described by ``cfg``.

    Args:
        cfg: the ``model.audio`` section.
        sample_rate: Hz of the waveforms the data layer delivers (``data.sample_rate``).
        load_weights: False builds the preset architecture without reading ``cfg.pretrained``
            (profiling on the meta device, ``model.random_weights``); the weights are then random.
    Returns:
        ``AudioEncoder`` mapping (B, L) -> (B, Ta, Da), with ``out_dim`` = Da.
    Raises:
        ValueError: a checkpoint whose architecture differs from the named preset, or a
            pretrained encoder fed audio at a sample rate other than 16 kHz.
    """
    from transformers import ParakeetEncoder

    preset = AUDIO_ENCODERS.get(cfg.encoder)
    if cfg.pretrained is not None and load_weights:
        if sample_rate != 16000:
            raise ValueError(f"pretrained FastConformers take 16 kHz audio; data.sample_rate is {sample_rate}")
        found = pretrained_encoder_config(cfg.pretrained)
        differ = [f for f in ARCHITECTURE_FIELDS if getattr(found, f) != preset[f]]
        if differ:
            detail = ", ".join(f"{f}={getattr(found, f)} (preset {preset[f]})" for f in differ)
            raise ValueError(f"model.audio.pretrained {cfg.pretrained!r} is not a {cfg.encoder!r}: {detail}")
        encoder = load_parakeet_encoder(cfg.pretrained, layers=cfg.layers)
    else:
        encoder = ParakeetEncoder(encoder_config(cfg.encoder, layers=cfg.layers))
    return AudioEncoder(encoder, sample_rate=sample_rate, frozen=cfg.freeze)
