"""Example tests of the order pipeline in orders.py, one per nanostream_testing tool.

Run them with ``pytest examples/testing`` (pytest-trio's trio mode on, as in
this project's pyproject.toml).
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from orders import Order, ParseOrder, RunningTotal, ToEuros, build

from nanostream_testing import (
    AssertionSink,
    CollectingSink,
    EventLog,
    FakeSource,
    Pause,
    TimeLimitExceeded,
    check_node_contract,
    run_node,
    run_pipeline,
)
from nanostream_testing.pytest_plugin import PipelineRunner

LINES = ["alice,10,EUR", "bob,20,USD", "oops", "alice,5,GBP"]


def test_totals_per_customer() -> None:
    """Orders a minute apart come out as running totals in euros, half a second later."""
    totals = CollectingSink(name="totals")
    rejected = CollectingSink(name="rejected")
    run_pipeline(build(FakeSource(LINES, interval=60), totals, rejected))
    assert totals.items == [("alice", 10.0), ("bob", 18.0), ("alice", 16.0)]
    assert totals.arrivals == [0.5, 60.5, 180.5]
    [letter] = rejected.items
    assert (letter.item, letter.exc_type) == ("oops", "ValueError")


def test_totals_with_an_assertion_sink() -> None:
    """AssertionSink states the expected output up front and diffs at the end."""
    expect = AssertionSink([("alice", 10.0), ("bob", 18.0), ("alice", 16.0)])
    run_pipeline(build(FakeSource(LINES), expect, CollectingSink(allow_empty=True)))


def test_rate_service_outage_is_retried_on_the_fake_clock() -> None:
    """A rate service failing twice is retried after 1 s and 2 s of virtual time."""
    calls: list[float] = []

    async def flaky_rates(currency: str) -> float:
        calls.append(trio.current_time())
        if len(calls) <= 2:
            raise ConnectionError("rate service unavailable")
        return 1.0

    result = run_node(ToEuros(flaky_rates), [Order("carol", 7.0, "EUR")])
    assert calls == [0.0, 1.0, 3.0]
    assert result.outputs == [Order("carol", 7.0, "EUR")]
    assert result.statistics.retried == 2
    assert [event["delay"] for event in result.events.of("item_retried")] == [1.0, 2.0]


def test_parse_rejects_bad_lines() -> None:
    """The parser raises on a bad line, so its dead-letter policy can apply."""
    result = run_node(ParseOrder(on_error="dead_letter"), ["dave,1,EUR", "no amount"])
    assert result.outputs == [Order("dave", 1.0, "EUR")]
    assert [letter.item for letter in result.dead_letters] == ["no amount"]


def test_nodes_keep_the_contract() -> None:
    """Each node of the pipeline passes the node contract check."""
    check_node_contract(ParseOrder, ["a,1,EUR"], bad_inputs=["a;1;EUR"])
    check_node_contract(ToEuros, [Order("a", 1.0, "USD")])
    check_node_contract(RunningTotal, [Order("a", 1.0, "EUR"), Order("a", 2.0, "EUR")])


def test_a_quiet_source_hits_the_time_limit() -> None:
    """A source that goes quiet for ever fails the test at the time limit instead of hanging."""
    source = FakeSource([*LINES, Pause(math.inf)])
    totals = CollectingSink()
    with pytest.raises(TimeLimitExceeded, match="pipeline 'orders' did not finish"):
        run_pipeline(build(source, totals, CollectingSink()), time_limit=3600)


async def test_with_the_plugin_fixtures(
    nanostream_clock: trio.testing.MockClock,
    nanostream_runner: PipelineRunner,
    nanostream_events: EventLog,
) -> None:
    """The async way: the runner and event capture from the pytest plugin."""
    totals = CollectingSink()
    source = FakeSource(LINES, interval=60)
    await nanostream_runner.run_async(build(source, totals, CollectingSink()))
    assert totals.arrivals == [0.5, 60.5, 180.5]
    assert trio.current_time() == 180.5
    nanostream_events.assert_emitted("item_dead_lettered", node="parse", item="'oops'")
