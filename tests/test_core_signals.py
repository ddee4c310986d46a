"""global_start() under real signals, in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "core_scripts" / "endless.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start(mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    # Wait for the pipeline to be running: the sink prints "ready" on its first item.
    # (structlog's default configuration also prints the engine's events on stdout.)
    for line in process.stdout:
        if line == "ready\n":
            return process
    process.kill()
    raise AssertionError(f"the pipeline never got ready: {process.communicate()}")


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
    def test_first_signal_drains_and_exits_zero(self, signum: signal.Signals) -> None:
        """The first SIGINT/SIGTERM stops the source; every emitted item is delivered; exit 0."""
        process = start("drain")
        process.send_signal(signum)
        code, stdout, stderr = finish(process)
        assert code == 0, stderr
        last = stdout.strip().splitlines()[-1]
        emitted = int(last.split()[0].split("=")[1])
        received = int(last.split()[1].split("=")[1])
        assert emitted == received > 0, last
        assert "in_order=True" in last
        assert "signal_received" in stdout + stderr
        assert "pipeline_stopping" in stdout + stderr

    def test_second_signal_cancels(self) -> None:
        """A second signal cancels at once (the sink is stuck) and the exit status is 130."""
        process = start("stuck")
        process.send_signal(signal.SIGINT)
        # Wait until the first signal was handled before sending the second.
        assert process.stdout is not None
        for line in process.stdout:
            if "pipeline_stopping" in line:
                break
        process.send_signal(signal.SIGINT)
        code, _, stderr = finish(process)
        assert code == 130, stderr

    def test_failure_exits_nonzero(self) -> None:
        """A failing pipeline ends the process with a non-zero status and the node's error."""
        process = start("fail")
        code, _stdout, stderr = finish(process)
        assert code == 1
        assert "ValueError: bad item 3" in stderr
        assert "in nanostream node 'Sink', processing item 3" in stderr
