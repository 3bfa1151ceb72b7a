"""The training loop on toy models: selection and early stopping, restore, test evaluated once,
NaN loss, gradient accumulation, precision; the optimizer groups and the schedule."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from fer.data.dataset import make_loader
from fer.train.config import TrainConfig
from fer.train.loop import NonFiniteLossError, fit
from fer.train.optim import build_optimizer, param_groups, warmup_cosine

torch.set_num_threads(1)


class ToyClips(Dataset):
    """Items like the real dataset's, with a feature vector ``x`` instead of frames and audio.

    Clip i has label i % 8 and ``x`` = one-hot of the label plus noise; ``loads`` counts reads.
    """

    def __init__(self, n: int, actor: int, seed: int = 0, noise: float = 0.2):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 8
        self.x = nn.functional.one_hot(self.labels, 8).float() + noise * torch.randn(n, 8, generator=g)
        self.actor = actor
        self.loads = 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.loads += 1
        return {"x": self.x[i], "index": torch.tensor(i), "label": self.labels[i],
                "actor": torch.tensor(self.actor), "clip_id": f"clip-{self.actor}-{i}"}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(8, 8)

    def forward(self, batch):
        return self.classifier(batch["x"])  # (B, 8)

    def param_groups(self):
        return {"classifier": list(self.classifier.parameters())}


class Scripted(nn.Module):
    """Its accuracy follows a script over epochs, so selection can be checked exactly.

    The buffer ``epoch`` counts ``train()`` calls (the loop calls it once per epoch) and is part
    of the saved best weights; clip ``index`` is predicted right when ``index // 8 < 4 *
    script[epoch]``, so on 32 clips (4 per class) the UAR is exactly ``script[epoch]``.
    """

    def __init__(self, script, nan_epoch=None):
        super().__init__()
        self.script, self.nan_epoch = script, nan_epoch
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def train(self, mode=True):
        if mode:
            self.epoch += 1
        return super().train(mode)

    def forward(self, batch):
        epoch = int(self.epoch)
        label = batch["label"]
        right = batch["index"] // 8 < round(4 * self.script[epoch - 1])
        pred = torch.where(right, label, (label + 1) % 8)
        logits = 10 * self.scale * nn.functional.one_hot(pred, 8).float()  # (B, 8)
        if epoch == self.nan_epoch and self.training:
            logits = logits * float("nan")
        return logits

    def param_groups(self):
        return {"classifier": [self.scale]}


def loaders(batch_size=8, n_train=32, n_val=32, n_test=32):
    train, val, test = ToyClips(n_train, 1, seed=1), ToyClips(n_val, 2, seed=2), ToyClips(n_test, 3, seed=3)
    return (train, val, test), dict(
        train_loader=make_loader(train, batch_size, shuffle=True, seed=0),
        val_loader=make_loader(val, batch_size, shuffle=False, seed=0),
        test_loader=make_loader(test, batch_size, shuffle=False, seed=0))


class Recorder:
    def __init__(self):
        self.calls = []

    def on_epoch_end(self, epoch, metrics):
        self.calls.append((epoch, dict(metrics)))


def cfg(**kw):
    return TrainConfig(**{"precision": "no", "lr": 1e-3, **kw})


def test_best_epoch_is_best_val_uar_and_its_weights_are_restored_for_test():
    # Val UAR 0.25, 0.75, 0.5, 0.5: best epoch 2, patience 2 stops after epoch 4. The model is
    # worse at the end (0.5) than at the best epoch, so a test UAR of 0.75 proves the restore.
    (train, val, test), kw = loaders()
    rec = Recorder()
    result = fit(Scripted([0.25, 0.75, 0.5, 0.5, 1.0, 1.0]), **kw, cfg=cfg(patience=2), epochs=6,
                 callback=rec)
    assert [row["val/uar"] for row in result.history] == pytest.approx([0.25, 0.75, 0.5, 0.5])
    assert result.best_epoch == 2
    assert result.best_val.metrics["uar"] == pytest.approx(0.75)
    assert result.test.metrics["uar"] == pytest.approx(0.75)
    # Test clips are read exactly once, validation clips once per epoch.
    assert test.loads == len(test)
    assert val.loads == 4 * len(val)
    assert [e for e, _ in rec.calls] == [1, 2, 3, 4]
    assert set(rec.calls[0][1]) == {"train/loss", "val/loss", "val/uar", "val/war", "val/f1"}
    assert [m["val/uar"] for _, m in rec.calls] == [row["val/uar"] for row in result.history]


def test_a_tie_keeps_the_earlier_epoch_and_no_patience_trains_every_epoch():
    _, kw = loaders()
    result = fit(Scripted([0.25, 0.75, 0.75, 0.5, 0.5]), **kw, cfg=cfg(patience=None), epochs=5)
    assert len(result.history) == 5
    assert result.best_epoch == 2


def test_predictions_carry_clip_ids_actors_and_probabilities():
    _, kw = loaders(n_test=13, batch_size=4)  # a last, partial test batch
    result = fit(Linear(), **kw, cfg=cfg(), epochs=1)
    test = result.test
    assert test.clip_ids == [f"clip-3-{i}" for i in range(13)]
    assert test.actors.tolist() == [3] * 13
    assert test.labels.tolist() == [i % 8 for i in range(13)]
    assert test.probs.shape == (13, 8)
    assert test.probs.sum(1) == pytest.approx([1.0] * 13, abs=1e-5)
    assert (test.preds == test.probs.argmax(1)).all()


def test_nan_loss_raises():
    _, kw = loaders()
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        fit(Scripted([0.5] * 4, nan_epoch=2), **kw, cfg=cfg(), epochs=4)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_linear_model_learns_separable_classes(precision):
    torch.manual_seed(0)
    _, kw = loaders(n_train=64)
    result = fit(Linear(), **kw, cfg=cfg(lr=0.05, precision=precision, warmup=0.0), epochs=15)
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.best_val.metrics["uar"] > 0.9
    assert result.test.metrics["uar"] > 0.9
    assert result.train_clips_per_s > 0


def test_fp16_without_gpu_warns_and_trains_in_full_precision():
    if torch.cuda.is_available():
        pytest.skip("fp16 is honoured on a GPU")
    _, kw = loaders()
    with pytest.warns(UserWarning, match="fp16 needs a GPU"):
        fit(Linear(), **kw, cfg=cfg(precision="fp16"), epochs=1)


def test_gradient_accumulation_equals_the_larger_batch():
    weights = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = Linear()
        _, kw = loaders(batch_size=batch_size)
        fit(model, **kw, cfg=cfg(lr=0.05, grad_accum=accum, patience=None), epochs=2)
        weights.append(model.classifier.weight.detach().clone())
    # Same shuffle seed, same samples per update: 4 + 4 accumulated is one batch of 8.
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_param_groups_split_decay_and_scale_lr():
    model = nn.ModuleDict({"fusion": nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),
                           "classifier": nn.Linear(4, 8)})
    model["classifier"].bias.requires_grad_(False)
    groups = {name: list(part.parameters()) for name, part in model.items()}
    out = {g["name"]: g for g in param_groups(groups, lr=1e-3, lr_mult={"fusion": 0.5, "classifier": 2.0},
                                              weight_decay=0.1)}
    assert set(out) == {"fusion/decay", "fusion/no_decay", "classifier/decay"}
    assert out["fusion/decay"]["lr"] == pytest.approx(5e-4) and out["fusion/decay"]["weight_decay"] == 0.1
    assert [p.shape for p in out["fusion/no_decay"]["params"]] == [(4,), (4,), (4,)]  # bias, norm w, b
    assert out["fusion/no_decay"]["weight_decay"] == 0.0
    assert out["classifier/decay"]["lr"] == pytest.approx(2e-3)
    with pytest.raises(KeyError, match="no learning-rate multiplier for model part 'fusion'"):
        param_groups(groups, lr=1e-3, lr_mult={"classifier": 1.0}, weight_decay=0.1)
    frozen = {"fusion": [p.requires_grad_(False) for p in model["fusion"].parameters()]}
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, lr=1e-3, lr_mult={"fusion": 1.0}, weight_decay=0.1)


def test_warmup_cosine_schedule_values():
    f = [warmup_cosine(s, total_steps=10, warmup_steps=2) for s in range(11)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)  # linear warm-up
    assert f[2] == pytest.approx(1.0)  # cosine starts at the peak
    assert f[6] == pytest.approx(0.5)  # halfway through the cosine
    assert f[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    assert warmup_cosine(3, total_steps=10, warmup_steps=0) == pytest.approx(0.5 * (1 + math.cos(0.3 * math.pi)))


def test_scheduler_steps_once_per_optimizer_update(monkeypatch):
    import fer.train.loop as loop

    real, built = loop.build_scheduler, []

    def spy(optimizer, **kw):
        built.append((kw, real(optimizer, **kw)))
        return built[-1][1]

    monkeypatch.setattr(loop, "build_scheduler", spy)
    _, kw = loaders(batch_size=4)  # 8 batches per epoch, accumulated in pairs: 4 updates
    fit(Linear(), **kw, cfg=cfg(lr=0.1, grad_accum=2, warmup=0.0, patience=None), epochs=2)
    (args, scheduler), = built
    assert args == {"total_steps": 8, "warmup": 0.0}
    # Stepped once per update (8), not once per batch (16): the cosine ends exactly at zero.
    assert scheduler.last_epoch == 8
    assert scheduler.get_last_lr() == [pytest.approx(0.0, abs=1e-12)] * 2


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_gpu(precision):
    torch.manual_seed(0)
    model = Linear()
    _, kw = loaders(n_train=64)
    result = fit(model, **kw, cfg=cfg(lr=0.05, precision=precision, warmup=0.0), epochs=15)
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32  # autocast keeps float32 master weights
    assert result.test.metrics["uar"] > 0.9
