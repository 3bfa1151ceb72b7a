"""Fixtures of the weights tests: a stand-in Hugging Face hub (tests/weights/fakehub.py)."""

import pytest
from fakehub import FakeHub, serve


@pytest.fixture
def hub() -> FakeHub:
    """A stand-in hub serving on 127.0.0.1 for this test; ``hub.url`` goes into HF_ENDPOINT."""
    state = FakeHub()
    server = serve(state)
    yield state
    server.shutdown()
    server.server_close()
