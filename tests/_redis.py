"""A throwaway Redis server for tests: a free port on 127.0.0.1, its files in a temp directory.

:func:`redis_server` is a context manager giving a :class:`RedisServer`, whose
``url`` is the ``redis://`` address and which can be killed and started again on
the same port (:meth:`RedisServer.restart`). It needs ``redis-server`` (Debian's
``redis-server`` package) and coredis (the ``[redis]`` extra); :func:`skip_reason`
says why it cannot run here, for ``pytest.skip``.

Persistence is off (``--save "" --appendonly no``) unless ``durable=True``: then
the server writes an append-only file synced at every write
(``appendfsync always``), so a ``SIGKILL`` and a restart lose nothing it
acknowledged, which is what a test of a Redis restart needs.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

#: Real seconds to wait for the server to accept connections, and to stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def skip_reason() -> str | None:
    """Why no test server can be started here, or None if it can."""
    try:
        import coredis  # noqa: F401
    except ImportError:
        return "coredis is not installed (pip install 'nanostream-trio[redis]')"
    if shutil.which("redis-server") is None:
        return "redis-server not found; apt-get install redis-server"
    return None


def _ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (Linux: ``ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            low, high = (int(part) for part in ports.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _free_port() -> int:
    """A free port outside the ephemeral range.

    While a server is down for a restart, no outgoing connection (another
    process's, or a client reconnecting to this very port, which can connect
    to itself) may take its port as a local one and keep it from starting again.
    """
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(10000, 30000) if port not in ephemeral]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # every port is ephemeral here: any free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process in ``directory``, listening on 127.0.0.1:``port``."""

    def __init__(self, directory: str, port: int, *, durable: bool) -> None:
        self.directory = directory
        self.port = port
        self.durable = durable
        self.url = f"redis://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(directory, "server.log")

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary is not None, skip_reason()
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            *persistence,
            "--dir",
            self.directory,
            "--logfile",
            self.log_path,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                msg = f"the test redis-server exited with {self.process.returncode}: {self._log()}"
                raise RuntimeError(msg)
            if self._pings():
                return
            if time.monotonic() > deadline:
                msg = (
                    f"the test redis-server did not answer within {START_TIMEOUT} s: {self._log()}"
                )
                raise RuntimeError(msg)
            time.sleep(0.02)  # polling a real subprocess for readiness, bounded by the deadline

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server by its pid and reap it."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Kill the server (SIGKILL) and start it again on the same port and files."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM by pid; SIGKILL if it does not end in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(*, durable: bool = False) -> Iterator[RedisServer]:
    """Start a server for the duration of the block; yield it (``.url``, ``.restart()``)."""
    directory = tempfile.mkdtemp(prefix="nanostream-redis-")
    server = RedisServer(directory, _free_port(), durable=durable)
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                # The port was taken between the probe and the start (another worker's server).
                if attempt == 2 or server.process is None or server.process.poll() is None:
                    raise
                server.port = _free_port()
                server.url = f"redis://127.0.0.1:{server.port}"
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
