"""Start and stop a real S3-compatible server on loopback (moto's server mode) for tests.

The store reaches it the way it reaches any S3-compatible service: through the AWS SDK's standard
environment variables (``AWS_ENDPOINT_URL`` and credentials), which the ``s3_bucket`` fixture sets.
The helpers here talk to the server with boto3 (installed with moto), not through the code under
test, so a test can check what really landed in the bucket.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request

import boto3

from tests.pubsub_emulator import _free_port

REGION = "us-east-1"
# moto accepts any credentials; these only have to be present for the AWS SDK to sign requests.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


@contextlib.contextmanager
def s3_server(timeout_s: float = 60.0):
    """Run moto's S3 server on a free loopback port; yields its endpoint, "http://127.0.0.1:PORT".
    Stops it on exit."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint} within {timeout_s} s")
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(endpoint: str):
    """A boto3 S3 client of the server at ``endpoint`` (independent of the code under test)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)


def create_bucket(endpoint: str, bucket: str) -> None:
    client(endpoint).create_bucket(Bucket=bucket)


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix``, sorted, as the server lists them."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
