"""Tests of the checkpoint hooks of the built-in nodes (issue 10's node side).

The engine does not call the hooks yet, so each test calls them the way the
contract (docs/nodes.md, "Checkpoints") says the engine will: ``snapshot()``
between two batches of the node (here: from the source's task, once the node
has taken everything before), ``restore()`` and ``recover()`` after
``setup()`` and before the first item (here: by wrapping ``setup``). Every
stored value goes through ``pickle`` first, as the checkpoint store does.

A "crash" is a source raising after the checkpoint: the run fails, and a
fresh pipeline restored from the checkpoint replays what came after it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from nanostream_testing import capture_events
from nanostream_trio import Items, NanoNode, Pipeline, PipelineStateError
from nanostream_trio.nodes import (
    Batch,
    Dedupe,
    Filter,
    FlatMap,
    JSONLinesWriter,
    LocalDirectoryWatchdog,
    Map,
    Throttle,
    TumblingWindow,
    _watch,
)


class Crash(Exception):
    """What a ScriptedSource raises to end a run as a crash would."""


@dataclasses.dataclass
class Wait:
    """A pause in a ScriptedSource, in seconds of Trio time."""

    seconds: float


@dataclasses.dataclass
class Call:
    """A call a ScriptedSource makes in its task between two of its items."""

    func: Callable[[], None]


CRASH = object()  # a ScriptedSource step: raise Crash


class ScriptedSource(NanoNode):
    def __init__(self, script: list[Any], name: str | None = None) -> None:
        super().__init__(name)
        self.script = script

    async def generator(self) -> Any:
        for step in self.script:
            if isinstance(step, Wait):
                await trio.sleep(step.seconds)
            elif isinstance(step, Call):
                step.func()
            elif step is CRASH:
                raise Crash
            else:
                yield step


class Recorder(NanoNode):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.items: list[Any] = []
        self.times: list[float] = []

    def process_item(self, item: Any) -> None:
        self.items.append(item)
        self.times.append(trio.current_time())


def stored(state: Any) -> Any:
    """``state`` as the checkpoint store gives it back."""
    return pickle.loads(pickle.dumps(state))


def graph_node(pipeline: Pipeline, name: str) -> Any:
    """The node of the running graph that has ``name``: where the engine finds the hooks."""
    return {node.name: node for node in pipeline.nodes}[name]


def restore_after_setup(node: Any, state: Any) -> list[float]:
    """Call ``node.restore(state)`` right after its setup, as the engine will.

    Returns a list that gets the Trio time of the restore.
    """
    setup = node.setup
    restored_at: list[float] = []

    def setup_then_restore() -> None:
        setup()
        if state is not None:  # the engine never restores None
            node.restore(stored(state))
        restored_at.append(trio.current_time())

    node.setup = setup_then_restore
    return restored_at


class Checkpoint:
    """Takes a snapshot of a node, and notes what the sink had received by then."""

    def __init__(self, node: Any, sink: Any) -> None:
        self.node = node
        self.sink = sink
        self.state: Any = None
        self.sink_had: list[Any] = []

    def take(self) -> None:
        self.state = self.node.snapshot()
        self.sink_had = list(self.sink.items)


async def run_until_crash(source: NanoNode) -> None:
    with pytest.raises(Crash):
        await Pipeline(source, stats_interval=None).run()


async def crash_and_restore(
    make: Callable[[], NanoNode],
    before: list[Any],
    after: list[Any],
    replay: list[Any],
) -> tuple[Checkpoint, Recorder]:
    """Run ``before``, checkpoint, run ``after`` and crash; restore a fresh node, run ``replay``.

    Returns the checkpoint and the sink of the restored run.
    """
    node, sink = make(), Recorder()
    source = ScriptedSource([])
    source > node > sink
    checkpoint = Checkpoint(graph_node(Pipeline(source), node.name), sink)
    source.script = [*before, Wait(0.001), Call(checkpoint.take), *after, Wait(0.001), CRASH]
    await run_until_crash(source)

    node, sink = make(), Recorder()
    source = ScriptedSource(replay)
    source > node > sink
    restore_after_setup(graph_node(Pipeline(source), node.name), checkpoint.state)
    await Pipeline(source, stats_interval=None).run()
    return checkpoint, sink


async def uninterrupted(node: NanoNode, items: list[Any]) -> list[Any]:
    source, sink = ScriptedSource(items), Recorder()
    source > node > sink
    await Pipeline(source, stats_interval=None).run()
    return sink.items


class TestBatch:
    async def test_restart_emits_each_item_once_in_the_same_batches(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """Batches out before the checkpoint plus the restored run's are an uninterrupted run's."""
        checkpoint, sink = await crash_and_restore(
            lambda: Batch(3, name="rows"), before=[1, 2, 3, 4, 5], after=[6, 7], replay=[6, 7, 8]
        )
        assert checkpoint.sink_had == [[1, 2, 3]]
        assert sink.items == [[4, 5, 6], [7, 8]]
        expected = await uninterrupted(Batch(3), list(range(1, 9)))
        assert checkpoint.sink_had + sink.items == expected

    async def test_hooks_are_on_the_stage_named_like_the_node(self) -> None:
        """The graph node named like the Batch holds the state; the emitter stage has no hooks."""
        source, batch, sink = ScriptedSource([]), Batch(3, name="rows"), Recorder()
        source > batch > sink
        pipeline = Pipeline(source)
        assert callable(graph_node(pipeline, "rows").snapshot)
        assert callable(graph_node(pipeline, "rows").restore)
        assert graph_node(pipeline, "rows") is batch.stages[0]
        assert not hasattr(graph_node(pipeline, "rows.emit"), "snapshot")
        assert batch not in pipeline.nodes

    async def test_nothing_buffered_snapshots_none(self, autojump_clock: trio.abc.Clock) -> None:
        """With no open batch and nothing waiting to go out, the snapshot is None."""
        checkpoint, sink = await crash_and_restore(
            lambda: Batch(2, name="rows"), before=[1, 2], after=[], replay=[3]
        )
        assert checkpoint.state is None
        assert sink.items == [[3]]

    async def test_restored_batch_keeps_its_time_left(self, autojump_clock: trio.abc.Clock) -> None:
        """A restored partial batch is emitted once the time it had left at the checkpoint is up."""
        before = [1, 2, Wait(0.999)]  # with the checkpoint's wait: 4 of 5 seconds left
        checkpoint, _ = await crash_and_restore(
            lambda: Batch(10, interval=5.0, name="rows"), before=before, after=[], replay=[]
        )
        batch, sink = Batch(10, interval=5.0, name="rows"), Recorder()
        source = ScriptedSource([Wait(1.0), 3, Wait(10.0)])
        source > batch > sink
        restored_at = restore_after_setup(batch.stages[0], checkpoint.state)
        await Pipeline(source).run()
        assert sink.items == [[1, 2, 3]]
        assert [round(t - restored_at[0], 6) for t in sink.times] == [4.0]

    async def test_restored_batch_past_its_time_does_not_take_the_next_item(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """An item arriving after the restored batch's time has passed starts a new batch."""
        checkpoint, _ = await crash_and_restore(
            lambda: Batch(10, interval=5.0, name="rows"), before=[1, 2], after=[], replay=[]
        )
        batch, sink = Batch(10, interval=5.0, name="rows"), Recorder()
        source = ScriptedSource([Wait(6.0), 3, Wait(10.0)])
        source > batch > sink
        restored_at = restore_after_setup(batch.stages[0], checkpoint.state)
        await Pipeline(source).run()
        assert sink.items == [[1, 2], [3]]
        # The restored batch goes out with the next item (no item, no timer: see the docs).
        assert [round(t - restored_at[0], 6) for t in sink.times] == [6.0, 11.0]

    async def test_restored_batch_is_emitted_at_the_end_without_new_items(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """A restored partial batch is emitted at the end of the stream if no item follows."""
        checkpoint, sink = await crash_and_restore(
            lambda: Batch(3, name="rows"), before=[1, 2, 3, 4], after=[5], replay=[]
        )
        assert checkpoint.sink_had == [[1, 2, 3]]
        assert sink.items == [[4]]

    async def test_restored_batch_fills_up_by_size(self, autojump_clock: trio.abc.Clock) -> None:
        """A restored partial batch is emitted as soon as replayed items make it full."""
        _, sink = await crash_and_restore(
            lambda: Batch(4, name="rows"), before=[1, 2], after=[3], replay=[3, 4, 5]
        )
        assert sink.items == [[1, 2, 3, 4], [5]]

    async def test_batch_not_yet_handed_on_is_in_the_snapshot(self) -> None:
        """A closed batch the emitter is still waiting to hand on is kept by the snapshot."""

        class Gated(NanoNode):
            def __init__(self) -> None:
                super().__init__()
                self.items: list[Any] = []
                self.gate = trio.Event()

            async def process_item(self, item: Any) -> None:
                self.items.append(item)
                await self.gate.wait()

        batch, sink = Batch(2, name="rows"), Gated()
        sink.configure(capacity=1)
        source = ScriptedSource([])
        source > batch > sink
        checkpoint = Checkpoint(batch.stages[0], sink)
        source.script = [1, 2, 3, 4, 5, 6, Wait(0.01), Call(checkpoint.take), Call(sink.gate.set)]
        await Pipeline(source).run()
        # At the checkpoint [1, 2] was in the sink, [3, 4] in its inbox, [5, 6] waited for room.
        assert checkpoint.sink_had == [[1, 2]]
        assert sink.items == [[1, 2], [3, 4], [5, 6]]
        batch, restored = Batch(2, name="rows"), Recorder()
        source = ScriptedSource([])
        source > batch > restored
        restore_after_setup(batch.stages[0], checkpoint.state)
        await Pipeline(source).run()
        assert restored.items == [[5, 6]]

    async def test_final_snapshot_after_the_end_is_none(self) -> None:
        """Taken after the input has ended (before teardown) the snapshot is None: all goes out."""
        batch, sink = Batch(3, name="rows"), Recorder()
        intake = batch.stages[0]
        teardown = intake.teardown
        finals: list[Any] = []

        def snapshot_then_teardown() -> None:
            finals.append(intake.snapshot())  # type: ignore[attr-defined]
            teardown()

        intake.teardown = snapshot_then_teardown  # type: ignore[method-assign]
        source = ScriptedSource([1, 2, 3, 4])
        source > batch > sink
        await Pipeline(source).run()
        assert finals == [None]
        assert sink.items == [[1, 2, 3], [4]]

    async def test_smaller_size_after_restart_splits_the_restored_batch(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """Restored into a Batch with a smaller size, buffered items come out in batches of it."""
        checkpoint, _ = await crash_and_restore(
            lambda: Batch(10, name="rows"), before=[1, 2, 3, 4, 5], after=[], replay=[]
        )
        batch, sink = Batch(2, name="rows"), Recorder()
        source = ScriptedSource([6])
        source > batch > sink
        restore_after_setup(batch.stages[0], checkpoint.state)
        await Pipeline(source).run()
        assert sink.items == [[1, 2], [3, 4], [5, 6]]


def window_rows(results: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.start, r.end, r.key, r.value) for r in results]


class TestTumblingWindow:
    async def test_event_time_restart_neither_loses_nor_double_counts(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """Windows before the checkpoint plus the restored run's are an uninterrupted run's."""

        def make() -> TumblingWindow:
            return TumblingWindow(60, key=lambda r: r[1], timestamp=lambda r: r[0], name="win")

        before = [(0, "a"), (30, "b"), (61, "a")]
        after = [(70, "a"), (130, "b")]
        checkpoint, sink = await crash_and_restore(
            make, before=before, after=after, replay=[*after, (150, "a")]
        )
        assert window_rows(checkpoint.sink_had) == [(0, 60, "a", 1), (0, 60, "b", 1)]
        assert window_rows(sink.items) == [
            (60, 120, "a", 2),
            (120, 180, "b", 1),
            (120, 180, "a", 1),
        ]
        expected = await uninterrupted(make(), [*before, *after, (150, "a")])
        assert window_rows(checkpoint.sink_had + sink.items) == window_rows(expected)

    async def test_late_item_after_restore_is_still_late(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """How far windows were emitted is restored: an item for an emitted window stays late."""

        def make() -> TumblingWindow:
            return TumblingWindow(60, timestamp=lambda r: r, name="win", on_error="skip")

        checkpoint, sink = await crash_and_restore(make, before=[10, 70], after=[], replay=[20, 80])
        assert window_rows(checkpoint.sink_had) == [(0, 60, None, 1)]
        assert window_rows(sink.items) == [(60, 120, None, 2)]

    async def test_accumulator_changed_in_place_after_the_snapshot(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """A reducer that appends to its accumulator in place does not change a snapshot taken."""

        def append(values: list[int], item: tuple[int, int]) -> list[int]:
            values.append(item[1])
            return values

        def make() -> TumblingWindow:
            return TumblingWindow(
                60, timestamp=lambda r: r[0], reducer=append, initial=list, name="win"
            )

        _, sink = await crash_and_restore(
            make, before=[(1, 1), (2, 2)], after=[(3, 3)], replay=[(3, 3), (4, 4)]
        )
        assert window_rows(sink.items) == [(0, 60, None, [1, 2, 3, 4])]

    async def test_trio_clock_window_continues_as_the_current_window(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """On the Trio clock the open window moves to the restore's window and closes at its end."""

        def make() -> TumblingWindow:
            return TumblingWindow(10.0, key=lambda s: s, name="win")

        source, window, sink = ScriptedSource([]), make(), Recorder()
        source > window > sink
        checkpoint = Checkpoint(window.stages[0], sink)
        source.script = ["a", "a", Wait(3.0), Call(checkpoint.take), "a", Wait(0.001), CRASH]
        await run_until_crash(source)
        assert checkpoint.sink_had == []

        await trio.sleep_until(25.0)  # the new run starts in the window [20, 30)
        source, window, sink = ScriptedSource(["a", Wait(10.0)]), make(), Recorder()
        source > window > sink
        restore_after_setup(window.stages[0], checkpoint.state)
        await Pipeline(source).run()
        assert window_rows(sink.items) == [(20.0, 30.0, "a", 3)]
        assert sink.times == [30.0]

    async def test_results_not_yet_handed_on_survive_pickle(self) -> None:
        """WindowResults waiting in the snapshot come back from pickle and are emitted."""
        window = TumblingWindow(60, timestamp=lambda r: r, name="win")
        window.stages[0].setup()
        window._add(5, 0.0)
        window._add(65, 0.0)  # closes [0, 60): its result waits to be handed on
        state = stored(window.stages[0].snapshot())  # type: ignore[attr-defined]
        fresh, sink = TumblingWindow(60, timestamp=lambda r: r, name="win"), Recorder()
        source = ScriptedSource([])
        source > fresh > sink
        restore_after_setup(fresh.stages[0], state)
        await Pipeline(source).run()
        assert window_rows(sink.items) == [(0, 60, None, 1), (60, 120, None, 1)]


class TestDedupe:
    async def test_keys_seen_before_the_checkpoint_stay_duplicates(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """After a restore, replayed items with keys seen before the checkpoint are dropped."""
        checkpoint, sink = await crash_and_restore(
            lambda: Dedupe(name="once"), before=["a", "b", "a"], after=["c"], replay=["c", "b", "d"]
        )
        assert checkpoint.sink_had == ["a", "b"]
        assert sink.items == ["c", "d"]

    def test_restore_respects_max_keys(self) -> None:
        """Restored into a smaller max_keys, only the most recently seen keys are kept."""
        dedupe = Dedupe(max_keys=3)
        for key in "abca":  # "a" seen again: most recent
            dedupe.process_item(key)
        assert dedupe.snapshot() == ["b", "c", "a"]
        smaller = Dedupe(max_keys=2)
        smaller.restore(stored(dedupe.snapshot()))
        assert [smaller.process_item(key) for key in "acb"] == [None, None, "b"]

    def test_snapshot_is_a_copy(self) -> None:
        """Keys seen after a snapshot are not in it."""
        dedupe = Dedupe()
        dedupe.process_item("a")
        state = dedupe.snapshot()
        dedupe.process_item("b")
        assert stored(state) == ["a"]


class TestStatelessNodes:
    def test_no_hooks_on_nodes_without_state(self) -> None:
        """Map, Filter, FlatMap and Throttle define no checkpoint hooks (nothing to restore)."""
        for node in (Map(str), Filter(bool), FlatMap(list), Throttle(1.0)):
            assert not hasattr(node, "snapshot"), node
            assert not hasattr(node, "restore"), node


def write(writer: JSONLinesWriter, *numbers: int) -> None:
    for number in numbers:
        writer.process_item({"n": number})


def numbers_in(*paths: Path) -> list[int]:
    """The ``n`` of every line of ``paths``, in order."""
    found: list[int] = []
    for path in paths:
        found += [json.loads(line)["n"] for line in path.read_text().splitlines()]
    return found


class TestJSONLinesWriter:
    async def test_recover_leaves_each_line_once(self, tmp_path: Path) -> None:
        """Lines written after prepare are cut by recover, so their replay is in the file once."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path)
        writer.setup()
        write(writer, 1, 2)
        prepared = await writer.prepare(1)
        write(writer, 3, 4)  # after the barrier: the crash comes before checkpoint 2
        writer.teardown()
        assert numbers_in(path) == [1, 2, 3, 4]

        restarted = JSONLinesWriter(path)
        restarted.setup()
        await restarted.recover(1, stored(prepared))
        assert numbers_in(path) == [1, 2]
        write(restarted, 3, 4, 5)
        restarted.teardown()
        assert numbers_in(path) == [1, 2, 3, 4, 5]

    async def test_prepare_makes_the_lines_durable_and_returns_the_size(
        self, tmp_path: Path
    ) -> None:
        """prepare flushes what was buffered and returns the file's size in bytes."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path, flush_every=0)  # flushes only on rotation and close
        writer.setup()
        write(writer, 1, 2)
        assert path.read_bytes() == b""
        prepared = await writer.prepare(1)
        assert numbers_in(path) == [1, 2]
        assert prepared["size"] == path.stat().st_size == len(b'{"n": 1}\n{"n": 2}\n')
        assert prepared["inode"] == path.stat().st_ino
        assert bytes.fromhex(prepared["tail"]) == path.read_bytes()  # up to 64 bytes
        writer.commit(1)
        writer.teardown()

    async def test_recover_runs_between_setup_and_the_first_item(self, tmp_path: Path) -> None:
        """In a pipeline, recover after setup cuts the file before the replayed lines arrive."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path)
        writer.setup()
        write(writer, 1)
        prepared = await writer.prepare(1)
        write(writer, 2)
        writer.teardown()

        writer = JSONLinesWriter(path)
        setup = writer.setup

        async def setup_then_recover() -> None:
            setup()
            await writer.recover(1, stored(prepared))

        writer.setup = setup_then_recover  # type: ignore[method-assign,assignment]
        source = ScriptedSource([{"n": 2}, {"n": 3}])
        source > writer
        with capture_events() as events:
            await Pipeline(source).run()
        assert numbers_in(path) == [1, 2, 3]
        events.assert_emitted(
            "json_lines_recovered", checkpoint=1, size=9, bytes_dropped=9, files_dropped=0
        )

    async def test_nothing_after_the_checkpoint_changes_nothing(self, tmp_path: Path) -> None:
        """With no line written after prepare, recover leaves the file and reports nothing."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path)
        writer.setup()
        write(writer, 1)
        prepared = await writer.prepare(1)
        writer.teardown()
        restarted = JSONLinesWriter(path)
        restarted.setup()
        with capture_events() as events:
            await restarted.recover(1, stored(prepared))
        restarted.teardown()
        assert numbers_in(path) == [1]
        assert events.of("json_lines_recovered") == []

    async def test_shorter_file_is_an_error_naming_file_and_sizes(self, tmp_path: Path) -> None:
        """A file shorter than recorded fails recover with a message naming it and both sizes."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path)
        writer.setup()
        write(writer, 1, 2)
        prepared = await writer.prepare(1)
        writer.teardown()
        os.truncate(path, 5)
        restarted = JSONLinesWriter(path, name="out")
        restarted.setup()
        with pytest.raises(PipelineStateError) as caught:
            await restarted.recover(1, stored(prepared))
        restarted.teardown()
        message = str(caught.value)
        assert "'out'" in message
        assert str(path) in message
        assert "has 5 bytes" in message
        assert "fewer than the 18" in message
        assert path.read_bytes() == b'{"n":'  # left as it was

    async def test_replaced_file_is_an_error(self, tmp_path: Path) -> None:
        """A file that is not the one the checkpoint wrote (another inode) fails recover."""
        path = tmp_path / "out.jsonl"
        writer = JSONLinesWriter(path)
        writer.setup()
        write(writer, 1)
        prepared = await writer.prepare(1)
        writer.teardown()
        path.unlink()
        path.write_text('{"n": 9}\n{"n": 9}\n')
        restarted = JSONLinesWriter(path)
        restarted.setup()
        with pytest.raises(PipelineStateError, match="neither"):
            await restarted.recover(1, stored(prepared))
        restarted.teardown()
        assert numbers_in(path) == [9, 9]

    async def test_rotations_after_the_checkpoint_are_undone(self, tmp_path: Path) -> None:
        """Files rotated after the checkpoint are removed and its file is put back in place."""
        path = tmp_path / "out.jsonl"
        backups = [tmp_path / f"out.jsonl.{k}" for k in (1, 2, 3)]
        # 9 bytes a line, 2 lines a file.
        writer = JSONLinesWriter(path, max_bytes=20, backups=3)
        writer.setup()
        write(writer, 1, 2, 3)
        prepared = await writer.prepare(1)
        write(writer, 4, 5, 6, 7)  # two rotations after the checkpoint
        writer.teardown()
        assert numbers_in(backups[2], backups[1], backups[0], path) == [1, 2, 3, 4, 5, 6, 7]

        restarted = JSONLinesWriter(path, max_bytes=20, backups=3)
        restarted.setup()
        with capture_events() as events:
            await restarted.recover(1, stored(prepared))
        events.assert_emitted("json_lines_recovered", bytes_dropped=9, files_dropped=2)
        assert numbers_in(backups[0], path) == [1, 2, 3]
        assert not backups[1].exists()
        write(restarted, 4, 5, 6, 7)
        restarted.teardown()
        assert numbers_in(backups[2], backups[1], backups[0], path) == [1, 2, 3, 4, 5, 6, 7]


LIMIT = 10.0  # seconds; a watcher test waiting this long has failed


@asynccontextmanager
async def watching(
    watchdog: LocalDirectoryWatchdog, state: Any = None
) -> AsyncIterator[AsyncIterator[Any]]:
    """The watcher's generator, between its setup (and restore, as the engine will) and teardown."""
    watchdog.setup()
    try:
        if state is not None:
            watchdog.restore(stored(state))
        generator = watchdog.generator()
        try:
            yield generator
        finally:
            await generator.aclose()  # type: ignore[attr-defined]
    finally:
        await watchdog.teardown()


async def take_paths(generator: AsyncIterator[Any], count: int) -> list[str]:
    """The next ``count`` paths the watcher yields (empty Items passed over)."""
    paths: list[str] = []
    with trio.fail_after(LIMIT):
        async for item in generator:
            if item.__class__ is not Items:
                paths.append(item)
                if len(paths) == count:
                    return paths
    raise AssertionError("the watcher ended")


async def paths_until_idle(generator: AsyncIterator[Any]) -> list[str]:
    """The paths the watcher yields before its first empty Items (nothing left due)."""
    paths: list[str] = []
    with trio.fail_after(LIMIT):
        async for item in generator:
            if item.__class__ is Items:
                assert item == []
                return paths
            paths.append(item)
    raise AssertionError("the watcher ended")


def ctime_ns(path: Path) -> int:
    return path.stat().st_ctime_ns


def append_file(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


async def wall_clock_passes(path: Path) -> None:
    """Wait (briefly) until the wall clock is past ``path``'s ctime."""
    with trio.fail_after(LIMIT):
        while time.time_ns() <= ctime_ns(path):  # noqa: ASYNC110 - a clock, no event
            await trio.sleep(0.005)


@pytest.fixture
def quick_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle yields every 0.2 s, so that a test on the real clock waits little for one."""
    monkeypatch.setattr(_watch, "IDLE_YIELD", 0.2)


class TestLocalDirectoryWatchdog:
    async def test_idle_watcher_yields_empty_items_once_a_second(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """With nothing to emit, the generator yields an empty Items every second."""
        watchdog = LocalDirectoryWatchdog(tmp_path)
        async with watching(watchdog) as generator:
            start = trio.current_time()
            times = []
            with trio.fail_after(LIMIT):
                for _ in range(3):
                    assert await generator.__anext__() == Items()
                    times.append(trio.current_time() - start)
        assert times == [1.0, 2.0, 3.0]

    async def test_idle_yields_emit_nothing_in_a_pipeline(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """An idle watcher's empty Items reach no node downstream and count as no item."""
        watchdog, sink = LocalDirectoryWatchdog(tmp_path, name="watch"), Recorder()
        watchdog > sink
        pipeline = Pipeline(watchdog, stats_interval=None, stall_timeout=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await trio.sleep(5.5)
            pipeline.stop()
        assert sink.items == []
        assert pipeline.statistics().nodes["watch"].items_out == 0

    async def test_snapshot_covers_the_path_being_yielded(self, tmp_path: Path) -> None:
        """Taken while the generator is suspended at a path's yield, the snapshot holds it."""
        target = tmp_path / "a.csv"
        target.write_text("x\n")
        watchdog = LocalDirectoryWatchdog(tmp_path, settle=0.0)
        async with watching(watchdog) as generator:
            assert watchdog._send is not None
            await watchdog._send.send((str(target), "closed"))  # as the observer would
            (path,) = await take_paths(generator, 1)
            state = stored(watchdog.snapshot())
        info = target.stat()
        assert path == str(target)
        assert state["emitted"] == {path: (info.st_ino, info.st_size, info.st_mtime_ns)}

    async def test_restore_emits_what_changed_while_down_only(
        self, tmp_path: Path, quick_idle: None
    ) -> None:
        """After a restore, files changed or created while down are emitted, unchanged ones not."""
        same, changed = tmp_path / "same.csv", tmp_path / "changed.csv"
        first = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(first) as generator:
            same.write_text("s\n")
            changed.write_text("c\n")
            assert sorted(await take_paths(generator, 2)) == [str(changed), str(same)]
            state = first.snapshot()
        # Down: one file grows, one appears.
        append_file(changed, "more\n")
        created = tmp_path / "created.csv"
        created.write_text("n\n")

        restarted = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(restarted, state) as generator:
            assert await paths_until_idle(generator) == [str(changed), str(created)]
            again = restarted.snapshot()
        assert sorted(again["emitted"]) == sorted(map(str, [same, changed, created]))

    async def test_files_present_before_the_first_start_stay_ignored(
        self, tmp_path: Path, quick_idle: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without initial_scan, a restore does not emit files that predate the first start."""
        monkeypatch.setattr(_watch, "_START_MARGIN_NS", 0)
        old = tmp_path / "old.csv"
        old.write_text("o\n")
        await wall_clock_passes(old)
        first = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(first) as generator:
            assert await paths_until_idle(generator) == []
            state = first.snapshot()
        created = tmp_path / "created.csv"
        created.write_text("n\n")  # while down

        restarted = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(restarted, state) as generator:
            assert await paths_until_idle(generator) == [str(created)]

    async def test_initial_scan_after_restore_skips_emitted_unchanged(
        self, tmp_path: Path, quick_idle: None
    ) -> None:
        """With initial_scan, a restore emits the files present except those emitted unchanged."""
        first_file, second_file = tmp_path / "1.csv", tmp_path / "2.csv"
        first_file.write_text("1\n")
        second_file.write_text("2\n")
        first = LocalDirectoryWatchdog(tmp_path, initial_scan=True, settle=0.05)
        async with watching(first) as generator:
            assert sorted(await take_paths(generator, 2)) == [str(first_file), str(second_file)]
            state = first.snapshot()
        created = tmp_path / "3.csv"
        created.write_text("3\n")  # while down

        restarted = LocalDirectoryWatchdog(tmp_path, initial_scan=True, settle=0.05)
        async with watching(restarted, state) as generator:
            assert await paths_until_idle(generator) == [str(created)]

    async def test_deleted_files_are_forgotten_on_restore(
        self, tmp_path: Path, quick_idle: None
    ) -> None:
        """A file emitted and deleted while down leaves the position; one made anew is emitted."""
        gone, remade = tmp_path / "gone.csv", tmp_path / "remade.csv"
        first = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(first) as generator:
            gone.write_text("g\n")
            remade.write_text("r\n")
            await take_paths(generator, 2)
            state = first.snapshot()
        gone.unlink()
        remade.unlink()
        remade.write_text("r\n")  # same content, a new file

        restarted = LocalDirectoryWatchdog(tmp_path, settle=0.05)
        async with watching(restarted, state) as generator:
            assert await paths_until_idle(generator) == [str(remade)]
            assert sorted(restarted.snapshot()["emitted"]) == [str(remade)]
