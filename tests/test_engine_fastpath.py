"""The engine's fast paths: fused function chains, batch-at-a-time loops, the thread hand-off."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from nanostream_trio import NanoNode, Pipeline, _runtime
from nanostream_trio._edges import Edge, Outbox
from nanostream_trio._threads import ThreadedSource
from nanostream_trio.nodes import Filter, Map


class Numbers(NanoNode):
    """Async source of the given items."""

    def __init__(self, items: list[Any], **kwargs: Any) -> None:
        self.items = items
        self.emitted = 0
        super().__init__(**kwargs)

    async def generator(self) -> Any:
        for item in self.items:
            self.emitted += 1
            yield item


class SyncNumbers(NanoNode):
    """Sync source of range(n), run inline (blocking=False) or in a thread."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self.n = n
        self.emitted = 0
        super().__init__(**kwargs)

    def generator(self) -> Iterator[int]:
        for i in range(self.n):
            self.emitted += 1
            yield i


class Collect(NanoNode):
    def __init__(self, **kwargs: Any) -> None:
        self.items: list[Any] = []
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> None:
        self.items.append(item)


class Half(NanoNode):
    """A plain-function node: halves even numbers, drops odd ones (returns None)."""

    def process_item(self, item: int) -> int | None:
        return item // 2 if item % 2 == 0 else None


class Explode(NanoNode):
    """A generator node: each item becomes `fanout` items."""

    def __init__(self, fanout: int, **kwargs: Any) -> None:
        self.fanout = fanout
        self.yielded = 0
        super().__init__(**kwargs)

    def process_item(self, item: int) -> Iterator[tuple[int, int]]:
        for k in range(self.fanout):
            self.yielded += 1
            yield (item, k)


@pytest.fixture
def no_fusion() -> Iterator[None]:
    previous = _runtime.FUSE_CHAINS
    _runtime.FUSE_CHAINS = False
    try:
        yield
    finally:
        _runtime.FUSE_CHAINS = previous


def _chain(items: list[Any]) -> tuple[Numbers, Collect, list[NanoNode]]:
    src, sink = Numbers(items, name="src"), Collect(name="sink")
    middle: list[NanoNode] = [
        Map(lambda x: x + 1, name="inc"),
        Half(name="half"),
        Filter(lambda x: x % 3 != 0, name="not3"),
        Map(lambda x: None if x == 7 else x * 10, name="tens"),
    ]
    node: Any = src
    for following in [*middle, sink]:
        node = node > following
    return src, sink, middle


def _counts(summary: Any) -> dict[str, tuple[int, int]]:
    return {name: (stats.items_in, stats.items_out) for name, stats in summary.items()}


def _expected(items: list[int]) -> list[int]:
    out = []
    for x in items:
        x += 1
        if x % 2:
            continue
        x //= 2
        if x % 3 == 0 or x == 7:
            continue
        out.append(x * 10)
    return out


class TestFusedChain:
    async def test_same_results_and_counters_as_unfused(self) -> None:
        """A fused chain emits the same items in the same order, with the same per-node counters."""
        items = list(range(5000))
        src, sink, _ = _chain(items)
        fused = await Pipeline(src).run()
        fused_items = list(sink.items)

        _runtime.FUSE_CHAINS = False
        try:
            src, sink, _ = _chain(items)
            unfused = await Pipeline(src).run()
        finally:
            _runtime.FUSE_CHAINS = True
        assert fused_items == sink.items == _expected(items)
        assert _counts(fused) == _counts(unfused)
        assert fused["half"].items_in == 5000
        assert fused["half"].items_out == 2500

    async def test_followers_inboxes_stay_empty(self) -> None:
        """Fused nodes receive nothing through their inboxes; the head's inbox is used."""
        src, _, middle = _chain(list(range(1000)))
        summary = await Pipeline(src).run()
        assert summary["inc"].inbox_peak > 0
        for node in [*middle[1:], summary["sink"]]:
            assert summary[node.name].inbox_peak == 0

    async def test_unfused_followers_use_their_inboxes(self, no_fusion: None) -> None:
        """With FUSE_CHAINS off every node's inbox carries items (the comparison baseline)."""
        src, _, middle = _chain(list(range(1000)))
        summary = await Pipeline(src).run()
        for node in middle:
            assert summary[node.name].inbox_peak > 0

    @pytest.mark.parametrize("breaker", ["fan_out", "fan_in", "blocking", "async_function"])
    async def test_chain_stops_where_fusion_would_change_behaviour(self, breaker: str) -> None:
        """Fan-out, fan-in, blocking=True and async styles end a chain."""
        src = Numbers(list(range(300)))
        head = Map(lambda x: x, name="head")
        src > head
        follower: NanoNode
        if breaker == "blocking":
            follower = Map(lambda x: x, name="follower", blocking=True)
        elif breaker == "async_function":

            class AsyncIdentity(NanoNode):
                async def process_item(self, item: Any) -> Any:
                    return item

            follower = AsyncIdentity(name="follower")
        else:
            follower = Map(lambda x: x, name="follower")
        head > follower > Collect(name="sink")
        if breaker == "fan_out":
            head > Collect(name="other")
        if breaker == "fan_in":
            Numbers(list(range(300)), name="second") > follower
        summary = await Pipeline(src).run()
        assert summary["follower"].inbox_peak > 0
        expected = 600 if breaker == "fan_in" else 300
        assert summary["sink"].items_in == expected

    @pytest.mark.parametrize("kind", ["skip_policy", "retry_policy", "dead_letters", "generator"])
    async def test_any_policy_and_generators_fuse(self, kind: str) -> None:
        """Policies, a linked dead_letters port and generator nodes keep a chain fused."""
        src = Numbers(list(range(300)))
        head = Map(lambda x: x, name="head")
        follower: NanoNode
        if kind == "skip_policy":
            follower = Map(lambda x: x, name="follower", on_error="skip")
        elif kind == "retry_policy":
            follower = Map(lambda x: x, name="follower", on_error="retry")
        elif kind == "dead_letters":
            follower = Map(lambda x: x, name="follower")
            follower.dead_letters > Collect(name="dead")
        else:
            follower = Explode(1, name="follower")
        src > head > follower > Collect(name="sink")
        summary = await Pipeline(src).run()
        assert summary["follower"].inbox_peak == 0
        assert summary["follower"].items_in == summary["sink"].items_in == 300

    async def test_filter_never_emits_none(self) -> None:
        """A None input passing a fused Filter is not emitted (process_item would return None)."""
        src, sink = Numbers([1, None, 2]), Collect()
        src > Map(lambda x: x, name="m") > Filter(lambda x: True, name="f") > sink
        summary = await Pipeline(src).run()
        assert sink.items == [1, 2]
        assert summary["f"].items_in == 2  # the source's None was dropped by "m" already

    async def test_failure_in_fused_node_is_reported_by_that_node(self) -> None:
        """A fused node's failure keeps its type, names that node and item, marks it failed."""
        src, sink = Numbers(list(range(100))), Collect(name="sink")

        def explode_at_42(x: int) -> int:
            if x == 42:
                raise ValueError("bad forty-two")
            return x

        src > Map(lambda x: x, name="head") > Map(explode_at_42, name="boom") > sink
        pipeline = Pipeline(src)
        with capture_logs() as events, pytest.raises(ValueError, match="bad forty-two") as info:
            await pipeline.run()
        assert "in nanostream node 'boom', processing item 42" in info.value.__notes__
        failed = [e for e in events if e["event"] == "node_failed"]
        assert [e["node"] for e in failed] == ["boom"]
        assert failed[0]["items_in"] == 100
        stats = pipeline.statistics()
        assert stats["boom"].status == "failed"
        assert stats["head"].status == "cancelled"
        assert sink.items == []  # the failing batch never reached the sink

    async def test_failure_in_head_names_the_head(self) -> None:
        """The head of a chain reports its own failures as before."""
        src = Numbers(list(range(10)))
        src > Map(lambda x: 1 // (x - 3), name="head") > Collect(name="sink")
        pipeline = Pipeline(src)
        with pytest.raises(ZeroDivisionError) as info:
            await pipeline.run()
        assert "in nanostream node 'head', processing item 3" in info.value.__notes__
        assert pipeline.statistics()["head"].status == "failed"

    async def test_fused_nodes_are_set_up_before_use_and_torn_down_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The head calls a fused node only after its setup returned; its teardown comes after."""
        log: list[str] = []

        class Slow(NanoNode):
            async def setup(self) -> None:
                await trio.sleep(5)
                log.append("setup")

            def process_item(self, item: int) -> int:
                log.append(f"item {item}")
                return item

            def teardown(self) -> None:
                log.append("teardown")

        src = Numbers([1, 2])
        src > Map(lambda x: x, name="head") > Slow(name="slow") > Collect()
        await Pipeline(src).run()
        assert log == ["setup", "item 1", "item 2", "teardown"]

    async def test_cancel_lands_within_one_batch(self) -> None:
        """A cancel requested while a fused chain works takes effect before the next batch."""
        calls = 0
        pipeline: Pipeline

        def count_and_cancel(x: int) -> int:
            nonlocal calls
            calls += 1
            if calls == 10:
                pipeline.cancel()
            return x

        src = SyncNumbers(100_000, blocking=False)
        src > Map(count_and_cancel, name="head", capacity=64) > Map(lambda x: x) > Collect()
        pipeline = Pipeline(src)
        summary = await pipeline.run()
        assert summary.status == "cancelled"
        assert 10 <= calls <= 64


class TestFusedSource:
    @pytest.mark.parametrize("blocking", [False, True])
    async def test_source_runs_the_chain_itself(self, blocking: bool) -> None:
        """A sync source (inline or threaded) runs the chain after it: same items, same counters."""

        def build() -> tuple[SyncNumbers, Collect]:
            src, sink = SyncNumbers(3000, blocking=blocking, name="src"), Collect(name="sink")
            src > Map(lambda x: x + 1, name="inc") > Half(name="half") > sink
            return src, sink

        src, sink = build()
        fused = await Pipeline(src).run()
        fused_items = list(sink.items)
        _runtime.FUSE_CHAINS = False
        try:
            src, sink = build()
            unfused = await Pipeline(src).run()
        finally:
            _runtime.FUSE_CHAINS = True
        assert fused_items == sink.items == [(i + 1) // 2 for i in range(3000) if i % 2]
        assert _counts(fused) == _counts(unfused)
        assert fused["inc"].inbox_peak == 0  # nothing travelled on the source's edge
        assert unfused["inc"].inbox_peak > 0

    async def test_failure_in_chain_run_by_source(self) -> None:
        """A failure in a node fused into a source names that node; the source ends cancelled."""
        src = SyncNumbers(100, blocking=False, name="src")
        src > Map(lambda x: 1 // (x - 50), name="head") > Collect(name="sink")
        pipeline = Pipeline(src)
        with capture_logs() as events, pytest.raises(ZeroDivisionError) as info:
            await pipeline.run()
        assert "in nanostream node 'head', processing item 50" in info.value.__notes__
        assert [e["node"] for e in events if e["event"] == "node_failed"] == ["head"]
        stats = pipeline.statistics()
        assert stats["head"].status == "failed"
        assert stats["src"].status == "cancelled"

    async def test_fused_sources_take_turns(self) -> None:
        """Two sources that never wait (their chains end in sinks) still share the Trio thread."""
        order: list[str] = []

        class Tag(NanoNode):
            def __init__(self, tag: str) -> None:
                self.tag = tag
                super().__init__(name=f"tag-{tag}")

            def process_item(self, item: int) -> None:
                if not order or order[-1] != self.tag:
                    order.append(self.tag)

        a, b = SyncNumbers(50_000, blocking=False, name="a"), SyncNumbers(50_000, name="b")
        a > Tag("a")
        b > Tag("b")
        summary = await Pipeline(a, b).run()
        assert summary["tag-a"].items_in == summary["tag-b"].items_in == 50_000
        assert len(order) > 2  # interleaved, not one source after the other

    async def test_stop_drains_what_the_source_emitted(self) -> None:
        """stop() on a threaded source with a fused chain: every emitted item reaches the sink."""
        pipeline: Pipeline

        class StopAt(Collect):
            def process_item(self, item: Any) -> None:
                super().process_item(item)
                if item == 1000:
                    pipeline.stop()

        src, sink = SyncNumbers(10_000_000, name="src"), StopAt(name="sink")
        src > Map(lambda x: x, name="m") > sink
        pipeline = Pipeline(src)
        with trio.fail_after(20):
            summary = await pipeline.run()
        assert summary.status == "finished"
        assert 1000 < len(sink.items) < 10_000_000
        assert sink.items == list(range(len(sink.items)))
        assert summary["src"].items_out == summary["m"].items_in == len(sink.items)


class TestBatchLoops:
    async def test_generator_node_respects_capacity(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An expanding generator node runs ahead of a slow sink by a bounded number of items."""
        explode = Explode(1000)
        gaps: list[int] = []

        class SlowSink(NanoNode):
            def __init__(self) -> None:
                self.seen = 0
                super().__init__(capacity=8)

            async def process_item(self, item: Any) -> None:
                self.seen += 1
                gaps.append(explode.yielded - self.seen)
                await trio.sleep(1)

        src, sink = Numbers([1, 2, 3]), SlowSink()
        src > explode > sink
        summary = await Pipeline(src).run()
        assert sink.seen == 3000
        # queued in the sink's inbox (8), plus in hand: the batch the sink
        # took (at most 8) and the one output the generator holds while it
        # waits for room
        assert max(gaps) <= 8 + 8 + 1
        assert max(gaps) >= 8  # the inbox really filled up
        assert summary[sink.name].inbox_peak <= 8
        assert summary[explode.name].blocked_seconds > 0

    async def test_generator_outputs_visible_before_waiting(self) -> None:
        """Outputs made before a generator node waits for room are handed over first, in order."""
        src, sink = Numbers(list(range(50))), Collect(capacity=3)
        src > Explode(7) > sink
        await Pipeline(src).run()
        assert sink.items == [(i, k) for i in range(50) for k in range(7)]

    async def test_inline_sync_source_respects_capacity(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A blocking=False sync source pushes chunks no larger than the room downstream."""
        src = SyncNumbers(10_000, blocking=False)
        lead: list[int] = []

        class SlowSink(NanoNode):
            def __init__(self) -> None:
                self.seen = 0
                super().__init__(capacity=16)

            async def process_item(self, item: int) -> None:
                self.seen += 1
                lead.append(src.emitted - self.seen)
                await trio.sleep(0.01)

        sink = SlowSink()
        src > sink
        summary = await Pipeline(src).run()
        assert sink.seen == 10_000
        # queued (16) plus the batch in the sink's hand (at most 16)
        assert max(lead) <= 16 + 16
        assert max(lead) >= 16
        assert summary[sink.name].inbox_peak <= 16


class TestThreadedSource:
    async def test_many_items_in_order(self) -> None:
        """Every item of a thread-run generator arrives once and in order via the hand-off."""
        src, sink = SyncNumbers(200_000), Collect()
        src > sink
        summary = await Pipeline(src).run()
        assert sink.items == list(range(200_000))
        assert summary[src.name].items_out == 200_000

    async def test_bounded_when_the_sink_stalls(self) -> None:
        """A stalled sink holds the thread: it runs ahead by a fixed number of batches, not by N."""
        src = SyncNumbers(1_000_000)
        stalled = trio.Event()

        class Stall(NanoNode):
            async def process_item(self, item: int) -> None:
                stalled.set()
                await trio.sleep_forever()

        src > Stall(capacity=32, name="Stall")
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await stalled.wait()
            # Poll (with a deadline) until the thread is parked on a full hand-off.
            hand_off = pipeline._runs[src.name].thread_source
            assert hand_off is not None
            hand_off_capacity = _runtime.THREAD_HANDOFF_FACTOR * 32

            def held() -> bool:
                return (
                    hand_off._producer_waiting
                    and len(hand_off._buffer) >= hand_off_capacity
                    and pipeline.statistics()["Stall"].inbox_queued == 32
                )

            with trio.fail_after(10):
                while not held():  # noqa: ASYNC110 - a real thread's state
                    await trio.sleep(0.001)
            # The sink's inbox (32), plus in hand: the sink's batch (32), the
            # source task's batch waiting for room and the thread's hand-off
            # (each THREAD_HANDOFF_FACTOR * 32) and the one item the thread holds.
            assert 32 + hand_off_capacity <= src.emitted <= 2 * 32 + 2 * hand_off_capacity + 1
            pipeline.cancel()

    async def test_item_delivered_while_the_generator_blocks(self) -> None:
        """An item yielded before the generator blocks reaches the sink during the block."""
        release = threading.Event()

        class Blocking(NanoNode):
            def generator(self) -> Iterator[int]:
                yield 1
                # Blocks until the sink has item 1: a held partial batch deadlocks here.
                if not release.wait(timeout=10):
                    raise TimeoutError("item 1 was held back while the generator blocked")
                yield 2

        class Release(Collect):
            def process_item(self, item: Any) -> None:
                super().process_item(item)
                release.set()

        src, sink = Blocking(), Release()
        src > sink
        with trio.fail_after(20):
            await Pipeline(src).run()
        assert sink.items == [1, 2]

    async def test_wakes_the_parked_side_while_holding_the_lock(self) -> None:
        """The thread wakes the parked Trio side from inside the hand-off lock, never outside it."""
        go = threading.Event()

        def produce() -> Iterator[int]:
            if not go.wait(timeout=10):
                raise TimeoutError("never released")
            yield 1
            yield 2

        source = ThreadedSource(produce, capacity=8, name="test-source")
        token = source._token
        wakes: list[bool] = []

        class RecordingToken:
            def run_sync_soon(self, func: Any, *args: Any) -> None:
                if func == source._lot.unpark_all:
                    wakes.append(source._lock.locked())
                token.run_sync_soon(func, *args)

        source._token = RecordingToken()  # type: ignore[assignment]
        source.start()
        received: list[int] = []

        async def release_when_parked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            go.set()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_when_parked)
                while (batch := await source.receive_batch()) is not None:
                    received.extend(batch)
            await source.aclose()
        assert received == [1, 2]
        assert wakes
        assert all(wakes)

    async def test_receive_batch_is_a_checkpoint_when_items_wait(self) -> None:
        """Taking a batch that was already waiting still yields to the other tasks first."""
        source = ThreadedSource(lambda: range(5), capacity=8, name="test-source")
        source.start()
        with trio.fail_after(10):
            await source._finished.wait()
        with trio.testing.assert_checkpoints():
            batch = await source.receive_batch()
        assert batch == [0, 1, 2, 3, 4]
        assert await source.receive_batch() is None
        await source.aclose()

    async def test_cancel_lands_within_one_chunk_of_a_hand_off_batch(self) -> None:
        """A cancel from a node fused into a thread-run source lands before its next chunk."""
        calls = 0
        pipeline: Pipeline

        def count_and_cancel(x: int) -> int:
            nonlocal calls
            calls += 1
            if calls == 10:
                pipeline.cancel()
            return x

        src = SyncNumbers(100_000)
        src > Map(count_and_cancel, name="head", capacity=64) > Collect()
        pipeline = Pipeline(src)
        with trio.fail_after(20):
            summary = await pipeline.run()
        assert summary.status == "cancelled"
        # The hand-off's batches hold up to THREAD_HANDOFF_FACTOR * 64 items;
        # the chain takes them 64 at a time and checks for the cancel between.
        assert 10 <= calls <= 64


class TestBatchEdgeOps:
    async def test_send_batch_splits_by_room_and_keeps_order(self) -> None:
        """Outbox.send_batch pushes what fits, waits for the consumer, never exceeds capacity."""
        edge = Edge(4, "sink")
        outbox = Outbox([edge])
        outbox.open()
        received: list[int] = []

        async def consume() -> None:
            while True:
                entry = await edge.receive()
                if not isinstance(entry, list):
                    return
                assert len(entry) <= 4
                received.extend(entry)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await outbox.send_batch(list(range(10)))
            await outbox.send_batch([])
            outbox.close()
        assert received == list(range(10))
        assert edge.peak <= 4
        assert outbox.sent == 10

    def test_push_batch_of_nothing_adds_no_entry(self) -> None:
        """An empty push_batch leaves the edge empty (no empty batch reaches the consumer)."""
        edge = Edge(4, "sink")
        edge.push_batch([])
        assert edge.queued == 0
        with pytest.raises(trio.WouldBlock):
            edge.receive_nowait()
