"""``nanostream run`` under signals that arrive as, or after, its run ends (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FAST_NODES = textwrap.dedent(
    """\
    import os
    import sys
    import threading
    import time

    from nanostream_trio import NanoNode

    if os.environ.get("HOLD"):
        # Keeps the process from exiting after the run: a non-daemon thread reading stdin.
        threading.Thread(target=sys.stdin.readline, name="hold").start()


    class FastTicks(NanoNode):
        def generator(self):
            n = 0
            while True:
                time.sleep(0.0005)
                n += 1
                yield n


    class FastTwo(NanoNode):
        def generator(self):
            yield 1
            yield 2


    class FastCount(NanoNode):
        def __init__(self):
            super().__init__(capacity=4)
            self.received = 0

        def process_item(self, item):
            self.received += 1
            if self.received == 1:
                print("ready", flush=True)
            print(f"got {item}", flush=True)
    """
)


@pytest.fixture
def pipeline_files(tmp_path: Path) -> Path:
    """A directory with the nodes module and two pipeline files: endless and finite."""
    (tmp_path / "fast_nodes.py").write_text(FAST_NODES)
    (tmp_path / "endless.yaml").write_text(
        "modules: [fast_nodes.py]\n"
        "nodes: [{name: ticks, class: FastTicks}, {name: count, class: FastCount}]\n"
    )
    (tmp_path / "finite.yaml").write_text(
        "modules: [fast_nodes.py]\n"
        "nodes: [{name: two, class: FastTwo}, {name: count, class: FastCount}]\n"
    )
    return tmp_path


def spawn(path: Path, stderr: IO[str] | int, **env: str) -> subprocess.Popen[str]:
    """``nanostream run path`` with JSON events on ``stderr``, stdin a pipe never written."""
    return subprocess.Popen(
        [sys.executable, "-m", "nanostream_trio", "run", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        cwd=path.parent,
    )


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def actions(stderr: str) -> list[str]:
    return [e["action"] for e in events(stderr) if e["event"] == "signal_received"]


class TestSignalAfterDrain:
    @pytest.mark.parametrize(("signum", "runs"), [(signal.SIGTERM, 20), (signal.SIGINT, 10)])
    def test_two_signals_10_ms_apart_never_kill(
        self, pipeline_files: Path, signum: int, runs: int
    ) -> None:
        """Two signals 10 ms apart, many times: status 0 with the output complete, or 130.

        Before, the second signal arrived once the handlers were gone and killed the
        process by the signal (shell status 143 or 130 from -2) in most runs.
        """
        for run in range(runs):
            stderr_path = pipeline_files / f"stderr-{run}"
            with (
                stderr_path.open("w") as stderr,
                spawn(pipeline_files / "endless.yaml", stderr) as process,
            ):
                assert process.stdout is not None
                for line in process.stdout:
                    if line == "ready\n":
                        break
                process.send_signal(signum)
                time.sleep(0.010)  # the gap between the two signals is the subject, not a wait
                process.send_signal(signum)
                stdout = "ready\n" + process.stdout.read()
                code = process.wait(timeout=60)
            logged = stderr_path.read_text()
            assert code in (0, 130), (run, code, logged[-2000:])
            if code == 0:
                finished = next(e for e in events(logged) if e["event"] == "pipeline_finished")
                emitted = finished["nodes"]["ticks"]["items_out"]
                assert finished["nodes"]["count"]["items_in"] == emitted > 0
                assert stdout.count("got ") == emitted, (run, stdout[-500:])
            else:
                assert actions(logged)[:2] == ["stop", "cancel"], (run, logged[-2000:])

    def test_late_signal_is_logged_and_keeps_status(self, pipeline_files: Path) -> None:
        """After a finished run, a signal is logged and exit stays 0; a second exits at once."""
        with spawn(pipeline_files / "finite.yaml", subprocess.PIPE, HOLD="1") as process:
            assert process.stdout is not None
            assert process.stderr is not None
            before = read_events_until(process.stderr, "pipeline_finished")
            # The run has ended; a thread holds the process, so the signal reaches the
            # handler left installed after the run.
            process.send_signal(signal.SIGTERM)
            late = read_events_until(process.stderr, "signal_received")[-1]
            assert process.poll() is None  # still waiting for its thread
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            stdout = process.stdout.read()
        assert code == 0
        assert "signal_received" not in [event["event"] for event in before]
        assert (late["signal"], late["action"]) == ("SIGTERM", "exit")
        assert late.get("status", 0) == 0  # absent when the run was still returning
        assert stdout == "ready\ngot 1\ngot 2\n"


def read_events_until(stream: IO[str], name: str) -> list[dict[str, Any]]:
    """JSON event lines from ``stream`` up to and including the event ``name``."""
    seen: list[dict[str, Any]] = []
    for line in stream:
        seen.append(json.loads(line))
        if seen[-1]["event"] == name:
            return seen
    pytest.fail(f"no {name} event; got {[event['event'] for event in seen]}")
