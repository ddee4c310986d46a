"""Error policies: raise, skip, retry, dead letters; and the events that record them."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from nanostream_trio import ConfigError, DeadLetter, NanoNode, Pipeline, Retry


class Items(NanoNode):
    def __init__(self, items: list[Any], **kwargs: Any) -> None:
        self.items = items
        super().__init__(**kwargs)

    async def generator(self):  # type: ignore[no-untyped-def]
        for item in self.items:
            yield item


class Collect(NanoNode):
    def __init__(self, **kwargs: Any) -> None:
        self.items: list[Any] = []
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> None:
        self.items.append(item)


class Invert(NanoNode):
    """1/x: fails with ZeroDivisionError on 0."""

    def process_item(self, item: int) -> float:
        return 1 / item


class Flaky(NanoNode):
    """Fails the first `failures` attempts of each item, recording attempt times."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        self.failures = failures
        self.attempts: dict[Any, list[float]] = {}
        super().__init__(**kwargs)

    async def process_item(self, item: Any) -> Any:
        times = self.attempts.setdefault(item, [])
        times.append(trio.current_time())
        if len(times) <= self.failures:
            raise ConnectionError(f"attempt {len(times)} failed for {item}")
        return item


class TestRaise:
    async def test_keeps_type_and_names_node_and_item(self) -> None:
        """The default policy cancels the pipeline; run() raises the original type with a note."""
        src, sink = Items([1, 2, 0, 4]), Collect()
        src > Invert(name="invert") > sink
        with pytest.raises(ZeroDivisionError) as info:
            await Pipeline(src).run()
        assert info.value.__notes__ == ["in nanostream node 'invert', processing item 0"]
        # Prompt cancellation: the sink may not even have run; it never sees item 4's output.
        assert 0.25 not in sink.items

    async def test_source_failure_raises(self) -> None:
        """A failing source does not hang the pipeline: run() raises its exception."""

        class Broken(NanoNode):
            def generator(self):  # type: ignore[no-untyped-def]
                yield 1
                raise OSError("disk gone")

        src, sink = Broken(), Collect()
        src > sink
        with trio.fail_after(10), pytest.raises(OSError, match="disk gone"):
            await Pipeline(src).run()

    async def test_cancels_other_nodes_promptly(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When one branch fails, a slow sibling is cancelled rather than waited for."""

        class Forever(NanoNode):
            async def generator(self):  # type: ignore[no-untyped-def]
                while True:
                    await trio.sleep(1)
                    yield 1

        slow = Forever()
        slow > Collect()
        failing = Items([0])
        failing > Invert()
        failing > Collect()
        # One pipeline from two disconnected graphs.
        pipeline = Pipeline(slow, failing)
        with pytest.raises(ZeroDivisionError):
            await pipeline.run()
        assert trio.current_time() < 1
        assert pipeline.status == "failed"

    async def test_long_item_repr_is_shortened(self) -> None:
        """The note's item repr is cut short for huge items."""

        class Fail(NanoNode):
            def process_item(self, item: str) -> None:
                raise ValueError("no")

        src = Items(["x" * 10_000])
        src > Fail(name="fail")
        with pytest.raises(ValueError, match="no") as info:
            await Pipeline(src).run()
        assert len(info.value.__notes__[0]) < 150


class TestSkip:
    async def test_skips_records_and_counts(self) -> None:
        """Bad items are dropped, each recorded by an item_skipped event with a traceback."""
        src, sink = Items([1, 0, 2, 0, 4]), Collect()
        src > Invert(name="invert", on_error="skip") > sink
        with capture_logs() as events:
            summary = await Pipeline(src).run()
        assert sink.items == [1.0, 0.5, 0.25]
        assert summary["invert"].skipped == 2
        assert summary["invert"].items_in == 5
        skipped = [e for e in events if e["event"] == "item_skipped"]
        assert len(skipped) == 2
        assert skipped[0]["node"] == "invert"
        assert skipped[0]["item"] == "0"
        assert skipped[0]["exc_type"] == "ZeroDivisionError"
        assert "ZeroDivisionError: division by zero" in skipped[0]["traceback"]
        assert skipped[0]["log_level"] == "warning"

    async def test_partial_outputs_are_not_emitted(self) -> None:
        """An item that fails midway through a generator emits none of its outputs."""

        class Half(NanoNode):
            def process_item(self, item: int):  # type: ignore[no-untyped-def]
                yield f"{item}a"
                if item == 2:
                    raise ValueError("bad 2")
                yield f"{item}b"

        src, sink = Items([1, 2, 3]), Collect()
        src > Half(on_error="skip") > sink
        await Pipeline(src).run()
        assert sink.items == ["1a", "1b", "3a", "3b"]


class TestRetry:
    async def test_backoff_on_trio_clock(self, autojump_clock: trio.testing.MockClock) -> None:
        """Retries wait backoff * factor**n on the Trio clock, then succeed."""
        flaky = Flaky(2, on_error="retry", retry=Retry(attempts=3, backoff=1.0, factor=3.0))
        src, sink = Items(["a"]), Collect()
        src > flaky > sink
        start = trio.current_time()
        with capture_logs() as events:
            summary = await Pipeline(src).run()
        assert sink.items == ["a"]
        assert [t - start for t in flaky.attempts["a"]] == [0.0, 1.0, 4.0]
        assert summary[flaky.name].retried == 2
        retried = [e for e in events if e["event"] == "item_retried"]
        assert [(e["attempt"], e["delay"]) for e in retried] == [(1, 1.0), (2, 3.0)]

    async def test_exhausted_raises(self, autojump_clock: trio.testing.MockClock) -> None:
        """When attempts run out and no dead-letter port is linked, the last error is raised."""
        flaky = Flaky(5, name="flaky", on_error="retry", retry=Retry(attempts=2, backoff=0.5))
        src = Items(["a"])
        src > flaky
        with pytest.raises(ConnectionError, match="attempt 2 failed") as info:
            await Pipeline(src).run()
        assert "gave up after 2 attempts" in info.value.__notes__
        assert "in nanostream node 'flaky', processing item 'a'" in info.value.__notes__

    async def test_exhausted_dead_letters(self, autojump_clock: trio.testing.MockClock) -> None:
        """When attempts run out and dead_letters is linked, the item is dead-lettered."""
        flaky = Flaky(9, name="flaky", on_error="retry", retry=Retry(attempts=3, backoff=0.25))
        src, sink, dead = Items(["a"]), Collect(), Collect()
        src > flaky > sink
        flaky.dead_letters > dead
        await Pipeline(src).run()
        assert sink.items == []
        [record] = dead.items
        assert record.attempts == 3
        assert record.time == 0.75


class TestDeadLetters:
    async def test_record_fields(self, autojump_clock: trio.testing.MockClock) -> None:
        """The dead-letter record carries item, node, type, message, traceback, attempts, time."""
        src, sink, dead = Items([2, 0, 4]), Collect(), Collect()
        invert = Invert(name="invert")
        src > invert > sink
        invert.dead_letters > dead
        await trio.sleep(7)
        with capture_logs() as events:
            summary = await Pipeline(src).run()
        assert sink.items == [0.5, 0.25]
        [record] = dead.items
        assert isinstance(record, DeadLetter)
        assert record.item == 0
        assert record.node == "invert"
        assert record.exc_type == "ZeroDivisionError"
        assert record.message == "division by zero"
        assert "Traceback" in record.traceback
        assert "1 / item" in record.traceback
        assert record.attempts == 1
        assert record.time == 7.0
        assert summary["invert"].dead_lettered == 1
        [event] = [e for e in events if e["event"] == "item_dead_lettered"]
        assert (event["node"], event["item"], event["attempts"]) == ("invert", "0", 1)

    async def test_nothing_silently_lost(self) -> None:
        """Every input is processed, dead-lettered or skipped: the counts add up."""
        items = [i % 7 for i in range(700)]
        src, sink, dead = Items(items), Collect(), Collect()
        invert = Invert(name="invert")
        src > invert > sink
        invert.dead_letters > dead
        summary = await Pipeline(src).run()
        stats = summary["invert"]
        assert stats.items_in == 700
        assert stats.items_out + stats.dead_lettered + stats.skipped == 700
        assert len(dead.items) == 100


class TestEvents:
    async def test_vocabulary_and_fields(self, autojump_clock: trio.testing.MockClock) -> None:
        """A run emits the documented events, each bound to pipeline and node, with their fields."""

        class Slow(NanoNode):
            async def process_item(self, item: int) -> int:
                await trio.sleep(4.5)
                return item

        src, sink = Items(list(range(5))), Collect()
        src > Slow(name="slow") > sink
        pipeline = Pipeline(src, name="demo", stats_interval=5, stall_timeout=3)
        with capture_logs() as events:
            await pipeline.run()
        names = [e["event"] for e in events]
        assert names[0] == "pipeline_started"
        assert names[-1] == "pipeline_finished"
        assert {"node_started", "node_finished", "pipeline_stats"} <= set(names)
        assert all(e["pipeline"] == "demo" for e in events)
        started = events[0]
        assert started["nodes"] == [src.name, "slow", sink.name]
        stats = [e for e in events if e["event"] == "pipeline_stats"]
        assert [e["elapsed"] for e in stats] == [5.0, 10.0, 15.0, 20.0]
        slow_stats = stats[0]["nodes"]["slow"]
        assert {
            "items_in",
            "items_out",
            "rate",
            "inbox_queued",
            "inbox_capacity",
            "blocked_seconds",
        } <= set(slow_stats)
        stalled = [e for e in events if e["event"] == "node_stalled"]
        # "slow" takes all five items in one batch, so its inbox is empty: not stalled.
        assert stalled == []
        per_node = [e for e in events if e["event"] in ("node_started", "node_finished")]
        assert {(e["event"], e["node"]) for e in per_node} == {
            (event, node)
            for event in ("node_started", "node_finished")
            for node in (src.name, "slow", sink.name)
        }
        roles = {e["node"]: e["role"] for e in per_node if e["event"] == "node_started"}
        assert roles == {src.name: "source", "slow": "processor", sink.name: "sink"}
        slow_finished = next(
            e for e in per_node if e["event"] == "node_finished" and e["node"] == "slow"
        )
        assert slow_finished["items_in"] == slow_finished["items_out"] == 5
        assert {"skipped", "dead_lettered", "elapsed"} <= set(slow_finished)
        finished = events[-1]
        assert finished["status"] == "finished"
        assert finished["elapsed"] == 22.5
        assert finished["nodes"]["slow"]["items_out"] == 5

    async def test_node_stalled(self, autojump_clock: trio.testing.MockClock) -> None:
        """node_stalled fires when an inbox holds items and the node takes none for the timeout."""
        gate = trio.Event()

        class Stuck(NanoNode):
            async def process_item(self, item: int) -> None:
                await gate.wait()

        src = Items([1, 2, 3])
        stuck = Stuck(name="stuck", capacity=1)
        src > stuck
        pipeline = Pipeline(src, stats_interval=None, stall_timeout=10)
        with capture_logs() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline.run)
                await trio.sleep(25)
                gate.set()
        stalled = [e for e in events if e["event"] == "node_stalled"]
        assert len(stalled) == 1
        assert stalled[0]["node"] == "stuck"
        assert stalled[0]["inbox_queued"] == 1
        assert stalled[0]["seconds"] == 10.0

    async def test_slow_but_moving_is_not_stalled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A node taking 1 s per item, and the node it holds back, are not reported as stalled."""

        class Slow(NanoNode):
            async def process_item(self, item: int) -> None:
                await trio.sleep(1)

        class Relay(NanoNode):
            async def process_item(self, item: int) -> int:
                return item

        # "slow" takes batches of up to 64 items: 64 s of work per batch, more
        # than the stall timeout; "relay" waits for room in front of it.
        src = Items(list(range(1, 301)))
        src > Relay(name="relay", capacity=8) > Slow(name="slow", capacity=64)
        pipeline = Pipeline(src, stats_interval=None, stall_timeout=30)
        with capture_logs() as events:
            await pipeline.run()
        assert trio.current_time() >= 300
        assert [e for e in events if e["event"] == "node_stalled"] == []

    async def test_node_failed_event(self) -> None:
        """A failing node emits node_failed with the error, and pipeline_finished says failed."""
        src = Items([0])
        src > Invert(name="invert")
        with capture_logs() as events, pytest.raises(ZeroDivisionError):
            await Pipeline(src).run()
        [failed] = [e for e in events if e["event"] == "node_failed"]
        assert failed["node"] == "invert"
        assert failed["exc_type"] == "ZeroDivisionError"
        assert events[-1]["event"] == "pipeline_finished"
        assert events[-1]["status"] == "failed"

    async def test_node_log_event(self) -> None:
        """node.log_event() during a run is bound to pipeline and node like engine events."""

        class Noisy(NanoNode):
            def process_item(self, item: int) -> int:
                self.log_event("item_inspected", level="warning", value=item)
                return item

        src = Items([5])
        noisy = Noisy(name="noisy")
        src > noisy > Collect()
        with capture_logs() as events:
            await Pipeline(src, name="p").run()
            noisy.log_event("after_run")
        inspected = [e for e in events if e["event"] == "item_inspected"]
        assert inspected == [
            {
                "event": "item_inspected",
                "log_level": "warning",
                "pipeline": "p",
                "node": "noisy",
                "value": 5,
            }
        ]
        after = [e for e in events if e["event"] == "after_run"]
        assert after == [{"event": "after_run", "log_level": "info", "node": "noisy"}]
        with pytest.raises(ConfigError, match="got 'loud'"):
            noisy.log_event("x", level="loud")

    async def test_custom_logger(self) -> None:
        """Events go to the logger given to Pipeline, bound with the pipeline name."""
        src = Items([1])
        src > Collect()
        with capture_logs() as events:
            logger = structlog.get_logger("mine").bind(run_id=7)
            await Pipeline(src, logger=logger, name="p").run()
        assert events
        assert all(e["run_id"] == 7 and e["pipeline"] == "p" for e in events)

    async def test_statistics_snapshot_is_frozen(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """pipeline.statistics() is a frozen snapshot that does not change afterwards."""
        src, sink = Items(list(range(10))), Collect()
        src > sink
        pipeline = Pipeline(src)
        before = pipeline.statistics()
        await pipeline.run()
        after = pipeline.statistics()
        assert before[sink.name].items_in == 0
        assert before.status == "pending"
        assert after[sink.name].items_in == 10
        assert after.status == "finished"
        with pytest.raises(AttributeError):
            after.status = "x"  # type: ignore[misc]


class TestFailureStatus:
    async def test_downstream_of_failure_is_cancelled_not_finished(self) -> None:
        """Nodes after a failed node end as cancelled, without node_finished or a clean teardown."""
        torn_down: list[bool] = []

        class Sink(NanoNode):
            def process_item(self, item: Any) -> None: ...

            def teardown(self) -> None:
                torn_down.append(True)

        src, sink = Items(["x"]), Sink(name="sink")
        src > Invert(name="invert") > sink
        pipeline = Pipeline(src)
        with capture_logs() as events, pytest.raises(TypeError):
            await pipeline.run()
        stats = pipeline.statistics()
        assert stats["invert"].status == "failed"
        assert stats["sink"].status == "cancelled"
        finished = [e["node"] for e in events if e["event"] == "node_finished"]
        assert "sink" not in finished
        assert torn_down == [True]  # teardown still runs, as it does however a node ends


class TestGlobalStart:
    def test_failure_raises_the_node_exception(self) -> None:
        """global_start() raises the failing node's own exception (not a group), with its note."""
        src = Items([1, 0])
        src > Invert(name="invert")
        with pytest.raises(ZeroDivisionError) as info:
            src.global_start()
        assert info.value.__notes__ == ["in nanostream node 'invert', processing item 0"]

    def test_success_returns_summary(self) -> None:
        """global_start() returns the final statistics."""
        src, sink = Items([1, 2]), Collect()
        src > sink
        summary = src.global_start()
        assert summary.status == "finished"
        assert sink.items == [1, 2]


class TestFailureNotes:
    async def test_source_failure_names_node(self) -> None:
        """A failing source's exception keeps its type and gets a note naming the node."""

        class Broken(NanoNode):
            async def generator(self):  # type: ignore[no-untyped-def]
                yield 1
                raise KeyError("gone")

        src = Broken(name="broken")
        src > Collect()
        with pytest.raises(KeyError) as info:
            await Pipeline(src).run()
        assert info.value.__notes__ == ["in nanostream node 'broken', in generator()"]

    async def test_setup_failure_names_node(self) -> None:
        """A failing setup() gets a note naming the node and the hook."""

        class Opener(NanoNode):
            def setup(self) -> None:
                raise FileNotFoundError("no such file: x.csv")

            def process_item(self, item: Any) -> None: ...

        src = Items([1])
        src > Opener(name="opener")
        with pytest.raises(FileNotFoundError) as info:
            await Pipeline(src).run()
        assert info.value.__notes__ == ["in nanostream node 'opener', in setup()"]

    async def test_teardown_failure_after_clean_run_fails(self) -> None:
        """A teardown() failure after a clean run fails the node: status, event and note."""

        class Closer(NanoNode):
            def process_item(self, item: Any) -> None: ...

            def teardown(self) -> None:
                raise OSError("flush failed")

        src = Items([1])
        src > Closer(name="closer")
        pipeline = Pipeline(src)
        with capture_logs() as events, pytest.raises(OSError, match="flush failed") as info:
            await pipeline.run()
        assert info.value.__notes__ == ["in nanostream node 'closer', in teardown()"]
        assert pipeline.statistics()["closer"].status == "failed"
        assert [e["node"] for e in events if e["event"] == "node_failed"] == ["closer"]

    async def test_teardown_failure_does_not_mask_the_real_one(self) -> None:
        """When a node fails and its teardown fails too, run() raises the first failure."""

        class Both(NanoNode):
            def process_item(self, item: Any) -> None:
                raise KeyError("real")

            def teardown(self) -> None:
                raise ConnectionError("secondary")

        src = Items([1])
        src > Both(name="both")
        with capture_logs() as events, pytest.raises(KeyError, match="real"):
            await Pipeline(src).run()
        [event] = [e for e in events if e["event"] == "teardown_failed"]
        assert event["node"] == "both"
        assert event["exc_type"] == "ConnectionError"
