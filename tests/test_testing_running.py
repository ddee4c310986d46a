"""run_pipeline and run_pipeline_async: fake clock, virtual-time limit, determinism."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import (
    DEFAULT_TIME_LIMIT,
    AssertionSink,
    CollectingSink,
    FakeSource,
    Pause,
    TimeLimitExceeded,
    run_pipeline,
    run_pipeline_async,
)
from nanostream_trio import NanoNode, Pipeline


class Double(NanoNode):
    def process_item(self, item: int) -> int:
        return item * 2


class SlowIncrement(NanoNode):
    """Takes `delay` virtual seconds per item."""

    def __init__(self, delay: float = 1.0, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay

    async def process_item(self, item: int) -> int:
        await trio.sleep(self.delay)
        return item + 1


def hour_of_input() -> tuple[CollectingSink, Pipeline]:
    """60 items one minute apart through two processing nodes."""
    sink = CollectingSink(name="sink")
    FakeSource(range(60), interval=60, name="minutes") > Double(name="Double") > SlowIncrement(
        5, name="SlowIncrement"
    ) > sink
    return sink, Pipeline(sink, name="hourly", stats_interval=600)


class TestBar:
    def test_an_hour_of_input_gives_exact_results_and_times(self) -> None:
        """60 items a minute apart arrive transformed, each 5 s after its emission."""
        sink, pipeline = hour_of_input()
        summary = run_pipeline(pipeline)
        assert sink.items == [2 * i + 1 for i in range(60)]
        assert sink.arrivals == [60.0 * i + 5 for i in range(60)]
        assert summary.elapsed == 3545.0
        assert summary["SlowIncrement"].items_in == 60

    def test_the_same_run_gives_the_same_result_100_times(self) -> None:
        """100 consecutive runs give identical items, arrival times and statistics."""
        results = []
        for _ in range(100):
            sink, pipeline = hour_of_input()
            summary = run_pipeline(pipeline)
            results.append((sink.items, sink.arrivals, summary.elapsed, summary["sink"].items_in))
        first = results[0]
        assert first[0] == [2 * i + 1 for i in range(60)]
        assert first[3] == 60
        assert all(result == first for result in results)

    async def test_async_runs_repeat_exactly_on_one_clock(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Back-to-back async runs in one test see the same relative arrival times."""
        arrivals = []
        for _ in range(3):
            sink, pipeline = hour_of_input()
            await run_pipeline_async(pipeline)
            arrivals.append(sink.arrivals)
        assert arrivals[0] == arrivals[1] == arrivals[2] == [60.0 * i + 5 for i in range(60)]
        assert trio.current_time() == 3 * 3545.0


class TestRunPipeline:
    def test_accepts_a_node_and_pipeline_options(self) -> None:
        """Given a node, a Pipeline is built around it with the options given."""
        sink = CollectingSink()
        summary = run_pipeline(FakeSource([1, 2]) > Double() > sink, name="built")
        assert summary.name == "built"
        assert sink.items == [2, 4]

    def test_rejects_options_with_a_pipeline(self) -> None:
        """Options only make sense when the helper builds the Pipeline."""
        sink = CollectingSink()
        FakeSource([1]) > sink
        with pytest.raises(TypeError, match="only apply when a node is given"):
            run_pipeline(Pipeline(sink), name="x")

    def test_rejects_something_else(self) -> None:
        """A value that is neither a Pipeline nor a node is named in the error."""
        with pytest.raises(TypeError, match="got list"):
            run_pipeline([1, 2])  # type: ignore[arg-type]

    def test_each_run_starts_at_time_zero(self) -> None:
        """Every call runs on a fresh fake clock starting at 0."""
        for _ in range(2):
            sink = CollectingSink()
            run_pipeline(FakeSource(["a"], start=7) > sink)
            assert sink.arrivals == [7.0]

    def test_uses_a_given_clock(self) -> None:
        """clock= replaces the fresh MockClock, so virtual time carries over."""
        clock = trio.testing.MockClock(autojump_threshold=0)
        run_pipeline(FakeSource(["a"], start=10) > CollectingSink(), clock=clock)
        assert clock.current_time() == 10.0

    async def test_refuses_to_nest_in_a_running_trio(self) -> None:
        """Called from an async test it explains to use run_pipeline_async."""
        with pytest.raises(RuntimeError, match="await run_pipeline_async"):
            run_pipeline(FakeSource([1]) > CollectingSink())

    async def test_async_helper_needs_the_fake_clock(self) -> None:
        """On the real clock the async helper names the fixture to request."""
        with pytest.raises(RuntimeError, match="nanostream_clock"):
            await run_pipeline_async(FakeSource([1]) > CollectingSink())

    def test_node_failures_come_out_unchanged(self) -> None:
        """A node's exception reaches the caller with its type and the engine's note."""
        with pytest.raises(TypeError) as info:
            run_pipeline(FakeSource(["x"]) > SlowIncrement() > CollectingSink())
        assert "in nanostream node 'SlowIncrement" in "".join(info.value.__notes__)


class TestTimeLimit:
    def test_default_is_one_virtual_day(self) -> None:
        """The documented default limit is 86400 virtual seconds."""
        assert DEFAULT_TIME_LIMIT == 86_400.0
        with pytest.raises(TimeLimitExceeded) as info:
            # Monitoring off: a day of pipeline_stats events only costs wall time here.
            run_pipeline(
                FakeSource([Pause(math.inf)], name="forever") > CollectingSink(),
                stats_interval=None,
                stall_timeout=None,
            )
        assert info.value.time_limit == 86_400.0

    def test_message_names_pipeline_time_and_running_nodes(self) -> None:
        """The failure says which pipeline, which limit, and what was still running."""
        sink = CollectingSink(name="out")
        FakeSource([1, Pause(math.inf)], name="endless") > Double(name="double") > sink
        with pytest.raises(TimeLimitExceeded) as info:
            run_pipeline(Pipeline(sink, name="nightly"), time_limit=120)
        error = info.value
        assert error.pipeline == "nightly"
        assert error.unfinished == ["endless", "double", "out"]
        message = str(error)
        assert "pipeline 'nightly' did not finish within its time limit of 120 s" in message
        assert "cancelled at t=120" in message
        assert "'endless' (source, 1 items emitted)" in message

    def test_a_run_within_the_limit_passes(self) -> None:
        """A run that ends before the limit returns its summary."""
        summary = run_pipeline(FakeSource([1, 2], interval=50) > CollectingSink(), time_limit=51)
        assert summary.elapsed == 50.0

    def test_limit_can_be_lifted(self) -> None:
        """time_limit=None allows runs longer than a day."""
        sink = CollectingSink()
        run_pipeline(
            FakeSource([1, 2], interval=200_000) > sink,
            time_limit=None,
            stats_interval=None,
            stall_timeout=None,
        )
        assert sink.arrivals == [0.0, 200_000.0]

    @pytest.mark.parametrize("bad", [0, -1, "60", True])
    def test_rejects_bad_limits(self, bad: Any) -> None:
        """A limit that is not a positive number is refused before running."""
        with pytest.raises(ValueError, match="time_limit must be a positive number"):
            run_pipeline(FakeSource([1]) > CollectingSink(), time_limit=bad)

    async def test_async_limit_is_virtual(self, nanostream_clock: trio.testing.MockClock) -> None:
        """Under the async helper the limit is counted on the test's fake clock."""
        expect = AssertionSink([1])
        FakeSource([1, Pause(math.inf)]) > expect
        with pytest.raises(TimeLimitExceeded, match="time limit of 30 s"):
            await run_pipeline_async(expect, time_limit=30)
        assert trio.current_time() == 30.0
