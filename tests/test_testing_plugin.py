"""The pytest plugin: entry point, fixtures, time-limit marker and ini option."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import trio
import trio.testing

from nanostream_testing import (
    DEFAULT_TIME_LIMIT,
    CollectingSink,
    EventLog,
    FakeSource,
    Pause,
    TimeLimitExceeded,
    run_pipeline,
)
from nanostream_testing.pytest_plugin import PipelineRunner
from nanostream_trio import NanoNode

pytest_plugins = ["pytester"]


class Double(NanoNode):
    def process_item(self, item: int) -> int:
        return item * 2


class TestRegistration:
    def test_entry_point_loads_the_plugin(self, request: pytest.FixtureRequest) -> None:
        """The pytest11 entry point names the plugin module and pytest has loaded it."""
        points = importlib.metadata.entry_points(group="pytest11")
        [point] = [p for p in points if p.name == "nanostream"]
        assert point.value == "nanostream_testing.pytest_plugin"
        assert request.config.pluginmanager.has_plugin("nanostream")


class TestClockFixture:
    def test_is_an_autojump_mock_clock(self, nanostream_clock: trio.testing.MockClock) -> None:
        """The fixture is a MockClock that jumps as soon as every task waits."""
        assert isinstance(nanostream_clock, trio.testing.MockClock)
        assert nanostream_clock.autojump_threshold == 0

    async def test_async_tests_run_on_it(self, nanostream_clock: trio.testing.MockClock) -> None:
        """An async test requesting it sleeps an hour in virtual time."""
        await trio.sleep(3600)
        assert trio.current_time() == 3600.0
        assert nanostream_clock.current_time() == 3600.0


class TestRunnerFixture:
    def test_sync_runs_share_the_test_clock(self, nanostream_runner: PipelineRunner) -> None:
        """run() and run_node() use the fixture's clock, so virtual time accumulates."""
        sink = CollectingSink()
        nanostream_runner.run(FakeSource([1, 2], interval=30) > Double() > sink)
        assert sink.items == [2, 4]
        assert sink.arrivals == [0.0, 30.0]
        result = nanostream_runner.run_node(Double(), [5], at=[10])
        assert result.outputs == [10]
        assert nanostream_runner.clock.current_time() == 40.0

    async def test_async_runs(
        self, nanostream_clock: trio.testing.MockClock, nanostream_runner: PipelineRunner
    ) -> None:
        """run_async() and run_node_async() run inside the test on its fake clock."""
        sink = CollectingSink()
        await nanostream_runner.run_async(FakeSource([1], start=60) > sink)
        result = await nanostream_runner.run_node_async(Double(), [3])
        assert (sink.arrivals, result.outputs) == ([60.0], [6])
        assert trio.current_time() == 60.0

    async def test_async_runs_need_the_clock_fixture(
        self, nanostream_runner: PipelineRunner
    ) -> None:
        """Without nanostream_clock the async test runs on the real clock: a clear error."""
        with pytest.raises(RuntimeError, match="request the 'nanostream_clock'"):
            await nanostream_runner.run_async(FakeSource([1]) > CollectingSink())

    def test_default_time_limit(self, nanostream_runner: PipelineRunner) -> None:
        """Without marker or ini setting the limit is the documented one day."""
        assert nanostream_runner.time_limit == DEFAULT_TIME_LIMIT

    @pytest.mark.nanostream_time_limit(90)
    def test_marker_sets_the_time_limit(self, nanostream_runner: PipelineRunner) -> None:
        """@pytest.mark.nanostream_time_limit(90) fails runs longer than 90 virtual seconds."""
        assert nanostream_runner.time_limit == 90.0
        with pytest.raises(TimeLimitExceeded, match="time limit of 90 s"):
            nanostream_runner.run(FakeSource([1, Pause(math.inf)]) > CollectingSink())

    @pytest.mark.nanostream_time_limit(90)
    def test_a_call_overrides_the_marker(self, nanostream_runner: PipelineRunner) -> None:
        """time_limit= given to a call wins over the test's limit."""
        sink = CollectingSink()
        nanostream_runner.run(FakeSource([1, 2], interval=100) > sink, time_limit=200)
        assert sink.arrivals == [0.0, 100.0]


class TestEventsFixture:
    def test_captures_the_tests_events(self, nanostream_events: EventLog) -> None:
        """Events of runs made during the test are in the fixture's log."""
        sink = CollectingSink(name="out")
        FakeSource([1]) > Double(name="double") > sink
        run_pipeline(sink)
        nanostream_events.assert_emitted("node_finished", node="double", items_out=1)


class TestConfiguration:
    def test_ini_option_sets_the_default_limit(self, pytester: pytest.Pytester) -> None:
        """nanostream_time_limit in the ini file becomes the runner's default."""
        pytester.makeini("[pytest]\nnanostream_time_limit = 120\n")
        pytester.makepyfile(
            """
            def test_limit(nanostream_runner):
                assert nanostream_runner.time_limit == 120.0
            """
        )
        pytester.runpytest_inprocess().assert_outcomes(passed=1)

    def test_bad_ini_value_is_reported(self, pytester: pytest.Pytester) -> None:
        """A limit that is not a positive number is a usage error naming the option."""
        pytester.makeini("[pytest]\nnanostream_time_limit = -5\n")
        pytester.makepyfile(
            """
            def test_limit(nanostream_runner):
                pass
            """
        )
        result = pytester.runpytest_inprocess()
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*the nanostream_time_limit ini option: time_limit must*"])

    def test_bad_marker_is_reported(self, pytester: pytest.Pytester) -> None:
        """A marker without exactly one argument is a usage error naming the test."""
        pytester.makepyfile(
            """
            import pytest

            @pytest.mark.nanostream_time_limit(1, 2)
            def test_limit(nanostream_runner):
                pass
            """
        )
        result = pytester.runpytest_inprocess("--strict-markers")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*nanostream_time_limit takes one argument, seconds*"])
