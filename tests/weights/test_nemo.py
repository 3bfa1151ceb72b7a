"""NeMo -> Parakeet conversion: a small FastConformer written as a .nemo archive in NeMo's own
layout and key names converts to a folder that the project's audio encoder loads and that
computes what the source computed; every unconvertible archive is a clear error that writes nothing.

NeMo is not installed, so the source model is a ``ParakeetForCTC`` with random weights whose state
dict is renamed to NeMo's keys here, by a table written from NeMo's module names (not imported from
the converter), and tarred with a NeMo-style ``model_config.yaml`` and the preprocessor buffers.
"""

import io
import math
import tarfile

import pytest
import torch
import yaml
from transformers import ParakeetCTCConfig, ParakeetEncoderConfig, ParakeetForCTC

from fer.models.audio import ARCHITECTURE_FIELDS, AUDIO_ENCODERS, AudioConfig, AudioEncoder, build_audio_encoder
from fer.weights import NemoConversionError, convert_nemo
from fer.weights.nemo_mapping import encoder_config_from_nemo

SR = 16000
VOCAB = 33  # 32 tokens + NeMo's blank, last

# The keys NeMo's ConformerEncoder (dw_striding, rel_pos, batch_norm) and ConvASRDecoder save,
# from nemo/collections/asr/{modules/conformer_encoder.py, parts/submodules/*.py, modules/conv_asr.py}.
NEMO_LAYER_KEYS = [
    *(f"feed_forward{i}.linear{j}.{p}" for i in (1, 2) for j in (1, 2) for p in ("weight", "bias")),
    *(f"self_attn.linear_{n}.{p}" for n in ("q", "k", "v", "out") for p in ("weight", "bias")),
    "self_attn.linear_pos.weight", "self_attn.pos_bias_u", "self_attn.pos_bias_v",
    *(f"conv.{n}.{p}" for n in ("pointwise_conv1", "depthwise_conv", "pointwise_conv2") for p in ("weight", "bias")),
    *(f"conv.batch_norm.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    *(f"{n}.{p}" for n in ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2", "norm_out")
      for p in ("weight", "bias")),
]
NEMO_KEYS = [
    *(f"encoder.pre_encode.conv.{i}.{p}" for i in (0, 2, 3, 5, 6) for p in ("weight", "bias")),
    "encoder.pre_encode.out.weight", "encoder.pre_encode.out.bias",
    *(f"encoder.layers.{n}.{k}" for n in (0, 1) for k in NEMO_LAYER_KEYS),
    "decoder.decoder_layers.0.weight", "decoder.decoder_layers.0.bias",
]
# Parakeet module name -> NeMo module name, as substrings of a key.
PARAKEET_TO_NEMO = [
    ("encoder.subsampling.layers.", "encoder.pre_encode.conv."),
    ("encoder.subsampling.linear.", "encoder.pre_encode.out."),
    (".self_attn.q_proj.", ".self_attn.linear_q."),
    (".self_attn.k_proj.", ".self_attn.linear_k."),
    (".self_attn.v_proj.", ".self_attn.linear_v."),
    (".self_attn.o_proj.", ".self_attn.linear_out."),
    (".self_attn.relative_k_proj.", ".self_attn.linear_pos."),
    (".self_attn.bias_u", ".self_attn.pos_bias_u"),
    (".self_attn.bias_v", ".self_attn.pos_bias_v"),
    (".conv.norm.", ".conv.batch_norm."),
    ("ctc_head.", "decoder.decoder_layers.0."),
]

# A NeMo FastConformer CTC model_config.yaml (NeMo's fast-conformer_ctc_bpe.yaml, resolved) at
# the width of the "tiny" preset; dropouts all different so that their mapping is checked.
ENCODER = dict(
    _target_="nemo.collections.asr.modules.ConformerEncoder", feat_in=80, feat_out=-1, n_layers=2, d_model=64,
    subsampling="dw_striding", subsampling_factor=8, subsampling_conv_channels=16, causal_downsampling=False,
    ff_expansion_factor=2, self_attention_model="rel_pos", n_heads=4, att_context_size=[-1, -1],
    att_context_style="regular", xscaling=True, untie_biases=True, pos_emb_max_len=5000, use_pytorch_sdpa=False,
    use_pytorch_sdpa_backends=[], conv_kernel_size=9, conv_norm_type="batch_norm", conv_context_size=None,
    dropout=0.1, dropout_pre_encoder=0.2, dropout_emb=0.05, dropout_att=0.15, stochastic_depth_drop_prob=0.0,
    stochastic_depth_mode="linear", stochastic_depth_start_layer=1,
)
PREPROCESSOR = dict(
    _target_="nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", sample_rate=SR,
    normalize="per_feature", window_size=0.025, window_stride=0.01, window="hann", features=80, n_fft=512,
    log=True, frame_splicing=1, dither=1e-5, pad_to=0, pad_value=0.0,
)


def nemo_config() -> dict:
    tokens = [f"tok{i}" for i in range(VOCAB - 1)]
    return dict(
        sample_rate=SR, labels=tokens, preprocessor=dict(PREPROCESSOR), encoder=dict(ENCODER),
        decoder=dict(_target_="nemo.collections.asr.modules.ConvASRDecoder", feat_in=64, num_classes=VOCAB - 1,
                     vocabulary=tokens),
    )


def nemo_positions(d_model: int, max_len: int) -> torch.Tensor:
    """NeMo's RelPositionalEncoding.pe: positions max_len-1 .. -(max_len-1), sin/cos interleaved."""
    positions = torch.arange(max_len - 1, -max_len, -1, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(2 * max_len - 1, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(positions * div), torch.cos(positions * div)
    return pe[None]


def source_model() -> ParakeetForCTC:
    """A "tiny" ParakeetForCTC with every weight and buffer random (unit norms and zero biases
    would hide a swapped mapping), in eval mode."""
    torch.manual_seed(0)
    model = ParakeetForCTC(ParakeetCTCConfig(
        encoder_config=ParakeetEncoderConfig(**AUDIO_ENCODERS.get("tiny")), vocab_size=VOCAB, pad_token_id=VOCAB - 1))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif t.is_floating_point():
                t.add_(0.1 * torch.randn_like(t))
            else:
                t.fill_(1234)  # num_batches_tracked
    return model.eval()


def nemo_weights(model: ParakeetForCTC) -> dict[str, torch.Tensor]:
    """The state dict NeMo saves for ``model``, preprocessor buffers and positional table included."""
    weights = {}
    for key, tensor in model.state_dict().items():
        for parakeet, nemo in PARAKEET_TO_NEMO:
            key = key.replace(parakeet, nemo)
        weights[key] = tensor.clone()
    assert sorted(weights) == sorted(NEMO_KEYS)
    weights["encoder.pos_enc.pe"] = nemo_positions(64, 5000)
    weights["preprocessor.featurizer.window"] = torch.hann_window(400)
    weights["preprocessor.featurizer.fb"] = torch.rand(1, 80, 257)
    return weights


def write_nemo(path, config: dict, weights: dict, extra: dict[str, bytes] | None = None):
    """A .nemo archive as NeMo's SaveRestoreConnector writes it: an uncompressed tar of "." with
    members under "./", here with a tokenizer file beside the config and weights."""
    buf = io.BytesIO()
    torch.save(weights, buf)
    members = {"./model_config.yaml": yaml.safe_dump(config).encode(), "./model_weights.ckpt": buf.getvalue(),
               "./9f1c_tokenizer.model": b"sentencepiece", **(extra or {})}
    with tarfile.open(path, "w:") as tar:
        tar.addfile(_dir_info("."))
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


@pytest.fixture(scope="module")
def source() -> ParakeetForCTC:
    return source_model()


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("nemo")
    nemo = write_nemo(root / "tiny.nemo", nemo_config(), nemo_weights(source))
    return convert_nemo(nemo, root / "weights" / "tiny")


# --- a NeMo checkpoint converts ----------------------------------------------------------------


def test_output_folder_holds_a_transformers_ctc_model(converted):
    assert {p.name for p in converted.iterdir()} >= {"config.json", "model.safetensors"}
    assert [p.name for p in converted.parent.iterdir()] == ["tiny"]  # no temporary folder left


def test_project_audio_encoder_loads_it_and_computes_what_the_source_computes(source, converted):
    loaded = build_audio_encoder(AudioConfig(encoder="tiny", pretrained=str(converted)), sample_rate=SR)
    reference = AudioEncoder(source.encoder, sample_rate=SR, frozen=True)
    audio = torch.randn(2, SR, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = loaded(audio), reference(audio)
    assert got.shape == want.shape == (2, reference.frames(SR), 64)
    assert (got - want).abs().max().item() <= 1e-5
    assert want.abs().mean().item() > 0.1  # a real signal, not a vanishing one


def test_ctc_head_and_vocabulary_survive(source, converted):
    model = ParakeetForCTC.from_pretrained(converted).eval()
    assert (model.config.vocab_size, model.config.pad_token_id) == (VOCAB, VOCAB - 1)  # NeMo's blank is last
    features = torch.randn(2, 120, 80, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 120, dtype=torch.long)
    mask[1, 90:] = 0
    with torch.no_grad():
        got = model(input_features=features, attention_mask=mask).logits
        want = source(input_features=features, attention_mask=mask).logits
    assert (got - want).abs().max().item() <= 1e-5


def test_config_maps_nemo_names_dropouts_included(converted):
    encoder = ParakeetForCTC.from_pretrained(converted).config.encoder_config
    tiny = AUDIO_ENCODERS.get("tiny")
    assert {f: getattr(encoder, f) for f in ARCHITECTURE_FIELDS} == {f: tiny[f] for f in ARCHITECTURE_FIELDS}
    assert encoder.num_hidden_layers == 2
    assert (encoder.scale_input, encoder.attention_bias, encoder.convolution_bias) == (True, True, True)
    # Where Parakeet applies each: after the input scaling (dropout_pre_encoder), on the positions
    # (dropout_emb), on attention weights (dropout_att), inside the feed-forwards (dropout).
    dropouts = (encoder.dropout, encoder.dropout_positions, encoder.attention_dropout, encoder.activation_dropout)
    assert dropouts == (0.2, 0.05, 0.15, 0.1)
    assert (encoder.layerdrop, encoder.max_position_embeddings) == (0.0, 5000)


def test_fastconformer_large_config_gets_intermediate_size_from_ff_expansion_factor():
    # stt_en_fastconformer_ctc_large: d_model 512, ff_expansion_factor 4 -> 2048 (Parakeet's default is 4096)
    large = dict(ENCODER, n_layers=17, d_model=512, n_heads=8, subsampling_conv_channels=256, ff_expansion_factor=4)
    config = encoder_config_from_nemo(large)
    assert config.intermediate_size == 2048
    preset = AUDIO_ENCODERS.get("fastconformer-large")
    assert {f: getattr(config, f) for f in ARCHITECTURE_FIELDS} == {f: preset[f] for f in ARCHITECTURE_FIELDS}
    assert config.num_hidden_layers == preset["num_hidden_layers"]


def test_nemo_defaults_fill_absent_entries():
    # NeMo builds with its own defaults where the config is silent: subsampling_conv_channels -1 = d_model,
    # xscaling and use_bias on; a default Parakeet cannot express (subsampling "striding") is an error.
    minimal = {k: ENCODER[k] for k in ("feat_in", "n_layers", "d_model", "subsampling", "subsampling_factor")}
    config = encoder_config_from_nemo(minimal)
    assert (config.subsampling_conv_channels, config.num_attention_heads, config.conv_kernel_size) == (64, 4, 31)
    assert (config.intermediate_size, config.scale_input, config.attention_bias) == (256, True, True)
    with pytest.raises(NemoConversionError, match=r"encoder\.subsampling: 'striding' \(absent: NeMo's default\)"):
        encoder_config_from_nemo({k: v for k, v in minimal.items() if k != "subsampling"})


# --- what cannot convert is an error naming it, and nothing is written -------------------------


def assert_nothing_written(root):
    assert [p.name for p in root.iterdir()] == ["bad.nemo"]  # no output folder, no temporary one


def convert_bad(root, config=None, weights=None, extra=None, *, source) -> NemoConversionError:
    nemo = write_nemo(root / "bad.nemo", config or nemo_config(), weights or nemo_weights(source), extra)
    with pytest.raises(NemoConversionError) as err:
        convert_nemo(nemo, root / "weights" / "model")
    assert_nothing_written(root)
    return err.value


def with_weights(source, change):
    weights = nemo_weights(source)
    change(weights)
    return weights


def test_unknown_key_is_named(source, tmp_path):
    weights = with_weights(source, lambda w: w.update({"encoder.layers.0.self_attn.linear_qkv.weight": torch.zeros(3)}))
    err = convert_bad(tmp_path, weights=weights, source=source)
    assert err.problems == [("encoder.layers.0.self_attn.linear_qkv.weight", "no Parakeet counterpart")]


def test_rnnt_checkpoint_is_refused_naming_its_keys(source, tmp_path):
    def to_rnnt(w):
        del w["decoder.decoder_layers.0.weight"], w["decoder.decoder_layers.0.bias"]
        w["joint.joint_net.2.weight"] = torch.zeros(VOCAB, 64)

    err = convert_bad(tmp_path, weights=with_weights(source, to_rnnt), source=source)
    assert "decoder.decoder_layers.0.weight: missing from model_weights.ckpt: only CTC checkpoints convert" in str(err)


def test_missing_weight_is_named(source, tmp_path):
    err = convert_bad(tmp_path, weights=with_weights(source, lambda w: w.pop("encoder.layers.1.norm_out.bias")),
                      source=source)
    assert err.problems == [("model_weights.ckpt", "no weight for Parakeet's encoder.layers.1.norm_out.bias")]


def test_weights_beyond_the_configured_layers_are_named(source, tmp_path):
    config = nemo_config()
    config["encoder"]["n_layers"] = 1
    err = convert_bad(tmp_path, config=config, source=source)
    assert len(err.problems) == len(NEMO_LAYER_KEYS)
    assert err.problems[0][0].startswith("encoder.layers.1.")
    assert "which the configured architecture lacks" in err.problems[0][1]


def test_weight_of_the_wrong_shape_is_named(source, tmp_path):
    config = nemo_config()
    config["encoder"]["ff_expansion_factor"] = 4  # the weights were made with 2
    err = convert_bad(tmp_path, config=config, source=source)
    expected = ("encoder.layers.0.feed_forward1.linear1.weight", "shape (128, 64); the config implies (256, 64)")
    assert expected in err.problems


def test_positional_table_that_is_not_the_standard_one_is_named(source, tmp_path):
    err = convert_bad(tmp_path, weights=with_weights(source, lambda w: w["encoder.pos_enc.pe"].mul_(2)), source=source)
    assert [where for where, _ in err.problems] == ["encoder.pos_enc.pe"]


@pytest.mark.parametrize("section, entry", [("encoder", "d_model"), ("encoder", "n_layers"), ("encoder", "feat_in")])
def test_missing_config_entry_is_named(source, tmp_path, section, entry):
    config = nemo_config()
    del config[section][entry]
    err = convert_bad(tmp_path, config=config, source=source)
    assert err.problems == [(f"{section}.{entry}", "missing (NeMo has no default)")]


@pytest.mark.parametrize("entry, value", [
    ("self_attention_model", "abs_pos"), ("subsampling", "striding"), ("conv_norm_type", "layer_norm"),
    ("untie_biases", False), ("att_context_size", [70, 13]), ("conv_context_size", "causal"),
    ("causal_downsampling", True), ("stochastic_depth_drop_prob", 0.1), ("reduction", "pooling"),
])
def test_setting_parakeet_cannot_express_is_named(source, tmp_path, entry, value):
    config = nemo_config()
    config["encoder"][entry] = value
    if entry == "reduction":
        config["encoder"].update(reduction_factor=2, reduction_position=-1)
    err = convert_bad(tmp_path, config=config, source=source)
    assert [where for where, _ in err.problems] == [f"encoder.{entry}"]


def test_unknown_config_entry_is_named(source, tmp_path):
    config = nemo_config()
    config["encoder"]["squeeze_time"] = True
    err = convert_bad(tmp_path, config=config, source=source)
    assert err.problems == [("encoder.squeeze_time", "unknown NeMo ConformerEncoder entry")]


@pytest.mark.parametrize("member", ["../evil.sh", "./../../evil.sh", "/etc/cron.d/evil"])
def test_member_outside_the_archive_is_refused(source, tmp_path, member):
    err = convert_bad(tmp_path, extra={member: b"#!/bin/sh\n"}, source=source)
    assert err.problems == [(member, "absolute or '..' path: refusing the archive")]
    assert not (tmp_path.parent / "evil.sh").exists()


@pytest.mark.parametrize("cut, message", [
    ("header", "truncated: the archive ends without its end-of-archive marker"),
    ("config", "not a readable tar archive (truncated or corrupt?): unexpected end of data"),
    ("weights", "not a readable tar archive (truncated or corrupt?): unexpected end of data"),
])
def test_truncated_archive_is_refused(source, tmp_path, cut, message):
    whole = write_nemo(tmp_path / "whole.nemo", nemo_config(), nemo_weights(source))
    with tarfile.open(whole) as tar:
        config, weights = tar.getmember("./model_config.yaml"), tar.getmember("./model_weights.ckpt")
    end = {"header": config.offset + 100, "config": config.offset_data + 10,
           "weights": weights.offset_data + weights.size // 2}[cut]
    (tmp_path / "bad.nemo").write_bytes(whole.read_bytes()[:end])
    whole.unlink()
    with pytest.raises(NemoConversionError) as err:
        convert_nemo(tmp_path / "bad.nemo", tmp_path / "weights" / "model")
    assert err.value.problems == [(str(tmp_path / "bad.nemo"), message)]
    assert_nothing_written(tmp_path)


def test_existing_output_folder_is_left_alone(source, tmp_path):
    nemo = write_nemo(tmp_path / "tiny.nemo", nemo_config(), nemo_weights(source))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="out exists"):
        convert_nemo(nemo, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_failure_while_writing_leaves_no_output_and_no_temporary_folder(source, tmp_path, monkeypatch):
    nemo = write_nemo(tmp_path / "tiny.nemo", nemo_config(), nemo_weights(source))

    def save_then_fail(self, folder, **kwargs):
        (folder / "config.json").write_text("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(ParakeetForCTC, "save_pretrained", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        convert_nemo(nemo, tmp_path / "weights" / "model")
    assert list((tmp_path / "weights").iterdir()) == []
