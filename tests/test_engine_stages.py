"""Batch stages: policies inside fused chains, the filtered counter, the visible thread hand-off."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from nanostream_testing import CollectingSink, FakeSource
from nanostream_trio import DeadLetter, NanoNode, Pipeline, Retry, _runtime
from nanostream_trio.nodes import Filter, Map


class EvensOnly(NanoNode):
    """A generator node: yields even items, nothing for odd ones."""

    def process_item(self, item: int) -> Iterator[int]:
        if item % 2 == 0:
            yield item


class AsyncHalf(NanoNode):
    """An async function node: half of multiples of 4, None otherwise."""

    async def process_item(self, item: int) -> int | None:
        return item // 2 if item % 4 == 0 else None


class FailOnce(NanoNode):
    """A generator node that yields an output, then fails the first attempt at multiples of 5."""

    def __init__(self, **kwargs: Any) -> None:
        self.attempts: dict[int, list[float]] = {}
        super().__init__(**kwargs)

    def process_item(self, item: int) -> Iterator[int]:
        times = self.attempts.setdefault(item, [])
        times.append(trio.current_time())
        yield item
        if item % 5 == 0 and len(times) == 1:
            raise ConnectionError(f"first attempt at {item}")


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def fusion(request: pytest.FixtureRequest) -> Iterator[bool]:
    previous = _runtime.FUSE_CHAINS
    _runtime.FUSE_CHAINS = request.param
    try:
        yield request.param
    finally:
        _runtime.FUSE_CHAINS = previous


class TestFiltered:
    async def test_counted_for_every_style(self, fusion: bool) -> None:
        """Items that produce no output and no error are counted as filtered, fused or not."""
        src, sink = (
            FakeSource(list(range(100)), name="src"),
            CollectingSink(allow_empty=True, name="sink"),
        )
        _ = (
            src
            > Map(lambda x: None if x == 99 else x, name="map")
            > Filter(lambda x: x % 3 != 0, name="filter")
            > EvensOnly(name="evens")
            > AsyncHalf(name="half")
            > sink
        )
        summary = await Pipeline(src).run()
        assert summary["map"].filtered == 1
        assert summary["filter"].filtered == 33  # 0, 3, ..., 96 of 0..98
        assert summary["evens"].filtered == summary["evens"].items_in - summary["evens"].items_out
        assert summary["half"].filtered == summary["half"].items_in - summary["half"].items_out
        for name in ("map", "filter", "evens", "half"):
            stats = summary[name]
            assert stats.items_in == stats.items_out + stats.filtered, name
        assert summary["sink"].filtered == summary["sink"].items_in  # a sink emits nothing

    async def test_balance_holds_with_skips_and_dead_letters(self, fusion: bool) -> None:
        """items_in == items_out + filtered + skipped + dead_lettered under skip and dead_letter."""

        def parse(x: int) -> int | None:
            if x % 7 == 0:
                raise ValueError(f"bad {x}")
            return None if x % 2 else x

        src, sink, dead = (
            FakeSource(list(range(200))),
            CollectingSink(allow_empty=True, name="sink"),
            CollectingSink(allow_empty=True, name="dead"),
        )
        skipping = Map(parse, name="skipping", on_error="skip")
        lettering = Map(lambda x: 1 // (x % 3), name="lettering")
        _ = src > skipping > lettering > sink
        lettering.dead_letters > dead
        summary = await Pipeline(src).run()
        for name in ("skipping", "lettering"):
            stats = summary[name]
            assert stats.items_in == (
                stats.items_out + stats.filtered + stats.skipped + stats.dead_lettered
            ), name
        assert summary["skipping"].skipped == 29
        assert summary["lettering"].dead_lettered == len(dead.items) > 0

    async def test_in_finish_events(self) -> None:
        """node_finished and pipeline_finished carry each node's filtered count."""
        src, sink = FakeSource([1, 2, 3, 4]), CollectingSink(allow_empty=True, name="sink")
        _ = src > Filter(lambda x: x > 2, name="big") > sink
        with capture_logs() as logs:
            await Pipeline(src).run()
        finished = next(e for e in logs if e["event"] == "node_finished" and e["node"] == "big")
        assert finished["filtered"] == 2
        summary = next(e for e in logs if e["event"] == "pipeline_finished")
        assert summary["nodes"]["big"]["filtered"] == 2


class TestPoliciesInChains:
    async def test_retry_in_a_fused_chain_waits_on_the_trio_clock(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A retried item in a fused chain waits its backoff; its first outputs never go out."""
        src, sink = (
            FakeSource(list(range(1, 11)), name="src"),
            CollectingSink(allow_empty=True, name="sink"),
        )
        flaky = FailOnce(name="flaky", on_error="retry", retry=Retry(attempts=2, backoff=3))
        _ = src > Map(lambda x: x, name="head") > flaky > sink
        summary = await Pipeline(src).run()
        assert sink.items == list(range(1, 11))  # each once, in order
        assert summary["head"].inbox_peak > 0
        assert summary["flaky"].inbox_peak == 0  # fused into head's chain
        assert summary["flaky"].retried == 2
        assert flaky.attempts[5] == [0.0, 3.0]
        assert flaky.attempts[10] == [3.0, 6.0]
        assert flaky.attempts[6] == [3.0]  # the items after a retried one wait for it

    async def test_dead_letters_from_a_fused_generator_node(self, fusion: bool) -> None:
        """A fused generator node with dead_letters linked holds back a failed item's outputs."""
        src, sink, dead = (
            FakeSource(list(range(1, 11))),
            CollectingSink(allow_empty=True, name="sink"),
            CollectingSink(allow_empty=True, name="dead"),
        )
        flaky = FailOnce(name="flaky", on_error="dead_letter")
        _ = src > Map(lambda x: x, name="head") > flaky > sink
        flaky.dead_letters > dead
        summary = await Pipeline(src).run()
        assert sink.items == [1, 2, 3, 4, 6, 7, 8, 9]
        assert [(d.item, d.node) for d in dead.items] == [(5, "flaky"), (10, "flaky")]
        assert all(isinstance(d, DeadLetter) for d in dead.items)
        assert (summary["flaky"].inbox_peak == 0) is fusion

    async def test_a_generator_with_many_outputs_streams_in_a_chain(self) -> None:
        """One item with far more outputs than any inbox holds streams through a fused chain."""
        produced = 0

        class Many(NanoNode):
            def process_item(self, item: int) -> Iterator[int]:
                nonlocal produced
                for k in range(10_000):
                    produced += 1
                    yield k

        widest = 0

        class Slow(NanoNode):
            def __init__(self) -> None:
                self.seen = 0
                super().__init__(name="slow", capacity=16)

            async def process_item(self, item: int) -> None:
                nonlocal widest
                self.seen += 1
                widest = max(widest, produced - self.seen)
                await trio.lowlevel.checkpoint()

        src, sink = FakeSource([1]), Slow()
        _ = src > Map(lambda x: x, name="head") > Many(name="many") > Map(abs, name="abs") > sink
        await Pipeline(src).run()
        assert sink.seen == 10_000
        assert widest <= 4 * 16 + 1, widest


class TestThreadHandOff:
    async def test_what_the_thread_holds_is_in_statistics(self) -> None:
        """A stalled sink: the hand-off holds at most one inbox's worth, and statistics say so."""
        stalled = trio.Event()
        emitted = 0

        class Endless(NanoNode):
            def generator(self) -> Iterator[int]:
                nonlocal emitted
                for i in range(10**9):
                    emitted += 1
                    yield i

        class Stall(NanoNode):
            async def process_item(self, item: int) -> None:
                stalled.set()
                await trio.sleep_forever()

        src = Endless(name="src")
        _ = src > Stall(capacity=16, name="stall")
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await stalled.wait()
            run = pipeline._runs["src"]
            with trio.fail_after(10):
                while run.thread_source is None or run.thread_source.queued < 16:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            stats = pipeline.statistics()["src"]
            assert 16 <= stats.handoff_queued <= 17
            # inbox (16) + sink's batch (16) + source task's batch (16) + hand-off + in thread
            assert emitted <= 16 * 4 + 2
            pipeline.cancel()
        assert threading.active_count() >= 1


class TestTimeSlices:
    async def test_a_busy_chain_yields_once_its_slice_is_used(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A chain that never waits passes a real scheduling point each time its slice ends."""
        from nanostream_trio import _chain

        # A clock that moves 0.6 ms per reading: each slice (1 ms) lasts two batches.
        readings = iter(range(10**9))
        monkeypatch.setattr(_chain, "_clock", lambda: next(readings) * 0.0006)

        class Inline(NanoNode):
            def generator(self) -> Iterator[int]:
                yield from range(100 * 64)

        src, sink = (
            Inline(name="src", blocking=False),
            CollectingSink(allow_empty=True, name="sink"),
        )
        _ = src > Map(lambda x: x, name="map", capacity=64) > sink  # chunks of 64
        turns = 0
        done = False

        async def other_task() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await Pipeline(src, stats_interval=None, stall_timeout=None).run()
            done = True
        assert len(sink.items) == 100 * 64
        # 100 chunks of 64, a real checkpoint about every other chunk.
        assert turns >= 40, turns

    async def test_one_item_with_many_outputs_yields_and_hands_over_less(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A generator giving thousands of outputs for one item (a CSV chunk's rows) passes a
        real scheduling point once a slice is used up, between resumptions, and the chain
        asks fewer outputs of each resumption while a hand-over takes over half a slice."""
        from nanostream_trio import _chain

        # A clock that moves 0.6 ms per reading: every hand-over looks slow.
        readings = iter(range(10**9))
        monkeypatch.setattr(_chain, "_clock", lambda: next(readings) * 0.0006)

        class Explode(NanoNode):
            def process_item(self, item: int) -> Iterator[int]:
                yield from range(item)

        src, sink = FakeSource([6_400], name="src"), CollectingSink(name="sink")
        _ = src > Explode(name="explode") > sink
        turns = 0
        done = False

        async def other_task() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await Pipeline(src, stats_interval=None, stall_timeout=None).run()
            done = True
        assert sink.items == list(range(6_400))
        # At 256 outputs per resumption (the inbox) 25 resumptions; at 16, 400.
        assert turns >= 150, turns


class TestMarkers:
    async def test_a_marker_comes_after_the_outputs_of_the_batches_before_it(self) -> None:
        """A driver hands a marker on only once every batch before it has gone through."""
        from nanostream_trio._chain import Chain, consume
        from nanostream_trio._edges import END_OF_STREAM, Edge, Marker
        from nanostream_trio._runtime import NodeRun

        class Log:
            def bind(self, **_: Any) -> Log:
                return self

            def __getattr__(self, _: str) -> Any:
                return lambda *args, **kwargs: None

        node = Map(lambda x: x * 10, name="tens")
        inbox, outbox_edge = Edge(16, "tens"), Edge(16, "after")
        run = NodeRun(node, inbox, Log())
        run.outbox.edges = [outbox_edge]
        run.outbox.open()
        inbox.add_producer()
        barrier = Marker("barrier")
        inbox.push_batch([1, 2])
        inbox.push_marker(barrier)
        inbox.push_batch([3])
        inbox.close_producer()
        chain = Chain(run, [run])

        async def forward(marker: Marker) -> None:
            run.outbox.push_marker(marker)

        await consume(run, chain.feed, forward)
        entries = [outbox_edge.receive_nowait() for _ in range(3)]
        assert entries == [[10, 20], barrier, [30]]
        assert outbox_edge.queued == 0
        assert END_OF_STREAM not in entries


class TestFinishInChains:
    async def test_a_fused_node_finish_goes_through_the_rest_of_the_chain(self) -> None:
        """A fused node's finish() outputs pass the nodes fused after it, before their finish."""

        class Total(NanoNode):
            def __init__(self, **kwargs: Any) -> None:
                self.total = 0
                super().__init__(**kwargs)

            def process_item(self, item: int) -> None:
                self.total += item

            def finish(self) -> Iterator[int]:
                yield self.total
                yield -1

        class Count(NanoNode):
            def __init__(self, **kwargs: Any) -> None:
                self.seen = 0
                super().__init__(**kwargs)

            def process_item(self, item: int) -> int:
                self.seen += 1
                return item

            def finish(self) -> int:
                return 1000 + self.seen

        src, sink = (
            FakeSource(list(range(10)), name="src"),
            CollectingSink(allow_empty=True, name="sink"),
        )
        _ = src > Map(lambda x: x, name="head") > Total(name="total") > Map(abs, name="abs")
        _ = _ > Count(name="count") > sink
        summary = await Pipeline(src).run()
        assert sink.items == [45, 1, 1002]
        assert summary["total"].inbox_peak == summary["count"].inbox_peak == 0
        assert summary["total"].filtered == 10
        assert summary["total"].items_out == 2
        assert summary["abs"].items_in == 2


class TestAsyncGeneratorsClosed:
    @pytest.mark.parametrize("on_error", ["raise", "skip"])
    async def test_left_at_a_yield_its_finally_runs_before_teardown(self, on_error: str) -> None:
        """A process_item async generator left suspended by a downstream failure is closed then.

        Its ``finally`` runs in the node's task, before the node's teardown, not whenever
        the garbage collector or the end of ``trio.run`` gets to it.
        """
        order: list[str] = []

        class Endless(NanoNode):
            async def process_item(self, item: int) -> AsyncIterator[int]:
                try:
                    for k in itertools.count():
                        yield k
                finally:
                    order.append(f"closed {item}")

            def teardown(self) -> None:
                order.append("teardown")

        class Down(NanoNode):
            def process_item(self, item: int) -> None:
                raise ConnectionError("sink down")

        src = FakeSource([1])
        _ = src > Endless(name="endless", on_error=on_error) > Down(name="down", capacity=1)
        with pytest.raises(ConnectionError, match="sink down"):
            await Pipeline(src).run()
        assert order == ["closed 1", "teardown"]
