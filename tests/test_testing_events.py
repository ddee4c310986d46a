"""capture_events and EventLog: asserting on the engine's structlog events."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import trio
import trio.testing

from nanostream_testing import (
    CollectingSink,
    EventLog,
    FakeSource,
    capture_events,
    run_node,
    run_pipeline,
)
from nanostream_trio import NanoNode, Pipeline


class Stuck(NanoNode):
    """Spends 100 virtual seconds on its first item."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.first = True

    async def process_item(self, item: Any) -> Any:
        if self.first:
            self.first = False
            await trio.sleep(100)
        return item


class Parse(NanoNode):
    def process_item(self, item: str) -> int:
        return int(item)


def stalling_pipeline(**options: Any) -> Pipeline:
    sink = CollectingSink(name="sink")
    # Item 2 comes 1 s after item 1: at the same instant, Trio's scheduler
    # would decide at random whether both travel in one batch.
    FakeSource([1, 2], interval=1, name="src") > Stuck(name="stuck") > sink
    return Pipeline(sink, name="stalls", **options)


class TestCaptureEvents:
    def test_node_stalled_from_the_stall_timeout(self) -> None:
        """A node whose inbox waits 20 s without progress emits node_stalled at t=20."""
        with capture_events() as events:
            run_pipeline(stalling_pipeline(stall_timeout=20, stats_interval=None))
        event = events.assert_emitted("node_stalled", count=1, node="stuck", pipeline="stalls")
        assert event["seconds"] == 20.0
        assert event["inbox_queued"] == 1
        assert event["log_level"] == "warning"

    def test_no_stall_below_the_timeout(self) -> None:
        """With a timeout longer than the hold-up, no node_stalled event appears."""
        with capture_events() as events:
            run_pipeline(stalling_pipeline(stall_timeout=120, stats_interval=None))
        events.assert_not_emitted("node_stalled")
        events.assert_emitted("pipeline_finished", status="finished")

    def test_pipeline_stats_on_the_virtual_clock(self) -> None:
        """pipeline_stats come every stats_interval virtual seconds, exactly."""
        with capture_events() as events:
            run_pipeline(stalling_pipeline(stats_interval=30, stall_timeout=None))
        stats = events.of("pipeline_stats", pipeline="stalls")
        assert [event["elapsed"] for event in stats] == [30.0, 60.0, 90.0]
        assert stats[0]["nodes"]["stuck"]["inbox_queued"] == 1

    def test_the_log_is_a_sequence_of_dicts(self) -> None:
        """Events can be indexed, sliced and counted; names() lists them in order."""
        with capture_events() as events:
            run_pipeline(FakeSource(["1"]) > Parse() > CollectingSink())
        assert len(events) == len(events.names())
        assert events[0]["event"] == "pipeline_started"
        assert events[-1]["event"] == "pipeline_finished"
        assert [event["event"] for event in events[:1]] == ["pipeline_started"]

    def test_assert_emitted_explains_a_miss(self) -> None:
        """A missing event fails with the events of that name and a count of all names."""
        with capture_events() as events:
            run_pipeline(FakeSource(["1"]) > Parse(name="p") > CollectingSink())
        with pytest.raises(AssertionError) as info:
            events.assert_emitted("node_finished", node="nope")
        message = str(info.value)
        assert message.startswith("no 'node_finished' with {'node': 'nope'} event was emitted")
        assert "3 'node_finished' events seen" in message
        assert "pipeline_started x1" in message

    def test_assert_emitted_checks_the_count(self) -> None:
        """count= fails when the number of matching events differs."""
        with capture_events() as events:
            run_pipeline(FakeSource(["1"]) > Parse() > CollectingSink())
        with pytest.raises(AssertionError, match="expected 2 'node_finished' events, found 3"):
            events.assert_emitted("node_finished", count=2)

    def test_assert_not_emitted_shows_the_event(self) -> None:
        """An unwanted event fails with the event itself."""
        with capture_events() as events:
            run_pipeline(FakeSource(["x"]) > Parse(on_error="skip") > CollectingSink(
                allow_empty=True
            ))  # fmt: skip
        with pytest.raises(AssertionError, match="expected no 'item_skipped' event, found 1"):
            events.assert_not_emitted("item_skipped")

    async def test_captures_inside_an_async_test(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Capture works around a pipeline run inside pytest-trio."""
        with capture_events() as events:
            sink = CollectingSink()
            await Pipeline(FakeSource(["7"]) > Parse() > sink).run()
        events.assert_emitted("node_finished", items_in=1, items_out=1)

    def test_structlog_configuration_is_restored(self) -> None:
        """After the block, structlog's processors are the ones from before."""
        before = structlog.get_config()["processors"]
        with capture_events():
            pass
        assert structlog.get_config()["processors"] == before


class TestEventLogLogger:
    def test_records_one_pipelines_events_without_global_config(self) -> None:
        """EventLog().logger() given to a Pipeline records its events, and only those."""
        events = EventLog()
        with capture_events() as everything:
            run_pipeline(FakeSource(["1"]) > Parse() > CollectingSink(), logger=events.logger())
        assert events.names()[0] == "pipeline_started"
        assert "pipeline_started" not in everything.names()
        assert repr(events).startswith(f"<EventLog of {len(events)} events: pipeline_started")

    def test_the_harness_uses_it(self) -> None:
        """run_node's events come from its own log, with levels."""
        result = run_node(Parse(on_error="skip", name="p"), ["x"])
        assert result.events.assert_emitted("item_skipped")["log_level"] == "warning"
