"""FakeSource: scripted items at scripted virtual times, markers, back-pressure, misuse."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import (
    CollectingSink,
    End,
    FakeSource,
    FakeUsageError,
    Pause,
    Raise,
    run_pipeline,
)
from nanostream_trio import NanoNode, Pipeline


class Slow(NanoNode):
    """Spends `delay` virtual seconds on each item, then passes it on."""

    def __init__(self, delay: float, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay

    async def process_item(self, item: Any) -> Any:
        await trio.sleep(self.delay)
        return item


class TestTiming:
    def test_first_item_at_time_zero_then_every_interval(self) -> None:
        """With interval=60 the items come at 0, 60, 120 (the first one at once)."""
        source, sink = FakeSource("abc", interval=60), CollectingSink()
        run_pipeline(source > sink)
        assert sink.items == ["a", "b", "c"]
        assert sink.arrivals == [0.0, 60.0, 120.0]
        assert source.emitted_at == [0.0, 60.0, 120.0]

    def test_start_delays_the_first_item(self) -> None:
        """start= shifts the whole schedule: first item after `start` seconds."""
        sink = CollectingSink()
        run_pipeline(FakeSource([1, 2], interval=10, start=5) > sink)
        assert sink.arrivals == [5.0, 15.0]

    def test_explicit_times(self) -> None:
        """at= gives each data item its own time; equal times are allowed."""
        sink = CollectingSink()
        run_pipeline(FakeSource(["x", "y", "z"], at=[3, 3, 42.5]) > sink)
        assert sink.arrivals == [3.0, 3.0, 42.5]

    def test_default_emits_everything_at_once(self) -> None:
        """Without interval or at, every item is emitted at time 0."""
        sink = CollectingSink()
        run_pipeline(FakeSource(range(5)) > sink)
        assert sink.arrivals == [0.0] * 5

    def test_replays_its_script_on_every_run(self) -> None:
        """The items are read once, so a generator is replayed, not exhausted."""
        source, sink = FakeSource((i * i for i in range(3)), interval=1), CollectingSink()
        source > sink
        pipeline = Pipeline(sink)
        for _ in range(2):
            run_pipeline(pipeline)
            assert sink.items == [0, 1, 4]
            assert source.emitted == [0, 1, 4]


class TestMarkers:
    def test_pause_shifts_later_items(self) -> None:
        """Pause(30) waits 30 s and keeps the interval between the later items."""
        sink = CollectingSink()
        run_pipeline(FakeSource([1, 2, Pause(30), 3, 4], interval=10) > sink)
        assert sink.items == [1, 2, 3, 4]
        assert sink.arrivals == [0.0, 10.0, 50.0, 60.0]

    def test_pause_with_explicit_times(self) -> None:
        """A pause adds to the explicit times of every item after it."""
        sink = CollectingSink()
        run_pipeline(FakeSource([1, Pause(100), 2], at=[1, 2]) > sink)
        assert sink.arrivals == [1.0, 102.0]

    def test_raise_fails_the_pipeline_at_its_time(self) -> None:
        """Raise(exc) makes the source fail with that exception after the items before it."""
        sink = CollectingSink(name="out")
        FakeSource([1, 2, Raise(OSError("disk gone")), 3], interval=5, name="src") > sink
        pipeline = Pipeline(sink)
        with pytest.raises(OSError, match="disk gone"):
            run_pipeline(pipeline)
        stats = pipeline.statistics()
        assert stats["src"].status == "failed"
        assert stats["src"].items_out == 2
        assert stats.elapsed == 5.0

    def test_raise_instantiates_a_class_each_run(self) -> None:
        """Raise(SomeError) raises a new instance of that class."""
        with pytest.raises(KeyError):
            run_pipeline(FakeSource([Raise(KeyError)]) > CollectingSink())

    def test_end_stops_the_script(self) -> None:
        """Items after End() are never emitted and the source finishes normally."""
        source, sink = FakeSource([1, End(), 2, 3]), CollectingSink()
        summary = run_pipeline(source > sink)
        assert sink.items == [1]
        assert summary[source.name].status == "finished"

    def test_endless_source_ends_on_stop(self) -> None:
        """Pause(math.inf) keeps the source running until pipeline.stop()."""
        sink = CollectingSink()
        FakeSource(["a", Pause(math.inf), "never"]) > sink
        pipeline = Pipeline(sink)

        async def main() -> float:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.sleep(3600)
                pipeline.stop()
            return trio.current_time()

        stopped_at = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert stopped_at == 3600.0
        assert sink.items == ["a"]
        assert pipeline.status == "finished"

    def test_marker_arguments_are_checked(self) -> None:
        """Bad marker arguments fail when the script is written, not when it runs."""
        with pytest.raises(ValueError, match="Pause needs a number of seconds"):
            Pause(-1)
        with pytest.raises(TypeError, match="Raise needs an exception"):
            Raise("boom")  # type: ignore[arg-type]
        assert repr([Pause(2), End()]) == "[Pause(2), End()]"


class TestBackPressure:
    def test_a_slow_consumer_holds_the_source_back(self) -> None:
        """Scheduled every second, the source waits for a 10 s/item consumer with capacity 1."""
        source = FakeSource(range(6), interval=1, name="src")
        sink = CollectingSink(name="sink")
        source > Slow(10, capacity=1, name="slow") > sink
        summary = run_pipeline(sink)
        assert sink.items == list(range(6))
        # The consumer works on item 0 from t=0 and item 1 waits in its inbox
        # (capacity 1). Item 2, offered at t=2, is taken only at t=10 when the
        # consumer takes item 1; each later item is offered when the previous
        # one was taken, 10 s apart: 8 + 3 * 10 s of blocking in all.
        assert source.emitted_at == [0.0, 1.0, 2.0, 10.0, 20.0, 30.0]
        assert sink.arrivals == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        assert summary["src"].blocked_seconds == 38.0
        assert summary["slow"].inbox_peak == 1

    def test_a_fast_consumer_keeps_the_schedule(self) -> None:
        """With room downstream the source is never held up."""
        source = FakeSource(range(6), interval=1, name="src")
        source > Slow(0.5, capacity=1) > CollectingSink()
        summary = run_pipeline(source)
        assert source.emitted_at == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert summary["src"].blocked_seconds == 0.0


class TestMisuse:
    def test_an_unlinked_source_fails_naming_itself(self) -> None:
        """A FakeSource linked to nothing fails the run instead of testing nothing."""
        with pytest.raises(FakeUsageError) as info:
            run_pipeline(FakeSource([1, 2], name="orphan"))
        assert info.value.node == "orphan"
        assert "FakeSource 'orphan' is not linked to any node" in str(info.value)
        assert "2 items would go nowhere" in str(info.value)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"interval": -1}, "got interval=-1"),
            ({"start": math.inf}, "got start=inf"),
            ({"interval": 1, "at": [0, 1]}, "both interval= and at="),
            ({"at": [0]}, "got 1 times in at= for 2 items"),
            ({"at": [5, 4]}, "item 1 is at 4, before item 0 at 5"),
        ],
    )
    def test_bad_schedules_are_refused(self, kwargs: dict[str, Any], message: str) -> None:
        """A schedule that cannot be played fails at construction, naming the source."""
        with pytest.raises(ValueError, match=message) as info:
            FakeSource(["a", Pause(1), "b"], name="sched", **kwargs)
        assert "FakeSource 'sched'" in str(info.value)

    def test_it_is_a_registered_source_node(self) -> None:
        """A FakeSource is an ordinary source node under its public name."""
        source = FakeSource([])
        assert source.is_source
        assert repr(FakeSource) == "<class 'nanostream_testing.FakeSource'>"
