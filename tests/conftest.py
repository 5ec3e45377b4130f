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


@pytest.fixture(scope="session")
def postgres_url():
    """SQLAlchemy URL of an empty database on a throwaway PostgreSQL server (tests/postgres_server.py).
    Without the server binaries: skips with the reason, fails in CI (CI=true), which must run these."""
    import os

    from tests.postgres_server import postgres_bin_dir, postgres_server

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        reason = ("PostgreSQL is not installed (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin); "
                  "run tests/install_system_deps.sh (as root) to get it")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} - CI must run the PostgreSQL catalog tests")
        pytest.skip(reason)
    with postgres_server(bin_dir) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint():
    """Endpoint URL of a running S3-compatible server on loopback (moto, tests/object_store_server.py)."""
    from tests.object_store_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    """A new, empty bucket on the S3 server, with the AWS SDK's standard environment variables pointing
    at the server for this test (as a user configures S3-compatible storage); returns its name."""
    import uuid

    from tests import object_store_server

    bucket = f"store-{uuid.uuid4().hex[:12]}"
    object_store_server.create_bucket(s3_endpoint, bucket)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_REGION", object_store_server.REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", object_store_server.ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", object_store_server.SECRET_ACCESS_KEY)
    return bucket


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a minute (CI runs it; -m 'not slow' leaves it out)")
