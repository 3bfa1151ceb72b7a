"""Visual branch encoder: frames (B, T, 3, H, W) -> SigLIP patch tokens (B, T, N, Dv).

The encoder is a real library SigLIP vision tower, either timm's ``VisionTransformer``
(``vit_base_patch16_siglip_224``, pretrained tag ``v2_webli``) or transformers'
``SiglipVisionModel`` (``google/siglip2-base-patch16-224``), chosen by ``backend``. Frames are
batched through it as (B*T, 3, H, W). Only the patch tokens after the final LayerNorm are kept:
SigLIP has no CLS token, and its attention-pooling (MAP) head summarises a whole image into one
vector, which the ROI stage does not use, so the head is not built (a full B/16 tower is
92,884,224 parameters, of which the MAP head is 7,087,104 and the patch encoder 85,797,120).

``VISUAL_ENCODERS`` names an architecture (``tiny`` or ``siglip2-b16``); ``VISUAL_BACKENDS`` the
library that builds it. ``pretrained`` is a hub id or a local directory (a local weights file also
works for timm); hub ids resolve through the local Hugging Face cache only when
``HF_HUB_OFFLINE`` is set. The SigLIP2 B/16 weights: ``timm/vit_base_patch16_siglip_224.v2_webli``
(timm) and ``google/siglip2-base-patch16-224`` (transformers).

    enc = build_visual_encoder(VisualConfig(encoder="tiny"), image_size=64)
    enc(torch.randn(2, 8, 3, 64, 64)).shape  # (2, 8, 64, 64): N = (64 / 8) ** 2, Dv = 64
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fer.models.config import VisualConfig
from fer.models.registry import Registry

VISUAL_ENCODERS: Registry = Registry("visual encoder")
VISUAL_BACKENDS: Registry[type[nn.Module]] = Registry("visual backend")

TIMM_ARCHITECTURE = "vit_base_patch16_siglip_224"


@dataclass(frozen=True)
class VitArch:
    """A SigLIP vision tower's shape: pre-norm ViT, no CLS token, learned absolute positions."""

    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    image_size: int  # the resolution its position embedding was trained at


@VISUAL_ENCODERS.register("tiny")
def tiny() -> VitArch:
    """Toy tower for tests and the demo: 64 px, 8 px patches (8x8 grid), width 64, 2 blocks."""
    return VitArch(width=64, depth=2, heads=2, mlp=256, patch=8, image_size=64)


@VISUAL_ENCODERS.register("siglip2-b16")
def siglip2_b16() -> VitArch:
    """SigLIP2 ViT-B/16 at 224 px: 14x14 = 196 patches of width 768, 12 blocks."""
    return VitArch(width=768, depth=12, heads=12, mlp=3072, patch=16, image_size=224)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, but read now rather than at its import."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_local(pretrained: str) -> Path | None:
    """A local directory or file for ``pretrained``, or None when it names a hub repository.

    Raises:
        FileNotFoundError: ``pretrained`` is written as a path (absolute, ``./``, ``~``) but is absent.
    """
    path = Path(pretrained).expanduser()
    if path.exists():
        return path
    if pretrained.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"visual encoder weights {pretrained!r} (model.visual.pretrained): no such file or directory")
    return None


def offline_error(pretrained: str, exc: Exception) -> OSError:
    return OSError(
        f"visual encoder weights {pretrained!r} (model.visual.pretrained) are not in the local Hugging Face "
        f"cache and HF_HUB_OFFLINE is set; download them first or give a local directory ({exc})"
    )


class FrozenMixin:
    """Frozen = no gradients and eval mode kept, so a training step leaves it bit-identical.

    ``built_with`` holds the tower's constructor arguments that shape its output (all but where the
    weights come from and whether they train); ``build_settings`` states them.
    """

    frozen: bool
    built_with: dict

    def build_settings(self) -> dict:
        """What the output depends on besides the weights: the tower's shape and input size."""
        return dict(self.built_with)

    def _finish(self, *, width: int, patch: int, image_size: int, freeze: bool) -> None:
        """The output's shape (D, the patch grid, N) and the freeze, once the tower is built."""
        self.out_dim = width
        self.grid = (image_size // patch, image_size // patch)
        self.num_patches = self.grid[0] * self.grid[1]
        self.frozen = False
        if freeze:
            self.freeze()

    def freeze(self) -> None:
        self.frozen = True
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)


@VISUAL_BACKENDS.register("timm")
class TimmPatchEncoder(FrozenMixin, nn.Module):
    """timm's SigLIP ``VisionTransformer`` without its MAP head: (B, T, 3, H, W) -> (B, T, N, D).

    Args:
        width, depth, heads, mlp, patch: the tower's shape (``VitArch``).
        image_size: input resolution; pretrained position embeddings are resampled to it on load.
        pretrained: hub id, local directory (timm's ``save_for_hf`` layout: ``model.safetensors`` or
            ``pytorch_model.bin``), weights file, or None. Loaded strictly (every encoder weight must
            be there, with its shape) through timm's ``load_checkpoint`` and ViT checkpoint filter;
            the checkpoint's MAP head and classifier are dropped.
        freeze: fix the weights and keep the tower in eval mode.
    """

    def __init__(self, *, width: int, depth: int, heads: int, mlp: int, patch: int, image_size: int,
                 pretrained: str | None = None, freeze: bool = True):
        super().__init__()
        import timm  # imported here: seconds of start-up that config-only users should not pay

        self.built_with = dict(width=width, depth=depth, heads=heads, mlp=mlp, patch=patch, image_size=image_size)

        # timm registers this model with exact GELU, but SigLIP was trained with the tanh approximation
        # (transformers' gelu_pytorch_tanh; timm's own B/32 and L/16 SigLIP entries): use it, so both
        # backends compute the same function. global_pool "": no MAP head.
        self.vit = timm.create_model(
            TIMM_ARCHITECTURE, pretrained=False, embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=mlp / width,
            patch_size=patch, img_size=image_size, num_classes=0, global_pool="", act_layer="gelu_tanh")
        if pretrained is not None:
            self._load(pretrained)
        self._finish(width=width, patch=patch, image_size=image_size, freeze=freeze)

    def _load(self, pretrained: str) -> None:
        from timm.models import load_checkpoint
        from timm.models.vision_transformer import checkpoint_filter_fn

        def headless(state_dict: dict, model: nn.Module) -> dict:
            state_dict = checkpoint_filter_fn(state_dict, model)  # resamples position embeddings to image_size
            return {k: v for k, v in state_dict.items() if not k.startswith(("attn_pool.", "head."))}

        load_checkpoint(self.vit, str(self._weights_file(pretrained)), strict=True, filter_fn=headless)

    @staticmethod
    def _weights_file(pretrained: str) -> Path:
        """The weights file for a local file, a local directory or a hub id (cache only when offline)."""
        local = resolve_local(pretrained)
        if local is not None and local.is_file():
            return local
        if local is not None:
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (local / name).is_file():
                    return local / name
            raise FileNotFoundError(f"visual encoder weights {pretrained!r} (model.visual.pretrained): "
                                    "the directory holds neither model.safetensors nor pytorch_model.bin")
        from huggingface_hub import hf_hub_download

        offline = hub_offline()
        try:
            return Path(hf_hub_download(pretrained.removeprefix("hf-hub:"), "model.safetensors", local_files_only=offline))
        except Exception as exc:
            if offline:
                raise offline_error(pretrained, exc) from exc
            raise

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.vit.forward_features(frames.flatten(0, 1))  # (B*T, N, D), final norm applied
        return tokens.unflatten(0, (b, t))  # (B, T, N, D)


@VISUAL_BACKENDS.register("transformers")
class SiglipPatchEncoder(FrozenMixin, nn.Module):
    """transformers' ``SiglipVisionModel`` without its MAP head: (B, T, 3, H, W) -> (B, T, N, D).

    Args:
        width, depth, heads, mlp, patch: the tower's shape (``VitArch``).
        image_size: input resolution; a pretrained tower trained at another size interpolates its
            position embeddings at every call (``interpolate_pos_encoding``).
        pretrained: hub id or local directory of a ``SiglipVisionModel`` or a full ``SiglipModel``
            (the hub's SigLIP2 layout; the text tower is skipped), or None.
        freeze: fix the weights and keep the tower in eval mode.
    """

    def __init__(self, *, width: int, depth: int, heads: int, mlp: int, patch: int, image_size: int,
                 pretrained: str | None = None, freeze: bool = True):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel  # heavy, see TimmPatchEncoder

        self.built_with = dict(width=width, depth=depth, heads=heads, mlp=mlp, patch=patch, image_size=image_size)
        shape = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                     intermediate_size=mlp, patch_size=patch)
        if pretrained is None:
            model = SiglipVisionModel(SiglipVisionConfig(image_size=image_size, vision_use_head=False, **shape))
        else:
            model = self._load(pretrained, shape)
        self.siglip = model
        self.interpolate = model.config.image_size != image_size
        self._finish(width=width, patch=patch, image_size=image_size, freeze=freeze)

    @staticmethod
    def _load(pretrained: str, shape: dict) -> nn.Module:
        """``from_pretrained`` that refuses a checkpoint of another shape or with missing weights."""
        from transformers import SiglipVisionModel

        local = resolve_local(pretrained)
        offline = hub_offline()
        try:
            model, info = SiglipVisionModel.from_pretrained(
                str(local or pretrained), vision_use_head=False, local_files_only=offline, output_loading_info=True,
                dtype=torch.float32)  # master weights in float32 whatever the checkpoint stores
        except OSError as exc:
            if offline and local is None:
                raise offline_error(pretrained, exc) from exc
            raise
        found = {key: getattr(model.config, key) for key in shape}
        if found != shape:
            raise ValueError(f"visual encoder weights {pretrained!r} have shape {found}, the encoder preset expects {shape}")
        if info["missing_keys"]:
            raise ValueError(f"visual encoder weights {pretrained!r} lack {sorted(info['missing_keys'])}")
        return model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.siglip(pixel_values=frames.flatten(0, 1), interpolate_pos_encoding=self.interpolate)
        return out.last_hidden_state.unflatten(0, (b, t))  # (B, T, N, D), post-LayerNorm


def build_visual_encoder(cfg: VisualConfig, *, image_size: int) -> nn.Module:
    """Patch-token encoder from the visual config.

    Args:
        cfg: ``backend``, ``encoder``, ``pretrained`` and ``freeze`` are read.
        image_size: square input size in pixels (``data.size``); must be a multiple of the patch.
    Returns:
        module (B, T, 3, H, W) -> (B, T, N, Dv) with ``out_dim`` = Dv, ``grid`` = (h, w),
        ``num_patches`` = N = h * w.
    """
    arch = VISUAL_ENCODERS.get(cfg.encoder)()
    if image_size % arch.patch:
        raise ValueError(f"data.size {image_size} is not a multiple of the {cfg.encoder!r} patch size {arch.patch}")
    return VISUAL_BACKENDS.get(cfg.backend)(
        width=arch.width, depth=arch.depth, heads=arch.heads, mlp=arch.mlp, patch=arch.patch,
        image_size=image_size, pretrained=cfg.pretrained, freeze=cfg.freeze)
