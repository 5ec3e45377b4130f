"""Real distributed workers on this machine for tests: a dask.distributed cluster (a scheduler and
workers, each its own process) and Beam's external worker pool, each worker cut off from the
submitter's files.

Isolation: each worker runs in a mount namespace of its own (``unshare --mount``, which needs root)
where an empty tmpfs is mounted over ``hidden`` (the test session's temporary folder, which holds
everything the submitter wrote: generated CDRs, reference data, its cache). A worker can then reach
inputs, reference and store only through object storage, as on a cluster of machines; its own
temporary folder and caches live in that tmpfs. Without root the workers are plain processes
(``ISOLATION`` says which, and the tests print it). The project's code and its virtual environment
stay visible: a cluster's workers have the job's package installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pubsub_emulator import _free_port

# What a worker inherits of the submitting test's environment: no object-storage setting (AWS_*)
# and no cache folder, so that whatever reaches a worker came with the job.
_DROPPED = ("AWS_", "USAGE_RATING_CACHE_DIR", "TMPDIR", "NUMBA_CACHE_DIR")


def can_isolate() -> bool:
    """Whether workers can run in mount namespaces of their own here (root and ``unshare``)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode == 0


ISOLATION = "each worker in its own mount namespace, the test's files hidden under an empty tmpfs" if can_isolate() \
    else "plain processes (no root for mount namespaces): workers could read the test's files"


def _worker_command(command: list[str], hidden: Path) -> tuple[list[str], dict[str, str]]:
    """``command`` wrapped to run isolated from ``hidden`` (when possible), and its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    own = hidden / "worker-own"   # inside the tmpfs when isolated: the worker's temp folder and caches
    env.update(TMPDIR=str(own / "tmp"), USAGE_RATING_CACHE_DIR=str(own / "cache"), PYTHONUNBUFFERED="1")
    # Beam's worker pool starts its SDK workers as plain ``python``: this interpreter's, also when
    # its virtualenv is not activated (else the worker dies on import and the job waits forever).
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    prepare = f'mkdir -p "{own}/tmp" "{own}/cache"'
    if can_isolate():
        script = f'mount -t tmpfs tmpfs "{hidden}" && {prepare} && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command], env
    return ["sh", "-c", f'{prepare} && exec "$@"', "sh", *command], env


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop each process and what it started (each is the leader of its own session)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_port(port: int, processes: list[subprocess.Popen], what: str, timeout_s: float) -> None:
    import socket
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start on port {port} within {timeout_s} s")
        time.sleep(0.2)


@contextlib.contextmanager
def dask_cluster(hidden: Path, log_dir: Path, workers: int = 2, timeout_s: float = 90.0):
    """A dask.distributed scheduler and ``workers`` single-threaded workers, each its own process
    (workers isolated from ``hidden``); yields the scheduler's address. Logs go to ``log_dir``."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    processes = []
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        processes.append(subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=open(log_dir / "scheduler.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(port, processes, "the dask scheduler", timeout_s)
        for i in range(workers):
            command, env = _worker_command(
                [str(bin_dir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                 "--name", f"worker-{i}", "--local-directory", str(hidden / "worker-own" / "dask")], hidden)
            processes.append(subprocess.Popen(command, env=env, stdout=open(log_dir / f"worker-{i}.log", "wb"),
                                              stderr=subprocess.STDOUT, start_new_session=True, cwd="/"))
        _wait_for_workers(address, workers, processes, timeout_s)
        yield address
    finally:
        _stop(processes)


def _wait_for_workers(address: str, workers: int, processes: list[subprocess.Popen], timeout_s: float) -> None:
    from distributed import Client
    with Client(address, timeout=timeout_s) as client:
        deadline = time.monotonic() + timeout_s
        while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise RuntimeError(f"{workers} dask workers did not join {address} within {timeout_s} s")
            time.sleep(0.2)


def dask_workers_see(address: str, path: Path) -> list[bool]:
    """Whether each worker of the cluster at ``address`` sees ``path`` (asked on the workers)."""
    from distributed import Client
    with Client(address) as client:
        return sorted(client.run(os.path.exists, str(path)).values())


@contextlib.contextmanager
def worker_pool(hidden: Path, log_dir: Path, timeout_s: float = 90.0):
    """Beam's external worker pool (``worker_pool_main``: it starts an SDK worker process per job
    it is asked for), isolated from ``hidden``; yields its address for
    ``--environment_type=EXTERNAL --environment_config=ADDRESS``."""
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    command, env = _worker_command(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"], hidden)
    processes = [subprocess.Popen(command, env=env, stdout=open(log_dir / "worker-pool.log", "wb"),
                                  stderr=subprocess.STDOUT, start_new_session=True, cwd="/")]
    try:
        _wait_for_port(port, processes, "Beam's worker pool", timeout_s)
        yield f"localhost:{port}"
    finally:
        _stop(processes)
