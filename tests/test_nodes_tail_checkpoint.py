"""TailFile's checkpoint hooks, called directly as the engine's aligned checkpoints call them.

``setup()``, then ``restore(state)`` on a start from a checkpoint, then the
generator; ``snapshot()`` while the generator is suspended at a ``yield``, after
what it yielded was handed on. A restart is a fresh TailFile restored from a
snapshot (through pickle, as the store keeps it): the lines yielded before the
snapshot and those yielded after the restore must be every line exactly once.
Real files in ``tmp_path``; polls run on the autojump fake clock.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs
from test_nodes_tail import append, expected, make_tail, numbered, running

from nanostream_trio import ConfigError, Items
from nanostream_trio._items import Lines
from nanostream_trio.nodes import TailFile


class Hooks:
    """Runs a TailFile the way the engine will: setup, restore, generator, snapshot at yields."""

    def __init__(self, tail: TailFile, state: Any = None) -> None:
        self.tail = tail
        self.state = state
        self.yields: list[tuple[float, Items[Any]]] = []  # (Trio time, what was yielded)

    async def __aenter__(self) -> Hooks:
        self.tail.setup()
        if self.state is not None:
            self.tail.restore(self.state)
        self._generator = self.tail.generator()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._generator.aclose()
        self.tail.teardown()

    async def step(self) -> Items[Any] | None:
        """What the generator yields next (None once it ended)."""
        try:
            items = await self._generator.__anext__()
        except StopAsyncIteration:
            return None
        assert type(items) in (Items, Lines)
        if type(items) is Lines:
            # Each line as the engine singles it out (its batch's path and first number
            # plus its index), so that tests read the default's locations per line.
            items = Items(items.line(index) for index in range(len(items)))
        self.yields.append((trio.current_time(), items))
        return items

    async def lines(self, count: int) -> list[Any]:
        """The next ``count`` lines (at least; whole yields)."""
        lines: list[Any] = []
        with trio.fail_after(60):  # virtual seconds: lines that never come fail the test
            while len(lines) < count:
                items = await self.step()
                assert items is not None, f"ended after {len(lines)} of {count} lines"
                lines += items
        return lines

    async def until_idle(self) -> list[Any]:
        """Every line up to the first poll that finds nothing new."""
        lines: list[Any] = []
        while items := await self.step():
            lines += items
        return lines

    async def to_end(self) -> list[Any]:
        """Every line until the generator ends (``follow=False``)."""
        lines: list[Any] = []
        while (items := await self.step()) is not None:
            lines += items
        return lines

    def snapshot(self) -> Any:
        """The snapshot, as the checkpoint store gives it back."""
        return pickle.loads(pickle.dumps(self.tail.snapshot()))


def tail_of(path: Path | str, **options: Any) -> TailFile:
    return TailFile(path, poll_interval=0.1, name="tail", **options)


async def first_run(path: Path | str, lines: int, **options: Any) -> tuple[list[Any], Any]:
    """Read ``lines`` lines (whole yields), take a snapshot there, stop: (lines, snapshot)."""
    async with Hooks(tail_of(path, **options)) as hooks:
        delivered = await hooks.lines(lines)
        return delivered, hooks.snapshot()


class TestSnapshot:
    async def test_covers_exactly_the_lines_yielded(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Taken at the yield of the first chunk of a long file, the saved offset and line
        number are those right after that chunk's last line."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 30_001))  # several 64 KiB reads
        async with Hooks(tail_of(log)) as hooks:
            first = await hooks.step()
            assert first is not None
            (entry,) = hooks.snapshot()["files"]
        count = len(first)
        assert 0 < count < 30_000
        assert first == expected(1, count + 1)
        assert (entry["offset"], entry["lineno"]) == (len(numbered(1, count + 1)), count)
        assert entry["identity"] == [log.stat().st_dev, log.stat().st_ino]

    async def test_a_partial_last_line_is_not_covered(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """An unterminated last line is not yielded, so the offset stops before it."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4) + "partial")
        async with Hooks(tail_of(log)) as hooks:
            assert await hooks.until_idle() == expected(1, 4)
            (entry,) = hooks.snapshot()["files"]
        assert (entry["offset"], entry["lineno"]) == (len(numbered(1, 4)), 3)

    async def test_inside_an_overlong_line_the_skipped_line_is_not_counted(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Taken while an overlong line is being skipped, the snapshot is at that line's
        start with the lines before it: a restore skips it again and numbers on."""
        log = tmp_path / "app.log"
        log.write_text("short\n" + "x" * 5000)
        async with Hooks(tail_of(log, max_line_bytes=1000)) as hooks:
            assert await hooks.until_idle() == ["short"]
            state = hooks.snapshot()
        assert (state["files"][0]["offset"], state["files"][0]["lineno"]) == (6, 1)
        append(log, "x\nafter\n")
        async with Hooks(tail_of(log, max_line_bytes=1000, follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert rest == ["after"]
        assert rest[0].lineno == 3

    async def test_after_teardown_it_still_holds_the_last_position(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """The last snapshot at the node's end may come after teardown closed the files:
        it is the same as before."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        hooks = Hooks(tail_of(log, follow=False))
        async with hooks:
            await hooks.to_end()
            before = hooks.snapshot()
        assert hooks.snapshot() == before
        assert before["files"][0]["lineno"] == 50
        assert "suffix_sha256" in before["files"][0]

    async def test_is_plain_data_that_survives_pickle_and_json(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """The state is dicts, lists, str and int: equal after pickle and after JSON."""
        for name in ("a.log", "b.log"):
            (tmp_path / name).write_text(numbered(1, 40))
        async with Hooks(tail_of(tmp_path / "*.log")) as hooks:
            await hooks.until_idle()
            state = hooks.tail.snapshot()
        assert pickle.loads(pickle.dumps(state)) == state
        assert json.loads(json.dumps(state)) == state
        assert state["version"] == 1
        assert sorted(Path(entry["path"]).name for entry in state["files"]) == ["a.log", "b.log"]

    async def test_unchanged_files_reuse_their_entries(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file whose position did not move since the last snapshot gives the same entry
        object (nothing hashed or read again); one that moved gives a new entry."""
        for name in ("a.log", "b.log"):
            (tmp_path / name).write_text(numbered(1, 40))
        async with Hooks(tail_of(tmp_path / "*.log")) as hooks:
            await hooks.until_idle()
            before = {e["path"]: e for e in hooks.tail.snapshot()["files"]}
            append(tmp_path / "b.log", numbered(40, 41))
            assert await hooks.until_idle() == ["line 40"]
            after = {e["path"]: e for e in hooks.tail.snapshot()["files"]}
        a, b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        assert after[a] is before[a]
        assert after[b] is not before[b]
        assert (after[b]["lineno"], before[b]["lineno"]) == (40, 39)


class TestIdle:
    async def test_an_idle_poll_yields_empty_items_once_per_poll(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With nothing new, each poll yields one empty Items (so a barrier can pass),
        poll_interval apart on the Trio clock; new lines come in the next poll's yield."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        async with Hooks(tail_of(log)) as hooks:
            assert await hooks.step() == expected(1, 3)
            for _ in range(3):
                assert await hooks.step() == []
            append(log, numbered(3, 4))
            assert await hooks.step() == ["line 3"]
        start = hooks.yields[0][0]
        # Lines, then the idle poll right after them, then one idle poll per 0.1 s.
        assert [when - start for when, _ in hooks.yields] == pytest.approx([0, 0, 0.1, 0.2, 0.3])

    async def test_empty_yields_reach_no_node_and_count_no_item(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """In a running pipeline the idle polls' empty Items deliver nothing downstream and
        leave the tail's items_out at the lines read."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        tail, lines = make_tail(log)
        async with running(tail) as pipeline:
            await lines.wait_for(2)
            await trio.sleep(5.0)  # 50 idle polls
            assert pipeline.statistics()[tail.name].items_out == 2
        assert lines.items == expected(1, 3)

    async def test_follow_false_ends_without_an_empty_yield(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Without ``follow``, reading everything ends the generator at once."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        async with Hooks(tail_of(log, follow=False)) as hooks:
            assert await hooks.to_end() == expected(1, 3)
        assert [list(items) for _, items in hooks.yields] == [expected(1, 3)]


class TestRestore:
    async def test_continues_without_loss_or_duplicates(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Lines after the snapshot (yielded but not checkpointed), lines written while
        stopped and a partial line completed later arrive exactly once, numbered on."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 30_001) + "partial")
        delivered, state = await first_run(log, 1)
        append(log, " line\n" + numbered(30_001, 30_003))
        async with Hooks(tail_of(log, follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert delivered + rest == [*expected(1, 30_001), "partial line", *expected(30_001, 30_003)]
        assert [line.lineno for line in rest[-3:]] == [30_001, 30_002, 30_003]

    async def test_rename_rotation_while_stopped(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """The saved file renamed to app.log.1 while stopped (a new app.log created) is
        found by identity and read from the saved offset to its end, then the new file."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        delivered, state = await first_run(log, 3)
        append(log, numbered(4, 504))
        os.rename(log, tmp_path / "app.log.1")
        log.write_text(numbered(1000, 1003))
        with capture_logs() as logs:
            async with Hooks(tail_of(log, follow=False), state) as hooks:
                rest = await hooks.to_end()
        assert delivered + rest == [*expected(1, 504), *expected(1000, 1003)]
        assert [line.lineno for line in rest[:2]] == [4, 5]
        (event,) = [e for e in logs if e["event"] == "file_resumed_elsewhere"]
        assert (event["path"], event["was"]) == (str(tmp_path / "app.log.1"), str(log))

    async def test_rename_rotation_under_a_glob_covering_rotated_names(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With ``app.log*`` the renamed file matches the glob under its new name and is
        resumed there; the new app.log is read from its start."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 3))
        delivered, state = await first_run(str(tmp_path / "app.log*"), 2)
        append(log, numbered(3, 4))
        os.rename(log, tmp_path / "app.log.1")
        log.write_text(numbered(4, 6))
        async with Hooks(tail_of(str(tmp_path / "app.log*"), follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert delivered == expected(1, 3)
        assert sorted(rest) == expected(3, 6)

    async def test_moved_to_another_name_while_stopped(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A saved file moved to any other name in its directory is found by its inode;
        nothing is under the watched name any more."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 11))
        delivered, state = await first_run(log, 10)
        append(log, numbered(11, 21))
        os.rename(log, tmp_path / "archived-app.txt")
        async with Hooks(tail_of(log), state) as hooks:
            rest = await hooks.lines(10)
            assert await hooks.until_idle() == []
        assert delivered + rest == expected(1, 21)

    async def test_copytruncate_while_stopped_resumes_the_copy(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A copytruncate while stopped: the copy is recognised by its first bytes and the
        bytes before the saved offset and read from there; the truncated file whole."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        delivered, state = await first_run(log, 50)
        append(log, numbered(51, 551))
        shutil.copy(log, tmp_path / "app.log.1")
        os.truncate(log, 0)
        append(log, numbered(1000, 1003))
        async with Hooks(tail_of(log, follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert delivered == expected(1, 51)
        assert sorted(rest) == sorted([*expected(51, 551), *expected(1000, 1003)])
        assert len(rest) == 503

    async def test_copytruncate_with_the_copy_under_the_glob(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With ``app.log*`` the copy is a file the glob finds at setup: it is resumed from
        the saved offset instead of being read whole."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        delivered, state = await first_run(str(tmp_path / "app.log*"), 50)
        append(log, numbered(51, 61))
        shutil.copy(log, tmp_path / "app.log.1")
        os.truncate(log, 0)
        append(log, numbered(1000, 1003))
        async with Hooks(tail_of(str(tmp_path / "app.log*"), follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert delivered == expected(1, 51)
        assert sorted(rest) == sorted([*expected(51, 61), *expected(1000, 1003)])

    async def test_copytruncate_seen_but_copy_not_found_yet_at_the_snapshot(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A snapshot taken after a poll saw the truncation but before the next poll found
        the copy keeps what is needed to find it: a restart reads the lines only the copy
        holds, once."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        async with Hooks(tail_of(log)) as hooks:
            delivered = await hooks.until_idle()
            append(log, numbered(51, 54))  # after the last poll, before the copy
            shutil.copy(log, tmp_path / "app.log.1")
            os.truncate(log, 0)
            append(log, numbered(100, 102))
            delivered += await hooks.lines(2)  # the truncated file, read again from its start
            state = hooks.snapshot()
        assert delivered == [*expected(1, 51), *expected(100, 102)]
        async with Hooks(tail_of(log), state) as hooks:
            rest = await hooks.lines(3)
            assert await hooks.until_idle() == []
        assert rest == expected(51, 54)
        assert [line.lineno for line in rest] == [51, 52, 53]

    async def test_truncated_with_no_copy_at_restore_reports_a_possible_loss(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """If the copy the snapshot was still looking for is not there at restore, a
        data_possibly_lost event gives the path and the offset from which."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        async with Hooks(tail_of(log)) as hooks:
            await hooks.until_idle()
            os.truncate(log, 0)
            append(log, numbered(100, 102))
            await hooks.lines(2)
            state = hooks.snapshot()
        with capture_logs() as logs:
            async with Hooks(tail_of(log), state) as hooks:
                assert await hooks.until_idle() == []
        (event,) = [e for e in logs if e["event"] == "data_possibly_lost"]
        assert (event["path"], event["start"], event["end"]) == (
            str(log),
            len(numbered(1, 51)),
            None,
        )

    async def test_replaced_file_is_read_whole(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A file deleted and created again under the name (another inode, or the same
        inode reused with other content) is not resumed: its lines are all read."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 4))
        _, state = await first_run(log, 3)
        log.unlink()
        log.write_text("fresh 1\nfresh 2\nfresh 3\nfresh 4\n")
        async with Hooks(tail_of(log, follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert rest == ["fresh 1", "fresh 2", "fresh 3", "fresh 4"]

    async def test_shrunk_file_is_read_from_its_start(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """The same file truncated and written shorter while stopped is read from its start."""
        log = tmp_path / "app.log"
        log.write_text(numbered(1, 51))
        _, state = await first_run(log, 50)
        os.truncate(log, 0)
        append(log, numbered(100, 103))
        async with Hooks(tail_of(log, follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert rest == expected(100, 103)
        assert [line.lineno for line in rest] == [1, 2, 3]

    async def test_start_at_end_applies_only_without_a_checkpoint(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With ``start_at="end"``, a restored file resumes at its saved offset (not at its
        end) and a file not in the checkpoint (created after it) is read whole."""
        (tmp_path / "a.log").write_text(numbered(1, 4))
        glob = str(tmp_path / "*.log")
        async with Hooks(tail_of(glob, start_at="end")) as hooks:
            assert await hooks.until_idle() == []
            append(tmp_path / "a.log", numbered(4, 6))
            assert await hooks.until_idle() == expected(4, 6)
            state = hooks.snapshot()
        append(tmp_path / "a.log", numbered(6, 8))
        (tmp_path / "b.log").write_text("b 1\nb 2\n")
        async with Hooks(tail_of(glob, start_at="end", follow=False), state) as hooks:
            rest = await hooks.to_end()
        assert rest == [*expected(6, 8), "b 1", "b 2"]

    async def test_file_not_opened_yet_keeps_its_restored_position(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Beyond ``max_open_files`` a file waits to be opened; its snapshot entry is the
        restored one meanwhile, and it resumes there once opened."""
        glob = str(tmp_path / "*.log")
        for name in ("a.log", "b.log"):
            (tmp_path / name).write_text(numbered(1, 3))
        async with Hooks(tail_of(glob)) as hooks:
            assert len(await hooks.until_idle()) == 4
            state = hooks.snapshot()
        for name in ("a.log", "b.log"):
            append(tmp_path / name, numbered(3, 5))
        async with Hooks(tail_of(glob, max_open_files=1), state) as hooks:
            assert hooks.snapshot() == state
            rest = await hooks.lines(4)
        assert sorted(rest) == sorted(expected(3, 5) * 2)

    async def test_entry_of_a_deleted_file_does_not_resume_a_later_file(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A saved file deleted while stopped, then a file created during the run that
        starts alike (and may reuse its inode), is read whole."""
        log = tmp_path / "app.log"
        log.write_text("header\n" + numbered(1, 11))
        _, state = await first_run(log, 11)
        log.unlink()
        async with Hooks(tail_of(log), state) as hooks:
            assert await hooks.until_idle() == []
            log.write_text("header\n" + numbered(1, 13))
            rest = await hooks.lines(13)
        assert rest == ["header", *expected(1, 13)]

    async def test_state_of_another_kind_is_refused(self, tmp_path: Path) -> None:
        """A state that is no TailFile snapshot is a ConfigError naming the node."""
        tail = tail_of(tmp_path / "app.log")
        tail.setup()
        try:
            with pytest.raises(ConfigError, match=r"node 'tail'.*no TailFile state") as caught:
                tail.restore([{"offset": 3}])
        finally:
            tail.teardown()
        assert (caught.value.node, caught.value.key) == ("tail", "checkpoint")


class TestRemovedCheckpointFile:
    @pytest.mark.parametrize("argument", ["checkpoint", "checkpoint_interval"])
    def test_old_arguments_are_a_config_error_with_the_fix(
        self, tmp_path: Path, argument: str
    ) -> None:
        """``checkpoint=`` and ``checkpoint_interval=`` name the node, the argument and the
        pipeline's checkpoint store to use instead."""
        with pytest.raises(ConfigError) as caught:
            TailFile(tmp_path / "app.log", name="logs", **{argument: "x"})
        assert str(caught.value).startswith(f"node 'logs': TailFile no longer takes {argument}=")
        assert 'Pipeline(..., checkpoint="state.db"' in str(caught.value)
        assert (caught.value.node, caught.value.key) == ("logs", argument)
