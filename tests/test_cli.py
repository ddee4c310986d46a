"""The ``nanostream`` command, run as a real subprocess (``python -m nanostream_trio``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from nanostream_trio import NodeStatistics, PipelineStatistics
from nanostream_trio._cli import render_dot, render_table
from nanostream_trio._config import read_pipeline_text

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "yaml"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def nanostream(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanostream_trio", *args],
        capture_output=True,
        text=True,
        env=env or environment(),
        cwd=cwd or ROOT,
        timeout=120,
        check=False,
    )


def events(stderr: str) -> list[dict[str, Any]]:
    """The JSON event lines of ``stderr`` (every line must be one)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


class Child:
    """A running ``nanostream`` process whose output lines are read as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nanostream_trio", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or environment(),
            cwd=ROOT,
        )
        # If a test hangs on a line that never comes, kill the child so it ends.
        self._killer = threading.Timer(90, self.process.kill)
        self._killer.start()
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def _lines(self, stream: IO[str] | None, into: list[str]) -> Iterator[str]:
        assert stream is not None
        for line in stream:
            into.append(line)
            yield line

    def wait_for_event(self, name: str) -> dict[str, Any]:
        """Read stderr until the JSON event ``name`` arrives."""
        for line in self._lines(self.process.stderr, self.stderr):
            event = json.loads(line)
            if event["event"] == name:
                return event  # type: ignore[no-any-return]
        pytest.fail(f"no {name} event; stderr: {''.join(self.stderr)}")

    def wait_for_output(self, text: str) -> str:
        """Read stdout until a line containing ``text`` arrives."""
        for line in self._lines(self.process.stdout, self.stdout):
            if text in line:
                return line
        pytest.fail(f"no {text!r} on stdout: {''.join(self.stdout)}")

    def finish(self, timeout: float = 90) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            self._killer.cancel()
            pytest.fail(f"nanostream still running after {timeout} s")
        self._killer.cancel()
        return self.process.returncode, "".join(self.stdout) + out, "".join(self.stderr) + err


def emulate_terminal(raw: str) -> list[str]:
    """The lines left on a screen after ``raw`` output: text, newlines, and the table's
    cursor-up (``ESC [ n F``) and clear-below (``ESC [ J``) codes; colours are ignored."""
    screen = [""]
    row = column = 0
    tokens = re.compile(r"\x1b\[(\d*)([A-Za-z])|\r\n|\n|\r|[^\x1b\r\n]+|\x1b")
    for match in tokens.finditer(raw):
        token, code = match.group(0), match.group(2)
        if code == "F":
            row, column = max(0, row - int(match.group(1) or 1)), 0
        elif code == "J":
            del screen[row + 1 :]
            screen[row] = screen[row][:column]
        elif code or token == "\x1b":
            continue  # colours and other attributes
        elif token in ("\r\n", "\n"):
            row, column = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif token == "\r":
            column = 0
        else:
            line = screen[row].ljust(column)
            screen[row] = line[:column] + token + line[column + len(token) :]
            column += len(token)
    return [line for line in screen if line] if screen[-1] == "" else screen


def write_csv_atomically(directory: Path, name: str, text: str) -> None:
    staged = directory.parent / f"staging-{name}"
    staged.write_text(text)
    os.replace(staged, directory / name)


STUCK_NODES = textwrap.dedent(
    """\
    import trio
    from nanostream_trio import NanoNode

    class CliTicks(NanoNode):
        async def generator(self):
            n = 0
            while True:
                n += 1
                yield n
                await trio.sleep(0.01)

    class CliStuck(NanoNode):
        async def process_item(self, item):
            await trio.sleep_forever()

    class CliFails(NanoNode):
        def process_item(self, item):
            if item == 3:
                raise ValueError(f"bad item {item}")
            return item
    """
)


SLEEPER_NODES = textwrap.dedent(
    """\
    import time
    import structlog
    from nanostream_trio import NanoNode

    class CliTwo(NanoNode):
        def generator(self):
            yield 1
            yield 2

    class CliSleeper(NanoNode):
        def process_item(self, item):
            if item == 2:
                structlog.get_logger("sleeper").info("sleeping", item=item)
                time.sleep(60)
            return item

    class CliUnflushed(NanoNode):
        def process_item(self, item):
            print(f"done {item}")  # stdout is a pipe: block-buffered, not flushed
    """
)


def start_sleeper(tmp_path: Path, blocking: str = "true") -> Child:
    """A run whose node sleeps in its worker thread (or, not blocking, on the Trio thread)."""
    (tmp_path / "sleeper_nodes.py").write_text(SLEEPER_NODES)
    path = tmp_path / "sleeper.yaml"
    path.write_text(
        "modules: [sleeper_nodes.py]\n"
        "nodes:\n"
        "  - {name: two, class: CliTwo}\n"
        f"  - {{name: sleeper, class: CliSleeper, blocking: {blocking}}}\n"
        "  - {name: out, class: CliUnflushed}\n"
    )
    env = environment()
    del env["PYTHONUNBUFFERED"]
    child = Child("run", str(path), env=env)
    child.wait_for_event("sleeping")
    return child


@pytest.fixture
def custom_nodes(tmp_path: Path) -> Path:
    path = tmp_path / "cli_nodes.py"
    path.write_text(STUCK_NODES)
    return path


class TestUsage:
    def test_no_command_prints_help(self) -> None:
        """Without a sub-command the help goes to stderr and the status is 2."""
        result = nanostream()
        assert result.returncode == 2
        assert "usage: nanostream" in result.stderr
        for command in ("run", "check", "graph", "nodes", "demo"):
            assert command in result.stderr

    def test_version(self) -> None:
        """--version prints the package version."""
        from nanostream_trio import __version__

        result = nanostream("--version")
        assert (result.returncode, result.stdout.strip()) == (0, f"nanostream {__version__}")

    def test_bad_module(self) -> None:
        """--module naming a module that does not exist is a usage error (2)."""
        result = nanostream("nodes", "--module", "cli_no_such_module")
        assert result.returncode == 2
        assert result.stderr == (
            "nanostream: error: cannot import module 'cli_no_such_module': "
            "ModuleNotFoundError: No module named 'cli_no_such_module'\n"
        )


class TestRun:
    def test_runs_to_completion(self) -> None:
        """A finite pipeline runs, prints its rows, logs JSON events to stderr, exits 0."""
        result = nanostream(
            "run", str(EXAMPLES / "foo_pipeline.yaml"), env=environment(FOO_INTERVAL="0")
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["even length: True"] * 5
        names = [event["event"] for event in events(result.stderr)]
        assert names[0] == "pipeline_started"
        assert "pipeline_ready" in names
        assert names[-1] == "pipeline_finished"
        finished = events(result.stderr)[-1]
        assert finished["status"] == "finished"
        assert finished["pipeline"] == "foo"
        assert finished["nodes"]["print"]["items_in"] == 5

    def test_pretty_log_format(self) -> None:
        """--log-format pretty renders events as text, not JSON."""
        result = nanostream(
            "run",
            "--log-format",
            "pretty",
            str(EXAMPLES / "foo_pipeline.yaml"),
            env=environment(FOO_INTERVAL="0"),
        )
        assert result.returncode == 0
        finished = [line for line in result.stderr.splitlines() if "pipeline_finished" in line]
        assert len(finished) == 1
        assert not finished[0].startswith("{")
        assert "status=finished" in finished[0]

    def test_log_level(self) -> None:
        """--log-level warning hides the info events."""
        result = nanostream(
            "run",
            "--log-level",
            "warning",
            str(EXAMPLES / "foo_pipeline.yaml"),
            env=environment(FOO_INTERVAL="0"),
        )
        assert (result.returncode, result.stderr) == (0, "")

    def test_failure_exits_1(self, tmp_path: Path, custom_nodes: Path) -> None:
        """A node failure ends the run with status 1 and a last run_failed event (JSON mode)."""
        path = tmp_path / "fails.yaml"
        path.write_text(
            "modules: [cli_nodes.py]\n"
            "nodes: [{name: ticks, class: CliTicks}, {name: check, class: CliFails}]\n"
        )
        result = nanostream("run", "--log-format", "json", str(path))
        assert result.returncode == 1
        every = events(result.stderr)  # every line on stderr is a JSON event
        assert "node_failed" in [event["event"] for event in every]
        last = every[-1]
        del last["timestamp"]
        assert last == {
            "event": "run_failed",
            "level": "error",
            "pipeline": "pipeline",
            "error": "bad item 3",
            "exc_type": "ValueError",
            "node": "check",
            "notes": ["in nanostream node 'check', processing item 3"],
        }

    def test_failure_in_pretty_mode(self, tmp_path: Path, custom_nodes: Path) -> None:
        """With pretty events the failure is told in two plain lines at the end."""
        path = tmp_path / "fails.yaml"
        path.write_text(
            "modules: [cli_nodes.py]\n"
            "nodes: [{name: ticks, class: CliTicks}, {name: check, class: CliFails}]\n"
        )
        result = nanostream("run", "--log-format", "pretty", str(path))
        assert result.returncode == 1
        assert result.stderr.splitlines()[-2:] == [
            "nanostream: pipeline 'pipeline' failed: ValueError: bad item 3",
            "in nanostream node 'check', processing item 3",
        ]

    def test_traceback_option(self, tmp_path: Path, custom_nodes: Path) -> None:
        """--traceback prints where in the node the failure happened (a field in JSON mode)."""
        path = tmp_path / "fails.yaml"
        path.write_text(
            "modules: [cli_nodes.py]\n"
            "nodes: [{name: ticks, class: CliTicks}, {name: check, class: CliFails}]\n"
        )
        where = f'File "{custom_nodes}", line 19, in process_item'
        pretty = nanostream("run", "--traceback", "--log-format", "pretty", str(path))
        assert pretty.returncode == 1
        assert "Traceback (most recent call last):" in pretty.stderr
        assert where in pretty.stderr
        json_mode = nanostream("run", "--traceback", "--log-format", "json", str(path))
        assert json_mode.returncode == 1
        failed = events(json_mode.stderr)[-1]
        assert failed["event"] == "run_failed"
        assert failed["traceback"].startswith("Traceback (most recent call last):")
        assert where in failed["traceback"]

    def test_python_warnings_are_events(self, tmp_path: Path) -> None:
        """A warning a node raises is a python_warning event, not plain text, in JSON mode."""
        (tmp_path / "warn_nodes.py").write_text(
            "import warnings\n"
            "from nanostream_trio import NanoNode\n"
            "class CliWarns(NanoNode):\n"
            "    def process_item(self, item):\n"
            "        warnings.warn('old api', UserWarning)\n"
            "        return item\n"
            "class CliOne(NanoNode):\n"
            "    def generator(self):\n"
            "        yield 1\n"
        )
        path = tmp_path / "warns.yaml"
        path.write_text(
            "modules: [warn_nodes.py]\n"
            "nodes: [{name: one, class: CliOne}, {name: warns, class: CliWarns}]\n"
        )
        result = nanostream("run", "--log-format", "json", str(path))
        assert result.returncode == 0, result.stderr
        warned = [e for e in events(result.stderr) if e["event"] == "python_warning"]
        assert len(warned) == 1
        del warned[0]["timestamp"]
        assert warned[0] == {
            "event": "python_warning",
            "level": "warning",
            "logger": "py.warnings",
            "category": "UserWarning",
            "message": "old api",
            "file": str(tmp_path / "warn_nodes.py"),
            "line": 5,
        }

    def test_config_error_exits_2(self, tmp_path: Path) -> None:
        """A bad file is reported with its location and status 2; nothing runs."""
        path = tmp_path / "bad.yaml"
        path.write_text("nodes:\n  - class: CSVReder\n")
        result = nanostream("run", str(path))
        assert result.returncode == 2
        assert result.stderr == (
            f"nanostream: error: {path}:2:12: nodes[0].class: unknown node type 'CSVReder'; "
            "did you mean 'CSVReader'?\n"
        )

    def test_missing_file_exits_2(self, tmp_path: Path) -> None:
        """A file that does not exist is a usage error."""
        result = nanostream("run", str(tmp_path / "none.yaml"))
        assert result.returncode == 2
        assert (
            result.stderr
            == f"nanostream: error: {tmp_path / 'none.yaml'}: pipeline file not found\n"
        )

    def test_ctrl_c_stops_csv_watch_gracefully(self, tmp_path: Path) -> None:
        """The csv_watch example prints a dropped file's rows; the first SIGINT ends it with 0."""
        data = tmp_path / "data"
        data.mkdir()
        child = Child("run", str(EXAMPLES / "csv_watch.yaml"), env=environment(DATA_DIR=str(data)))
        child.wait_for_event("pipeline_ready")
        write_csv_atomically(data, "fruit.csv", "fruit,qty\napple,1\npear,2\n")
        assert child.wait_for_output("pear") == "row: {'fruit': 'pear', 'qty': '2'}\n"
        child.process.send_signal(signal.SIGINT)
        code, stdout, stderr = child.finish()
        assert code == 0, stderr
        assert stdout.splitlines() == [
            "row: {'fruit': 'apple', 'qty': '1'}",
            "row: {'fruit': 'pear', 'qty': '2'}",
        ]
        names = [event["event"] for event in events(stderr)]
        assert "signal_received" in names
        assert "pipeline_stopping" in names
        assert events(stderr)[-1]["status"] == "finished"

    def test_second_ctrl_c_cancels(self, tmp_path: Path, custom_nodes: Path) -> None:
        """With a stuck sink, a second SIGINT cancels the run and the status is 130."""
        path = tmp_path / "stuck.yaml"
        path.write_text(
            "modules: [cli_nodes.py]\n"
            "nodes: [{name: ticks, class: CliTicks}, {name: stuck, class: CliStuck}]\n"
        )
        child = Child("run", str(path))
        child.wait_for_event("pipeline_ready")
        child.process.send_signal(signal.SIGINT)
        child.wait_for_event("pipeline_stopping")
        child.process.send_signal(signal.SIGINT)
        code, _, stderr = child.finish()
        assert code == 130, stderr
        actions = [e["action"] for e in events(stderr) if e["event"] == "signal_received"]
        assert actions == ["stop", "cancel"]

    def test_second_ctrl_c_exits_after_grace_despite_blocked_thread(self, tmp_path: Path) -> None:
        """A blocking node stuck in time.sleep does not hold the exit past the grace period."""
        child = start_sleeper(tmp_path)
        child.process.send_signal(signal.SIGINT)
        child.wait_for_event("pipeline_stopping")
        child.process.send_signal(signal.SIGINT)
        child.wait_for_event("signal_received")
        # The node sleeps 60 s: without the grace period this times out.
        code, stdout, stderr = child.finish(timeout=30)
        assert code == 130, stderr
        last = events(stderr)[-1]
        assert (last["event"], last["reason"], last["status"]) == (
            "exiting_now",
            "grace_period_over",
            130,
        )
        # Printed without flush into a pipe: only the flush before os._exit saves it.
        assert stdout == "done 1\n"

    def test_third_ctrl_c_exits_at_once(self, tmp_path: Path) -> None:
        """A third SIGINT ends the process without waiting for the grace period."""
        child = start_sleeper(tmp_path)
        child.process.send_signal(signal.SIGINT)
        child.wait_for_event("pipeline_stopping")
        child.process.send_signal(signal.SIGINT)
        assert child.wait_for_event("signal_received")["action"] == "cancel"
        child.process.send_signal(signal.SIGINT)
        code, _, stderr = child.finish(timeout=30)
        assert code == 130, stderr
        actions = [e["action"] for e in events(stderr) if e["event"] == "signal_received"]
        assert actions == ["stop", "cancel", "exit"]
        assert events(stderr)[-1]["reason"] == "third_signal"

    def test_ctrl_c_ends_run_whose_trio_thread_is_blocked(self, tmp_path: Path) -> None:
        """A sync node sleeping on the Trio thread (no task can run) still lets Ctrl-C end it.

        No event can mark when each signal has been handled (the loop is
        blocked), so the test sends SIGINT once a second until the process
        ends; it must end, with 130, long before the node's 60 s sleep does.
        """
        child = start_sleeper(tmp_path, blocking="false")
        sent = 0
        while child.process.poll() is None:
            if sent == 10:
                child.process.kill()
                child.finish()
                pytest.fail("nanostream ignored 10 SIGINTs while its Trio thread was blocked")
            child.process.send_signal(signal.SIGINT)
            sent += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=1)
        code, _, stderr = child.finish(timeout=30)
        assert code == 130, stderr
        last = events(stderr)[-1]
        assert last["event"] == "exiting_now"
        assert last["reason"] in ("third_signal", "grace_period_over")

    def test_table_always(self) -> None:
        """--table always draws the per-node table (here into a pipe) with the final counts."""
        result = nanostream(
            "run",
            "--table",
            "always",
            "--log-level",
            "warning",
            str(EXAMPLES / "foo_pipeline.yaml"),
            env=environment(FOO_INTERVAL="0"),
        )
        assert result.returncode == 0
        final = result.stderr.rsplit("\x1b[J", 1)[-1].splitlines()
        assert final[0].startswith("pipeline 'foo': finished, ")
        assert final[1].split() == [
            "node",
            "status",
            "received",
            "sent",
            "queued",
            "rate/s",
            "errors",
        ]
        assert final[2].split()[:4] == ["foo.foo_generator", "finished", "-", "5"]
        assert final[4].split()[:4] == ["print", "finished", "5", "5"]

    def test_terminal_gets_pretty_events_and_live_table(self) -> None:
        """With stderr on a terminal (a pty), events are pretty text and the table is drawn."""
        import pty

        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "nanostream_trio", "run", str(EXAMPLES / "foo_pipeline.yaml")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            env=environment(FOO_INTERVAL="0"),
            cwd=ROOT,
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(controller)
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.stdout.close()
        assert process.wait(timeout=60) == 0
        screen = b"".join(chunks).decode().replace("\r\n", "\n")
        assert stdout.splitlines() == ["even length: True"] * 5
        assert "pipeline_finished" in screen
        assert not any(line.startswith("{") for line in screen.splitlines())
        assert "\x1b[J" in screen  # the table was erased and redrawn under the events
        final = screen.rsplit("\x1b[J", 1)[-1].splitlines()
        assert final[0].startswith("pipeline 'foo': finished, ")
        assert final[4].split()[:4] == ["print", "finished", "5", "5"]

    def test_printed_lines_stay_above_the_table(self) -> None:
        """With stdout and stderr on one terminal, printed rows scroll above the table."""
        import pty

        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "nanostream_trio", "run", str(EXAMPLES / "foo_pipeline.yaml")],
            stdout=terminal,
            stderr=terminal,
            env=environment(FOO_INTERVAL="0.2"),  # slower than a redraw: rows arrive under it
            cwd=ROOT,
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(controller)
        assert process.wait(timeout=60) == 0
        screen = emulate_terminal(b"".join(chunks).decode())
        assert screen.count("even length: True") == 5
        headers = [i for i, line in enumerate(screen) if line.startswith("pipeline 'foo':")]
        assert len(headers) == 1  # one table, at the bottom, below every row
        assert screen[headers[0]].startswith("pipeline 'foo': finished, ")
        assert len(screen) - headers[0] == 5  # title, column names, three nodes
        last_row = max(i for i, line in enumerate(screen) if line == "even length: True")
        assert last_row < headers[0]

    def test_library_logging_becomes_events(self, tmp_path: Path) -> None:
        """Records a library sends to stdlib logging arrive as JSON events on stderr."""
        module = tmp_path / "cli_logging_nodes.py"
        module.write_text(
            "import logging\n"
            "from nanostream_trio import NanoNode\n\n"
            "class CliLogs(NanoNode):\n"
            "    def generator(self):\n"
            "        logging.getLogger('some.library').warning('disk %s is slow', 'sda')\n"
            "        yield 1\n"
        )
        path = tmp_path / "logs.yaml"
        path.write_text(
            "modules: [cli_logging_nodes.py]\nnodes: [{class: CliLogs}, {class: PrinterOfThings}]\n"
        )
        result = nanostream("run", "--log-level", "warning", str(path))
        assert result.returncode == 0, result.stderr
        [event] = events(result.stderr)
        assert (event["event"], event["logger"], event["level"]) == (
            "disk sda is slow",
            "some.library",
            "warning",
        )


class TestCheckGraphNodes:
    def test_check_valid(self) -> None:
        """check loads and validates without running, and says what it found."""
        result = nanostream("check", str(EXAMPLES / "dead_letters.yaml"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == (
            f"{EXAMPLES / 'dead_letters.yaml'}: ok: pipeline 'reciprocals' with 4 nodes, "
            "3 links, sources: count\n"
        )

    def test_check_invalid(self, tmp_path: Path) -> None:
        """check reports the first problem with its location and exits 2."""
        path = tmp_path / "p.yaml"
        path.write_text("nodes:\n  - class: LocalFileReader\n    args: {serialise: true}\n")
        result = nanostream("check", str(path))
        assert result.returncode == 2
        assert result.stderr == (
            f"nanostream: error: {path}:3:12: nodes[0].args.serialise: node 'LocalFileReader' "
            "(LocalFileReader) got unexpected argument 'serialise'; accepted: serialize, locate, "
            "binary, encoding, errors; did you mean 'serialize'?\n"
        )

    @pytest.mark.parametrize("command", ["check", "run"])
    @pytest.mark.parametrize(
        ("value", "tag"),
        [
            ("!!timestamp 2024-13-99x", "!!timestamp"),
            ('!!bool "abc"', "!!bool"),
            ('!!int ""', "!!int"),
        ],
    )
    def test_bad_tagged_value_exits_2(
        self, tmp_path: Path, command: str, value: str, tag: str
    ) -> None:
        """A value PyYAML cannot construct for its tag is a located error with status 2."""
        path = tmp_path / "p.yaml"
        path.write_text(f"nodes: {value}\n")
        result = nanostream(command, str(path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"nanostream: error: {path}:1:8: nodes: not valid YAML: ")
        assert f" as {tag}: expected " in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1

    def test_non_yaml_composite_file_is_named_not_echoed(self, tmp_path: Path) -> None:
        """A composites: entry naming a CSV file: its name, position and the entry; no content."""
        (tmp_path / "data.csv").write_text("id,token\n1,hunter2-secret\n")
        path = tmp_path / "p.yaml"
        path.write_text("composites: [data.csv]\nnodes: [{class: PrinterOfThings}]\n")
        result = nanostream("check", str(path))
        assert result.returncode == 2
        assert result.stderr == (
            f"nanostream: error: {tmp_path / 'data.csv'}:1:1: expected a composite definition "
            "(name, nodes, ...) (a mapping of key: value); the document is a single text value "
            f"(not YAML?)\nnanostream: note: named at {path}:1:14: composites[0]: this "
            "composites: entry\n"
        )

    def test_graph_mermaid(self) -> None:
        """graph prints a Mermaid flowchart; composites become subgraphs."""
        result = nanostream("graph", str(EXAMPLES / "foo_pipeline.yaml"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == textwrap.dedent(
            """\
            flowchart LR
                subgraph g0["foo (FooMessageTester)"]
                    n0["foo.foo_generator<br/>FooEmitter"]
                    n1["foo.length_tester<br/>MessageLengthTester"]
                end
                n2["print<br/>PrinterOfThings"]
                n0 --> n1
                n1 --> n2
            """
        )

    def test_graph_dot(self) -> None:
        """graph --format dot prints Graphviz DOT; dead-letter links are dashed."""
        result = nanostream("graph", "--format", "dot", str(EXAMPLES / "dead_letters.yaml"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == textwrap.dedent(
            """\
            digraph "reciprocals" {
                rankdir=LR;
                node [shape=box];
                "count" [label="count\\nCountTo"];
                "invert" [label="invert\\nReciprocal"];
                "print" [label="print\\nPrinterOfThings"];
                "rejects" [label="rejects\\nReportRejects"];
                "count" -> "invert";
                "invert" -> "print";
                "invert" -> "rejects" [style=dashed, label="dead_letters"];
            }
            """
        )

    def test_graph_groups_staged_builtin_nodes(self) -> None:
        """A built-in node that runs as stages (CSVReader) is drawn as one subgraph of its name."""
        result = nanostream("graph", str(EXAMPLES / "csv_watch.yaml"))
        assert result.returncode == 0, result.stderr
        assert result.stdout == textwrap.dedent(
            """\
            flowchart LR
                subgraph g0["parse (CSVReader)"]
                    n2["parse.split<br/>split stage"]
                    n3["parse<br/>rows stage"]
                end
                n0["watch<br/>LocalDirectoryWatchdog"]
                n1["read<br/>LocalFileReader"]
                n4["print<br/>PrinterOfThings"]
                n5["rejects<br/>PrinterOfThings"]
                n0 --> n1
                n1 --> n2
                n2 --> n3
                n3 --> n4
                n3 -.->|dead_letters| n5
            """
        )

    def test_graph_nests_groups(self) -> None:
        """A staged node inside a composite is a subgraph inside the composite's subgraph."""
        text = textwrap.dedent(
            """\
            name: nested
            modules: [numbers_nodes.py]
            composites:
              - name: CliBatchedCount
                nodes:
                  - {name: count, class: CountTo, frozen_arguments: {limit: 5}}
                  - {name: batch, class: Batch, frozen_arguments: {size: 2}}
            nodes:
              - {name: batches, class: CliBatchedCount}
              - {name: again, class: Batch, args: {size: 3}}
              - {name: print, class: PrinterOfThings}
            links:
              - [batches, again, print]
            """
        )
        loaded = read_pipeline_text(text, base_dir=EXAMPLES)
        assert render_dot(loaded) == textwrap.dedent(
            """\
            digraph "nested" {
                rankdir=LR;
                node [shape=box];
                subgraph cluster_0 {
                    label="batches (CliBatchedCount)";
                    "batches.count" [label="batches.count\\nCountTo"];
                    subgraph cluster_1 {
                        label="batches.batch (Batch)";
                        "batches.batch" [label="batches.batch\\nintake stage"];
                        "batches.batch.emit" [label="batches.batch.emit\\nemit stage"];
                    }
                }
                subgraph cluster_2 {
                    label="again (Batch)";
                    "again" [label="again\\nintake stage"];
                    "again.emit" [label="again.emit\\nemit stage"];
                }
                "print" [label="print\\nPrinterOfThings"];
                "batches.count" -> "batches.batch";
                "batches.batch" -> "batches.batch.emit";
                "batches.batch.emit" -> "again";
                "again" -> "again.emit";
                "again.emit" -> "print";
            }
            """
        )

    def test_nodes_lists_builtins(self) -> None:
        """nodes lists the built-in node types with kind, first docstring line and arguments."""
        result = nanostream("nodes")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        start = lines.index("LocalFileReader  [processor]  (nanostream_trio.nodes)")
        assert lines[start + 1].startswith("    Read the file at each incoming path")
        assert lines[start + 2] == (
            "    arguments: serialize=False, locate=False, binary=False, encoding='utf-8', "
            "errors='strict'"
        )
        assert "LocalDirectoryWatchdog  [source]  (nanostream_trio.nodes)" in lines
        assert "CSVReader  [composite]  (nanostream_trio.nodes)" in lines

    def test_nodes_with_module(self, custom_nodes: Path) -> None:
        """--module adds the node types a module defines."""
        result = nanostream("nodes", "--module", str(custom_nodes))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        start = lines.index("CliTicks  [source]  (cli_nodes)")
        assert lines[start + 1] == "    arguments: none"


class TestDemo:
    def test_demo_prints_rows_and_exits_0(self) -> None:
        """demo drops CSV files into a temporary directory, prints their rows and ends by itself."""
        result = nanostream("demo", "--log-level", "warning")
        assert result.returncode == 0, result.stderr
        rows = [line for line in result.stdout.splitlines() if line.startswith("row: ")]
        assert len(rows) == 9
        assert (
            rows[0] == "row: {'file': 'fruit-1.csv', 'row': '1', 'fruit': 'apple', 'quantity': '2'}"
        )
        assert result.stdout.splitlines()[-1].startswith(
            "nanostream demo: finished: 9 rows from 3 files in "
        )
        # Only JSON events (no stray text) and none of them about a failure.
        assert all(event["event"] != "node_failed" for event in events(result.stderr))

    def test_demo_sizes(self) -> None:
        """--files and --rows set how much the demo writes."""
        result = nanostream("demo", "--files", "2", "--rows", "4", "--log-level", "warning")
        assert result.returncode == 0, result.stderr
        assert len([line for line in result.stdout.splitlines() if line.startswith("row: ")]) == 8

    def test_demo_keep_running_until_ctrl_c(self) -> None:
        """demo --keep-running watches on after its files until the first SIGINT; status 0."""
        child = Child("demo", "--keep-running")
        child.wait_for_output("Ctrl-C to stop")
        child.process.send_signal(signal.SIGINT)
        code, stdout, stderr = child.finish()
        assert code == 0, stderr
        assert len([line for line in stdout.splitlines() if line.startswith("row: ")]) == 9
        assert "signal_received" in stderr

    def test_demo_api_polls_enriches_and_upserts(self) -> None:
        """demo api serves a paginated API, prints each enriched row and ends by itself."""
        result = nanostream("demo", "api", "--products", "12", "--log-level", "warning")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        rows = [line for line in lines if line.startswith("row: ")]
        assert len(rows) == 12
        assert rows[0] == "row: {'id': 1, 'name': 'bucket-1', 'price': 2.49}"
        assert lines[0].startswith("nanostream demo api: serving http://127.0.0.1:")
        assert re.fullmatch(
            r"nanostream demo api: finished: 2 pages, 12 products upserted into products\.db "
            r"in \d+\.\d s",
            lines[-1],
        )
        assert all(event["event"] != "node_failed" for event in events(result.stderr))

    def test_demo_api_without_httpx_names_the_extra(self, tmp_path: Path) -> None:
        """With httpx not importable, demo api says which extra to install; status 1."""
        blocked = tmp_path / "httpx"
        blocked.mkdir()
        (blocked / "__init__.py").write_text("raise ImportError('httpx blocked by the test')\n")
        path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
        result = nanostream("demo", "api", env=environment(PYTHONPATH=path))
        assert result.returncode == 1
        assert "pip install 'nanostream-trio[http]'" in result.stderr
        assert "httpx blocked by the test" in result.stderr
        assert result.stdout == ""


def stats(**nodes: dict[str, Any]) -> PipelineStatistics:
    base = dict(
        role="processor", status="running", items_in=0, items_out=0, skipped=0, retried=0,
        dead_lettered=0, inbox_queued=0, inbox_capacity=10, inbox_peak=0, blocked_seconds=0.0,
        rate=0.0, last_progress=0.0,
    )  # fmt: skip
    return PipelineStatistics(
        name="p",
        status="running",
        elapsed=12.34,
        nodes={
            name: NodeStatistics(name=name, **{**base, **fields}) for name, fields in nodes.items()
        },
    )


class TestTable:
    def test_columns_and_bottleneck(self) -> None:
        """The table shows received, sent, queued, rate, status and errors; marks the bottleneck."""
        snapshot = stats(
            src={"role": "source", "items_out": 120, "inbox_capacity": 0, "rate": 40.0},
            parse={"items_in": 100, "items_out": 99, "inbox_queued": 9, "skipped": 1, "rate": 33.3},
            sink={"role": "sink", "items_in": 99, "inbox_queued": 2, "rate": 33.0},
        )
        assert render_table(snapshot) == [
            "pipeline 'p': running, 12.3 s",
            "node   status   received  sent  queued  rate/s  errors",
            "src    running         -   120       -    40.0       0",
            "parse  running       100    99    9/10    33.3       1  <- bottleneck",
            "sink   running        99     0    2/10    33.0       0",
        ]

    def test_bottleneck_highlighted_in_color(self) -> None:
        """With color, the bottleneck's row is in reverse video."""
        snapshot = stats(a={"inbox_queued": 1}, b={"inbox_queued": 5})
        lines = render_table(snapshot, color=True)
        assert lines[3].startswith("\x1b[7mb ")
        assert lines[3].endswith("<- bottleneck\x1b[0m")
        assert "\x1b" not in lines[2]

    def test_no_bottleneck_when_nothing_waits(self) -> None:
        """With empty inboxes no row is marked."""
        lines = render_table(stats(a={}, b={"status": "finished", "inbox_queued": 3}))
        assert not any("bottleneck" in line for line in lines)
