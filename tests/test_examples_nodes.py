"""Tests that run the built-in node examples: examples/csv_watch and examples/log_ingestion,
both in-process through their build_pipeline functions and as the scripts users run."""

from __future__ import annotations

import collections
import datetime
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
CSV_WATCH = ROOT / "examples" / "csv_watch"
LOG_INGESTION = ROOT / "examples" / "log_ingestion"
LIMIT = 20.0


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_counts(sample: Path) -> list[dict[str, Any]]:
    """Warnings and errors per level per minute, computed without the library."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in sample.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["level"] in ("warning", "error", "critical"):
            moment = datetime.datetime.fromisoformat(record["timestamp"])
            minute = moment.replace(second=0, microsecond=0).isoformat()
            counts[(minute, record["level"])] += 1
    return [
        {"minute": minute, "level": level, "count": count}
        for (minute, level), count in counts.items()
    ]


def read_jsonl(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


class TestCSVWatch:
    async def test_build_pipeline_prints_rows_of_dropped_file(self, tmp_path: Path) -> None:
        """The demo's pipeline prints each row of a CSV copied into the directory."""
        example = load(CSV_WATCH / "run.py")
        rows, problems = io.StringIO(), io.StringIO()
        pipeline = example.build_pipeline(tmp_path, stream=rows, errors=problems, settle=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            shutil.copy(CSV_WATCH / "people.csv", tmp_path / "people.csv")
            (tmp_path / "bad.csv").write_text("a,b\n1,2,3\n4,5\n")
            with trio.fail_after(LIMIT):
                # StringIO has no event to wait on: poll it.
                while rows.getvalue().count("\n") < 4:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                while "line 2" not in problems.getvalue():  # noqa: ASYNC110
                    await trio.sleep(0.01)
            pipeline.stop()
        printed = rows.getvalue().splitlines()
        assert "row: {'name': 'Ada', 'city': 'London', 'age': '36'}" in printed
        assert "row: {'a': '4', 'b': '5'}" in printed
        assert len(printed) == 4
        assert problems.getvalue().startswith(f"skipped: {tmp_path / 'bad.csv'}, line 2:")

    def test_script_runs_and_stops_on_sigint(self, tmp_path: Path) -> None:
        """python examples/csv_watch/run.py DIR prints rows and exits 0 on Ctrl-C."""
        directory = tmp_path / "data_directory"
        process = subprocess.Popen(
            [sys.executable, str(CSV_WATCH / "run.py"), str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        killer = threading.Timer(LIMIT, process.kill)  # a hang fails the test, not the suite
        killer.start()
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("watching ")
            shutil.copy(CSV_WATCH / "people.csv", directory / "people.csv")
            rows = [process.stdout.readline() for _ in range(3)]
            process.send_signal(signal.SIGINT)
            out, err = process.communicate()
        finally:
            killer.cancel()
        assert process.returncode == 0, err
        assert rows[0] == "row: {'name': 'Ada', 'city': 'London', 'age': '36'}\n"
        assert out.strip().endswith("stopped: 3 rows printed")


class TestLogIngestion:
    async def test_counts_per_level_per_minute(self, tmp_path: Path) -> None:
        """The pipeline writes exactly the counts computed from the sample by hand."""
        example = load(LOG_INGESTION / "run.py")
        out, shown, errors = tmp_path / "counts.jsonl", io.StringIO(), io.StringIO()
        pipeline = example.build_pipeline(out=out, stream=shown, errors=errors)
        summary = await pipeline.run()
        sample = LOG_INGESTION / "sample.jsonl"
        assert read_jsonl(out) == expected_counts(sample)
        assert summary["parse"].dead_lettered == 1
        assert errors.getvalue().startswith(f"bad log line: {sample}, line 101: invalid JSON")
        assert shown.getvalue().splitlines()[0] == "2024-05-17 09:00  warning     9"

    async def test_follow_with_checkpoint_continues_after_restart(self, tmp_path: Path) -> None:
        """Following a live log, stopping and restarting counts each record exactly once."""
        example = load(LOG_INGESTION / "run.py")
        lines = (LOG_INGESTION / "sample.jsonl").read_text().splitlines(keepends=True)
        log, out, checkpoint = tmp_path / "live.jsonl", tmp_path / "c.jsonl", tmp_path / "s.db"
        log.write_text("".join(lines[:120]))
        for new_lines, part in ((120, lines[120:]), (len(lines) - 120, [])):
            pipeline = example.build_pipeline(
                log, out, follow=True, checkpoint=checkpoint, stream=io.StringIO(),
                errors=io.StringIO(),
            )  # fmt: skip
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                with trio.fail_after(LIMIT):
                    # A counter, not an event: poll it.
                    while pipeline.statistics()["tail"].items_out < new_lines:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                pipeline.stop()
            if part:
                with open(log, "a", encoding="utf-8") as handle:  # noqa: ASYNC230
                    handle.writelines(part)
        # Windows cut at each stop split a minute's count in two rows; their sums must match.
        totals: collections.Counter[tuple[str, str]] = collections.Counter()
        for row in read_jsonl(out):
            totals[(row["minute"], row["level"])] += row["count"]
        expected = {(r["minute"], r["level"]): r["count"] for r in expected_counts(log)}
        assert dict(totals) == expected

    async def test_two_files_out_of_order_and_records_without_timestamp(
        self, tmp_path: Path
    ) -> None:
        """Two logs through a glob (the second one earlier in time, read after the first)
        count every record in its minute; a record without a timestamp is reported as a bad
        line and does not stop the run."""
        example = load(LOG_INGESTION / "run.py")
        lines = (LOG_INGESTION / "sample.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / "a.jsonl").write_text("".join(lines[120:]))  # later minutes first
        (tmp_path / "b.jsonl").write_text("".join(lines[:120]))
        (tmp_path / "c.jsonl").write_text('{"level": "error", "event": "no time"}\n')
        out, errors = tmp_path / "counts.jsonl", io.StringIO()
        pipeline = example.build_pipeline(
            str(tmp_path / "*.jsonl"), out, stream=io.StringIO(), errors=errors
        )
        summary = await pipeline.run()
        totals: collections.Counter[tuple[str, str]] = collections.Counter()
        for row in read_jsonl(out):
            totals[(row["minute"], row["level"])] += row["count"]
        expected = {
            (r["minute"], r["level"]): r["count"]
            for r in expected_counts(LOG_INGESTION / "sample.jsonl")
        }
        assert dict(totals) == expected
        assert summary["per_minute"].dead_lettered == 1
        assert "record not counted: record has no ISO 8601 'timestamp'" in errors.getvalue()
        assert "'no time'" in errors.getvalue()

    def test_script_prints_a_readable_table(self, tmp_path: Path) -> None:
        """python examples/log_ingestion/run.py prints the table and a summary, exit 0."""
        result = subprocess.run(
            [sys.executable, str(LOG_INGESTION / "run.py"), "--out", "counts.jsonl"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=LIMIT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "minute            level    count"
        assert lines[-1] == "read 240 lines, kept 48, 1 bad; counts appended to counts.jsonl"
        assert "line 101" in result.stderr
        assert len(read_jsonl(tmp_path / "counts.jsonl")) == len(lines) - 2

    def test_generator_reproduces_the_bundled_sample(self, tmp_path: Path) -> None:
        """generate_sample.py makes the bundled sample byte for byte, with structlog."""
        generator = load(LOG_INGESTION / "generate_sample.py")
        generator.generate(tmp_path / "sample.jsonl")
        made = (tmp_path / "sample.jsonl").read_bytes()
        assert made == (LOG_INGESTION / "sample.jsonl").read_bytes()
        assert os.path.getsize(tmp_path / "sample.jsonl") < 64 * 1024
