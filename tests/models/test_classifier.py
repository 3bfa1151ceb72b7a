"""Classifier head: every classifier pooling, norm and activation; pooled values checked by hand."""

import pytest
import torch

from fer.config import resolve_config
from fer.labels import EMOTIONS
from fer.models.classifier import (
    ACTIVATIONS,
    NORMS,
    CLASSIFIER_POOLING,
    AttentionPooling,
    ClassifierConfig,
    build_classifier,
)

B, S, D = 4, 6, 16


def x(seed=0):
    return torch.randn(B, S, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", CLASSIFIER_POOLING.names())
@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_logits_finite_and_gradients_reach_every_parameter(pooling, norm, activation):
    torch.manual_seed(0)
    head = build_classifier(ClassifierConfig(pooling=pooling, norm=norm, activation=activation, hidden=[12, 10]),
                            in_dim=D, num_classes=len(EMOTIONS)).train()
    inp = x().requires_grad_()
    logits = head(inp)
    assert logits.shape == (B, len(EMOTIONS)) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(B)).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert inp.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "pooling, expected",
    [("mean", lambda t: t.mean(1)), ("max", lambda t: t.max(1).values), ("last", lambda t: t[:, S - 1])],
)
def test_fixed_poolings_compute_their_statistic(pooling, expected):
    pool = CLASSIFIER_POOLING.get(pooling)(dim=D)
    torch.testing.assert_close(pool(x()), expected(x()))


def test_attention_pooling_is_a_convex_combination_and_uniform_without_scores():
    pool = AttentionPooling(dim=D)
    w = pool.weights(x())
    assert w.shape == (B, S) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B))
    torch.testing.assert_close(pool(x()), torch.einsum("bs,bsd->bd", w, x()))
    with torch.no_grad():
        pool.score.weight.zero_()
    torch.testing.assert_close(pool(x()), x().mean(1))
    with torch.no_grad():  # a score on one feature picks the token where that feature is largest
        pool.score.weight[0, 0] = 1e4
    top = x()[torch.arange(B), x()[..., 0].argmax(1)]
    torch.testing.assert_close(pool(x()), top)


def test_no_hidden_layers_is_a_linear_head_on_the_pooled_tokens():
    head = build_classifier(ClassifierConfig(pooling="mean", hidden=[]), in_dim=D, num_classes=len(EMOTIONS))
    (linear,) = head.mlp
    torch.testing.assert_close(head(x()), x().mean(1) @ linear.weight.T + linear.bias)


def test_mlp_layout_follows_the_config():
    head = build_classifier(ClassifierConfig(hidden=[12, 10], norm="batch", activation="silu", dropout=0.3),
                            in_dim=D, num_classes=len(EMOTIONS))
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "SiLU", "Dropout"] * 2 + ["Linear"]
    assert [m.out_features for m in head.mlp if isinstance(m, torch.nn.Linear)] == [12, 10, len(EMOTIONS)]
    assert all(m.p == 0.3 for m in head.mlp if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("dataset, classes", [("ravdess", 8), ("crema-d", 6)])
def test_the_model_head_has_one_output_per_emotion_of_its_dataset(dataset, classes):
    from fer.models.model import build_model

    model = build_model(resolve_config("tiny", {"data.dataset": dataset}), device="meta")
    assert model.classifier.mlp[-1].out_features == classes


def test_dropout_only_in_training():
    torch.manual_seed(0)
    head = build_classifier(ClassifierConfig(dropout=0.5), in_dim=D, num_classes=len(EMOTIONS))
    head.eval()
    torch.testing.assert_close(head(x()), head(x()))
    head.train()
    assert not torch.allclose(head(x()), head(x()))


def test_config_errors():
    with pytest.raises(ValueError, match="known: attention, last, max, mean"):
        ClassifierConfig(pooling="median")
    with pytest.raises(ValueError, match="hidden sizes must be >= 1"):
        ClassifierConfig(hidden=[8, 0])
