"""TailFile's limits and what it says about them: a bounded number of open files (also
under a real, lowered RLIMIT_NOFILE), files that are missing or cannot be opened, decoding
errors that name file and line, and the record type of its lines."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs
from test_nodes_tail import append, expected, make_tail, numbered, quiet_for, running

from nanostream_trio import Pipeline
from nanostream_trio.nodes import FileDecodeError, Line, TailFile


class TestOpenFiles:
    async def test_more_files_than_max_open_files_are_all_read_and_followed(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With ten matching files and max_open_files=3, every line arrives, lines appended
        to files closed as idle arrive too, and at most three files are open at any poll."""
        for number in range(10):
            (tmp_path / f"f{number}.log").write_text(f"f{number} a\n")
        tail, lines = make_tail(str(tmp_path / "*.log"), max_open_files=3)
        async with running(tail):
            await lines.wait_for(10)
            assert tail._open_count <= 3
            for number in range(10):
                append(tmp_path / f"f{number}.log", f"f{number} b\n")
            await lines.wait_for(20)
            await quiet_for()
            assert tail._open_count <= 3
        assert sorted(lines.items) == sorted([f"f{n} {x}" for n in range(10) for x in ("a", "b")])

    async def test_closed_file_renamed_out_of_the_glob_is_found_by_identity(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file closed as idle (max_open_files=1) and then renamed to a name the glob does
        not match is found again by its identity in the directory; its new lines arrive."""
        (tmp_path / "a.log").write_text("a 1\n")
        (tmp_path / "b.log").write_text("b 1\n")
        tail, lines = make_tail(str(tmp_path / "*.log"), max_open_files=1)
        async with running(tail):
            await lines.wait_for(2)
            await quiet_for(1.0)
            os.rename(tmp_path / "a.log", tmp_path / "a.old")
            append(tmp_path / "a.old", "a 2\n")
            append(tmp_path / "b.log", "b 2\n")
            await lines.wait_for(4)
            await quiet_for(6.0)
        assert sorted(lines.items) == ["a 1", "a 2", "b 1", "b 2"]

    def test_bad_max_open_files(self, tmp_path: Path) -> None:
        """max_open_files below 1 is a ConfigError naming the option."""
        from nanostream_trio import ConfigError

        with pytest.raises(ConfigError, match="max_open_files >= 1"):
            TailFile(tmp_path / "x", max_open_files=0)


_LIMITED = textwrap.dedent(
    """
    import resource, sys, trio
    from nanostream_trio import NanoNode, Pipeline
    from nanostream_trio.nodes import TailFile

    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    class Count(NanoNode):
        count = 0
        def process_item(self, item):
            Count.count += 1
            if Count.count == 30_000 and pipeline is not None:
                pipeline.stop()

    follow = sys.argv[2] == "follow"
    limit = {} if sys.argv[3] == "default" else {"max_open_files": int(sys.argv[3])}
    tail = TailFile(sys.argv[1], follow=follow, poll_interval=0.01, **limit)
    tail > Count()
    pipeline = Pipeline(tail, stats_interval=None, stall_timeout=None)
    trio.run(pipeline.run)
    print(Count.count)
    """
)


class TestDescriptorLimit:
    @pytest.mark.parametrize("follow", ["once", "follow"])
    @pytest.mark.parametrize("max_open", ["default", "1000"])
    def test_three_hundred_files_under_a_limit_of_128_descriptors(
        self, tmp_path: Path, follow: str, max_open: str
    ) -> None:
        """With RLIMIT_NOFILE lowered to 128 and 300 matching files, all 30,000 lines
        arrive: by default at most a quarter of the limit is held open, and even with a
        max_open_files above the limit running out of descriptors closes idle files and
        retries instead of dropping files."""
        logs = tmp_path / "logs"
        logs.mkdir()
        for number in range(300):
            (logs / f"f{number:03}.log").write_text(numbered(0, 100))
        script = tmp_path / "limited.py"
        script.write_text(_LIMITED)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        result = subprocess.run(
            [sys.executable, str(script), str(logs / "*.log"), follow, max_open],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert result.stdout.split()[-1] == "30000"


class TestMissingAndUnreadable:
    async def test_file_missing_is_reported_once_and_again_after_it_reappeared(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A missing path gives one file_missing event however long it is missing, and one
        more when it goes missing again after it had appeared."""
        log = tmp_path / "app.log"
        tail, lines = make_tail(log, name="tail")
        with capture_logs() as logs:
            async with running(tail):
                await quiet_for()
                log.write_text("a\n")
                await lines.wait_for(1)
                log.unlink()
                await quiet_for(10.0)
        missing = [e for e in logs if e["event"] == "file_missing"]
        assert [(e["path"], e["log_level"]) for e in missing] == [(str(log), "warning")] * 2

    async def test_glob_matching_nothing_is_reported(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A glob whose directory does not exist gives one file_missing event."""
        pattern = str(tmp_path / "nowhere" / "*.log")
        tail, _ = make_tail(pattern)
        with capture_logs() as logs:
            async with running(tail):
                await quiet_for()
        assert [e["path"] for e in logs if e["event"] == "file_missing"] == [pattern]

    async def test_unreadable_file_is_reported_with_the_os_error_and_retried(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A path that cannot be opened (a symlink loop here, as root ignores permissions)
        gives one file_unreadable event with the OS error; once it is readable it is read."""
        log = tmp_path / "app.log"
        os.symlink(log, log)
        tail, lines = make_tail(log)
        with capture_logs() as logs:
            async with running(tail):
                await quiet_for()
                log.unlink()
                log.write_text("a\n")
                await lines.wait_for(1)
        (event,) = [e for e in logs if e["event"] == "file_unreadable"]
        assert event["path"] == str(log)
        assert event["errno"] == "ELOOP"
        assert "Too many levels of symbolic links" in event["error"]
        assert lines.items == ["a"]

    async def test_follow_false_on_a_missing_path_is_an_error_naming_node_and_path(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With follow=False a single path that does not exist fails at setup, naming the
        node and the path, instead of ending with 0 lines."""
        log = tmp_path / "app.log"
        tail, lines = make_tail(log, follow=False, name="tail")
        with pytest.raises(FileNotFoundError, match=rf"node 'tail': file {log} does not exist"):
            await Pipeline(tail, stats_interval=None, stall_timeout=None).run()
        assert lines.items == []


class TestLines:
    async def test_strict_decoding_names_file_and_line_after_the_good_lines(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """errors='strict': the node fails with a FileDecodeError naming the file, the line
        and its bytes."""
        log = tmp_path / "app.log"
        append(log, b"good 1\ngood 2\nbad \xff here\ngood 4\n")
        tail, _ = make_tail(log, follow=False, errors="strict")
        with pytest.raises(FileDecodeError, match=rf"{log}, line 3: cannot decode") as caught:
            await Pipeline(tail, stats_interval=None, stall_timeout=None).run()
        assert (caught.value.path, caught.value.line) == (str(log), 3)
        assert caught.value.content == b"bad \xff here\n"

    async def test_plain_strings_by_default_and_lines_know_where_with_locate(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """By default (locate=False) exact str lines (no per-line record), CRLF endings
        stripped; with locate=True lines read in several 64 KiB chunks know their path and
        consecutive line numbers, and pickle as plain Line objects."""
        log = tmp_path / "app.log"
        log.write_bytes(b"a\r\nb\nc")
        tail, lines = make_tail(log, follow=False)
        await Pipeline(tail, stats_interval=None, stall_timeout=None).run()
        assert lines.items == ["a", "b", "c"]
        assert {type(line) for line in lines.items} == {str}
        log.write_text(numbered(1, 20_001))
        tail, lines = make_tail(log, follow=False, locate=True)
        await Pipeline(tail, stats_interval=None, stall_timeout=None).run()
        assert lines.items == expected(1, 20_001)
        assert [line.lineno for line in lines.items] == list(range(1, 20_001))
        assert {line.path for line in lines.items} == {str(log)}
        copy = pickle.loads(pickle.dumps(lines.items[7]))
        assert (type(copy), copy, copy.path, copy.lineno) == (Line, "line 8", str(log), 8)
