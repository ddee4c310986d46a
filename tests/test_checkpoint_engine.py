"""Checkpoint barriers in the engine: alignment, state, the store, recovery (issue 10).

Everything runs on the fake clock with in-process crashes
(``nanostream_testing.Crash`` / ``crash_at``); tests/test_checkpoint_kill.py
does the same with real processes killed by SIGKILL.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from nanostream_testing import (
    Crash,
    FakeSource,
    Pause,
    SimulatedCrash,
    capture_events,
    crash_at,
    run_pipeline_async,
)
from nanostream_trio import ConfigError, NanoNode, Pipeline, PipelineStateError


class Numbers(NanoNode):
    """An async source of 1..count with a checkpoint position, ``every`` items a 1 s pause."""

    def __init__(self, count: int, every: int = 10, **options: Any) -> None:
        super().__init__(**options)
        self.count = count
        self.every = every
        self.position = 0
        self.acked: list[int] = []

    def snapshot(self) -> int:
        return self.position

    def restore(self, state: int) -> None:
        self.position = state

    def ack(self, n: int) -> None:
        self.acked.append(n)

    async def generator(self) -> Any:
        while self.position < self.count:
            self.position += 1
            yield self.position
            if self.position % self.every == 0:
                await trio.sleep(1)


class Positions(Numbers):
    """Numbers that records its position at each barrier (and at its end)."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.positions: list[int] = []

    def snapshot(self) -> int:
        self.positions.append(self.position)
        return self.position


class Running(NanoNode):
    """A running sum: stateful, checkpointed."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.total = 0

    def snapshot(self) -> int:
        return self.total

    def restore(self, state: int) -> None:
        self.total = state

    def process_item(self, item: int) -> int:
        self.total += item
        return self.total


class ListSink(NanoNode):
    """An effectively-once sink over a list that outlives the run (a file, in effect)."""

    def __init__(self, out: list[Any], **options: Any) -> None:
        super().__init__(**options)
        self.out = out
        self.prepared: list[int] = []
        self.committed: list[int] = []
        self.recovered: list[tuple[int, int]] = []

    def prepare(self, n: int) -> int:
        self.prepared.append(n)
        return len(self.out)

    def commit(self, n: int) -> None:
        self.committed.append(n)

    def recover(self, n: int, size: int) -> None:
        self.recovered.append((n, size))
        del self.out[size:]

    def process_item(self, item: Any) -> None:
        self.out.append(item)


class Recorder(NanoNode):
    """A sink that records (position of the source, what it has) at each barrier."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.items: list[Any] = []
        self.states: list[list[Any]] = []

    def snapshot(self) -> list[Any]:
        self.states.append(list(self.items))
        return list(self.items)

    def process_item(self, item: Any) -> None:
        self.items.append(item)


def running_sums(count: int) -> list[int]:
    return [k * (k + 1) // 2 for k in range(1, count + 1)]


class TestRecovery:
    """A run that crashes resumes from its last checkpoint: nothing lost, nothing twice."""

    async def test_crash_and_restart_gives_every_output_once(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A source crash after some checkpoints; the restarted run completes the output exactly."""
        store = tmp_path / "state.db"
        out: list[int] = []
        script: list[Any] = [*range(1, 31), Crash(), *range(31, 61)]

        def build() -> Pipeline:
            source = FakeSource(script, interval=0.1, name="source")
            return Pipeline(
                source > Running(name="sum") > ListSink(out, name="sink"),
                checkpoint=store,
                checkpoint_interval=1.0,
            )

        with pytest.raises(SimulatedCrash):
            await run_pipeline_async(build())
        assert 0 < len(out) <= 30
        second = build()
        with capture_events() as events:
            second._logger = events.logger()
            await run_pipeline_async(second)
        assert out == running_sums(60)
        (restored,) = events.of("checkpoint_restored")
        assert restored["checkpoint"] >= 1
        sink = second.nodes[-1]
        assert isinstance(sink, ListSink)
        assert sink.recovered
        assert sink.recovered[0][0] == restored["checkpoint"]

    async def test_graceful_end_writes_a_final_checkpoint(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """After a normal end a rerun restores the final state and emits nothing again."""
        store = tmp_path / "state.db"
        out: list[int] = []

        def build() -> Pipeline:
            return Pipeline(
                Numbers(25, name="numbers") > Running(name="sum") > ListSink(out, name="sink"),
                checkpoint=store,
                checkpoint_interval=1.0,
            )

        first = await run_pipeline_async(build())
        assert out == running_sums(25)
        assert first.checkpoints >= 2  # periodic ones, then the final one
        second = build()
        summary = await run_pipeline_async(second)
        assert out == running_sums(25)
        assert summary["sink"].items_in == 0

    async def test_stop_then_restart_continues_where_it_stopped(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """pipeline.stop() ends with a checkpoint; the next run neither repeats nor loses."""
        store = tmp_path / "state.db"
        out: list[int] = []

        def build() -> Pipeline:
            return Pipeline(
                Numbers(100, name="numbers") > Running(name="sum") > ListSink(out, name="sink"),
                checkpoint=store,
                checkpoint_interval=None,
            )

        first = build()
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await trio.sleep(3.5)
            first.stop()
        assert 0 < len(out) < 100
        await run_pipeline_async(build())
        assert out == running_sums(100)

    @pytest.mark.parametrize("moment", ["after_prepare", "before_write", "after_write"])
    async def test_crash_at_each_moment_of_a_checkpoint(
        self, nanostream_clock: Any, tmp_path: Path, moment: Any
    ) -> None:
        """Whatever the moment of the crash, the restarted run's output is exact."""
        store = tmp_path / "state.db"
        out: list[int] = []

        def build() -> Pipeline:
            return Pipeline(
                Numbers(150, name="numbers") > Running(name="sum") > ListSink(out, name="sink"),
                checkpoint=store,
                checkpoint_interval=1.0,
            )

        first = build()
        crash_at(first, moment, checkpoint=3)
        with pytest.raises(SimulatedCrash) as caught:
            await run_pipeline_async(first)
        assert caught.value.checkpoint == 3
        completed = [row[0] for row in sqlite3.connect(store).execute("SELECT n FROM checkpoints")]
        assert max(completed) == (3 if moment == "after_write" else 2)
        await run_pipeline_async(build())
        assert out == running_sums(150)

    async def test_a_failure_keeps_the_last_complete_checkpoint(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Under on_error='raise' the run fails, writes no final checkpoint, and a rerun replays."""
        store = tmp_path / "state.db"
        out: list[int] = []
        broken = {"on": True}

        class Fragile(NanoNode):
            def process_item(self, item: int) -> int:
                if item == 45 and broken["on"]:
                    raise ValueError("item 45")
                return item

        def build() -> Pipeline:
            return Pipeline(
                Numbers(60, name="numbers") > Fragile(name="fragile") > ListSink(out, name="sink"),
                checkpoint=store,
                checkpoint_interval=1.0,
            )

        with pytest.raises(ValueError, match="item 45"):
            await run_pipeline_async(build())
        assert out == list(range(1, len(out) + 1))
        assert len(out) < 45
        broken["on"] = False
        await run_pipeline_async(build())
        assert out == list(range(1, 61))

    async def test_skipped_items_count_as_processed(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """An item skipped before a checkpoint is not retried after a restart from it."""
        store = tmp_path / "state.db"
        seen: list[int] = []
        script: list[Any] = [*range(1, 21), Pause(2), Crash(), *range(21, 31)]

        class Picky(NanoNode):
            def process_item(self, item: int) -> int:
                seen.append(item)
                if item == 5:
                    raise ValueError("five")
                return item

        def build() -> Pipeline:
            return Pipeline(
                FakeSource(script, interval=0.1, name="source")
                > Picky(name="picky", on_error="skip")
                > ListSink([], name="sink"),
                checkpoint=store,
                checkpoint_interval=1.0,
            )

        with pytest.raises(SimulatedCrash):
            await run_pipeline_async(build())
        await run_pipeline_async(build())
        assert seen.count(5) == 1
        assert sorted(set(seen)) == list(range(1, 31))


class TestAlignment:
    """Barriers align over fan-in: no item is counted on both sides of a barrier."""

    @pytest.mark.parametrize("capacity", [1, 256])
    @pytest.mark.parametrize("fuse", [True, False])
    async def test_diamond_with_a_slow_branch(
        self, nanostream_clock: Any, tmp_path: Path, capacity: int, fuse: bool
    ) -> None:
        """Each branch's items at the join's barrier are exactly the source's items before it."""

        class Tag(NanoNode):
            def __init__(self, tag: str, **options: Any) -> None:
                super().__init__(**options)
                self.tag = tag

            def process_item(self, item: int) -> tuple[str, int]:
                return (self.tag, item)

        class SlowTag(Tag):
            async def process_item(self, item: int) -> tuple[str, int]:  # type: ignore[override]
                await trio.sleep(0.05)
                return (self.tag, item)

        source = Positions(200, every=20, name="source")
        fast = Tag("fast", name="fast", capacity=capacity)
        slow = SlowTag("slow", name="slow", capacity=capacity)
        join = Recorder(name="join", capacity=capacity)
        source > fast > join
        source > slow > join
        if not fuse:
            source > Tag("extra", name="extra") > Recorder(name="other")
        pipeline = Pipeline(source, checkpoint=tmp_path / "s.db", checkpoint_interval=0.5)
        summary = await run_pipeline_async(pipeline)
        # Every periodic barrier, plus the final state at the end.
        assert len(join.states) == len(source.positions) >= 5
        for position, state in zip(source.positions, join.states, strict=True):
            for tag in ("fast", "slow"):
                assert sorted(i for t, i in state if t == tag) == list(range(1, position + 1))
        assert summary["join"].alignment_seconds > 0
        assert summary.checkpoints >= len(source.positions)

    async def test_barrier_passes_a_fused_chain_between_batches(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Each node of a fused chain reports the state of exactly the items before the barrier."""

        class Count(NanoNode):
            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
                self.count = 0
                self.states: list[int] = []

            def snapshot(self) -> int:
                self.states.append(self.count)
                return self.count

            def process_item(self, item: int) -> int:
                self.count += 1
                return item

        source = Positions(300, every=7, name="source")
        first, second = Count(name="first"), Count(name="second")
        sink = Recorder(name="sink")
        await run_pipeline_async(
            Pipeline(source > first > second > sink, checkpoint=tmp_path / "s.db",
                     checkpoint_interval=0.3)
        )  # fmt: skip
        assert len(source.positions) >= 5
        assert first.states == second.states == source.positions
        assert [len(state) for state in sink.states] == source.positions

    async def test_a_threaded_source_takes_its_position_in_its_thread(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A sync source's snapshot, taken between two next() calls, matches downstream."""
        threads: set[str] = set()

        class SyncNumbers(NanoNode):
            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
                self.position = 0
                self.positions: list[int] = []

            def snapshot(self) -> int:
                threads.add(threading.current_thread().name)
                self.positions.append(self.position)
                return self.position

            def generator(self) -> Any:
                while self.position < 3000:
                    self.position += 1
                    yield self.position
                    if self.position % 500 == 0:
                        time.sleep(0.01)  # a real blocking source

        source = SyncNumbers(name="sync")
        sink = Recorder(name="sink")
        pipeline = Pipeline(source > sink, checkpoint=tmp_path / "s.db", checkpoint_interval=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            n = await pipeline.checkpoint_now()
            assert n == 1
        assert threads & {"nanostream-sync"}
        assert [len(state) for state in sink.states] == source.positions
        assert sink.items == list(range(1, 3001))


class TestNeverStuck:
    """A source that does not yield delays checkpoints, says so, and does not hang a stop."""

    async def test_silent_source_delays_and_stop_still_works(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """checkpoint_delayed names the silent source; stop() ends with a final checkpoint."""
        quiet = FakeSource([1, 2, Pause(math.inf)], name="quiet")
        busy = Numbers(10_000, every=5, name="busy")
        sink = Recorder(name="sink")
        quiet > sink
        busy > sink
        pipeline = Pipeline(quiet, busy, checkpoint=tmp_path / "s.db", checkpoint_interval=1.0)
        with capture_events() as events:
            pipeline._logger = events.logger()
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.sleep(5)
                pipeline.stop()
        delayed = events.of("checkpoint_delayed")
        assert delayed
        assert delayed[0]["sources_not_yielding"] == ["quiet"]
        assert events.of("checkpoint_completed")[-1]["final"] is True
        assert pipeline.status == "finished"

    async def test_source_blocked_in_its_thread(self, tmp_path: Path) -> None:
        """A threaded source stuck in a blocking call delays checkpoints, named, until it ends."""
        release = threading.Event()

        class Stuck(NanoNode):
            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
                self.position = 0

            def snapshot(self) -> int:
                return self.position

            def generator(self) -> Any:
                for self.position in range(1, 4):
                    yield self.position
                release.wait(30)  # a blocking call that does not return for a while

        sink = Recorder(name="sink")
        pipeline = Pipeline(
            Stuck(name="stuck") > sink, checkpoint=tmp_path / "s.db", checkpoint_interval=0.05
        )
        with capture_events() as events:
            pipeline._logger = events.logger()
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    await nursery.start(pipeline.run)
                    while not events.of("checkpoint_delayed"):  # noqa: ASYNC110 - a log, no event
                        await trio.sleep(0.01)
                    assert events.of("checkpoint_delayed")[0]["sources_not_yielding"] == ["stuck"]
                    pipeline.stop()
                    release.set()
        assert pipeline.status == "finished"
        assert sink.items == [1, 2, 3]
        assert events.of("checkpoint_completed")[-1]["final"] is True


class TestStoreAndErrors:
    """The store file, a pipeline of another shape, and bad options."""

    async def test_store_keeps_the_two_newest_checkpoints(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Older checkpoints are deleted in the same transaction as a new one is written."""
        store = tmp_path / "state.db"
        await run_pipeline_async(
            Pipeline(Numbers(100, name="n") > ListSink([], name="sink"), checkpoint=store,
                     checkpoint_interval=1.0)
        )  # fmt: skip
        db = sqlite3.connect(store)
        numbers = [row[0] for row in db.execute("SELECT n FROM checkpoints ORDER BY n")]
        assert len(numbers) == 2
        assert numbers[1] == numbers[0] + 1
        assert numbers[0] > 2
        assert {row[0] for row in db.execute("SELECT DISTINCT n FROM states")} == set(numbers)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    async def test_another_shape_is_refused_naming_the_nodes(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A store written by another graph gives a ConfigError naming what differs."""
        store = tmp_path / "state.db"
        await run_pipeline_async(
            Pipeline(Numbers(5, name="n") > Running(name="sum") > ListSink([], name="sink"),
                     checkpoint=store)
        )  # fmt: skip
        other = Pipeline(Numbers(5, name="n") > ListSink([], name="sink"), checkpoint=store)
        with pytest.raises(ConfigError) as caught:
            await run_pipeline_async(other)
        message = str(caught.value)
        assert "'sum' is in the checkpoint but not in this pipeline" in message
        assert "'sink' had inputs ['sum'], has ['n']" in message

    async def test_unnamed_nodes_built_again_in_one_process_resume(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A rebuilt pipeline's nodes are numbered anew (Numbers-2, ...) and still restore."""
        store = tmp_path / "state.db"
        out: list[int] = []

        def build() -> Pipeline:
            return Pipeline(
                Numbers(150) > Running() > ListSink(out), checkpoint=store, checkpoint_interval=1.0
            )

        first, second = build(), build()
        assert [n.name for n in first.nodes] != [n.name for n in second.nodes]
        crash_at(first, "after_write", checkpoint=3)
        with pytest.raises(SimulatedCrash):
            await run_pipeline_async(first)
        with capture_events() as events:
            second._logger = events.logger()
            await run_pipeline_async(second)
        assert events.of("checkpoint_restored")[0]["checkpoint"] == 3
        assert events.of("checkpoint_restored")[0]["nodes"] == sorted(n.name for n in second.nodes)
        assert out == running_sums(150)

    async def test_renumbering_does_not_hide_another_shape(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Unnamed nodes of another type, or a renamed node, are still refused."""
        store = tmp_path / "state.db"
        await run_pipeline_async(Pipeline(Numbers(5) > Running() > ListSink([]), checkpoint=store))
        others = [
            Pipeline(Numbers(5) > ListSink([]) > ListSink([]), checkpoint=store),
            Pipeline(Numbers(5) > Running(name="sum") > ListSink([]), checkpoint=store),
        ]
        for other in others:
            with pytest.raises(ConfigError, match="another shape"):
                await run_pipeline_async(other)

    async def test_missing_directory_is_a_clear_error(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A store path in a directory that does not exist fails the run naming it."""
        path = tmp_path / "nope" / "state.db"
        pipeline = Pipeline(Numbers(3) > ListSink([]), checkpoint=path)
        with pytest.raises(ConfigError, match="does not exist"):
            await run_pipeline_async(pipeline)
        assert not path.parent.exists()  # nothing created on the way

    def test_bad_interval_is_refused(self, tmp_path: Path) -> None:
        """checkpoint_interval must be positive or None."""
        with pytest.raises(ConfigError, match="checkpoint_interval"):
            Pipeline(Numbers(3) > ListSink([]), checkpoint=tmp_path / "s.db", checkpoint_interval=0)

    async def test_checkpoint_now_without_a_store(self, nanostream_clock: Any) -> None:
        """checkpoint_now() on a pipeline without checkpoint= says how to get one."""
        pipeline = Pipeline(Numbers(3) > ListSink([]))
        with pytest.raises(PipelineStateError, match="pass checkpoint="):
            await pipeline.checkpoint_now()

    async def test_events_and_acks(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """checkpoint_started/completed carry the number and timings; acks follow the write."""
        source = Numbers(40, name="n")
        sink = ListSink([], name="sink")
        pipeline = Pipeline(source > sink, checkpoint=tmp_path / "s.db", checkpoint_interval=1.0)
        with capture_events() as events:
            pipeline._logger = events.logger()
            await run_pipeline_async(pipeline)
        started = [e["checkpoint"] for e in events.of("checkpoint_started")]
        completed = events.of("checkpoint_completed")
        assert started == [e["checkpoint"] for e in completed if not e["final"]]
        assert all(e["duration"] >= 0 and e["bytes"] > 0 for e in completed)
        assert source.acked == [e["checkpoint"] for e in completed]
        assert sink.committed == source.acked
