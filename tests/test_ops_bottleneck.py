"""Operability during a run: the bottleneck by evidence, the drain's progress, relative times."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from nanostream_testing import CollectingSink, FakeSource, Pause, capture_events
from nanostream_trio import NanoNode, Pipeline
from nanostream_trio._cli import _bottleneck


class Fast(NanoNode):
    def process_item(self, item: Any) -> Any:
        return item


class Slow(NanoNode):
    """0.05 s per item, as in the issue's report."""

    async def process_item(self, item: Any) -> Any:
        await trio.sleep(0.05)
        return item


class SlowSink(NanoNode):
    async def process_item(self, item: Any) -> None:
        await trio.sleep(0.05)


class SlowerSink(NanoNode):
    async def process_item(self, item: Any) -> None:
        await trio.sleep(0.1)


async def judged(pipeline: Pipeline, at: float = 20.0, window: float = 2.0) -> str | None:
    """The bottleneck judged from two snapshots ``window`` seconds apart during the run."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        await trio.sleep(at)
        before = pipeline.statistics()
        await trio.sleep(window)
        verdict = _bottleneck(pipeline.statistics(), before)
        nursery.cancel_scope.cancel()
    return verdict


def endless() -> FakeSource:
    return FakeSource(range(100_000), name="source")


class TestBottleneck:
    """The node named is the slow one, not the full inbox upstream of it."""

    async def test_slow_node_in_the_middle_of_a_chain(self, nanostream_clock: Any) -> None:
        """parse's inbox is full too, but parse waits for room: the slow node is named."""
        source = endless()
        source > Fast(name="parse", capacity=8) > Slow(name="slow", capacity=8) > Fast(name="out") \
            > CollectingSink(name="sink")  # fmt: skip
        assert await judged(Pipeline(source, stats_interval=None)) == "slow"

    async def test_slow_sink(self, nanostream_clock: Any) -> None:
        """A slow sink, behind nodes that all wait for it, is named."""
        source = endless()
        source > Fast(name="parse", capacity=8) > SlowSink(name="sink", capacity=8)
        assert await judged(Pipeline(source, stats_interval=None)) == "sink"

    async def test_slow_branch_of_a_fan_out(self, nanostream_clock: Any) -> None:
        """Of two branches the slow one is named, not the fast one the source also feeds."""
        source = endless()
        source > Slow(name="slow", capacity=8) > CollectingSink(name="a")
        source > Fast(name="fast", capacity=8) > CollectingSink(name="b")
        assert await judged(Pipeline(source, stats_interval=None)) == "slow"

    def test_a_node_that_is_not_running_is_never_named(self) -> None:
        """Before a run no node is the bottleneck."""
        assert _bottleneck(Pipeline(endless() > Fast(name="x")).statistics()) is None


class TestDraining:
    """A graceful stop with a backlog reports its progress until the drain ends."""

    async def test_pipeline_draining_counts_down(self, nanostream_clock: Any) -> None:
        """pipeline_draining events give the items left, falling to what the last one sees."""
        source = FakeSource([*range(40), Pause(math.inf)], name="source")
        sink = CollectingSink(name="sink")
        source > Slow(name="slow", capacity=64) > sink
        pipeline = Pipeline(source, stats_interval=None)
        with capture_events() as events:
            pipeline._logger = events.logger()
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.sleep(0.01)
                pipeline.stop()
        draining = events.of("pipeline_draining")
        assert len(draining) >= 2
        queued = [event["queued"] for event in draining]
        assert queued[0] > 30
        assert queued == sorted(queued, reverse=True)
        assert draining[0]["nodes"] == {"slow": queued[0]}
        assert len(sink.items) == 40


class TestRelativeTimes:
    """Event fields carry seconds since the pipeline's start, not raw clock values."""

    async def test_pipeline_stats_last_progress(self, nanostream_clock: Any) -> None:
        """last_progress in pipeline_stats is within the run's elapsed time."""
        source = FakeSource(range(5), interval=1, name="source")
        pipeline = Pipeline(source > CollectingSink(name="sink"), stats_interval=2)
        with capture_events() as events:
            pipeline._logger = events.logger()
            await pipeline.run()
        for event in events.of("pipeline_stats"):
            for node in event["nodes"].values():
                assert 0 <= node["last_progress"] <= event["elapsed"]
        first = events.of("pipeline_stats")[0]
        assert first["elapsed"] == 2.0
        assert 1.0 <= first["nodes"]["sink"]["last_progress"] <= 2.0


class TestBusyTime:
    """busy_seconds counts the time a node works, not the time it waits for room."""

    async def test_busy_excludes_waiting_for_room(self, nanostream_clock: Any) -> None:
        """A slow node is busy 0.05 s per item; the node feeding it, waiting on it, is not."""
        source = FakeSource(range(40), name="source")
        feeder = Slow(name="feeder", capacity=1)
        source > Fast(name="parse", capacity=1) > feeder > SlowerSink(name="sink", capacity=1)
        summary = await Pipeline(source, stats_interval=None).run()
        assert summary["feeder"].busy_seconds == pytest.approx(40 * 0.05)
        assert summary["sink"].busy_seconds == pytest.approx(40 * 0.1)
        # The slower sink holds the feeder back for about as long as the feeder works.
        assert summary["feeder"].blocked_seconds == pytest.approx(40 * 0.05, abs=0.2)
        assert summary["parse"].busy_seconds == 0.0


class TestWaitingFor:
    """statistics() says what each running node waits for."""

    async def test_tail_file_says_what_it_waits_for(self, tmp_path: Any) -> None:
        """A missing log, then an idle one, then the processor waiting for items."""
        from nanostream_trio.nodes import TailFile

        log = tmp_path / "app.log"
        tail = TailFile(str(log), poll_interval=0.01, name="tail")
        sink = CollectingSink(name="sink")
        pipeline = Pipeline(tail > sink, stats_interval=None)

        async def until(node: str, expected: str) -> None:
            with trio.fail_after(10):
                while pipeline.statistics()[node].waiting_for != expected:  # noqa: ASYNC110
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await until("tail", f"{log} to appear")
            log.write_text("one\n")
            await until("tail", f"new lines in {log}")
            assert [str(line) for line in sink.items] == ["one"]
            assert pipeline.statistics()["sink"].waiting_for == "items"
            pipeline.stop()
        assert pipeline.statistics()["tail"].waiting_for is None

    async def test_watchdog_and_a_blocked_node(self, tmp_path: Any) -> None:
        """An idle watchdog waits for file events; a node held by a slow one for room."""
        from nanostream_trio.nodes import LocalDirectoryWatchdog

        watch = LocalDirectoryWatchdog(directory=str(tmp_path), name="watch")
        watch > CollectingSink(name="paths", allow_empty=True)
        gate = trio.Event()

        class Gated(NanoNode):
            async def process_item(self, item: Any) -> None:
                await gate.wait()

        source = FakeSource([*range(10), Pause(math.inf)], name="numbers")
        source > Fast(name="fast", capacity=1) > Gated(name="gated", capacity=1)
        pipeline = Pipeline(watch, source, stats_interval=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            with trio.fail_after(10):
                while pipeline.statistics()["fast"].waiting_for != "room downstream":  # noqa: ASYNC110
                    await trio.sleep(0.01)
            stats = pipeline.statistics()
            assert stats["watch"].waiting_for == f"file events in {tmp_path}"
            assert stats["gated"].waiting_for is None  # working (on its slow item)
            gate.set()
            pipeline.stop()
