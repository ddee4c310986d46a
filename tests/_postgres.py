"""A throwaway PostgreSQL server for tests: initdb in a temp directory, a free port on 127.0.0.1.

:func:`postgres_server` is a context manager giving the server's URL. It needs
the server binaries (``initdb``, ``postgres``: Debian's ``postgresql`` package)
and psycopg (the ``[postgres]`` extra); :func:`skip_reason` says why it cannot
run here, for ``pytest.skip``. PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` user when there is one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

#: Real seconds to wait for the server to accept connections, and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _run_as() -> pwd.struct_passwd | None:
    """The user to run the server as: None for ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


def skip_reason() -> str | None:
    """Why no test server can be started here, or None if it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'nanostream-trio[postgres]')"
    if _binary("initdb") is None or _binary("postgres") is None:
        return "PostgreSQL server binaries (initdb, postgres) not found; apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server for the duration of the block; yield its ``postgresql://`` URL."""
    import psycopg

    initdb, postgres = _binary("initdb"), _binary("postgres")
    if initdb is None or postgres is None:
        raise RuntimeError(skip_reason())
    user = _run_as()
    directory = tempfile.mkdtemp(prefix="nanostream-pg-")
    try:
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        data = os.path.join(directory, "data")
        subprocess.run(
            [initdb, "-D", data, "-U", "nanostream", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **_as_user(user),
        )
        port = _free_port()
        log_path = os.path.join(directory, "server.log")
        with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall it
            server = subprocess.Popen(
                [postgres, "-D", data, "-p", str(port), "-k", directory, "-h", "127.0.0.1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                **_as_user(user),
            )
        try:
            url = f"postgresql://nanostream@127.0.0.1:{port}/postgres"
            _wait_until_accepting(psycopg, url, server, log_path)
            yield url
        finally:
            _stop(server)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_until_accepting(
    psycopg: Any, url: str, server: subprocess.Popen[bytes], log_path: str
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                error = log.read()
            msg = f"the test PostgreSQL server exited with {server.returncode}: {error}"
            raise RuntimeError(msg)
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # polling a real subprocess for readiness, bounded by the deadline


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT) by the server's pid; kill it if it does not end in time."""
    if server.poll() is None:
        server.send_signal(2)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
