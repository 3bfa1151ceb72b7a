"""Classification metrics of emotion predictions, computed with scikit-learn.

WAR (weighted average recall) is plain accuracy; UAR (unweighted average recall) is the mean of
the per-class recalls, i.e. scikit-learn's balanced accuracy, over the classes present in the
true labels. Macro-F1 averages over the classes present in the true or predicted labels.
Per-class recall and the confusion matrix always cover every emotion of the dataset's label set
(``fer.labels.emotions``) in its order, so tables of different folds line up; a class absent from
the true labels has recall NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             recall_score)

from fer.labels import EMOTIONS


def classification_metrics(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray,
                           emotions: Sequence[str] = EMOTIONS) -> dict[str, Any]:
    """WAR, UAR, macro-F1, per-class recall and the confusion matrix.

    Args:
        labels: true emotion indices (0..C-1), one per clip.
        preds: predicted emotion indices, same length.
        emotions: the label set, index -> name (``fer.labels.emotions(dataset)``; RAVDESS's by default).

    Returns:
        ``{"war", "uar", "f1": float, "recall/<emotion>": float (NaN when the emotion has no
        true clip), "confusion": int array (C, C), rows = true, columns = predicted}``.

    Raises:
        ValueError: empty or unequal inputs, or an index outside 0..C-1.
    """
    classes = list(range(len(emotions)))
    y_true, y_pred = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need two equal-length, non-empty 1-d label arrays, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    outside = sorted(set(np.concatenate([y_true, y_pred]).tolist()) - set(classes))
    if outside:
        raise ValueError(f"emotion indices {outside} are outside 0..{len(emotions) - 1} "
                         f"({len(emotions)} emotions: {', '.join(emotions)})")
    with warnings.catch_warnings():
        # A class predicted but never true has no recall; sklearn warns and leaves it out of the
        # mean, which is what UAR means here (the average over the true classes).
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        uar = float(balanced_accuracy_score(y_true, y_pred))
    recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=np.nan)
    out: dict[str, Any] = {
        "war": float(accuracy_score(y_true, y_pred)),
        "uar": uar,
        "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    out.update({f"recall/{name}": float(r) for name, r in zip(emotions, recall)})
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=classes)
    return out
