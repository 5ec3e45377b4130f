"""Start and stop the real Pub/Sub emulator (Google Cloud CLI component) for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pubsub_emulator(timeout_s: float = 90.0):
    """Run the emulator on a free loopback port; yields "127.0.0.1:PORT". Stops it (and the Java
    process gcloud leaves behind) on exit."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("gcloud is not installed: the Pub/Sub emulator tests need the Google Cloud CLI "
                           "with the pubsub-emulator component (see DEVELOPERS.md)")
    host = f"127.0.0.1:{_free_port()}"
    process = subprocess.Popen([gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}/v1/projects/ready/topics", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Pub/Sub emulator did not start on {host} within {timeout_s} s")
                time.sleep(0.5)
        yield host
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        # gcloud may exit and leave the emulator's Java process running: stop it by its port.
        port = host.rsplit(":", 1)[1]
        subprocess.run(["pkill", "-f", f"cloud-pubsub-emulator.*--port={port}"], check=False)
