"""What a unit's tracking writes follows its dataset: the ``dataset`` tag, the confusion CSV's
rows and columns, the prediction columns."""

from __future__ import annotations

import numpy as np
import pytest

from fer.config import resolve_config
from fer.labels import EMOTIONS, emotions
from fer.tracking import PREDICTION_COLUMNS, confusion_csv, prediction_columns, unit_tags


@pytest.mark.parametrize("dataset", ["ravdess", "crema-d"])
def test_unit_tags_name_the_dataset(dataset):
    cfg = resolve_config("tiny", {"data.dataset": dataset})
    tags = unit_tags(study="s", cell="c", fold=0, seed=0, config=cfg, axes={})
    # data.protocol's default (ravdess-6fold) stands for CREMA-D's own protocol.
    assert tags["dataset"] == dataset
    assert tags["protocol"] == {"ravdess": "ravdess-6fold", "crema-d": "crema-d-5fold"}[dataset]


def test_confusion_csv_of_crema_d_has_its_six_rows_and_columns():
    matrix = np.arange(36).reshape(6, 6)
    text = confusion_csv(matrix, emotions("crema-d"))
    lines = text.splitlines()
    assert lines[0] == "true\\pred,angry,disgust,fearful,happy,neutral,sad"
    assert lines[6] == "sad,30,31,32,33,34,35" and len(lines) == 7
    with pytest.raises(ValueError):  # an 8x8 matrix is not CREMA-D's
        confusion_csv(np.zeros((8, 8)), emotions("crema-d"))


def test_ravdess_confusion_and_prediction_columns_are_unchanged():
    assert confusion_csv(np.eye(8, dtype=int)).splitlines()[0] == "true\\pred," + ",".join(EMOTIONS)
    assert PREDICTION_COLUMNS == prediction_columns(EMOTIONS)
    assert PREDICTION_COLUMNS[4:] == ["p_neutral", "p_calm", "p_happy", "p_sad", "p_angry", "p_fearful", "p_disgust",
                                      "p_surprised"]
