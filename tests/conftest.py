"""Shared pytest fixtures."""

from pathlib import Path

import pytest

_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def reference_min_dir() -> Path:
    """A small, complete and valid reference-data directory (see its README.md). Read-only:
    copy it to ``tmp_path`` before changing anything."""
    return _DATA / "reference_min"
