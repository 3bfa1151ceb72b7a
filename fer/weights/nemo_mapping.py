"""NeMo FastConformer CTC -> transformers Parakeet: the config and weight-name mapping (no I/O).

``encoder_config_from_nemo`` turns the ``encoder`` section of a NeMo ``model_config.yaml`` into a
``ParakeetEncoderConfig``, ``ctc_config_from_nemo`` adds the ``decoder`` (CTC head) section, and
``map_state_dict`` renames NeMo's weights to the keys of ``ParakeetForCTC``. Nothing is dropped
silently: an entry or key that has no Parakeet counterpart is a ``NemoConversionError`` naming it.
Only these are left out, on purpose:

- ``preprocessor.featurizer.window`` / ``.fb``: the mel front end's STFT window and filterbank;
  the project computes its own log-mel features (``fer.models.melspec``).
- ``encoder.pos_enc.pe``: NeMo's sinusoidal table of relative positions (non-persistent in current
  NeMo, saved by older versions). Parakeet computes the same table on the fly, so the stored one
  is checked against the formula and then not copied.

BatchNorm's ``num_batches_tracked`` is copied like any buffer (Parakeet's ``BatchNorm1d`` has it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import ParakeetCTCConfig, ParakeetEncoderConfig


class NemoConversionError(ValueError):
    """A .nemo checkpoint that cannot be converted; ``problems`` holds one ``(where, message)``
    per problem, ``where`` naming the archive member, config entry or weight key."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{where}: {msg}" for where, msg in problems))


# --- config ------------------------------------------------------------------------------------

# Arguments of NeMo's ConformerEncoder with no default.
REQUIRED = ("feat_in", "n_layers", "d_model")
# Every other argument with NeMo's default: an absent entry means NeMo built the model with it.
NEMO_DEFAULTS = dict(
    feat_out=-1, causal_downsampling=False, subsampling="striding", subsampling_factor=4,
    subsampling_conv_chunking_factor=1, subsampling_conv_channels=-1, reduction=None, reduction_position=None,
    reduction_factor=1, ff_expansion_factor=4, self_attention_model="rel_pos", n_heads=4, att_context_size=None,
    att_context_probs=None, att_context_style="regular", xscaling=True, untie_biases=True, pos_emb_max_len=5000,
    conv_kernel_size=31, conv_norm_type="batch_norm", conv_context_size=None, use_bias=True, dropout=0.1,
    dropout_pre_encoder=0.1, dropout_emb=0.1, dropout_att=0.0, stochastic_depth_drop_prob=0.0,
    stochastic_depth_mode="linear", stochastic_depth_start_layer=1, global_tokens=0, global_tokens_spacing=1,
    global_attn_separate=False, use_pytorch_sdpa=False, use_pytorch_sdpa_backends=None, sync_max_audio_length=True,
)
# Entries that change how NeMo computes, not what: any value converts. The global_* entries only
# act with self_attention_model rel_pos_local_attn; stochastic_depth_mode/start_layer only with a
# non-zero drop probability; reduction_position only with a reduction.
NO_EFFECT = frozenset({
    "_target_", "subsampling_conv_chunking_factor", "use_pytorch_sdpa", "use_pytorch_sdpa_backends",
    "sync_max_audio_length", "global_tokens", "global_tokens_spacing", "global_attn_separate",
    "stochastic_depth_mode", "stochastic_depth_start_layer", "reduction_position",
})
FULL_CONTEXT = (None, [-1, -1], [[-1, -1]])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_rate(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0


def encoder_config_from_nemo(encoder: Mapping) -> ParakeetEncoderConfig:
    """The ``ParakeetEncoderConfig`` of a NeMo FastConformer (``ConformerEncoder``) encoder section.

    Mapped: d_model, n_heads, n_layers, feat_in, conv_kernel_size, subsampling_factor,
    subsampling_conv_channels (-1 = d_model), pos_emb_max_len, xscaling, use_bias (attention and
    convolution biases), ff_expansion_factor (intermediate_size = d_model * factor) and the
    dropouts where Parakeet applies them: dropout_pre_encoder after the input scaling, dropout_emb
    on the positions, dropout_att on attention weights, dropout inside the feed-forwards (NeMo's
    residual dropout has no Parakeet counterpart; dropout only acts in training).

    Raises:
        NemoConversionError: every unknown, missing, mistyped or inexpressible entry at once,
            each named ``encoder.<entry>``.
    """
    from transformers import ParakeetEncoderConfig  # heavy

    problems = [(f"encoder.{k}", "unknown NeMo ConformerEncoder entry") for k in encoder
                if k not in REQUIRED and k not in NEMO_DEFAULTS and k != "_target_"]
    problems += [(f"encoder.{k}", "missing (NeMo has no default)") for k in REQUIRED if k not in encoder]
    if problems:
        raise NemoConversionError(problems)
    c = {**NEMO_DEFAULTS, **encoder}

    def need(entry: str, ok: bool, what: str) -> None:
        if not ok:
            absent = "" if entry in encoder else " (absent: NeMo's default)"
            problems.append((f"encoder.{entry}", f"{c[entry]!r}{absent}; Parakeet needs {what}"))

    if "_target_" in encoder:
        need("_target_", str(encoder["_target_"]).rsplit(".", 1)[-1] == "ConformerEncoder", "a ConformerEncoder")
    for entry in ("feat_in", "n_layers", "d_model", "n_heads", "subsampling_conv_channels", "pos_emb_max_len"):
        need(entry, _is_int(c[entry]) and (c[entry] > 0 or (entry == "subsampling_conv_channels" and c[entry] == -1)),
             "a positive integer")
    for entry in ("xscaling", "use_bias", "causal_downsampling"):
        need(entry, isinstance(c[entry], bool), "true or false")
    for entry in ("dropout", "dropout_pre_encoder", "dropout_emb", "dropout_att"):
        need(entry, _is_rate(c[entry]), "a rate in [0, 1)")
    if problems:  # the checks below compute with these values
        raise NemoConversionError(problems)

    d_model, factor = c["d_model"], c["subsampling_factor"]
    need("feat_out", c["feat_out"] in (-1, d_model), f"-1 or d_model ({d_model}): no output projection")
    need("subsampling", c["subsampling"] == "dw_striding", "'dw_striding'")
    need("subsampling_factor", _is_int(factor) and factor >= 2 and factor & (factor - 1) == 0, "a power of 2, >= 2")
    need("causal_downsampling", c["causal_downsampling"] is False, "false")
    need("reduction", c["reduction"] is None or c["reduction_factor"] == 1, "null (no reduction module)")
    need("reduction_factor", _is_int(c["reduction_factor"]), "an integer")
    need("self_attention_model", c["self_attention_model"] == "rel_pos", "'rel_pos'")
    need("n_heads", d_model % c["n_heads"] == 0, f"a divisor of d_model ({d_model})")
    need("att_context_size", c["att_context_size"] in FULL_CONTEXT, "full context: null or [-1, -1]")
    need("att_context_probs", c["att_context_probs"] is None, "null")
    need("att_context_style", c["att_context_style"] == "regular", "'regular'")
    need("untie_biases", c["untie_biases"] is True, "true (position biases per layer)")
    kernel = c["conv_kernel_size"]
    need("conv_kernel_size", _is_int(kernel) and kernel % 2 == 1, "an odd integer")
    need("conv_norm_type", c["conv_norm_type"] == "batch_norm", "'batch_norm'")
    half = (kernel - 1) // 2 if _is_int(kernel) else None
    need("conv_context_size", c["conv_context_size"] in (None, [half, half]), f"null or [{half}, {half}] (symmetric)")
    need("stochastic_depth_drop_prob", c["stochastic_depth_drop_prob"] == 0, "0 (Parakeet's layerdrop is uniform)")
    expansion = c["ff_expansion_factor"]
    need("ff_expansion_factor", isinstance(expansion, (int, float)) and not isinstance(expansion, bool)
         and expansion > 0 and float(d_model * expansion).is_integer(), "a factor making d_model * factor an integer")
    if _is_int(factor) and factor >= 2:
        need("feat_in", c["feat_in"] % factor == 0, f"a multiple of subsampling_factor ({factor})")
    if problems:
        raise NemoConversionError(problems)

    channels = c["subsampling_conv_channels"]
    return ParakeetEncoderConfig(
        hidden_size=d_model,
        num_hidden_layers=c["n_layers"],
        num_attention_heads=c["n_heads"],
        intermediate_size=int(d_model * expansion),
        hidden_act="silu",  # NeMo's Swish
        attention_bias=c["use_bias"],
        convolution_bias=c["use_bias"],
        conv_kernel_size=kernel,
        subsampling_factor=factor,
        subsampling_conv_channels=d_model if channels == -1 else channels,
        subsampling_conv_kernel_size=3,  # dw_striding: 3x3, stride 2
        subsampling_conv_stride=2,
        num_mel_bins=c["feat_in"],
        dropout=c["dropout_pre_encoder"],
        dropout_positions=c["dropout_emb"],
        activation_dropout=c["dropout"],
        attention_dropout=c["dropout_att"],
        layerdrop=0.0,
        max_position_embeddings=c["pos_emb_max_len"],
        scale_input=c["xscaling"],
    )


DECODER_ENTRIES = frozenset({"_target_", "feat_in", "num_classes", "vocabulary", "init_mode", "add_blank"})


def ctc_config_from_nemo(nemo: Mapping, head_rows: int) -> ParakeetCTCConfig:
    """The ``ParakeetCTCConfig`` of a NeMo CTC model: its encoder, and a head of ``head_rows``
    outputs (the rows of ``decoder.decoder_layers.0.weight``) whose last is NeMo's blank, which
    Parakeet calls ``pad_token_id``.

    Raises:
        NemoConversionError: a missing ``encoder`` / ``decoder`` section, an encoder entry as in
            ``encoder_config_from_nemo``, or a decoder that is not NeMo's ``ConvASRDecoder`` with a
            blank, sized as its weights.
    """
    from transformers import ParakeetCTCConfig

    problems = [(section, "missing section") for section in ("encoder", "decoder")
                if not isinstance(nemo.get(section), Mapping)]
    if problems:
        raise NemoConversionError(problems)
    encoder = encoder_config_from_nemo(nemo["encoder"])
    decoder = nemo["decoder"]
    problems = [(f"decoder.{k}", "unknown NeMo ConvASRDecoder entry") for k in decoder if k not in DECODER_ENTRIES]
    if str(decoder.get("_target_", "ConvASRDecoder")).rsplit(".", 1)[-1] != "ConvASRDecoder":
        problems.append(("decoder._target_", f"{decoder['_target_']!r}; only a CTC head (ConvASRDecoder) converts"))
    if decoder.get("feat_in") not in (None, -1, encoder.hidden_size):
        problems.append(("decoder.feat_in", f"{decoder['feat_in']!r}; the encoder's d_model is {encoder.hidden_size}"))
    if decoder.get("add_blank", True) is not True:
        problems.append(("decoder.add_blank", f"{decoder['add_blank']!r}; Parakeet's CTC head ends with the blank"))
    num_classes = decoder.get("num_classes", -1)
    if _is_int(num_classes) and num_classes > 0 and num_classes + 1 != head_rows:
        problems.append(("decoder.num_classes", f"{num_classes} + blank, but the head has {head_rows} outputs"))
    if problems:
        raise NemoConversionError(problems)
    return ParakeetCTCConfig(vocab_size=head_rows, pad_token_id=head_rows - 1, encoder_config=encoder)


# --- weights -----------------------------------------------------------------------------------

_LAYER = r"encoder\.layers\.(\d+)\."
# NeMo key (full match) -> ParakeetForCTC key.
KEY_RULES = [(re.compile(pattern), target) for pattern, target in [
    (r"encoder\.pre_encode\.conv\.(\d+)\.(weight|bias)", r"encoder.subsampling.layers.\1.\2"),
    (r"encoder\.pre_encode\.out\.(weight|bias)", r"encoder.subsampling.linear.\1"),
    (_LAYER + r"self_attn\.linear_q\.(weight|bias)", r"encoder.layers.\1.self_attn.q_proj.\2"),
    (_LAYER + r"self_attn\.linear_k\.(weight|bias)", r"encoder.layers.\1.self_attn.k_proj.\2"),
    (_LAYER + r"self_attn\.linear_v\.(weight|bias)", r"encoder.layers.\1.self_attn.v_proj.\2"),
    (_LAYER + r"self_attn\.linear_out\.(weight|bias)", r"encoder.layers.\1.self_attn.o_proj.\2"),
    (_LAYER + r"self_attn\.linear_pos\.weight", r"encoder.layers.\1.self_attn.relative_k_proj.weight"),
    (_LAYER + r"self_attn\.pos_bias_([uv])", r"encoder.layers.\1.self_attn.bias_\2"),
    (_LAYER + r"conv\.batch_norm\.(weight|bias|running_mean|running_var|num_batches_tracked)",
     r"encoder.layers.\1.conv.norm.\2"),
    (_LAYER + r"conv\.(pointwise_conv1|depthwise_conv|pointwise_conv2)\.(weight|bias)", r"encoder.layers.\1.conv.\2.\3"),
    (_LAYER + r"(feed_forward[12])\.(linear[12])\.(weight|bias)", r"encoder.layers.\1.\2.\3.\4"),
    (_LAYER + r"(norm_feed_forward1|norm_self_att|norm_conv|norm_feed_forward2|norm_out)\.(weight|bias)",
     r"encoder.layers.\1.\2.\3"),
    (r"decoder\.decoder_layers\.0\.(weight|bias)", r"ctc_head.\1"),
]]
PREPROCESSOR_KEYS = frozenset({"preprocessor.featurizer.window", "preprocessor.featurizer.fb"})
POSITIONS_KEY = "encoder.pos_enc.pe"
CTC_HEAD_KEY = "decoder.decoder_layers.0.weight"


def nemo_key_to_parakeet(key: str) -> str | None:
    """The ``ParakeetForCTC`` key of NeMo weight ``key``; None when no rule maps it."""
    for pattern, target in KEY_RULES:
        if pattern.fullmatch(key):
            return pattern.sub(target, key)
    return None


def relative_positions(length: int, d_model: int) -> torch.Tensor:
    """NeMo's relative positional table for inputs up to ``length`` frames: (1, 2 * length - 1,
    d_model), positions length-1 .. -(length-1), sin at even and cos at odd channels."""
    positions = torch.arange(length - 1, -length, -1, dtype=torch.float32)[:, None]  # (2L-1, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    table = torch.zeros(2 * length - 1, d_model)
    table[:, 0::2] = torch.sin(positions * inv_freq)
    table[:, 1::2] = torch.cos(positions * inv_freq)
    return table[None]


def check_positions(pe: torch.Tensor, d_model: int) -> str | None:
    """Why the stored table ``pe`` is not the one Parakeet computes; None when it is."""
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[1] % 2 != 1 or pe.shape[2] != d_model:
        return f"shape {tuple(pe.shape)}; expected (1, 2 * length - 1, {d_model})"
    # float32 sines of arguments up to `length` radians carry ~1e-4 of rounding at length 5000.
    error = (pe.float() - relative_positions((pe.shape[1] + 1) // 2, d_model)).abs().max().item()
    return None if error <= 1e-3 else f"differs from the sinusoidal table Parakeet computes by {error:.3g}"


def map_state_dict(weights: Mapping[str, torch.Tensor], d_model: int) -> dict[str, str]:
    """The renaming of NeMo's state dict: ``{ParakeetForCTC key: NeMo key}``, every NeMo key
    mapped except the known exceptions (module docstring).

    Raises:
        NemoConversionError: every key no rule maps, and a stored positional table that is not
            the one Parakeet computes, each named by its NeMo key.
    """
    renames, problems = {}, []
    for key, tensor in weights.items():
        if key in PREPROCESSOR_KEYS:
            continue
        if key == POSITIONS_KEY:
            reason = check_positions(tensor, d_model)
            if reason:
                problems.append((key, reason))
            continue
        target = nemo_key_to_parakeet(key)
        if target is None:
            problems.append((key, "no Parakeet counterpart"))
        else:
            renames[target] = key
    if problems:
        raise NemoConversionError(problems)
    return renames
