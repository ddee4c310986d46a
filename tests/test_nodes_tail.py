"""Tests of TailFile on real files: appends, partial lines, rotation by rename and create,
copy-truncate, truncation, globs and start positions (restarts from a checkpoint:
test_nodes_tail_checkpoint.py).

TailFile polls on the Trio clock and reads files without threads, so these
tests run on the autojump fake clock: a poll happens whenever every task waits,
and "nothing more arrives" is checked by letting virtual seconds pass.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from nanostream_trio import ConfigError, NanoNode, Pipeline
from nanostream_trio.nodes import JSONLinesParser, Line, TailFile


class Collector(NanoNode):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.items: list[Any] = []
        self._changed = trio.Event()

    def process_item(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(60):
            while len(self.items) < count:
                await self._changed.wait()


@asynccontextmanager
async def running(*nodes: NanoNode) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(*nodes, stats_interval=None, stall_timeout=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        try:
            yield pipeline
        finally:
            pipeline.stop()


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, "ab") as handle:
        handle.write(data)


def numbered(start: int, stop: int) -> str:
    return "".join(f"line {i}\n" for i in range(start, stop))


def expected(start: int, stop: int) -> list[str]:
    return [f"line {i}" for i in range(start, stop)]


async def quiet_for(seconds: float = 5.0) -> None:
    """Let several polls pass on the fake clock."""
    await trio.sleep(seconds)


def make_tail(path: Path | str, **options: Any) -> tuple[TailFile, Collector]:
    tail = TailFile(path, poll_interval=0.1, **options)
    lines = Collector()
    tail > lines
    return tail, lines


class TestFollowing:
    async def test_existing_and_appended_lines(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Lines present at start and lines appended later arrive in order, as Lines
        with locate=True."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        tail, lines = make_tail(log, locate=True)
        async with running(tail):
            await lines.wait_for(2)
            append(log, numbered(3, 5))
            await lines.wait_for(4)
        assert lines.items == expected(1, 5)
        assert all(isinstance(line, Line) and line.path == str(log) for line in lines.items)
        assert [line.lineno for line in lines.items] == [1, 2, 3, 4]

    async def test_partial_line_is_held_until_complete(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """An unterminated last line is not emitted until its newline arrives."""
        log = tmp_path / "app.log"
        log.write_text("first\r\nsec")
        tail, lines = make_tail(log)
        async with running(tail):
            await lines.wait_for(1)
            await quiet_for()
            assert lines.items == ["first"]
            append(log, "ond\nthi")
            await lines.wait_for(2)
            await quiet_for()
        assert lines.items == ["first", "second"]

    async def test_file_created_after_start(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file that does not exist yet is waited for and read from its start."""
        log = tmp_path / "later.log"
        tail, lines = make_tail(log, start_at="end")
        async with running(tail):
            await quiet_for()
            log.write_text(numbered(1, 3))
            await lines.wait_for(2)
        assert lines.items == expected(1, 3)

    async def test_ready_once_the_file_is_open(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """When nursery.start returns, the file is open: deleting it then loses nothing."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        tail, lines = make_tail(log)
        async with running(tail):
            log.unlink()
            await lines.wait_for(3)
        assert lines.items == expected(1, 4)

    async def test_follow_false_reads_to_the_end_and_stops(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Without follow, the lines there (and an unterminated last one) arrive, then it ends."""
        log = tmp_path / "app.log"
        log.write_text("a\nb\nc")
        tail, lines = make_tail(log, follow=False)
        await Pipeline(tail).run()
        assert lines.items == ["a", "b", "c"]

    async def test_start_at_end_skips_existing_lines(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """start_at='end' emits only lines written after start (a held partial completes)."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4) + "half")
        tail, lines = make_tail(log, start_at="end")
        async with running(tail):
            await quiet_for()
            append(log, " done\n" + numbered(4, 5))
            await lines.wait_for(2)
        assert lines.items == ["half done", "line 4"]


class TestRotation:
    async def test_rename_and_create(self, tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
        """Lines written just before a rename and into the new file all arrive, once each."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        tail, lines = make_tail(log, locate=True)
        async with running(tail):
            await lines.wait_for(3)
            append(log, numbered(4, 6))  # not read yet when the rotation happens
            os.rename(log, tmp_path / "app.log.1")
            log.write_text(numbered(6, 8))
            await lines.wait_for(7)
            append(log, numbered(8, 9))
            await lines.wait_for(8)
            await quiet_for()
        assert lines.items == expected(1, 9)
        assert [line.path for line in lines.items[-3:]] == [str(log)] * 3

    async def test_rename_keeps_unterminated_last_line(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """The rotated file's last line without a newline is emitted once the file has been
        quiet for rotate_wait (a writer may still complete it)."""
        log = tmp_path / "app.log"
        log.write_text("a\nb")
        tail, lines = make_tail(log, rotate_wait=2.0)
        async with running(tail):
            await lines.wait_for(1)
            os.rename(log, tmp_path / "app.log.1")
            log.write_text("c\n")
            await lines.wait_for(2)
            start = trio.current_time()
            await lines.wait_for(3)
            assert trio.current_time() - start >= 1.5
        assert lines.items == ["a", "c", "b"]

    async def test_writer_keeps_writing_to_the_renamed_file(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """logrotate create: lines the writer still writes through its old descriptor after
        the rename are read until the old file is quiet for rotate_wait, then it is closed."""
        log = tmp_path / "app.log"
        tail, lines = make_tail(log, rotate_wait=3.0)
        with open(log, "a", encoding="utf-8") as writer:  # noqa: ASYNC230
            writer.write(numbered(1, 3))
            writer.flush()
            async with running(tail):
                await lines.wait_for(2)
                os.rename(log, tmp_path / "app.log.1")
                log.write_text(numbered(100, 101))
                await lines.wait_for(3)  # the rotation has been seen
                await quiet_for(2.0)
                writer.write(numbered(3, 5))  # the old descriptor, 2 s after the rename
                writer.flush()
                await lines.wait_for(5)
                assert len(tail._tracked) == 2
                await quiet_for(4.0)
                assert len(tail._tracked) == 1  # quiet for rotate_wait: closed
        assert sorted(lines.items) == sorted([*expected(1, 5), *expected(100, 101)])

    async def test_copy_truncate_shorter(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """copytruncate, then fewer bytes than before: the new lines are read from the start."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 5))
        tail, lines = make_tail(log)
        async with running(tail):
            await lines.wait_for(4)
            shutil.copyfile(log, tmp_path / "app.log.1")
            os.truncate(log, 0)
            append(log, "x\n")
            await lines.wait_for(5)
            await quiet_for()
        assert lines.items == [*expected(1, 5), "x"]

    async def test_copy_truncate_longer_before_next_poll(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Truncated and rewritten past the old position: the first bytes tell, nothing is lost."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        tail, lines = make_tail(log)
        async with running(tail):
            await lines.wait_for(2)
            shutil.copyfile(log, tmp_path / "app.log.1")
            os.truncate(log, 0)
            append(log, "new " + numbered(10, 14))
            await lines.wait_for(6)
            await quiet_for()
        assert lines.items == [*expected(1, 3), "new line 10", *expected(11, 14)]

    async def test_truncation_in_place(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file truncated to empty and written again is read from its start."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        tail, lines = make_tail(log, locate=True)
        async with running(tail):
            await lines.wait_for(3)
            os.truncate(log, 0)
            await quiet_for()
            append(log, numbered(4, 6))
            await lines.wait_for(5)
            await quiet_for()
        assert lines.items == expected(1, 6)
        assert [line.lineno for line in lines.items] == [1, 2, 3, 1, 2]

    @pytest.mark.parametrize(
        ("before", "after"),
        [
            ("line 1\nline 2\n", "LINE 1\nline 3\n"),  # the first bytes differ
            (numbered(1, 60), numbered(1, 59) + "line XY\n"),  # only the last bytes differ
        ],
        ids=["prefix", "suffix"],
    )
    async def test_rewritten_to_exactly_the_same_size(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock, before: str, after: str
    ) -> None:
        """A file truncated and written again to exactly the size already read (its
        modification time moved) is read again from its start."""
        assert len(before) == len(after)
        log = tmp_path / "app.log"
        log.write_text(before)
        count = before.count("\n")
        tail, lines = make_tail(log)
        async with running(tail):
            await lines.wait_for(count)
            await quiet_for(1.0)
            mtime = log.stat().st_mtime_ns
            with open(log, "r+", encoding="utf-8") as handle:  # noqa: ASYNC230
                handle.truncate(0)
                handle.write(after)
            os.utime(log, ns=(mtime + 10**9, mtime + 10**9))  # as a later write would
            await lines.wait_for(2 * count)
            await quiet_for()
        assert lines.items == before.splitlines() + after.splitlines()

    async def test_touch_without_new_content_reads_nothing_again(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A new modification time with the same bytes (touch) is not a rewrite."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        tail, lines = make_tail(log)
        async with running(tail):
            await lines.wait_for(3)
            await quiet_for(1.0)
            mtime = log.stat().st_mtime_ns
            os.utime(log, ns=(mtime + 10**9, mtime + 10**9))
            await quiet_for()
        assert lines.items == expected(1, 4)

    async def test_truncation_is_reported_on_the_pipelines_logger(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A truncation gives one file_truncated event on the pipeline's own logger."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        tail, lines = make_tail(log, name="tail")
        logger = structlog.get_logger("tests").bind(app="ingest-app")
        pipeline = Pipeline(tail, name="ingest", logger=logger, stats_interval=None)
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await lines.wait_for(3)
                os.truncate(log, 0)
                append(log, "x\n")
                await lines.wait_for(4)
                pipeline.stop()
        events = [e for e in logs if e["event"] == "file_truncated"]
        assert events == [
            {
                "event": "file_truncated",
                "log_level": "info",
                "app": "ingest-app",
                "pipeline": "ingest",
                "node": "tail",
                "path": str(log),
                "offset": len(numbered(1, 4)),
                "size": 2,
            }
        ]


class TestGlob:
    async def test_all_matches_and_new_files(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Every file matching the glob is followed; a new match is read from its start."""
        (tmp_path / "a.log").write_text("a1\n")
        (tmp_path / "b.log").write_text("b1\n")
        (tmp_path / "skip.txt").write_text("no\n")
        tail, lines = make_tail(str(tmp_path / "*.log"))
        async with running(tail):
            await lines.wait_for(2)
            (tmp_path / "c.log").write_text("c1\nc2\n")
            append(tmp_path / "a.log", "a2\n")
            await lines.wait_for(5)
            await quiet_for()
        assert sorted(lines.items) == ["a1", "a2", "b1", "c1", "c2"]

    async def test_renamed_within_glob_keeps_position(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file renamed to another matching name is not read again."""
        log = tmp_path / "app.log"
        log.write_text("one\n")
        tail, lines = make_tail(str(tmp_path / "app.log*"))
        async with running(tail):
            await lines.wait_for(1)
            os.rename(log, tmp_path / "app.log.1")
            append(tmp_path / "app.log.1", "two\n")
            log.write_text("three\n")
            await lines.wait_for(3)
            await quiet_for()
        assert sorted(lines.items) == ["one", "three", "two"]

    @pytest.mark.parametrize("truncate_seen_first", [False, True])
    async def test_copy_truncate_into_a_matched_name_reads_the_copy_from_the_known_offset(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock, truncate_seen_first: bool
    ) -> None:
        """With a glob covering rotated names, logrotate's copytruncate copy is recognised by
        its first and last bytes read: only the lines written after the last poll are read
        from it, and every line arrives exactly once."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))  # more than the 256 fingerprint bytes
        tail, lines = make_tail(str(tmp_path / "app.log*"))
        async with running(tail):
            await lines.wait_for(50)
            append(log, numbered(51, 54))  # written after the last poll, before the copy
            copy = tmp_path / ("staging" if truncate_seen_first else "app.log.1")
            shutil.copy(log, copy)
            os.truncate(log, 0)
            append(log, numbered(100, 102))
            if truncate_seen_first:
                await lines.wait_for(52)  # the truncated file was read again first
                os.rename(copy, tmp_path / "app.log.1")
            await lines.wait_for(55)
            await quiet_for()
        assert sorted(lines.items) == sorted([*expected(1, 54), *expected(100, 102)])
        assert len(lines.items) == 55

    async def test_file_starting_like_another_is_read_whole(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A new file whose first bytes match a tracked file's but whose content differs
        further on is no copy: it is read from its start."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        tail, lines = make_tail(str(tmp_path / "app.log*"))
        async with running(tail):
            await lines.wait_for(50)
            other = numbered(1, 40) + "".join(f"other {i}\n" for i in range(20))
            (tmp_path / "app.log.2").write_text(other)
            await lines.wait_for(109)
            await quiet_for()
        assert lines.items == expected(1, 51) + other.splitlines()

    async def test_short_file_starting_like_another_is_read_after_rotate_wait(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A new file shorter than what was read of the file it starts like may be a copy
        still being written: it is looked at again, and read whole after rotate_wait."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        tail, lines = make_tail(str(tmp_path / "app.log*"), rotate_wait=2.0)
        async with running(tail):
            await lines.wait_for(50)
            start = trio.current_time()
            (tmp_path / "app.log.2").write_text(numbered(1, 41))
            await lines.wait_for(90)
            assert trio.current_time() - start >= 2.0
            await quiet_for()
        assert lines.items == expected(1, 51) + expected(1, 41)


class TestBadInput:
    async def test_binary_garbage_reaches_the_parser_with_its_line(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Undecodable bytes become a line the JSON parser dead-letters with its line number."""
        log = tmp_path / "app.jsonl"
        append(log, b'{"ok": 1}\n\x00\xff\xfe\x81garbage\n{"ok": 2}\n')
        tail = TailFile(log, follow=False)
        parser, good, letters = JSONLinesParser(), Collector(), Collector("letters")
        tail > parser > good
        parser.dead_letters > letters
        await Pipeline(tail).run()
        assert good.items == [{"ok": 1}, {"ok": 2}]
        (letter,) = letters.items
        assert letter.message.startswith(f"{log}, line 2: invalid JSON")

    @pytest.mark.parametrize("length", [5_000, 300_000], ids=["one-read", "several-reads"])
    async def test_overlong_line_is_skipped_and_reported(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock, length: int
    ) -> None:
        """A line over max_line_bytes is dropped with a line_too_long event; the next arrive."""
        log = tmp_path / "app.log"
        log.write_text("short\n" + "x" * length + "\nafter\n")
        tail, lines = make_tail(log, follow=False, max_line_bytes=1000, name="tail", locate=True)
        with capture_logs() as logs:
            await Pipeline(tail, name="ingest").run()
        assert lines.items == ["short", "after"]
        assert [line.lineno for line in lines.items] == [1, 3]
        events = [e for e in logs if e["event"] == "line_too_long"]
        assert events == [
            {
                "event": "line_too_long",
                "log_level": "warning",
                "pipeline": "ingest",
                "node": "tail",
                "path": str(log),
                "line": 2,
                "max_line_bytes": 1000,
            }
        ]

    def test_bad_start_at(self, tmp_path: Path) -> None:
        """An unknown start position is a ConfigError listing the accepted ones."""
        with pytest.raises(ConfigError, match="'beginning', 'end'"):
            TailFile(tmp_path / "x", start_at="middle")  # type: ignore[arg-type]
