"""Classifier head: fused tokens (B, S', D) -> pooling over time (B, D) -> MLP -> (B, C) logits.

The classifier's pooling strategies (``CLASSIFIER_POOLING``; the visual temporal encoder's own
pooling is ``fer.models.pooling.SEGMENT_POOLING``): ``mean``, ``max``, ``attention`` (learned
token scores, softmax over S') and ``last`` (LFM2 is causal, so the last token has seen the
whole sequence). The MLP is Linear -> norm -> activation -> dropout per hidden size, then a
final Linear to the dataset's emotion classes (C = 8 for RAVDESS, 6 for CREMA-D).

    head = build_classifier(ClassifierConfig(), in_dim=512, num_classes=8)
    head(x)  # (B, 16, 512) -> (B, 8)
"""

from __future__ import annotations


import torch
from torch import nn

from fer.models.config import ClassifierConfig
from fer.models.registry import Registry

CLASSIFIER_POOLING: Registry[type[nn.Module]] = Registry("classifier pooling")

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
NORMS = {"layer": nn.LayerNorm, "batch": nn.BatchNorm1d}


@CLASSIFIER_POOLING.register("mean")
class MeanPooling(nn.Module):
    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)  # (B, S', D) -> (B, D)


@CLASSIFIER_POOLING.register("max")
class MaxPooling(nn.Module):
    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(1)  # (B, D)


@CLASSIFIER_POOLING.register("last")
class LastPooling(nn.Module):
    """The last token: under a causal fusion it is the only one that has seen every token."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]  # (B, D)


@CLASSIFIER_POOLING.register("attention")
class AttentionPooling(nn.Module):
    """One learned score per token, softmax over the sequence, weighted sum of the tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)  # a shared offset cancels in the softmax

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S', D) -> (B, S') weights summing to 1 per clip."""
        return self.score(x).squeeze(-1).softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bs,bsd->bd", self.weights(x), x)  # (B, D)


class Classifier(nn.Module):
    """Temporal pooling, then the MLP to ``num_classes`` logits.

    Args:
        pooling: the pooling module (B, S', D) -> (B, D).
        in_dim: D.
        hidden: hidden sizes of the MLP (may be empty: a linear head).
        norm: ``layer`` or ``batch``.
        activation: ``gelu``, ``relu`` or ``silu``.
        dropout: dropout after every hidden activation.
        num_classes: output logits.
    """

    def __init__(self, *, pooling: nn.Module, in_dim: int, hidden: list[int], norm: str, activation: str,
                 dropout: float, num_classes: int):
        super().__init__()
        self.pooling = pooling
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), NORMS[norm](size), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S', D) -> (B, num_classes) logits."""
        return self.mlp(self.pooling(x))


def build_classifier(cfg: ClassifierConfig, *, in_dim: int, num_classes: int) -> Classifier:
    """Classifier head from its config; ``in_dim`` is the fusion output width, ``num_classes`` the
    size of the dataset's label set (``fer.labels.emotions``)."""
    return Classifier(pooling=CLASSIFIER_POOLING.get(cfg.pooling)(dim=in_dim), in_dim=in_dim, hidden=list(cfg.hidden),
                      norm=cfg.norm, activation=cfg.activation, dropout=cfg.dropout, num_classes=num_classes)
