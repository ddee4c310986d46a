"""TailFile on a single path: rotated files never lost between two polls, copytruncate
copies found in the directory, and NULs of a writer's old offset skipped (restarts that
find a saved file again under its rotated name: test_nodes_tail_checkpoint.py).

The fake-clock tests do everything between two polls in plain synchronous code (the
autojump clock only moves while every task waits), which is exactly the race a fast
writer wins against a poller.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs
from test_nodes_tail import Collector, append, expected, make_tail, numbered, quiet_for, running

from nanostream_trio.nodes import TailFile


class TestRotatedBetweenPolls:
    async def test_file_created_and_rotated_away_between_polls_is_read(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file the watched name held only between two polls (created, written and
        renamed away by the next rotation) is found under its rotated name and read whole;
        rotated files already there at start (or compressed) are not read."""
        log = tmp_path / "app.log"
        (tmp_path / "app.log.5").write_text("old 1\n")
        (tmp_path / "app.log.6.gz").write_bytes(b"\x1f\x8b compressed")
        log.write_text(numbered(1, 3))
        tail, lines = make_tail(log)
        with capture_logs() as logs:
            async with running(tail):
                await lines.wait_for(2)
                # Two rotations before the next poll (RotatingFileHandler at full speed).
                os.rename(log, tmp_path / "app.log.1")
                log.write_text(numbered(3, 6))
                os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
                os.rename(log, tmp_path / "app.log.1")
                log.write_text(numbered(6, 8))
                await lines.wait_for(7)
                await quiet_for(6.0)
        assert sorted(lines.items, key=lambda s: int(s.split()[1])) == expected(1, 8)
        assert len(lines.items) == 7
        found = [e for e in logs if e["event"] == "rotated_file_found"]
        assert [e["path"] for e in found] == [str(tmp_path / "app.log.1")]


class TestCopyTruncateSinglePath:
    async def test_lines_written_before_the_copy_are_read_from_the_copy(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """copytruncate on a single path: the lines written after the last poll, which only
        the copy holds, are read from the copy (from the offset reached), once each."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))  # more than the 256 fingerprint bytes
        tail, lines = make_tail(log)
        with capture_logs() as logs:
            async with running(tail):
                await lines.wait_for(50)
                append(log, numbered(51, 54))  # after the last poll, before the copy
                shutil.copy(log, tmp_path / "app.log.1")
                os.truncate(log, 0)
                append(log, numbered(100, 102))
                await lines.wait_for(55)
                await quiet_for(6.0)
        assert sorted(lines.items) == sorted([*expected(1, 54), *expected(100, 102)])
        assert len(lines.items) == 55
        assert not [e for e in logs if e["event"] == "data_possibly_lost"]

    async def test_truncation_without_a_copy_reports_a_possible_loss(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A truncation with no copy in the directory cannot rule out lost lines: a
        data_possibly_lost event gives the path and the byte offset from which."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        tail, lines = make_tail(log, name="tail")
        with capture_logs() as logs:
            async with running(tail):
                await lines.wait_for(50)
                os.truncate(log, 0)
                append(log, numbered(100, 101))
                await lines.wait_for(51)
                await quiet_for()
        (event,) = [e for e in logs if e["event"] == "data_possibly_lost"]
        assert (event["path"], event["start"], event["end"]) == (
            str(log),
            len(numbered(1, 51)),
            None,
        )
        assert event["log_level"] == "warning"

    @pytest.mark.parametrize("before", [3, 20_000], ids=["short", "hole-over-chunks"])
    async def test_leading_nuls_of_a_writer_without_o_append_are_skipped(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock, before: int
    ) -> None:
        """After a copytruncate, a writer without O_APPEND writes at its old offset: the
        NUL bytes before its next line are skipped and reported once (also when the hole
        spans several reads), not emitted."""
        log = tmp_path / "app.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_APPEND
        try:
            os.write(fd, numbered(1, before + 1).encode())
            tail, lines = make_tail(log)
            with capture_logs() as logs:
                async with running(tail):
                    await lines.wait_for(before)
                    os.truncate(log, 0)
                    os.write(fd, numbered(1000, 1002).encode())  # at the old offset
                    await lines.wait_for(before + 2)
                    await quiet_for()
        finally:
            os.close(fd)
        assert lines.items == [*expected(1, before + 1), *expected(1000, 1002)]
        (event,) = [e for e in logs if e["event"] == "leading_nuls_skipped"]
        assert (event["offset"], event["skipped"]) == (0, len(numbered(1, before + 1)))


_ROTATING_WRITER = textwrap.dedent(
    """
    import logging, logging.handlers, sys
    handler = logging.handlers.RotatingFileHandler(sys.argv[1], maxBytes=50_000, backupCount=1000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("writer")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for i in range(int(sys.argv[2])):
        log.info("line %d padding padding padding padding padding", i)
    """
)


class TestRotatingFileHandler:
    async def test_full_speed_rotations_lose_no_line(self, tmp_path: Path) -> None:
        """Python's RotatingFileHandler at full speed in another process (a rotation every
        few tens of milliseconds, faster than the polls): every line arrives once."""
        log, writer = tmp_path / "app.log", tmp_path / "writer.py"
        writer.write_text(_ROTATING_WRITER)
        log.write_text("")
        total = 40_000
        tail = TailFile(log, poll_interval=0.25, locate=False)
        lines = Collector()
        tail > lines
        async with running(tail):
            await trio.run_process([sys.executable, str(writer), str(log), str(total)])
            with trio.move_on_after(60):
                await lines.wait_for(total)
        assert len(os.listdir(tmp_path)) > 20  # the writer did rotate, many times
        assert sorted(int(line.split()[1]) for line in lines.items) == list(range(total))


_APPENDING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    total, start = int(sys.argv[2]), time.monotonic()
    for first in range(0, total, 100):
        os.write(fd, "".join(f"line {i} padding\\n" for i in range(first, first + 100)).encode())
        ahead = first / 80_000 - (time.monotonic() - start)  # about 80k lines/s
        if ahead > 0:
            time.sleep(ahead)
    """
)


def _copytruncate_every(path: Path, seconds: float, stop: threading.Event) -> None:
    number = 0
    while not stop.wait(seconds):
        number += 1
        shutil.copyfile(path, f"{path}.{number}")
        os.truncate(path, 0)


class TestCopyTruncateUnderLoad:
    async def test_only_lines_in_neither_file_can_be_lost(self, tmp_path: Path) -> None:
        """copytruncate every 0.3 s under a writer at about 80k lines/s, on a single path:
        the only lines missing are those written between a copy and its truncation,
        which are in no file at all."""
        log, writer = tmp_path / "app.log", tmp_path / "writer.py"
        writer.write_text(_APPENDING_WRITER)
        log.write_text("")
        total = 120_000
        tail = TailFile(log, poll_interval=0.25, locate=False)
        lines = Collector()
        tail > lines
        stop = threading.Event()
        rotator = threading.Thread(target=_copytruncate_every, args=(log, 0.3, stop))
        async with running(tail):
            rotator.start()
            try:
                await trio.run_process([sys.executable, str(writer), str(log), str(total)])
            finally:
                stop.set()
                rotator.join()
            in_files: set[int] = set()
            for name in os.listdir(tmp_path):
                if name.startswith("app.log"):
                    in_files.update(_numbers((tmp_path / name).read_text().splitlines()))
            with trio.move_on_after(30):
                await lines.wait_for(len(in_files))
            await trio.sleep(1.0)
        assert len(os.listdir(tmp_path)) >= 5  # several rotations happened
        lost = in_files - set(_numbers(lines.items))
        assert not lost, f"{len(lost)} lines lost that a rotated copy held"


def _numbers(lines: list[str]) -> list[int]:
    """The line numbers of the writer's complete lines (a truncation can cut one)."""
    return [int(p[1]) for p in (line.split() for line in lines) if len(p) == 3 and p[1].isdigit()]
