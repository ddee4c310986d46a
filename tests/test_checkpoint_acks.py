"""Store-less ack rounds, node sessions and after-batch hooks (the engine's part of Redis nodes).

All on the autojump clock: time is the subject, no real I/O is involved.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_trio import Items, NanoNode, Pipeline


class AckedSource(NanoNode):
    """Yields 0..count-1, one per second of the Trio clock; records snapshots and acks."""

    def __init__(self, count: int, ack_interval: float | None = 2.0) -> None:
        super().__init__(name="src")
        self.count = count
        self.ack_interval = ack_interval
        self.emitted: list[int] = []
        self.since_barrier: list[int] = []
        self.waiting: dict[int, list[int]] = {}
        self.acked: list[tuple[float, list[int]]] = []

    async def generator(self) -> AsyncIterator[Any]:
        for n in range(self.count):
            await trio.sleep(1)
            self.emitted.append(n)
            self.since_barrier.append(n)
            yield n
        yield Items()

    def snapshot(self) -> None:
        assert self._ns_checkpoint_n is not None
        self.waiting.setdefault(self._ns_checkpoint_n, []).extend(self.since_barrier)
        self.since_barrier = []

    async def ack(self, n: int) -> None:
        ids = [i for m in sorted(self.waiting) if m <= n for i in self.waiting.pop(m)]
        self.acked.append((trio.current_time(), ids))
        await trio.lowlevel.checkpoint()


class SlowSink(NanoNode):
    """Takes ``delay`` seconds per item; records when each arrived."""

    def __init__(self, delay: float) -> None:
        super().__init__(name="sink")
        self.delay = delay
        self.taken: dict[int, float] = {}

    async def process_item(self, item: int) -> None:
        await trio.sleep(self.delay)
        self.taken[item] = trio.current_time()


class TestAckRounds:
    """A source declaring ack_interval is acked after its items pass the sinks, without a store."""

    async def test_acks_come_after_the_sink_without_a_store(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without checkpoint=, every item is acked, never before the sink has taken it."""
        source = AckedSource(10, ack_interval=2.0)
        sink = SlowSink(delay=1.5)
        source > sink
        summary = await Pipeline(source).run()
        acked = [i for _, ids in source.acked for i in ids]
        assert sorted(acked) == list(range(10))
        for at, ids in source.acked:
            for i in ids:
                assert sink.taken[i] <= at
        assert summary.checkpoints == len(source.acked)
        assert len(source.acked) > 2  # rounds during the run, not only the last one

    async def test_without_ack_interval_no_rounds_run(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A source with ack_interval=None is never snapshotted nor acked without a store."""
        source = AckedSource(3, ack_interval=None)
        source > SlowSink(delay=0.1)
        summary = await Pipeline(source).run()
        assert source.acked == []
        assert summary.checkpoints == 0

    async def test_rounds_run_at_the_ack_interval(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A round starts ack_interval seconds after the previous one ended."""
        source = AckedSource(6, ack_interval=2.0)
        source > SlowSink(delay=0.0)
        await Pipeline(source).run()
        times = [at for at, _ in source.acked]
        # Items come at 1, 2, ..., 6 s. Round 1 starts at 2 s while the source
        # sleeps, so its barrier follows the item of 3 s; round 2 starts at 5 s.
        assert times[:2] == pytest.approx([3.0, 6.0], abs=0.01)


class Session(NanoNode):
    """A sink whose ``_ns_session`` records what runs inside it."""

    def __init__(self) -> None:
        super().__init__(name="session")
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        self.events.append("open")
        try:
            yield
        finally:
            self.events.append("close")

    def _ns_session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._session()

    def setup(self) -> None:
        self.events.append("setup")

    async def process_item(self, item: Any) -> None:
        self.events.append(f"item {item}")
        await trio.lowlevel.checkpoint()

    async def _ns_after_batch(self) -> None:
        self.events.append("after batch")
        await trio.lowlevel.checkpoint()

    def teardown(self) -> None:
        self.events.append("teardown")


class Burst(NanoNode):
    """Yields ``Items([0, 1, 2])`` once: one batch."""

    def __init__(self) -> None:
        super().__init__(name="burst")

    async def generator(self) -> AsyncIterator[Any]:
        await trio.lowlevel.checkpoint()
        yield Items([0, 1, 2])


class TestNodeHooks:
    """A node's session wraps its task; an async node's after-batch hook follows each batch."""

    async def test_session_wraps_setup_work_and_teardown(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The session opens before setup, closes after teardown; the hook follows the batch."""
        sink = Session()
        Burst() > sink
        await Pipeline(sink.upstream[0]).run()  # type: ignore[arg-type]
        assert sink.events == [
            "open",
            "setup",
            "item 0",
            "item 1",
            "item 2",
            "after batch",
            "teardown",
            "close",
        ]
