"""Tests of the function-based transforms: Map, Filter, FlatMap, Dedupe, Throttle,
Batch and TumblingWindow. Time-based behaviour runs on the autojump fake clock."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from nanostream_trio import ConfigError, DeadLetter, NanoNode, Pipeline
from nanostream_trio.nodes import (
    Batch,
    Dedupe,
    Filter,
    FlatMap,
    LateItemError,
    Map,
    Throttle,
    TumblingWindow,
    WindowResult,
)


@dataclasses.dataclass
class Wait:
    """A pause in a ScriptedSource, in seconds of Trio time."""

    seconds: float


class ScriptedSource(NanoNode):
    def __init__(self, script: list[Any], name: str | None = None) -> None:
        super().__init__(name)
        self.script = script

    async def generator(self) -> Any:
        for step in self.script:
            if isinstance(step, Wait):
                await trio.sleep(step.seconds)
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


async def run_through(node: NanoNode, script: list[Any]) -> Recorder:
    source = ScriptedSource(script)
    sink = Recorder()
    source > node > sink
    await Pipeline(source).run()
    return sink


class TestMapFilterFlatMap:
    async def test_map_applies_the_function(self) -> None:
        """Map emits func(item) for each item, in order."""
        sink = await run_through(Map(lambda x: x * 10), [1, 2, 3])
        assert sink.items == [10, 20, 30]

    async def test_map_none_emits_nothing(self) -> None:
        """A None result from Map's function emits nothing."""
        sink = await run_through(Map(lambda x: x if x % 2 else None), [1, 2, 3])
        assert sink.items == [1, 3]

    async def test_filter_keeps_matching_items(self) -> None:
        """Filter passes exactly the items for which the predicate is true."""
        sink = await run_through(Filter(lambda x: x > 1), [0, 3, 1, 2])
        assert sink.items == [3, 2]

    async def test_flat_map_emits_each_element(self) -> None:
        """FlatMap emits every element of the returned iterables, in order."""
        sink = await run_through(FlatMap(lambda s: s.split()), ["a b", "", "c"])
        assert sink.items == ["a", "b", "c"]

    def test_map_and_filter_process_item_are_plain_functions(self) -> None:
        """Map and Filter use the engine's plain-function fast path (no generator)."""
        assert Map._ns_style == "function"
        assert Filter._ns_style == "function"

    async def test_failing_function_goes_through_skip_policy(self) -> None:
        """An item whose function raises is skipped alone; the others pass."""
        node = Map(lambda x: 10 // x, on_error="skip")
        sink = await run_through(node, [1, 0, 2])
        assert sink.items == [10, 5]

    async def test_failing_function_is_dead_lettered_with_item(self) -> None:
        """A dead letter from Map names the item and the original exception type."""
        source = ScriptedSource([5, "x"])
        node = Map(lambda x: x + 1)
        sink, letters = Recorder(), Recorder(name="letters")
        source > node > sink
        node.dead_letters > letters
        await Pipeline(source).run()
        assert sink.items == [6]
        (letter,) = letters.items
        assert isinstance(letter, DeadLetter)
        assert (letter.item, letter.exc_type) == ("x", "TypeError")

    def test_async_function_is_refused(self) -> None:
        """Passing an async function to Map is a ConfigError that says what to do."""

        async def double(x: int) -> int:
            return 2 * x

        with pytest.raises(ConfigError, match="async"):
            Map(double)

    def test_engine_options_pass_through(self) -> None:
        """on_error and capacity given to a transform reach the engine settings."""
        node = Filter(bool, on_error="skip", capacity=7, name="keep")
        assert (node.name, node.on_error, node._ns_capacity) == ("keep", "skip", 7)


class TestDedupe:
    async def test_drops_repeated_keys(self) -> None:
        """Items whose key was seen are dropped and counted."""
        node = Dedupe(key=lambda r: r["id"])
        items = [{"id": 1, "v": "a"}, {"id": 2}, {"id": 1, "v": "b"}, {"id": 3}]
        sink = await run_through(node, items)
        assert [r["id"] for r in sink.items] == [1, 2, 3]
        assert sink.items[0]["v"] == "a"
        assert node.duplicates == 1

    async def test_memory_is_bounded_by_max_keys(self) -> None:
        """With max_keys=2 the oldest key is forgotten and passes again."""
        node = Dedupe(max_keys=2)
        sink = await run_through(node, [1, 2, 3, 1, 3])
        assert sink.items == [1, 2, 3, 1]
        assert len(node._seen) == 2

    async def test_unhashable_key_goes_through_policy(self) -> None:
        """An unhashable item is skipped by policy while the rest are deduplicated."""
        sink = await run_through(Dedupe(on_error="skip"), [1, [2], 1, 3])
        assert sink.items == [1, 3]


class TestThrottle:
    async def test_spaces_items_on_the_trio_clock(self, autojump_clock: trio.abc.Clock) -> None:
        """At rate 2 per second with burst 1, items leave 0.5 s apart."""
        sink = await run_through(Throttle(2), [1, 2, 3, 4])
        assert sink.items == [1, 2, 3, 4]
        start = sink.times[0]
        assert [t - start for t in sink.times] == [0.0, 0.5, 1.0, 1.5]

    async def test_burst_passes_at_once_then_rate(self, autojump_clock: trio.abc.Clock) -> None:
        """A burst of 3 passes immediately, the fourth waits one interval."""
        sink = await run_through(Throttle(1, per=2.0, burst=3), [1, 2, 3, 4])
        start = sink.times[0]
        assert [t - start for t in sink.times] == [0.0, 0.0, 0.0, 2.0]

    async def test_quiet_spell_refills_the_bucket(self, autojump_clock: trio.abc.Clock) -> None:
        """After a pause longer than the interval, the next item passes at once."""
        sink = await run_through(Throttle(1), [1, 2, Wait(5), 3])
        start = sink.times[0]
        assert [t - start for t in sink.times] == [0.0, 1.0, 5.0]

    def test_bad_rate_is_refused(self) -> None:
        """A non-positive rate is a ConfigError."""
        with pytest.raises(ConfigError, match="rate"):
            Throttle(0)


class TestBatch:
    async def test_by_count_with_final_partial_batch(self) -> None:
        """Batches of 3, and the remainder at the end of the stream."""
        sink = await run_through(Batch(3), list(range(8)))
        assert sink.items == [[0, 1, 2], [3, 4, 5], [6, 7]]

    async def test_by_time(self, autojump_clock: trio.abc.Clock) -> None:
        """A batch is emitted interval seconds after its first item."""
        script = [1, Wait(0.3), 2, Wait(1.0), 3, Wait(5), 4]
        sink = await run_through(Batch(interval=1.0), script)
        assert sink.items == [[1, 2], [3], [4]]
        start = sink.times[0] - 1.0
        assert [round(t - start, 6) for t in sink.times] == [1.0, 2.3, 6.3]

    async def test_count_or_time_whichever_first(self, autojump_clock: trio.abc.Clock) -> None:
        """With size and interval, a full batch leaves at once and a slow one on time."""
        script = [1, 2, Wait(0.5), 3, Wait(3), 4]
        sink = await run_through(Batch(2, interval=2.0), script)
        assert sink.items == [[1, 2], [3], [4]]
        first = sink.times[0]
        assert [t - first for t in sink.times] == [0.0, 2.5, 3.5]

    async def test_empty_stream_emits_nothing(self) -> None:
        """No items in, no batches out."""
        sink = await run_through(Batch(3), [])
        assert sink.items == []

    async def test_back_pressure_bounds_pending_batches(self) -> None:
        """A slow sink makes the batch intake wait instead of piling batches up."""

        class Slow(NanoNode):
            def __init__(self) -> None:
                super().__init__(capacity=1)
                self.items: list[Any] = []
                self.max_ready = 0

            async def process_item(self, item: Any) -> None:
                self.max_ready = max(self.max_ready, len(batch._ready))
                await trio.sleep(0.01)
                self.items.append(item)

        batch = Batch(2)
        source, sink = ScriptedSource(list(range(40))), Slow()
        source > batch > sink
        await Pipeline(source).run()
        assert sink.items == [[i, i + 1] for i in range(0, 40, 2)]
        assert sink.max_ready <= 2

    def test_needs_a_limit(self) -> None:
        """Batch without size or interval is a ConfigError."""
        with pytest.raises(ConfigError, match="size"):
            Batch()

    def test_appears_as_two_named_stages(self) -> None:
        """The composite's stages are named after it and share its policy."""
        batch = Batch(3, name="rows", on_error="skip")
        assert [stage.name for stage in batch.stages] == ["rows", "rows.emit"]
        assert batch.on_error == "skip"
        assert batch.stages[1].on_error == "raise"

    async def test_own_events_carry_the_users_node_name(self) -> None:
        """log_event of a staged node is bound to the pipeline and its name, not a stage's."""
        flushed_in: list[str] = []

        class _ReportingBatch(Batch):
            def _flush(self) -> list[Any]:
                batches = super()._flush()
                flushed_in.append(str([s.name for s in self.stages if s._ns_log is not None]))
                self.log_event("batch_flushed", items=sum(len(b) for b in batches))
                return batches

        batch = _ReportingBatch(10, name="rows")
        source, sink = ScriptedSource([1, 2, 3]), Recorder()
        source > batch > sink
        with capture_logs() as logs:
            await Pipeline(source, name="ingest", stats_interval=None).run()
            batch.log_event("after_the_run", "debug")
        assert flushed_in == ["['rows.emit']"]  # only the emitting stage was still running
        ours = [e for e in logs if e["event"] in ("batch_flushed", "after_the_run")]
        assert ours == [
            {
                "event": "batch_flushed",
                "log_level": "info",
                "pipeline": "ingest",
                "node": "rows",
                "items": 3,
            },
            {"event": "after_the_run", "log_level": "debug", "node": "rows"},
        ]
        with pytest.raises(ConfigError, match="got 'loud'"):
            batch.log_event("x", "loud")


class TestTumblingWindow:
    async def test_counts_per_key_per_window_on_trio_clock(
        self, autojump_clock: trio.abc.Clock
    ) -> None:
        """Counts per key close at each window end, on the Trio clock."""
        script = [Wait(0.5), "a", "b", "a", Wait(1.0), "b", Wait(10), "a"]
        sink = await run_through(TumblingWindow(1.0, key=lambda s: s), script)
        results = [(r.start, r.key, r.value) for r in sink.items]
        assert results == [(0.0, "a", 2), (0.0, "b", 1), (1.0, "b", 1), (11.0, "a", 1)]
        # The first two windows are emitted when they end, not at the end of the stream.
        assert sink.times[:3] == [1.0, 1.0, 2.0]

    async def test_reducer_with_initial_factory(self) -> None:
        """A reducer folds items from a fresh initial value per key."""
        window = TumblingWindow(
            60, key=lambda r: r[0], reducer=lambda acc, r: [*acc, r[1]], initial=list
        )
        sink = await run_through(window, [("x", 1), ("y", 2), ("x", 3)])
        assert [(r.key, r.value) for r in sink.items] == [("x", [1, 3]), ("y", [2])]

    async def test_event_time_windows_close_by_watermark(self) -> None:
        """With a timestamp, a window closes once a later item passes its end."""
        records = [(0, "info"), (30, "warn"), (59, "info"), (61, "info"), (130, "warn")]
        window = TumblingWindow(60, key=lambda r: r[1], timestamp=lambda r: r[0])
        sink = await run_through(window, records)
        assert [(r.start, r.end, r.key, r.value) for r in sink.items] == [
            (0, 60, "info", 2),
            (0, 60, "warn", 1),
            (60, 120, "info", 1),
            (120, 180, "warn", 1),
        ]

    async def test_late_item_goes_through_policy(self) -> None:
        """An item for a window already emitted is a LateItemError, dead-lettered alone."""
        source = ScriptedSource([(10, "a"), (70, "b"), (20, "late"), (80, "c")])
        window = TumblingWindow(60, timestamp=lambda r: r[0])
        sink, letters = Recorder(), Recorder(name="letters")
        source > window > sink
        window.dead_letters > letters
        await Pipeline(source).run()
        assert [(r.start, r.value) for r in sink.items] == [(0, 1), (60, 2)]
        (letter,) = letters.items
        assert letter.exc_type == "LateItemError"
        assert letter.item == (20, "late")
        assert "emitted already" in letter.message

    async def test_allowed_lateness_keeps_window_open(self) -> None:
        """Within allowed_lateness a late item still counts in its window."""
        window = TumblingWindow(60, timestamp=lambda r: r, allowed_lateness=30)
        sink = await run_through(window, [10, 70, 20, 100])
        assert [(r.start, r.value) for r in sink.items] == [(0, 2), (60, 2)]

    async def test_failing_key_function_leaves_window_intact(self) -> None:
        """A key function that raises skips that item only; the counts stay right."""
        window = TumblingWindow(60, key=lambda r: r["level"], on_error="skip")
        sink = await run_through(window, [{"level": "a"}, {}, {"level": "a"}])
        assert [(r.key, r.value) for r in sink.items] == [("a", 2)]

    def test_result_as_dict(self) -> None:
        """WindowResult.as_dict gives the four fields."""
        result = WindowResult(0.0, 60.0, "warn", 3)
        assert result.as_dict() == {"start": 0.0, "end": 60.0, "key": "warn", "value": 3}

    def test_late_item_error_is_a_value_error(self) -> None:
        """LateItemError is caught by except ValueError."""
        assert issubclass(LateItemError, ValueError)
