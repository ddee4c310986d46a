"""run_node and run_node_async: one node driven through the engine, policies applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import NodeResult, Pause, TimeLimitExceeded, run_node, run_node_async
from nanostream_trio import GraphError, NanoNode, Retry
from nanostream_trio.nodes import CSVReader


class Parse(NanoNode):
    def process_item(self, item: str) -> int:
        return int(item)


class Split(NanoNode):
    async def process_item(self, item: str) -> AsyncIterator[str]:
        for word in item.split():
            await trio.sleep(1)
            yield word


class Flaky(NanoNode):
    """Fails on the first `failures` attempts at every item."""

    def __init__(self, failures: int, **options: Any) -> None:
        super().__init__(**options)
        self.failures = failures
        self.seen: dict[Any, int] = {}

    def process_item(self, item: Any) -> Any:
        self.seen[item] = self.seen.get(item, 0) + 1
        if self.seen[item] <= self.failures:
            msg = f"timeout on {item!r}"
            raise TimeoutError(msg)
        return item


class Ticker(NanoNode):
    async def generator(self) -> AsyncIterator[int]:
        for tick in range(3):
            await trio.sleep(60)
            yield tick


class TestOutputs:
    def test_returns_outputs_times_and_statistics(self) -> None:
        """A node's outputs come back with their virtual times and its counters."""
        result = run_node(Split(), ["a b", "c"], interval=10)
        assert isinstance(result, NodeResult)
        assert result.outputs == ["a", "b", "c"]
        assert result.arrivals == [1.0, 2.0, 11.0]
        assert result.statistics.items_in == 2
        assert result.statistics.items_out == 3
        assert result.summary.elapsed == 11.0

    def test_accepts_script_markers(self) -> None:
        """The input is a FakeSource script, so markers work."""
        result = run_node(Parse(), ["1", Pause(100), "2"], at=[0, 5])
        assert result.arrivals == [0.0, 105.0]

    def test_drives_a_source(self) -> None:
        """A source node runs on its own and its items are collected."""
        result = run_node(Ticker())
        assert result.outputs == [0, 1, 2]
        assert result.arrivals == [60.0, 120.0, 180.0]

    def test_a_source_takes_no_items(self) -> None:
        """Feeding items to a source is refused with its name."""
        with pytest.raises(ValueError, match="node 'tick' is a source"):
            run_node(Ticker(name="tick"), [1])

    def test_records_the_events(self) -> None:
        """The run's structlog events come back in the result."""
        result = run_node(Parse(name="p"), ["1"])
        result.events.assert_emitted("node_finished", node="p", items_in=1)
        assert result.events.names()[0] == "pipeline_started"

    async def test_async_twin(self, nanostream_clock: trio.testing.MockClock) -> None:
        """run_node_async drives the node inside the test's run, on its fake clock."""
        result = await run_node_async(Split(), ["x y"])
        assert result.outputs == ["x", "y"]
        assert trio.current_time() == 2.0


class TestErrorPolicies:
    def test_raise_surfaces_the_original_error(self) -> None:
        """Under the default policy the node's exception comes out with the engine's note."""
        with pytest.raises(ValueError, match="invalid literal") as info:
            run_node(Parse(name="parse"), ["1", "x"])
        assert "in nanostream node 'parse', processing item 'x'" in info.value.__notes__

    def test_skip(self) -> None:
        """on_error='skip' drops the bad item, counts it and records an event."""
        result = run_node(Parse(on_error="skip", name="parse"), ["1", "x", "3"])
        assert result.outputs == [1, 3]
        assert result.statistics.skipped == 1
        event = result.events.assert_emitted("item_skipped", node="parse")
        assert event["item"] == "'x'"
        assert event["exc_type"] == "ValueError"

    def test_dead_letter(self) -> None:
        """on_error='dead_letter' gets its port linked and the records collected."""
        result = run_node(Parse(on_error="dead_letter", name="parse"), ["x", "2"])
        assert result.outputs == [2]
        [letter] = result.dead_letters
        assert (letter.item, letter.node, letter.exc_type, letter.attempts) == (
            "x",
            "parse",
            "ValueError",
            1,
        )

    def test_retry_backs_off_on_the_fake_clock(self) -> None:
        """Retries wait their backoff in virtual time: 2 s, then 4 s."""
        node = Flaky(2, on_error="retry", retry=Retry(attempts=3, backoff=2))
        result = run_node(node, ["a"])
        assert result.outputs == ["a"]
        assert result.arrivals == [6.0]
        assert result.statistics.retried == 2
        delays = [event["delay"] for event in result.events.of("item_retried")]
        assert delays == [2.0, 4.0]

    def test_retry_exhausted_raises_without_dead_letters(self) -> None:
        """Out of attempts, the error is raised with a note on the attempts."""
        node = Flaky(5, on_error="retry", retry=Retry(attempts=2, backoff=1))
        with pytest.raises(TimeoutError) as info:
            run_node(node, ["a"])
        assert "gave up after 2 attempts" in info.value.__notes__

    def test_retry_exhausted_dead_letters_when_asked(self) -> None:
        """dead_letters=True links the port, so exhausted retries become records."""
        node = Flaky(5, on_error="retry", retry=Retry(attempts=2, backoff=1))
        result = run_node(node, ["a", "b"], dead_letters=True)
        assert [(d.item, d.attempts, d.time) for d in result.dead_letters] == [
            ("a", 2, 1.0),
            ("b", 2, 2.0),
        ]
        assert result.outputs == []


class TestLinks:
    def test_the_node_can_be_driven_again(self) -> None:
        """The harness gives the node back unlinked, so a second run works alike."""
        node = Parse()
        assert run_node(node, ["1"]).outputs == [1]
        assert run_node(node, ["2"]).outputs == [2]
        assert node.upstream == ()
        assert node.downstream == ()

    def test_links_are_restored_after_a_failure(self) -> None:
        """Even a failing run leaves the node unlinked."""
        node = Parse()
        with pytest.raises(ValueError, match="invalid literal"):
            run_node(node, ["x"])
        assert node.upstream == ()
        assert node.downstream == ()

    def test_drives_a_composite_node(self) -> None:
        """A composite (CSVReader) is linked through its entry and exit, then unlinked again."""
        reader = CSVReader()
        first = run_node(reader, ["a,b\n1,2\n3,4\n"])
        assert first.outputs == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
        assert run_node(reader, ["a\n5\n"]).outputs == [{"a": "5"}]
        assert reader.upstream == ()
        assert reader.downstream == ()

    def test_refuses_a_linked_node(self) -> None:
        """A node already in a graph is refused with its links named."""
        node, after = Parse(name="mid"), Parse(name="after")
        node > after
        with pytest.raises(GraphError, match=r"node 'mid' is linked \(to 'after'\)"):
            run_node(node, ["1"])

    def test_time_limit(self) -> None:
        """A node that never finishes fails the run at the time limit."""

        class Hang(NanoNode):
            async def process_item(self, item: Any) -> None:
                await trio.sleep_forever()

        with pytest.raises(TimeLimitExceeded, match=r"run_node\(hang\)"):
            run_node(Hang(name="hang"), [1], time_limit=60)
