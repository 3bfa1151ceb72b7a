"""Metrics: hand-computed values, agreement with scikit-learn, the fixed emotion order."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from fer.labels import EMOTIONS, emotions
from fer.train.metrics import classification_metrics


def test_hand_computed_values():
    labels = [0, 0, 1, 1, 1, 2]
    preds = [0, 1, 1, 1, 2, 2]
    m = classification_metrics(labels, preds)
    # 4 of 6 right; recalls 1/2, 2/3, 1/1; F1 per class 2/3 each (P, R = 1, 1/2 | 2/3, 2/3 | 1/2, 1).
    assert m["war"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["recall/neutral"] == pytest.approx(0.5)
    assert m["recall/calm"] == pytest.approx(2 / 3)
    assert m["recall/happy"] == pytest.approx(1.0)
    for name in EMOTIONS[3:]:
        assert math.isnan(m[f"recall/{name}"])
    expected = np.zeros((8, 8), int)
    expected[0, 0], expected[0, 1] = 1, 1
    expected[1, 1], expected[1, 2] = 2, 1
    expected[2, 2] = 1
    np.testing.assert_array_equal(m["confusion"], expected)


def test_class_predicted_but_never_true():
    # Class 3 (sad) is predicted once and never true: it has no recall and stays out of UAR,
    # but its F1 of 0 enters the macro average.
    m = classification_metrics([0, 0], [0, 3])
    assert m["uar"] == pytest.approx(0.5)
    assert math.isnan(m["recall/sad"])
    assert m["f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert m["confusion"][0, 3] == 1


def test_confusion_rows_are_true_columns_predicted_in_emotion_order():
    m = classification_metrics([EMOTIONS.index("angry")], [EMOTIONS.index("disgust")])
    assert m["confusion"].shape == (8, 8)
    assert m["confusion"][4, 6] == 1 and m["confusion"].sum() == 1


def test_agrees_with_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 500)
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 8, 500))
    m = classification_metrics(labels, preds)
    assert m["war"] == pytest.approx(accuracy_score(labels, preds))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    recall = recall_score(labels, preds, average=None, labels=list(range(8)))
    assert [m[f"recall/{e}"] for e in EMOTIONS] == pytest.approx(list(recall))
    assert m["confusion"].sum() == 500
    assert np.trace(m["confusion"]) == int((labels == preds).sum())


@pytest.mark.parametrize("labels, preds, match", [
    ([], [], "non-empty"),
    ([0, 1], [0], "equal-length"),
    ([0, 8], [0, 1], "outside 0..7"),
])
def test_bad_input(labels, preds, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(labels, preds)


def test_crema_d_metrics_name_its_six_emotions_and_refuse_a_seventh():
    crema = emotions("crema-d")
    m = classification_metrics([0, 1, 5, 5], [0, 1, 5, 4], crema)
    assert sorted(k for k in m if k.startswith("recall/")) == sorted(f"recall/{e}" for e in crema)
    assert (m["recall/angry"], m["recall/sad"], m["uar"]) == (1.0, 0.5, pytest.approx(2.5 / 3))
    assert math.isnan(m["recall/fearful"]) and m["confusion"].shape == (6, 6) and m["confusion"][5, 4] == 1
    with pytest.raises(ValueError, match=r"emotion indices \[6\] are outside 0..5 \(6 emotions: angry, disgust"):
        classification_metrics([6], [0], crema)
