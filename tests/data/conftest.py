"""Fixtures shared by the data-layer tests."""

from pathlib import Path

import pytest

from fer.data.face_model import MANUAL_STEPS, installed_face_model


@pytest.fixture(scope="session")
def face_model() -> Path:
    """The BlazeFace model; its absence fails loudly: tests never skip the face path."""
    path = installed_face_model()
    if path is None:
        pytest.fail("BlazeFace model missing; tests never skip the face path.\n" + MANUAL_STEPS)
    return path
