"""Shared pytest fixtures."""

from pathlib import Path

import pytest

_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def reference_min_dir() -> Path:
    """A small, complete and valid reference-data directory (see its README.md). Read-only:
    copy it to ``tmp_path`` before changing anything."""
    return _DATA / "reference_min"


@pytest.fixture(scope="session")
def pubsub_host():
    """A running Pub/Sub emulator; PUBSUB_EMULATOR_HOST points the client libraries at it."""
    import os

    from tests.pubsub_emulator import pubsub_emulator

    with pubsub_emulator() as host:
        previous = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
