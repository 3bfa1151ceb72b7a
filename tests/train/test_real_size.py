"""The real-size model trains: one unit of the ``rtx3050`` architecture on random weights, on CPU.

Every shape is the preset's: 224 px faces, 16 frames, SigLIP2 B/16's 196 patches per frame, k = 64
kept, FastConformer-large's first 6 layers, LFM2-700M's first 6 layers at width 1536 with LoRA,
bf16 autocast. Only the data is small: two actors with one synthetic clip per emotion (fold 0 of
``hicmae-6fold``: actor 1 tested, actor 5 trained; 8 + 8 clips), two epochs of one step each,
through ``fer.train.run.run_unit`` with the feature cache on. Loader workers are off so that
every feature read happens in this process, where it is counted. About three minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fer.models.model as model_module
import fer.train.run as run
from fer.config import resolve_config
from fer.models.audio import audio_frames
from fer.train.features import EncoderForwardCounter

# hicmae-6fold selects the epoch on the test actor, and says so: expected here.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*no validation actors")]

OVERRIDES = {"model.random_weights": True, "data.protocol": "hicmae-6fold", "train.epochs": 2,
             "train.num_workers": 0}
ACTORS = (1, 5)  # the test and training actors of hicmae-6fold's fold 0
ENCODERS = ("audio_encoder.", "visual_encoder.")


@pytest.fixture(scope="module")
def two_actors(tmp_path_factory) -> Path:
    """One 2 s clip per emotion for actors 1 and 5, 256 px at 8 fps (16 frames, as sampled)."""
    from fer.data.synth import generate

    root = tmp_path_factory.mktemp("real-size-synth")
    generate(root, actors=max(ACTORS), clips_per_class=1, seconds=2.0, fps=8, size=256, seed=0)
    for folder in root.glob("Actor_*"):
        if int(folder.name.removeprefix("Actor_")) not in ACTORS:
            shutil.rmtree(folder)
    return root


@pytest.fixture
def both_cores():
    """The session's one-thread setting (tests/train/conftest.py) would double the run time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def digest(tensors) -> str:
    h = hashlib.sha256()
    for name, t in sorted(tensors):
        t = t.detach().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


class Watched:
    """The unit's model as ``run_unit`` builds it: every gradient it receives, and digests of its
    frozen and its trainable tensors when built."""

    def __init__(self):
        self.model, self.got_grad = None, set()

    def frozen(self) -> str:
        """Frozen parameters, and every buffer of the frozen encoders and the LFM2 backbone."""
        params = [(n, p) for n, p in self.model.named_parameters() if not p.requires_grad]
        buffers = [(n, b) for n, b in self.model.named_buffers() if n.startswith((*ENCODERS, "fusion.backbone."))]
        return digest(params + buffers)

    def trainable(self) -> str:
        return digest((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    def wrap(self, build_model):
        def build(cfg, *args, **kwargs):
            model = build_model(cfg, *args, **kwargs)
            if next(model.parameters()).is_meta:  # the FLOPs profile: shapes only
                return model
            assert self.model is None, "run_unit built a second model (a retry?)"
            self.model = model
            self.built = {"frozen": self.frozen(), "trainable": self.trainable()}
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(
                        lambda p, name=name: self.got_grad.add(name) if p.grad.abs().sum() > 0 else None)
            return model
        return build


def test_rtx3050_architecture_trains_a_unit_through_the_feature_cache(two_actors, tmp_path, feature_spy, both_cores):
    cfg = resolve_config("rtx3050", OVERRIDES)
    watched = Watched()
    at_fit, epochs = {}, []

    class Epochs:
        def on_epoch_end(self, epoch, metrics):
            epochs.append({"epoch": epoch, "encoder_calls": dict(calls.counts), "reads": len(feature_spy.reads),
                           **metrics})

    real_fit = run.fit

    def fit(model, **kwargs):
        at_fit.update(encoder_calls=dict(calls.counts), reads=len(feature_spy.reads))
        return real_fit(model, **kwargs)

    with pytest.MonkeyPatch.context() as mp, EncoderForwardCounter() as calls:
        mp.setattr(model_module, "build_model", watched.wrap(model_module.build_model))
        mp.setattr(run, "fit", fit)
        result = run.run_unit(cfg, data_root=two_actors, cache_dir=tmp_path, fold=0, seed=0, callback=Epochs())
    model = watched.model

    # The preset's real shapes.
    assert model.visual_encoder.num_patches == 196 and model.visual_encoder.out_dim == 768
    assert model.roi.k == 64
    assert len(model.audio_encoder.encoder.layers) == 6 and model.audio_encoder.out_dim == 512
    backbone = model.fusion.backbone
    assert backbone.config.hidden_size == 1536 and len(backbone.layers) == 6
    assert any("lora_" in n for n, _ in backbone.named_parameters())
    feature_files = sorted(tmp_path.glob("features/*/*.npy"))
    shapes = {np.load(f, mmap_mode="r").shape for f in feature_files}
    assert shapes == {(16, 196, 768), (audio_frames(48000, sample_rate=16000), 512)}
    assert len(feature_files) == 2 * 16  # both encoders, every clip of both actors

    # Two epochs, finite losses.
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(math.isfinite(row[k]) for row in result.history for k in ("train/loss", "val/loss"))
    assert math.isfinite(result.metrics["test/uar"])

    # Gradients reached exactly the trainable parameters, which are exactly the parts that train:
    # everything but the two encoders and LFM2's base weights (its LoRA adapters train).
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if not n.startswith(ENCODERS) and (not n.startswith("fusion.backbone.") or "lora_" in n)}
    assert trainable == expected
    assert watched.got_grad == trainable
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    # Frozen parts bit-identical after training; the trainable ones moved.
    assert watched.frozen() == watched.built["frozen"]
    assert watched.trainable() != watched.built["trainable"]

    # The encoders ran only to build the cache: once per clip, in batches of 8, before the first
    # epoch; neither epoch ran one, and the second read every clip's features from the cache.
    assert at_fit["encoder_calls"] == {"audio": 2, "visual": 2}
    assert [e["encoder_calls"] for e in epochs] == [at_fit["encoder_calls"]] * 2
    built = [ids for _, ids in feature_spy.builds]  # the clips each encoder's cache was asked for
    assert len(built) == 2 and built[0] == built[1] and len(built[0]) == 16
    second = [cid for _, cid in feature_spy.reads[epochs[0]["reads"]:epochs[1]["reads"]]]
    assert len(second) == 2 * 16 and sorted(set(second)) == built[0]  # 8 train + 8 val clips, 2 encoders
