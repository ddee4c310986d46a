"""global_start() under real signals, in a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO

import pytest

SCRIPT = Path(__file__).parent / "core_scripts" / "endless.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start(mode: str) -> subprocess.Popen[str]:
    # NANOSTREAM_DEBUG: the library's quiet default logger then shows info events too
    # (on stderr), which these tests assert on.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NANOSTREAM_DEBUG": "1"}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    # Wait for the pipeline to be running: the sink prints "ready" on its first item.
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
        # Wait until the first signal was handled before sending the second (the
        # library logs its events on stderr).
        assert process.stderr is not None
        for line in process.stderr:
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


#: An endless source and a quick sink: a stop drains in a few milliseconds, so a second
#: signal 10 ms after the first lands anywhere from the drain to the interpreter's exit.
QUICK_DRAIN = textwrap.dedent(
    """\
    import sys
    import threading
    import time

    import structlog

    from nanostream_trio import NanoNode

    # The application's logging setup: events on stdout, in order with the script's lines.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout))


    class Counter(NanoNode):
        def __init__(self):
            self.emitted = 0
            super().__init__()

        def generator(self):
            while True:
                time.sleep(0.0005)
                self.emitted += 1
                yield self.emitted


    class Sink(NanoNode):
        def __init__(self):
            self.received = 0
            super().__init__(capacity=4)

        def process_item(self, item):
            self.received += 1
            if self.received == 1:
                print("ready", flush=True)


    def hold_after_main_module():
        threading.main_thread().join()  # returns once the main module has finished
        print("main module finished", flush=True)
        sys.stdin.readline()


    source, sink = Counter(), Sink()
    source > sink
    try:
        source.global_start()
        if sys.argv[1:] == ["hold"]:
            try:
                print("start returned", flush=True)
                sys.stdin.readline()  # the test never writes: only a signal ends the wait
            except KeyboardInterrupt:
                print("KeyboardInterrupt", flush=True)
            else:
                print("not reached", flush=True)
        elif sys.argv[1:] == ["hold-exit"]:
            threading.Thread(target=hold_after_main_module).start()
    finally:
        # One write, closed by ";": an event line may follow before print's newline.
        print(f"emitted={source.emitted} received={sink.received};", flush=True)
    """
)


def spawn(command: list[str], stderr: IO[str]) -> subprocess.Popen[str]:
    """Start ``command`` with pipes for stdin (never written) and stdout."""
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(process: subprocess.Popen[str], wanted: str) -> str:
    """The child's stdout up to and including the line ``wanted``."""
    assert process.stdout is not None
    out = ""
    for line in process.stdout:
        out += line
        if line == wanted:
            return out
    raise AssertionError(f"no {wanted!r} line; stdout: {out[-2000:]}")


def run_signalled(
    command: list[str], signum: int, gap: float, stderr_path: Path
) -> tuple[int, str, str]:
    """Run ``command``; on its "ready" line send ``signum``, and again ``gap`` s later."""
    with stderr_path.open("w") as stderr, spawn(command, stderr) as process:
        assert process.stdout is not None
        out = read_until(process, "ready\n")
        process.send_signal(signum)
        time.sleep(gap)  # the gap between the two signals is the subject, not a wait
        process.send_signal(signum)
        out += process.stdout.read()  # to the end: every line the child wrote
        code = process.wait(timeout=60)
    return code, out, stderr_path.read_text()


def counts(stdout: str) -> tuple[int, int]:
    """``(emitted, received)`` from the script's report line.

    Searched anywhere: a late signal's event is logged from another thread, and
    ``print`` writes its text and its newline separately, so the two may interleave
    (``received=3`` directly followed by an event's ``2026-...`` timestamp).
    """
    found = re.search(r"emitted=(\d+) received=(\d+);", stdout)
    assert found is not None, stdout[-2000:]
    return int(found[1]), int(found[2])


class TestSignalAfterDrain:
    @pytest.mark.parametrize(("signum", "runs"), [(signal.SIGTERM, 20), (signal.SIGINT, 10)])
    def test_two_signals_10_ms_apart_never_kill(
        self, tmp_path: Path, signum: int, runs: int
    ) -> None:
        """Two signals 10 ms apart, many times: status 0 with every item delivered, or 130.

        Before, the second signal arrived once the handlers were gone and killed the
        process by the signal (-15, -2) in most runs, although the drain had finished.
        """
        script = tmp_path / "quick_drain.py"
        script.write_text(QUICK_DRAIN)
        seen: list[int] = []
        for run in range(runs):
            code, stdout, stderr = run_signalled(
                [sys.executable, str(script)], signum, 0.010, tmp_path / f"stderr-{run}"
            )
            seen.append(code)
            assert code in (0, 130), (run, code, stdout[-500:], stderr[-2000:])
            emitted, received = counts(stdout)
            if code == 0:
                assert emitted == received > 0, (run, stdout[-500:])
            else:
                assert "action=cancel" in stdout, (run, stdout[-2000:])
        assert seen  # every run was checked

    def test_sigterm_after_start_returned_exits_0(self, tmp_path: Path) -> None:
        """SIGTERM once start() has returned is logged and ends the script with status 0."""
        code, out = self.signal_when(tmp_path, "hold", "start returned\n", signal.SIGTERM)
        assert code == 0, out
        assert "not reached" not in out
        assert "KeyboardInterrupt" not in out
        emitted, received = counts(out)  # the script's finally block ran
        assert emitted == received > 0
        late = [line for line in out.splitlines() if "action=exit" in line]
        assert len(late) == 1, out
        assert "signal=SIGTERM" in late[0]
        assert "status=0" in late[0]

    def test_sigint_after_start_returned_is_keyboard_interrupt(self, tmp_path: Path) -> None:
        """SIGINT while the caller's code runs after start() is a KeyboardInterrupt as usual."""
        code, out = self.signal_when(tmp_path, "hold", "start returned\n", signal.SIGINT)
        assert code == 0, out
        assert "KeyboardInterrupt" in out
        assert "action=exit" not in out

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_signal_while_exiting_is_logged(self, tmp_path: Path, signum: int) -> None:
        """Once the script has ended (a thread holds the process), a signal is only logged."""
        code, out = self.signal_when(tmp_path, "hold-exit", "main module finished\n", signum)
        assert code == 0, out
        late = [line for line in out.splitlines() if "action=exit" in line]
        assert len(late) == 2, out  # the second one exits at once, with the run's status
        assert all("status=0" in line for line in late)
        assert "Traceback" not in out

    @staticmethod
    def signal_when(tmp_path: Path, mode: str, line: str, signum: int) -> tuple[int, str]:
        """Run the script in ``mode``: stop it on "ready", then send ``signum`` on ``line``.

        In "hold-exit" mode the process is still held by its thread after the first
        ``signum``, so a second one is sent once the first one's event is out.
        """
        script = tmp_path / "quick_drain.py"
        script.write_text(QUICK_DRAIN)
        with (
            (tmp_path / "stderr").open("w") as stderr,
            spawn([sys.executable, str(script), mode], stderr) as process,
        ):
            assert process.stdout is not None
            out = read_until(process, "ready\n")
            process.send_signal(signal.SIGTERM)  # the first stops the run
            out += read_until(process, line)
            process.send_signal(signum)  # the run has ended: a late signal
            if mode == "hold-exit":
                out += read_until_containing(process, "action=exit")
                process.send_signal(signum)
            out += process.stdout.read()
            code = process.wait(timeout=60)
        return code, out + (tmp_path / "stderr").read_text()


def read_until_containing(process: subprocess.Popen[str], text: str) -> str:
    """The child's stdout up to and including the first line containing ``text``."""
    assert process.stdout is not None
    out = ""
    for line in process.stdout:
        out += line
        if text in line:
            return out
    raise AssertionError(f"no line with {text!r}; stdout: {out[-2000:]}")
