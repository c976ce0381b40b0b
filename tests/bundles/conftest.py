"""Fixtures of the bundle tests; the plain helpers (paths, tiny overrides, runners) are in ``tests.helpers``."""

from __future__ import annotations

import pytest

from tests.helpers import write_tiny_datalist


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory) -> str:
    """A decathlon datalist of small synthetic NIfTI volumes at 1 mm (one per split), 3 classes."""
    return str(write_tiny_datalist(tmp_path_factory.mktemp("tiny_data")))
