"""Library mode is quiet: without the application's structlog setup, nothing reaches stdout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = """
import json, sys
import trio
from nanostream_trio import NanoNode, Pipeline

class Lines(NanoNode):
    def generator(self):
        yield from ['{"a": 1}', "not json", '{"a": 2}', "{bad", '{"a": 3}']

class Parse(NanoNode):
    def process_item(self, line):
        return json.loads(line)

class Show(NanoNode):
    def process_item(self, record):
        print(record["a"])

source = Lines(name="lines")
source > Parse(name="parse", on_error="skip") > Show(name="show")
SETUP
trio.run(Pipeline(source, stats_interval=0.000001).run)
"""


def run_script(setup: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(PIPELINE).replace("SETUP", setup)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    if "NANOSTREAM_DEBUG" not in env:
        environment.pop("NANOSTREAM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=True,
    )


class TestLibraryMode:
    def test_stdout_holds_only_the_data(self) -> None:
        """Without structlog configured, stdout carries the pipeline's prints and nothing else."""
        result = run_script()
        assert result.stdout.splitlines() == ["1", "2", "3"]

    def test_warnings_reach_stderr_one_line_each_without_tracebacks(self) -> None:
        """Each skipped item is one stderr line naming node, item and error; info is off."""
        result = run_script()
        lines = result.stderr.splitlines()
        assert len(lines) == 2, result.stderr
        assert all(" nanostream warning item_skipped " in line for line in lines)
        assert "node=parse" in lines[0]
        assert "item=\"'not json'\"" in lines[0]
        assert "JSONDecodeError" in lines[0]
        assert "Traceback" not in result.stderr
        assert "pipeline_stats" not in result.stderr
        assert "node_started" not in result.stderr

    def test_debug_switch_shows_info_events_and_tracebacks(self) -> None:
        """NANOSTREAM_DEBUG=1 adds info events and the tracebacks, still on stderr only."""
        result = run_script(NANOSTREAM_DEBUG="1")
        assert result.stdout.splitlines() == ["1", "2", "3"]
        assert "node_started" in result.stderr
        assert "Traceback" in result.stderr

    def test_an_application_configuration_takes_over(self) -> None:
        """Once the application configures structlog, every event goes where it says."""
        setup = (
            "import structlog\n"
            "structlog.configure(processors=[structlog.processors.JSONRenderer()],"
            " logger_factory=structlog.PrintLoggerFactory(sys.stderr))"
        )
        result = run_script(setup)
        assert result.stdout.splitlines() == ["1", "2", "3"]
        assert '"event": "node_started"' in result.stderr
        assert '"event": "item_skipped"' in result.stderr
        assert '"traceback": ' in result.stderr
