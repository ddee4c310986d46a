"""The fake clock holds still while a worker thread works (sync sources, blocking nodes)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import trio
import trio.testing

from nanostream_testing import (
    CollectingSink,
    check_node_contract,
    run_node,
    run_pipeline,
    run_pipeline_async,
)
from nanostream_trio import NanoNode


class SleepyEmitter(NanoNode):
    """The seed README's FooEmitter: a sync generator calling time.sleep."""

    def __init__(self, count: int = 3, interval: float = 0.05) -> None:
        self.count = count
        self.interval = interval
        super().__init__()

    def generator(self) -> Iterator[str]:
        for i in range(self.count):
            time.sleep(self.interval)
            yield f"m{i}"


class SlowLookup(NanoNode):
    def process_item(self, item: int) -> int:
        time.sleep(0.02)
        return item * 10


class TestThreadsOnTheFakeClock:
    def test_sleeping_sync_source_finishes_and_is_repeatable(self) -> None:
        """A time.sleep source finishes under run_pipeline, the same way every time."""
        results = []
        for _ in range(3):
            sink = CollectingSink()
            SleepyEmitter() > sink
            summary = run_pipeline(sink, time_limit=60)
            results.append((sink.items, sink.arrivals, summary.elapsed))
        assert results == [(["m0", "m1", "m2"], [0.0, 0.0, 0.0], 0.0)] * 3

    def test_blocking_node_under_run_node(self) -> None:
        """run_node drives a blocking=True node deterministically: virtual time stands still."""
        arrivals = set()
        for _ in range(3):
            result = run_node(SlowLookup(blocking=True), [1, 2, 3])
            assert result.outputs == [10, 20, 30]
            arrivals.add(tuple(result.arrivals))
        assert arrivals == {(0.0, 0.0, 0.0)}

    def test_contract_check_accepts_the_seed_source(self) -> None:
        """check_node_contract passes for a seed-style sync source that calls time.sleep."""
        check_node_contract(lambda: SleepyEmitter(count=2, interval=0.01))

    async def test_async_runner_holds_the_clock(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """run_pipeline_async on the plugin's clock also waits for the thread."""
        sink = CollectingSink()
        SleepyEmitter(count=2) > sink
        start = trio.current_time()
        await run_pipeline_async(sink, time_limit=60)
        assert sink.items == ["m0", "m1"]
        assert trio.current_time() == start
        assert nanostream_clock.autojump_threshold == 0
