"""Audio encoder: config validation, presets (sizes on the meta device), the tiny forward against
transformers' own pipeline, freezing, and pretrained loading with truncation."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import (
    GPT2Config,
    ParakeetCTCConfig,
    ParakeetEncoder,
    ParakeetEncoderConfig,
    ParakeetFeatureExtractor,
    ParakeetForCTC,
)

from fer.models.audio import (
    AUDIO_ENCODERS,
    AudioConfig,
    audio_frames,
    build_audio_encoder,
    encoder_config,
    load_parakeet_encoder,
)

SR = 16000


def fastconformer_params(d: int, layers: int, ff: int, kernel: int, channels: int, mels: int = 80) -> int:
    """Parameter count of a FastConformer written out from the architecture (Rekesh et al. 2023),
    independent of any implementation: 8x subsampling by a 3x3 conv and two depthwise-separable
    3x3 convs, then per layer two macaron feed-forwards, relative-position attention (q, k, v,
    out, position projection without bias, two position biases), a convolution module (pointwise
    to 2d for the GLU, depthwise, batch norm, pointwise) and five layer norms."""
    sub = (9 * channels + channels) + 2 * (9 * channels + channels + channels * channels + channels)
    sub += channels * (mels // 8) * d + d
    ffn = d * ff + ff + ff * d + d
    attn = 4 * (d * d + d) + d * d + 2 * d
    conv = (d * 2 * d + 2 * d) + (d * kernel + d) + 2 * d + (d * d + d)
    return sub + layers * (2 * ffn + attn + conv + 5 * 2 * d)


def n_params(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


# --- config ------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    assert AudioConfig().model_dump() == dict(encoder="tiny", pretrained=None, layers=None, freeze=True, pooling="attention")
    with pytest.raises(ValidationError, match="known: fastconformer-large, parakeet-0.6b, tiny"):
        AudioConfig(encoder="conformer-xxl")
    with pytest.raises(ValidationError, match="known: attention, avg, learnable, max"):
        AudioConfig(pooling="median")
    with pytest.raises(ValidationError, match="18 layers requested but encoder 'fastconformer-large' has 17") as err:
        AudioConfig(encoder="fastconformer-large", layers=18)
    assert err.value.errors()[0]["loc"] == ("layers",)
    with pytest.raises(ValidationError):
        AudioConfig(layers=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AudioConfig(depth=3)


# --- presets -----------------------------------------------------------------------------------


def test_fastconformer_large_has_the_published_size():
    with torch.device("meta"):
        enc = build_audio_encoder(AudioConfig(encoder="fastconformer-large"), sample_rate=SR)
    assert n_params(enc) == 108_762_112 == fastconformer_params(512, 17, 2048, 9, 256)


def test_parakeet_06b_matches_nvidia_parakeet_ctc_06b_encoder():
    cfg = encoder_config("parakeet-0.6b")
    published = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=8, intermediate_size=4096,
                     conv_kernel_size=9, subsampling_factor=8, subsampling_conv_channels=256, num_mel_bins=80)
    assert {k: getattr(cfg, k) for k in published} == published


@pytest.mark.parametrize("name", AUDIO_ENCODERS.names())
@pytest.mark.parametrize("layers", [None, 1])
def test_preset_sizes_on_meta_device(name, layers):
    arch = AUDIO_ENCODERS.get(name)
    with torch.device("meta"):
        enc = build_audio_encoder(AudioConfig(encoder=name, layers=layers, freeze=False), sample_rate=SR)
    kept = layers or arch["num_hidden_layers"]
    assert len(enc.encoder.layers) == kept
    assert enc.out_dim == arch["hidden_size"]
    expected = fastconformer_params(arch["hidden_size"], kept, arch["intermediate_size"], arch["conv_kernel_size"],
                                    arch["subsampling_conv_channels"])
    assert n_params(enc) == n_params(enc, trainable=True) == expected


@pytest.mark.parametrize("name", AUDIO_ENCODERS.names())
def test_meta_forward_gives_output_shape(name):
    """What the profiler needs: a weightless forward that still reports the right shape."""
    with torch.device("meta"):
        enc = build_audio_encoder(AudioConfig(encoder=name, layers=1), sample_rate=SR)
        out = enc(torch.empty(2, 3 * SR))
    assert out.shape == (2, audio_frames(3 * SR, sample_rate=SR), enc.out_dim)


# --- tiny forward --------------------------------------------------------------------------------


def tiny(freeze: bool, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_audio_encoder(AudioConfig(encoder="tiny", freeze=freeze, **kw), sample_rate=SR)


@pytest.mark.parametrize("num_samples", [16000, 32000, 48000, 20000 + 37])
def test_tiny_forward_shape_and_frames(num_samples):
    enc = tiny(freeze=True)
    out = enc(torch.randn(2, num_samples) * 0.1)
    assert out.shape == (2, enc.frames(num_samples), 64)
    assert torch.isfinite(out).all()
    # The encoder's own count of valid output frames, from its output attention mask.
    _, mask = enc.melspec(torch.zeros(1, num_samples))
    counted = enc.encoder(input_features=torch.zeros(1, mask.shape[1], 80), attention_mask=mask).attention_mask
    assert int(counted.sum()) == audio_frames(num_samples, sample_rate=SR)


def test_frames_formula_against_parakeet_over_many_lengths():
    enc = ParakeetEncoder(encoder_config("tiny"))
    lengths = torch.arange(320, 64000, 53)
    hf = enc._get_subsampling_output_length(lengths // 160)
    ours = torch.tensor([audio_frames(int(n), sample_rate=SR) for n in lengths])
    assert torch.equal(hf.long(), ours)


def test_tiny_equals_transformers_pipeline():
    """Front end + encoder = ParakeetFeatureExtractor + ParakeetEncoder on the valid frames."""
    enc = tiny(freeze=True).eval()
    waves = (0.1 * np.random.default_rng(0).standard_normal((2, 32000))).astype(np.float32)
    inputs = ParakeetFeatureExtractor()(list(waves), sampling_rate=SR, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        ref = enc.encoder(**inputs)
        ours = enc(torch.from_numpy(waves))
    valid = int(ref.attention_mask[0].sum())
    assert ours.shape[1] == valid < ref.last_hidden_state.shape[1]  # 2 s: one padding-only frame dropped
    torch.testing.assert_close(ours, ref.last_hidden_state[:, :valid], atol=1e-4, rtol=1e-4)


def test_unfrozen_gradients_reach_every_parameter():
    enc = tiny(freeze=False).train()
    assert enc.encoder.training
    assert n_params(enc, trainable=True) == n_params(enc) > 0
    out = enc(torch.randn(2, 16000) * 0.1)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_frozen_encoder_is_fixed_and_stays_in_eval_mode():
    enc = tiny(freeze=True)
    head = torch.nn.Linear(enc.out_dim, 8)
    enc.train()
    head.train()
    assert not enc.encoder.training and enc.training
    assert n_params(enc, trainable=True) == 0
    before = {k: v.clone() for k, v in enc.state_dict().items()}  # includes BatchNorm running stats
    opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=1e-2)
    audio = torch.randn(4, 16000) * 0.1
    first = enc(audio)
    loss = torch.nn.functional.cross_entropy(head(first.mean(1)), torch.arange(4))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in enc.parameters())
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert torch.equal(enc(audio), first)  # no dropout while "training"


def test_same_seed_same_encoder():
    a, b = tiny(freeze=False, seed=5), tiny(freeze=False, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = tiny(freeze=False, seed=6)
    assert not torch.equal(a.encoder.layers[0].self_attn.q_proj.weight, c.encoder.layers[0].self_attn.q_proj.weight)


# --- pretrained loading --------------------------------------------------------------------------


def tiny_checkpoint_config(layers: int = 3, **overrides) -> ParakeetEncoderConfig:
    return ParakeetEncoderConfig(**{**AUDIO_ENCODERS.get("tiny"), "num_hidden_layers": layers, **overrides})


def save_checkpoint(kind: str, path, **overrides) -> dict[str, torch.Tensor]:
    """A tiny 3-layer checkpoint; returns the encoder's state dict as saved."""
    torch.manual_seed(1)
    if kind == "encoder":
        model = ParakeetEncoder(tiny_checkpoint_config(**overrides))
        encoder = model
    else:
        model = ParakeetForCTC(ParakeetCTCConfig(encoder_config=tiny_checkpoint_config(**overrides).to_dict(), vocab_size=12, pad_token_id=11))
        encoder = model.encoder
    for module in encoder.modules():  # non-default BatchNorm statistics, so loading them is checked
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(path)
    return {k: v.clone() for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize("kind", ["encoder", "ctc"])
@pytest.mark.parametrize("layers", [1, 2])
def test_pretrained_loads_and_truncates(tmp_path, kind, layers):
    saved = save_checkpoint(kind, tmp_path)
    enc = build_audio_encoder(AudioConfig(encoder="tiny", pretrained=str(tmp_path), layers=layers), sample_rate=SR)
    assert len(enc.encoder.layers) == enc.encoder.config.num_hidden_layers == layers
    loaded = enc.encoder.state_dict()
    expected = {k: v for k, v in saved.items() if not k.startswith("layers.") or int(k.split(".")[1]) < layers}
    assert loaded.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k
    assert loaded["layers.0.conv.norm.running_var"].min() >= 0.5  # saved statistics, not the default 1


def test_pretrained_keeps_all_layers_by_default(tmp_path):
    saved = save_checkpoint("encoder", tmp_path)
    enc = load_parakeet_encoder(str(tmp_path))
    assert len(enc.layers) == 3
    assert all(torch.equal(v, saved[k]) for k, v in enc.state_dict().items())


def test_build_settings_are_read_from_the_built_encoder(tmp_path):
    settings = tiny(freeze=True, layers=1).build_settings()
    assert settings["sample_rate"] == SR
    picked = {k: settings["encoder"][k] for k in ("hidden_size", "num_hidden_layers", "num_mel_bins", "subsampling_factor")}
    assert picked == {"hidden_size": 64, "num_hidden_layers": 1, "num_mel_bins": 80, "subsampling_factor": 8}
    json.dumps(settings, sort_keys=True)  # raises unless JSON-able, as a cache key needs
    # The checkpoint's folder is not a setting: the same weights elsewhere state the same settings.
    for folder in ("a", "b"):
        save_checkpoint("encoder", tmp_path / folder)
    a, b = (build_audio_encoder(AudioConfig(encoder="tiny", pretrained=str(tmp_path / f)), sample_rate=SR) for f in "ab")
    assert a.build_settings() == b.build_settings() and a.build_settings()["encoder"]["num_hidden_layers"] == 3


def test_pretrained_architecture_must_match_preset(tmp_path):
    save_checkpoint("encoder", tmp_path, hidden_size=32, num_attention_heads=2)
    with pytest.raises(ValueError, match=r"is not a 'tiny': hidden_size=32 \(preset 64\), num_attention_heads=2"):
        build_audio_encoder(AudioConfig(encoder="tiny", pretrained=str(tmp_path)), sample_rate=SR)


def test_pretrained_errors_name_the_source(tmp_path, monkeypatch):
    save_checkpoint("ctc", tmp_path / "ctc")
    with pytest.raises(ValueError, match="4 layers requested, checkpoint has 3"):
        load_parakeet_encoder(str(tmp_path / "ctc"), layers=4)
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="'gpt2' checkpoint holds no ParakeetEncoder"):
        load_parakeet_encoder(str(tmp_path / "gpt2"))
    with pytest.raises(ValueError, match="16 kHz"):
        build_audio_encoder(AudioConfig(pretrained=str(tmp_path / "ctc")), sample_rate=22050)


def test_offline_hub_id_fails_without_network(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="audio encoder weights 'nvidia/parakeet-ctc-0.6b'"):
        load_parakeet_encoder("nvidia/parakeet-ctc-0.6b", layers=2)


def test_load_weights_false_reads_no_checkpoint():
    cfg = AudioConfig(encoder="fastconformer-large", pretrained="/nonexistent/checkpoint", layers=2)
    with torch.device("meta"):
        enc = build_audio_encoder(cfg, sample_rate=SR, load_weights=False)
    assert len(enc.encoder.layers) == 2 and enc.frozen


def test_missing_encoder_weights_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    save_checkpoint("encoder", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["layers.0.self_attn.q_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"checkpoint lacks \['layers.0.self_attn.q_proj.weight'\]"):
        load_parakeet_encoder(str(tmp_path), layers=2)
