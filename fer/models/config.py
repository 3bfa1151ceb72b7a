"""Model configuration: which modalities, how many segments, and every part's own settings.

Kept free of torch, timm and transformers so that validating a config (``ablations.yaml``,
``study --dry-run``) starts in well under a second. The names a part may take are declared here
and must equal its registry in the part's module (``tests/models/test_config.py`` checks), so an
unknown name is an error at load time, with the known names listed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Registry names, one tuple per registry (fer.models.<part>.<REGISTRY>.names()).
SEGMENT_POOLINGS = ("attention", "avg", "learnable", "max")  # pooling.SEGMENT_POOLING
AUDIO_ENCODER_LAYERS = {"tiny": 2, "fastconformer-large": 17, "parakeet-0.6b": 24}  # audio.AUDIO_ENCODERS
VISUAL_BACKENDS = ("timm", "transformers")  # visual.VISUAL_BACKENDS
VISUAL_ENCODERS = ("siglip2-b16", "tiny")  # visual.VISUAL_ENCODERS
ROI_SELECTIONS = ("grid", "learned", "prior", "prior+learned", "random")  # roi.ROI_SELECTION
FUSION_FREEZES = ("frozen", "lora", "unfrozen")  # fusion.FUSION_FREEZE
CLASSIFIER_POOLINGS = ("attention", "last", "max", "mean")  # classifier.CLASSIFIER_POOLING


def one_of(kind: str, name: str, names) -> str:
    """``name`` if it is one of ``names``; else an error listing the known names."""
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(names))}")
    return name


def _named(kind: str, names) -> Any:
    """A ``str`` field type that must be one of ``names``; a bad value's error lists them."""
    return Annotated[str, AfterValidator(lambda name: one_of(kind, name, names))]


AudioEncoderName = _named("audio encoder", AUDIO_ENCODER_LAYERS)
SegmentPoolingName = _named("segment pooling", SEGMENT_POOLINGS)
RoiSelectionName = _named("ROI selection", ROI_SELECTIONS)
VisualBackendName = _named("visual backend", VISUAL_BACKENDS)
VisualEncoderName = _named("visual encoder", VISUAL_ENCODERS)
FusionFreezeName = _named("freeze mode", FUSION_FREEZES)
ClassifierPoolingName = _named("classifier pooling", CLASSIFIER_POOLINGS)


class AudioConfig(BaseModel):
    """Audio branch: which FastConformer, its weights, how much of it, and segment pooling."""

    model_config = ConfigDict(extra="forbid")

    encoder: AudioEncoderName = "tiny"  # AUDIO_ENCODERS preset: the architecture
    pretrained: str | None = None  # hub id or local directory; None = random initialisation
    layers: int | None = Field(default=None, ge=1)  # keep the first N conformer layers; None = all
    freeze: bool = True  # encoder weights fixed and kept in eval mode
    pooling: SegmentPoolingName = "attention"  # SEGMENT_POOLING strategy

    @field_validator("layers")
    @classmethod
    def _layers_fit(cls, layers: int | None, info: ValidationInfo) -> int | None:
        encoder = info.data.get("encoder")  # absent when the encoder name itself was invalid
        if layers is None or encoder is None:
            return layers
        total = AUDIO_ENCODER_LAYERS[encoder]
        if layers > total:
            raise ValueError(f"{layers} layers requested but encoder {encoder!r} has {total}")
        return layers


class RoiConfig(BaseModel):
    """ROI compression: how many patches survive, how they are chosen, and the global tokens."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(default=64, ge=1)  # patches kept per frame; None = all N (no compression)
    global_tokens: int = Field(default=4, ge=0)  # g learned queries over all patches
    selection: RoiSelectionName = "prior+learned"  # ROI_SELECTION mode
    beta: float = Field(default=4.0, ge=0.0)  # weight of the keypoint prior in the importance
    sigma: float = Field(default=0.1, gt=0.0)  # prior Gaussian std, fraction of the crop side
    tau: float = Field(default=1.0, gt=0.0)  # temperature of the relaxed top-k mask
    heads: int = Field(default=4, ge=1)  # attention heads of the global tokens


class TemporalConfig(BaseModel):
    """Temporal encoder: width, depth, conv/attention mix, and segment pooling."""

    model_config = ConfigDict(extra="forbid")

    dim: int | None = Field(default=None, ge=1)  # Dt; None = the encoder width Dv (no projection)
    layers: int = Field(default=4, ge=0)
    conv_share: float = Field(default=0.7, ge=0.0, le=1.0)  # round(conv_share * layers) conv blocks
    heads: int = Field(default=4, ge=1)  # attention heads (must divide Dt)
    kernel: int = Field(default=3, ge=1)  # short convolution length in frames
    causal: bool = False  # causal convolution instead of centred (centred needs an odd kernel)
    mlp_ratio: float = Field(default=2.0, gt=0.0)  # MLP hidden width / Dt
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: SegmentPoolingName = "attention"  # SEGMENT_POOLING strategy

    @model_validator(mode="after")
    def _centred_kernel_is_odd(self) -> TemporalConfig:
        if not self.causal and self.kernel % 2 == 0:
            raise ValueError(f"kernel {self.kernel}: a centred convolution needs an odd kernel (or causal: true)")
        return self


class VisualConfig(BaseModel):
    """Visual branch: which ViT and library, its weights, then ROI compression and temporal encoder."""

    model_config = ConfigDict(extra="forbid")

    backend: VisualBackendName = "timm"  # VISUAL_BACKENDS: timm | transformers
    encoder: VisualEncoderName = "tiny"  # VISUAL_ENCODERS architecture: tiny | siglip2-b16
    pretrained: str | None = None  # hub id or local directory; None = random initialisation
    freeze: bool = True  # encoder weights fixed and kept in eval mode
    roi: RoiConfig = RoiConfig()
    temporal: TemporalConfig = TemporalConfig()


class FusionConfig(BaseModel):
    """LFM2 fusion of the two branches' segment tokens."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(2, ge=0)  # LFM2 decoder layers kept (the first N); 0 = no fusion layers
    pretrained: str | None = None  # architecture (and weights): hub id or local dir; None = widths below
    init: Literal["pretrained", "random"] = "random"  # load the checkpoint's weights or not
    width: int = Field(64, ge=1)  # the random-init architecture, used only when pretrained is null
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    ffn_dim: int = Field(256, ge=1)  # LFM2 block_ff_dim (Lfm2 shrinks it to 2/3, multiple of 256)
    freeze: FusionFreezeName = "unfrozen"  # FUSION_FREEZE: frozen | unfrozen | lora
    lora_rank: int = Field(16, ge=1)
    order: Literal["interleave", "concat"] = "interleave"
    out_dim: int = Field(512, ge=1)
    grad_checkpointing: bool = False  # recompute LFM2 layers in backward; only a training (not frozen) backbone

    @model_validator(mode="after")
    def _consistent(self) -> FusionConfig:
        if self.init == "pretrained" and self.pretrained is None:
            raise ValueError("init 'pretrained' needs pretrained (a hub id or local dir); use init 'random'")
        if self.pretrained is None and (self.width % self.heads or self.heads % self.kv_heads):
            raise ValueError(f"width {self.width} must divide by heads {self.heads}, heads by kv_heads {self.kv_heads}")
        return self


class ClassifierConfig(BaseModel):
    """Pooling over the fused sequence and the MLP to the emotion logits."""

    model_config = ConfigDict(extra="forbid")

    pooling: ClassifierPoolingName = "attention"  # CLASSIFIER_POOLING: mean | max | attention | last
    hidden: list[int] = [512, 256]
    norm: Literal["layer", "batch"] = "layer"
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError(f"hidden sizes must be >= 1, got {value}")
        return value


class ModelConfig(BaseModel):
    """The whole model; ``modality`` decides which branches are built at all."""

    model_config = ConfigDict(extra="forbid")

    modality: Literal["av", "audio", "visual"] = "av"
    segments: int = Field(8, ge=1)  # S, shared by both branches
    audio: AudioConfig = AudioConfig()
    visual: VisualConfig = VisualConfig()
    fusion: FusionConfig = FusionConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    # Build every part's exact architecture with random weights; nothing is read from the hub or
    # disk: the way to try a preset on a new machine before fetching gigabytes. The ``pretrained``
    # ids then name only architectures, written in the code for every published checkpoint the
    # presets use; a fusion checkpoint outside ``fer.models.fusion.PUBLISHED_LFM2`` still has its
    # config.json read, the one place its architecture is written.
    random_weights: bool = False

    @property
    def uses_audio(self) -> bool:
        return self.modality in ("av", "audio")

    @property
    def uses_visual(self) -> bool:
        return self.modality in ("av", "visual")
