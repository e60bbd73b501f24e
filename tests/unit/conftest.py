"""The unit tier: pure helpers, no database, no servers. `pytest tests/unit` runs in seconds."""

import pytest


@pytest.fixture(autouse=True)
def api():
    """No fake API here: nothing in this tier makes a request."""
    return None
