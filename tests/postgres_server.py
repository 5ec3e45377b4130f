"""Start and stop a throwaway PostgreSQL server (Debian's postgresql package) for tests.

The server lives in a temporary folder (data directory and unix socket), listens on a free loopback
port, trusts every local connection and runs with fsync off: fast, and gone at the end. PostgreSQL
refuses to run as root, so under root it runs as the ``postgres`` user Debian's package creates (or
``nobody``), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2
import sqlalchemy

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"  # Debian's packages do not put initdb or postgres on PATH
SERVER_USERS = ("postgres", "nobody")  # who runs the server when the tests run as root
DB_USER = "rating"
DB_NAME = "rating_test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> str | None:
    """The folder holding ``initdb`` and ``postgres``: the one on PATH, else Debian's
    /usr/lib/postgresql/NN/bin (the newest NN); None when there is none."""
    on_path = shutil.which("initdb")
    if on_path:
        folder = os.path.dirname(os.path.realpath(on_path))
        if os.access(os.path.join(folder, "postgres"), os.X_OK):
            return folder
    def version(folder: str) -> int:
        return int(re.sub(r"\D", "", folder.split("/")[-2]) or 0)
    for folder in sorted(glob.glob(DEBIAN_BIN_DIRS), key=version, reverse=True):
        if all(os.access(os.path.join(folder, name), os.X_OK) for name in ("initdb", "postgres")):
            return folder
    return None


def create_database(url: str, name: str) -> str:
    """Create the empty database ``name`` on the server of the SQLAlchemy ``url``; returns its URL."""
    server = sqlalchemy.engine.make_url(url)
    connection = psycopg2.connect(host=server.host, port=server.port, user=server.username, dbname="postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return server.set(database=name).render_as_string(hide_password=False)


def _server_user() -> pwd.struct_passwd | None:
    """The account to run the server as: None to run it as ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root and none of the users {', '.join(SERVER_USERS)} exists to run "
                       f"PostgreSQL (it refuses root): create one, e.g. useradd --system postgres")


def _as_user(user: pwd.struct_passwd | None) -> dict:
    """Popen arguments that drop root for ``user``."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name}}


@contextlib.contextmanager
def postgres_server(bin_dir: str, timeout_s: float = 60.0):
    """Run a fresh server from ``bin_dir``; yields the SQLAlchemy URL of an empty database on it,
    ``postgresql+psycopg2://rating@127.0.0.1:PORT/rating_test``. Stops the server and deletes its
    folder on exit."""
    user = _server_user()
    # Not under pytest's tmp_path: that is private to us (mode 0700), and the server user must reach it.
    base = tempfile.mkdtemp(prefix="usage-rating-pg-")
    data, sockets = os.path.join(base, "data"), os.path.join(base, "sockets")
    os.mkdir(sockets)
    if user is not None:
        for path in (base, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    log_path = os.path.join(base, "server.log")
    process = None
    try:
        initdb = subprocess.run([os.path.join(bin_dir, "initdb"), "-D", data, "-U", DB_USER, "--auth=trust",
                                 "--no-locale", "--encoding=UTF8", "--no-sync"],
                                capture_output=True, text=True, cwd=base, check=False, **_as_user(user))
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stdout}{initdb.stderr}")
        port = _free_port()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port), "-h", "127.0.0.1", "-k", sockets,
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True, **_as_user(user))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres",
                                              connect_timeout=2)
                break
            except psycopg2.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(log_path, errors="replace") as log:
                        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port} within {timeout_s} s: "
                                           f"{log.read()[-2000:]}") from None
                time.sleep(0.2)
        connection.close()
        yield create_database(f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/postgres", DB_NAME)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)


def _stop(postmaster: subprocess.Popen) -> None:
    """Shut the server down: "fast" (ends client sessions), else "immediate", else kill it. The
    postmaster exits only after its backends have; a killed one's backends exit on its death."""
    for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            postmaster.send_signal(sig)
        try:
            postmaster.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
