"""Shared pytest fixtures."""

from pathlib import Path

import pytest

from tests.paths import REFERENCE_MIN



@pytest.fixture(scope="session", autouse=True)
def engine_cache_dir(tmp_path_factory):
    """Compiled-reference cache in a session folder (tests never touch the user's cache); child
    processes (Beam workers, CLI runs) inherit it through the environment."""
    import os

    from rating.engine_cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("engine-cache"))
    yield Path(os.environ[CACHE_ENV])
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def reference_min_dir() -> Path:
    """A small, complete and valid reference-data directory (see its README.md). Read-only:
    copy it to ``tmp_path`` before changing anything."""
    return REFERENCE_MIN


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
