"""Label sets per dataset, and the dataset setting that chooses one."""

from __future__ import annotations

import pytest

from fer.config import ConfigError, config_hash, flatten, resolve_config
from fer.labels import DATASET_EMOTIONS, EMOTIONS, emotions


def test_each_dataset_has_its_labels_in_index_order():
    assert emotions("ravdess") is EMOTIONS and len(EMOTIONS) == 8 and EMOTIONS[0] == "neutral"
    assert emotions("crema-d") == ("angry", "disgust", "fearful", "happy", "neutral", "sad")


def test_unknown_dataset_is_named_with_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown dataset 'iemocap'; known datasets: ravdess, crema-d"):
        emotions("iemocap")


def test_config_accepts_every_labelled_dataset_and_names_a_bad_one():
    for name in DATASET_EMOTIONS:
        assert resolve_config("tiny", {"data.dataset": name}).data.dataset == name
    with pytest.raises(ConfigError, match=r"data\.dataset: Input should be 'ravdess' or 'crema-d'"):
        resolve_config("tiny", {"data.dataset": "iemocap"})


def test_ravdess_dumps_and_keys_are_those_from_before_the_dataset_setting():
    ravdess = resolve_config("tiny")
    explicit = resolve_config("tiny", {"data.dataset": "ravdess"})
    crema = resolve_config("tiny", {"data.dataset": "crema-d"})
    assert "dataset" not in ravdess.data.model_dump() and "data.dataset" not in flatten(explicit)
    assert config_hash(ravdess) == config_hash(explicit) != config_hash(crema)
    assert flatten(crema)["data.dataset"] == "crema-d"
    # A stored config without the field reads back as RAVDESS.
    assert type(ravdess).model_validate(ravdess.model_dump()).data.dataset == "ravdess"
