"""Running pipelines: delivery, styles, fan-out/in, back-pressure, threads, stop, cancel."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from nanostream_trio import NanoNode, Pipeline, PipelineStateError, _runtime


class Numbers(NanoNode):
    """Async source of range(n), optionally one item per `interval` virtual seconds."""

    def __init__(self, n: int, interval: float = 0.0, **kwargs: Any) -> None:
        self.n = n
        self.interval = interval
        self.emitted = 0
        super().__init__(**kwargs)

    async def generator(self):  # type: ignore[no-untyped-def]
        for i in range(self.n):
            if self.interval:
                await trio.sleep(self.interval)
            self.emitted += 1
            yield i


class Collect(NanoNode):
    def __init__(self, delay: float = 0.0, **kwargs: Any) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []
        self.delay = delay
        super().__init__(**kwargs)

    async def process_item(self, item: Any) -> None:
        if self.delay:
            await trio.sleep(self.delay)
        self.items.append(item)
        self.times.append(trio.current_time())


class Double(NanoNode):
    def process_item(self, item: int) -> int:
        return item * 2


class TestDelivery:
    async def test_linear_in_order(self) -> None:
        """Every item reaches the sink, in order, and the summary counts each node."""
        src, sink = Numbers(1000), Collect()
        # Named explicitly: a default name depends on how many nodes of the
        # class this process made before (tests run in random order).
        src > Double(name="Double") > sink
        summary = await Pipeline(src).run()
        assert sink.items == [2 * i for i in range(1000)]
        assert summary["Double"].items_in == 1000
        assert summary["Double"].items_out == 1000
        assert summary[src.name].items_out == 1000
        assert summary[sink.name].items_in == 1000
        assert summary.status == "finished"

    @pytest.mark.parametrize(
        "style", ["function", "generator", "async_function", "async_generator"]
    )
    async def test_processor_styles(self, style: str) -> None:
        """process_item may be a function, generator, async function or async generator."""
        namespace: dict[str, Any] = {}
        code = {
            "function": (
                "def process_item(self, item):\n    return None if item % 3 == 0 else item\n"
            ),
            "generator": "def process_item(self, item):\n    if item % 3:\n        yield item\n",
            "async_function": (
                "async def process_item(self, item):\n"
                "    await trio.sleep(0)\n    return None if item % 3 == 0 else item\n"
            ),
            "async_generator": (
                "async def process_item(self, item):\n"
                "    if item % 3:\n        await trio.sleep(0)\n        yield item\n"
            ),
        }[style]
        exec(code, {"trio": trio}, namespace)
        node_class = type(f"Drop3{style}", (NanoNode,), namespace)
        src, sink = Numbers(10), Collect()
        src > node_class() > sink
        await Pipeline(src).run()
        assert sink.items == [1, 2, 4, 5, 7, 8]

    async def test_many_outputs_per_input(self) -> None:
        """A generator may yield several outputs per input, all delivered in order."""

        class Repeat(NanoNode):
            def process_item(self, item: int):  # type: ignore[no-untyped-def]
                for _ in range(item):
                    yield item

        src, sink = Numbers(4), Collect()
        src > Repeat() > sink
        await Pipeline(src).run()
        assert sink.items == [1, 2, 2, 3, 3, 3]

    @pytest.mark.parametrize("style", ["sync_generator", "function", "async_function"])
    async def test_source_styles(self, style: str) -> None:
        """generator() may be a sync generator, or a sync or async function returning items."""
        code = {
            "sync_generator": "def generator(self):\n    yield from ['a', 'b', 'c']\n",
            "function": "def generator(self):\n    return ['a', 'b', 'c']\n",
            "async_function": "async def generator(self):\n    return ['a', 'b', 'c']\n",
        }[style]
        namespace: dict[str, Any] = {}
        exec(code, {}, namespace)
        source_class = type(f"Letters{style}", (NanoNode,), namespace)
        src, sink = source_class(), Collect()
        src > sink
        await Pipeline(src).run()
        assert sink.items == ["a", "b", "c"]

    async def test_fan_out_copies(self) -> None:
        """With a > b and a > c, b and c each receive every item."""
        src, left, right = Numbers(300), Collect(), Collect()
        src > [left, right]
        await Pipeline(src).run()
        assert left.items == right.items == list(range(300))

    async def test_fan_in_ends_after_all_upstreams(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """c receives both streams, each in order, and ends only after the slower one ends."""
        fast, slow, sink = Numbers(3, interval=1), Numbers(3, interval=10), Collect()
        fast > sink
        slow > sink
        start = trio.current_time()
        summary = await Pipeline(sink).run()
        assert sorted(sink.items) == [0, 0, 1, 1, 2, 2]
        assert sink.times[-1] - start == 30
        assert summary.elapsed == 30
        assert summary[sink.name].items_in == 6

    async def test_run_twice(self) -> None:
        """A finished pipeline can run again with fresh edges."""
        src, sink = Numbers(5), Collect()
        src > sink
        pipeline = Pipeline(src)
        await pipeline.run()
        await pipeline.run()
        assert sink.items == [*range(5), *range(5)]

    async def test_running_twice_at_once(self) -> None:
        """Starting a pipeline that is running raises PipelineStateError."""
        src, sink = Numbers(5, interval=1), Collect()
        src > sink
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            with pytest.raises(PipelineStateError, match="already running"):
                await pipeline.run()
            pipeline.cancel()


class TestBackPressure:
    async def test_bound_holds_with_slow_sink(self, autojump_clock: trio.testing.MockClock) -> None:
        """Emitted minus consumed never exceeds the path's capacities plus the items in hand."""
        src = Numbers(500)
        mid = Double(capacity=4)
        sink = Collect(delay=1.0, capacity=8)
        src > mid > sink
        worst = 0

        async def watch() -> None:
            nonlocal worst
            while True:
                worst = max(worst, src.emitted - len(sink.items))
                await trio.sleep(0.5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            summary = await Pipeline(src).run()
            nursery.cancel_scope.cancel()
        # capacities 4 + 8, plus in hand: one item in the source, a batch in mid
        # (at most its capacity), the batch the sink took (at most its capacity).
        assert worst <= (4 + 8) + 1 + 4 + 8
        assert worst >= 12  # the edges really filled up
        assert sink.items == [2 * i for i in range(500)]
        assert summary[mid.name].inbox_peak <= 4
        assert summary[sink.name].inbox_peak <= 8
        assert summary[mid.name].blocked_seconds > 0

    async def test_memory_is_flat_for_long_input(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """However long the input, no inbox grows past its capacity."""
        src = Numbers(20_000)
        sink = Collect(delay=0.001, capacity=16)
        src > Double(capacity=16) > sink
        summary = await Pipeline(src).run()
        assert all(s.inbox_peak <= 16 for s in summary.nodes.values())
        assert len(sink.items) == 20_000


class TestThreads:
    async def test_blocking_source_does_not_stall(self) -> None:
        """A sync generator calling time.sleep runs in a thread; another task keeps running."""
        release = threading.Event()

        class Blocking(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                yield "first"
                # Blocks this worker thread until the Trio side has shown it is alive.
                assert release.wait(timeout=10)
                time.sleep(0.01)
                yield "second"

        src, sink = Blocking(), Collect()
        src > sink
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 20:
                    release.set()
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            with trio.fail_after(10):
                await Pipeline(src).run()
            nursery.cancel_scope.cancel()
        assert sink.items == ["first", "second"]
        assert ticks >= 20
        assert not [t for t in threading.enumerate() if t.name.startswith("nanostream-")]

    async def test_blocking_process_item_in_thread(self) -> None:
        """blocking=True runs a sync process_item in a named worker thread, joined at the end."""
        seen_threads: set[str] = set()

        class Lookup(NanoNode):
            def process_item(self, item: int) -> int:
                seen_threads.add(threading.current_thread().name)
                time.sleep(0.001)
                return item + 100

        src, sink = Numbers(5), Collect()
        src > Lookup(blocking=True) > sink
        await Pipeline(src).run()
        assert sink.items == [100, 101, 102, 103, 104]
        assert seen_threads == {"nanostream-Lookup"}
        assert not [t for t in threading.enumerate() if t.name.startswith("nanostream-")]

    async def test_back_pressure_reaches_thread(self) -> None:
        """A sync source thread never runs further ahead of a slow sink than the bounds allow."""
        # The sink's batch in hand (10) + its inbox (10) + the source's batch in hand
        # (at most a full hand-off) + the thread hand-off + the one item in the
        # thread; the hand-off holds THREAD_HANDOFF_FACTOR inboxes' worth.
        handoff = _runtime.THREAD_HANDOFF_FACTOR * 10
        bound = 10 + 10 + handoff + handoff + 1
        consumed = 0
        widest = 0

        class Fast(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                nonlocal widest
                for i in range(3 * bound):
                    # Checked in the thread on every item: a failure fails the run.
                    ahead = i + 1 - consumed
                    widest = max(widest, ahead)
                    assert ahead <= bound, f"thread ran {ahead} items ahead (bound {bound})"
                    yield i

        class Slow(NanoNode):
            async def process_item(self, item: int) -> None:
                nonlocal consumed
                consumed += 1
                await trio.sleep(0.0002)  # a slow sink (the subject), not synchronisation

        src = Fast()
        src > Slow(capacity=10)
        with trio.fail_after(30):
            summary = await Pipeline(src).run()
        assert consumed == summary[src.name].items_out == 3 * bound
        # The thread really was held back, not merely slow: it got close to the bound.
        assert widest > bound // 2, widest


class TestStopAndCancel:
    async def test_stop_loses_nothing_emitted(self, autojump_clock: trio.testing.MockClock) -> None:
        """pipeline.stop() stops the source; every item it emitted reaches the sink."""
        src = Numbers(1_000_000, interval=0.01)
        sink = Collect(delay=0.5, capacity=50)
        src > Double(capacity=50) > sink
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await trio.sleep(5)
            pipeline.stop()
        assert 0 < src.emitted < 1_000_000
        assert sink.items == [2 * i for i in range(src.emitted)]
        assert pipeline.status == "finished"

    async def test_stop_threaded_source(self) -> None:
        """stop() also ends a sync source running in a thread, and joins the thread."""

        class Endless(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                i = 0
                while True:
                    yield i
                    i += 1

        class StopAt100(Collect):
            def __init__(self, pipeline_box: list[Pipeline], **kwargs: Any) -> None:
                self.pipeline_box = pipeline_box
                super().__init__(**kwargs)

            async def process_item(self, item: Any) -> None:
                await super().process_item(item)
                if len(self.items) == 100:
                    self.pipeline_box[0].stop()

        box: list[Pipeline] = []
        src, sink = Endless(), StopAt100(box, capacity=4)
        src > sink
        pipeline = Pipeline(src)
        box.append(pipeline)
        with trio.fail_after(10):
            await pipeline.run()
        assert len(sink.items) >= 100
        summary = pipeline.statistics()
        assert sink.items == list(range(len(sink.items)))
        assert summary[src.name].items_out == len(sink.items)
        assert not [t for t in threading.enumerate() if t.name.startswith("nanostream-")]

    async def test_rerun_after_stop(self, autojump_clock: trio.testing.MockClock) -> None:
        """A stop() ends the run it was meant for; the next run goes to the end."""
        src, sink = Numbers(5, interval=1), Collect()
        src > sink
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await trio.sleep(2.5)
            pipeline.stop()
        assert sink.items == [0, 1]
        sink.items.clear()
        await pipeline.run()
        assert sink.items == [0, 1, 2, 3, 4]

    async def test_cancel_before_run(self) -> None:
        """cancel() before run() makes that run end at once, cancelled; the next one is normal."""
        src, sink = Numbers(3), Collect()
        src > sink
        pipeline = Pipeline(src)
        pipeline.cancel()
        summary = await pipeline.run()
        assert summary.status == "cancelled"
        assert sink.items == []
        await pipeline.run()
        assert sink.items == [0, 1, 2]

    async def test_stop_before_run(self) -> None:
        """stop() before run() makes the run end at once without items."""
        src, sink = Numbers(10, interval=1), Collect()
        src > sink
        pipeline = Pipeline(src)
        pipeline.stop()
        with trio.fail_after(5):
            await pipeline.run()
        assert sink.items == []

    async def test_outside_cancel_is_prompt_and_joins_threads(self) -> None:
        """A cancel from outside ends the run promptly and leaves no worker threads."""
        started = threading.Event()

        class Endless(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                started.set()
                while True:
                    yield 1

        class Slow(NanoNode):
            def process_item(self, item: int) -> None:
                time.sleep(0.001)

        src = Endless()
        src > Slow(blocking=True)
        # fail_after turns a hang (a thread never told to stop) into a failure;
        # the cancel should land within one 1 ms item after the 0.2 s deadline.
        with trio.fail_after(10), trio.move_on_after(0.2) as scope:
            await Pipeline(src).run()
        assert scope.cancelled_caught
        assert started.is_set()
        assert not [t for t in threading.enumerate() if t.name.startswith("nanostream-")]

    async def test_cancel_method(self, autojump_clock: trio.testing.MockClock) -> None:
        """pipeline.cancel() ends the run now; run() returns with status 'cancelled'."""
        src, sink = Numbers(100, interval=1), Collect()
        src > sink
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await trio.sleep(10.5)
            pipeline.cancel()
        assert pipeline.status == "cancelled"
        assert len(sink.items) == 10

    async def test_nursery_start_returns_when_ready(self) -> None:
        """nursery.start(pipeline.run) returns after every node's setup has run."""
        opened: list[str] = []

        class Opening(NanoNode):
            async def setup(self) -> None:
                await trio.sleep(0.01)
                opened.append("source")

            async def generator(self):  # type: ignore[no-untyped-def]
                await trio.sleep_forever()
                yield  # pragma: no cover

        class Sink(NanoNode):
            def setup(self) -> None:
                opened.append("sink")

            def process_item(self, item: object) -> None: ...

        src = Opening()
        src > Sink()
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            assert sorted(opened) == ["sink", "source"]
            pipeline.stop()

    async def test_teardown_runs_on_failure(self) -> None:
        """teardown runs however the node ends, failure included."""
        closed: list[str] = []

        class Boom(NanoNode):
            def process_item(self, item: int) -> None:
                raise RuntimeError("boom")

            def teardown(self) -> None:
                closed.append("boom")

        src = Numbers(3)
        src > Boom()
        with pytest.raises(RuntimeError, match="boom"):
            await Pipeline(src).run()
        assert closed == ["boom"]


class TestFinish:
    @pytest.mark.parametrize(
        ("style", "blocking"),
        [
            ("function", False),
            ("function", True),
            ("generator", False),
            ("generator", True),
            ("async_function", False),
            ("async_generator", False),
        ],
    )
    async def test_finish_emits_after_last_item(self, style: str, blocking: bool) -> None:
        """finish() runs once after the input ends; what it returns or yields goes downstream."""
        code = {
            "function": "def finish(self):\n    return ('total', sum(self.seen))\n",
            "generator": (
                "def finish(self):\n    yield ('total', sum(self.seen))\n"
                "    yield ('n', len(self.seen))\n"
            ),
            "async_function": (
                "async def finish(self):\n    await trio.sleep(0)\n"
                "    return ('total', sum(self.seen))\n"
            ),
            "async_generator": (
                "async def finish(self):\n    await trio.sleep(0)\n"
                "    yield ('total', sum(self.seen))\n    yield ('n', len(self.seen))\n"
            ),
        }[style]
        namespace: dict[str, Any] = {}
        exec(code, {"trio": trio}, namespace)

        def process_item(self: Any, item: int) -> int:
            self.seen.append(item)
            return item

        def init(self: Any, **kwargs: Any) -> None:
            self.seen = []
            NanoNode.__init__(self, **kwargs)

        node_class = type(
            f"Totals{style}",
            (NanoNode,),
            {"__init__": init, "process_item": process_item, **namespace},
        )
        src, sink = Numbers(5), Collect()
        totals = node_class(blocking=blocking)
        src > totals > sink
        summary = await Pipeline(src).run()
        expected_tail = [("total", 10)] + ([("n", 5)] if "generator" in style else [])
        assert sink.items == [0, 1, 2, 3, 4, *expected_tail]
        assert summary[totals.name].items_out == 5 + len(expected_tail)

    async def test_finish_not_fused_and_in_order(self) -> None:
        """A function node with finish() in a chain of function nodes still flushes in order."""

        class Count(NanoNode):
            def __init__(self) -> None:
                self.n = 0
                super().__init__()

            def process_item(self, item: int) -> int:
                self.n += 1
                return item

            def finish(self) -> str:
                return f"count={self.n}"

        class Tag(NanoNode):
            def process_item(self, item: object) -> str:
                return f"<{item}>"

        src, sink = Numbers(3), Collect()
        src > Double() > Count() > Tag() > sink
        await Pipeline(src).run()
        assert sink.items == ["<0>", "<2>", "<4>", "<count=3>"]

    async def test_finish_failure_names_node(self) -> None:
        """An exception in finish() fails the run with a note naming the node."""

        class Bad(NanoNode):
            def process_item(self, item: int) -> None: ...

            def finish(self) -> None:
                raise RuntimeError("flush failed")

        src = Numbers(2)
        src > Bad(name="bad", on_error="skip")
        with pytest.raises(RuntimeError, match="flush failed") as info:
            await Pipeline(src).run()
        assert info.value.__notes__ == ["in nanostream node 'bad', in finish()"]

    async def test_finish_not_called_after_failure(self) -> None:
        """finish() does not run when the pipeline fails."""
        finished: list[str] = []

        class Watch(NanoNode):
            def process_item(self, item: int) -> None:
                if item == 1:
                    raise ValueError("one")

            def finish(self) -> None:
                finished.append("called")

        src = Numbers(3)
        src > Watch()
        with pytest.raises(ValueError, match="one"):
            await Pipeline(src).run()
        assert finished == []

    def test_source_with_finish_is_refused(self) -> None:
        """A source cannot define finish(); the message says what to do instead."""
        from nanostream_trio import NodeDefinitionError

        with pytest.raises(NodeDefinitionError, match="yields its last items"):

            class Both(NanoNode):
                def generator(self):  # type: ignore[no-untyped-def]
                    yield 1

                def finish(self) -> None: ...


class TestManyOutputsPerItem:
    @pytest.mark.parametrize(
        "settings",
        [{"blocking": True}, {"on_error": "skip"}, {"on_error": "retry"}, {}],
        ids=["blocking", "skip", "retry", "raise"],
    )
    async def test_one_item_with_many_outputs_streams(self, settings: dict[str, Any]) -> None:
        """A generator yielding 20,000 outputs for one input never runs far ahead of the sink."""
        produced = consumed = widest = 0

        class Explode(NanoNode):
            def process_item(self, item: int):  # type: ignore[no-untyped-def]
                nonlocal produced, widest
                for i in range(20_000):
                    produced += 1
                    widest = max(widest, produced - consumed)
                    yield i

        class Count(NanoNode):
            def process_item(self, item: int) -> None:
                nonlocal consumed
                consumed += 1

        src = Numbers(1)
        src > Explode(**settings) > Count(capacity=16)
        with trio.fail_after(30):
            await Pipeline(src).run()
        assert consumed == 20_000
        # inbox 16 + the sink's batch 16 + at most two held chunks of 16 + one in hand
        assert widest <= 16 * 4 + 1

    async def test_retry_after_release_is_not_retried(self) -> None:
        """An item that fails after releasing outputs is dead-lettered at once, with a note."""
        attempts = 0

        class Explode(NanoNode):
            def process_item(self, item: int):  # type: ignore[no-untyped-def]
                nonlocal attempts
                attempts += 1
                yield from range(100)
                raise ValueError("late failure")

        src, sink, dead = Numbers(1), Collect(capacity=10), Collect()
        explode = Explode(on_error="retry")
        src > explode > sink
        explode.dead_letters > dead
        await Pipeline(src).run()
        assert attempts == 1
        [record] = dead.items
        assert record.attempts == 1
        assert len(sink.items) >= 10  # released outputs stand


async def cancelled_run_events(node: NanoNode, after: float, limit: float) -> list[Any]:
    """Run the pipeline, cancel it after ``after`` s; its events (failing if over ``limit`` s)."""
    with capture_logs() as events, trio.fail_after(limit):
        with trio.move_on_after(after):
            await Pipeline(node).run()
    return events


def join_left_behind(name: str) -> None:
    """Join a thread the engine left behind, now that its blocking call was let go."""
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(timeout=10)
            assert not thread.is_alive()


class TestStuckThreads:
    async def test_cancel_leaves_a_stuck_source_thread_after_grace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cancel waits CANCEL_GRACE real seconds for a stuck thread, then says it left it."""
        from nanostream_trio import _threads

        monkeypatch.setattr(_threads, "CANCEL_GRACE", 0.2)
        release = threading.Event()

        class Stuck(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                yield 1
                release.wait()  # blocks until the test lets it go
                yield 2

        src = Stuck(name="stuck")
        src > Collect()
        try:
            events = await cancelled_run_events(src, after=0.1, limit=10)
            [event] = [e for e in events if e["event"] == "thread_abandoned"]
            assert (event["node"], event["thread"], event["grace"]) == (
                "stuck",
                "nanostream-stuck",
                0.2,
            )
        finally:
            release.set()
        join_left_behind("nanostream-stuck")

    async def test_cancel_leaves_a_stuck_blocking_call_after_grace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Also for a blocking=True process_item stuck in its call."""
        from nanostream_trio import _threads

        monkeypatch.setattr(_threads, "CANCEL_GRACE", 0.2)
        release = threading.Event()

        class Stuck(NanoNode):
            def process_item(self, item: int) -> None:
                release.wait()

        src = Numbers(1)
        src > Stuck(name="stuck", blocking=True)
        try:
            events = await cancelled_run_events(src, after=0.1, limit=10)
            assert [e["node"] for e in events if e["event"] == "thread_abandoned"] == ["stuck"]
        finally:
            release.set()
        # Let go, the abandoned worker finishes its call and exits by itself.
        join_left_behind("nanostream-stuck")

    async def test_call_returning_within_grace_is_joined(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A call that returns within the grace period is waited for and joined: no event."""
        from nanostream_trio import _threads

        monkeypatch.setattr(_threads, "CANCEL_GRACE", 30.0)

        class Briefly(NanoNode):
            def process_item(self, item: int) -> None:
                time.sleep(0.3)

        src = Numbers(1)
        src > Briefly(blocking=True)
        events = await cancelled_run_events(src, after=0.1, limit=20)
        assert [e for e in events if e["event"] == "thread_abandoned"] == []
        assert not [t for t in threading.enumerate() if t.name.startswith("nanostream-")]


class TestOnSuccess:
    async def test_called_after_everything_drained(self) -> None:
        """on_success runs once per node, upstream first, after the sink got every item."""
        calls: list[tuple[str, int]] = []
        sink = Collect(name="sink")

        class Src(NanoNode):
            async def generator(self):  # type: ignore[no-untyped-def]
                for i in range(3):
                    yield i

            def on_success(self) -> None:
                calls.append(("src", len(sink.items)))

        class Mid(NanoNode):
            async def process_item(self, item: int) -> int:
                return item

            async def on_success(self) -> None:
                calls.append(("mid", len(sink.items)))

        src = Src(name="src")
        src > Mid(name="mid") > sink
        await Pipeline(src).run()
        assert calls == [("src", 3), ("mid", 3)]

    async def test_called_after_graceful_stop(self, autojump_clock: trio.testing.MockClock) -> None:
        """A pipeline.stop() that drains counts as success."""
        called: list[bool] = []

        class Ticker(Numbers):
            def on_success(self) -> None:
                called.append(True)

        src = Ticker(100, interval=1)
        src > Collect()
        pipeline = Pipeline(src)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await trio.sleep(3.5)
            pipeline.stop()
        assert called == [True]

    async def test_not_called_after_failure_or_cancel(self) -> None:
        """A failed or cancelled run calls no on_success hook."""
        called: list[str] = []

        class Src(Numbers):
            def on_success(self) -> None:
                called.append("src")

        class Boom(NanoNode):
            def process_item(self, item: int) -> None:
                raise RuntimeError("boom")

        src = Src(3)
        src > Boom()
        with pytest.raises(RuntimeError):
            await Pipeline(src).run()
        cancelled = Src(3, interval=1)
        cancelled > Collect()
        pipeline = Pipeline(cancelled)
        pipeline.cancel()
        await pipeline.run()
        assert called == []

    async def test_failure_in_on_success_fails_the_run(self) -> None:
        """An exception in on_success fails the run, with a note naming the node."""

        class Src(Numbers):
            def on_success(self) -> None:
                raise OSError("commit failed")

        src = Src(2, name="src")
        src > Collect()
        pipeline = Pipeline(src)
        with pytest.raises(OSError, match="commit failed") as info:
            await pipeline.run()
        assert info.value.__notes__ == ["in nanostream node 'src', in on_success()"]
        assert pipeline.status == "failed"
        assert pipeline.statistics()["src"].status == "failed"
