"""CollectingSink and AssertionSink: records, diffs, fail-fast, and not masking real errors."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import (
    AssertionSink,
    CollectingSink,
    FakeSource,
    SinkAssertionError,
    run_pipeline,
)
from nanostream_trio import DeadLetter, NanoNode, Pipeline, Retry


class Parse(NanoNode):
    def process_item(self, item: str) -> int:
        return int(item)


class DropAll(NanoNode):
    def process_item(self, item: Any) -> None:
        return None


class FailsTwice(NanoNode):
    """Fails on the first two attempts at each item, then passes it on."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.attempts: dict[Any, int] = {}

    def process_item(self, item: Any) -> Any:
        self.attempts[item] = self.attempts.get(item, 0) + 1
        if self.attempts[item] <= 2:
            msg = f"attempt {self.attempts[item]} at {item!r}"
            raise ConnectionError(msg)
        return item


class TestCollectingSink:
    def test_keeps_items_and_arrival_times(self) -> None:
        """Items and their virtual arrival times are kept side by side."""
        sink = CollectingSink()
        run_pipeline(FakeSource(["1", "2", "3"], at=[0, 2.5, 7]) > Parse() > sink)
        assert sink.items == [1, 2, 3]
        assert sink.arrivals == [0.0, 2.5, 7.0]

    def test_each_run_starts_from_empty(self) -> None:
        """Running the same pipeline again replaces the record, times included."""
        sink = CollectingSink()
        FakeSource(["1"], start=4) > Parse() > sink
        pipeline = Pipeline(sink)
        run_pipeline(pipeline)
        run_pipeline(pipeline)
        assert sink.items == [1]
        assert sink.arrivals == [4.0]

    def test_an_empty_sink_fails_naming_itself_and_its_upstream(self) -> None:
        """A sink that saw nothing at the end of a clean run says so."""
        sink = CollectingSink(name="results")
        FakeSource([1, 2]) > DropAll(name="filter") > sink
        with pytest.raises(SinkAssertionError) as info:
            run_pipeline(sink)
        assert info.value.node == "results"
        assert str(info.value).startswith(
            "CollectingSink 'results' saw no items at all by the end of the run "
            "(linked from 'filter')"
        )

    def test_allow_empty(self) -> None:
        """allow_empty=True accepts a run where nothing arrives."""
        sink = CollectingSink(allow_empty=True)
        run_pipeline(FakeSource([1]) > DropAll() > sink)
        assert sink.items == []

    def test_does_not_mask_an_upstream_failure(self) -> None:
        """When the run fails, the sink stays quiet and the real error comes out alone."""
        sink = CollectingSink(name="quiet")
        FakeSource(["x"]) > Parse() > sink
        with pytest.raises(ValueError, match="invalid literal") as info:
            run_pipeline(sink)
        assert not isinstance(info.value, SinkAssertionError)

    def test_records_skip_policy_outcome(self) -> None:
        """With on_error='skip' the bad item is dropped and the good ones arrive in order."""
        sink = CollectingSink()
        FakeSource(["1", "two", "3"], interval=1) > Parse(on_error="skip", name="parse") > sink
        summary = run_pipeline(sink)
        assert sink.items == [1, 3]
        assert sink.arrivals == [0.0, 2.0]
        assert summary["parse"].skipped == 1

    def test_works_under_a_plain_trio_run(self) -> None:
        """The sink checks itself at teardown, whatever runs the pipeline."""
        sink = CollectingSink(name="plain")
        FakeSource([1]) > DropAll() > sink
        with pytest.raises(SinkAssertionError, match="'plain' saw no items"):
            trio.run(Pipeline(sink).run, clock=trio.testing.MockClock(autojump_threshold=0))


class TestAssertionSink:
    def test_passes_on_the_expected_items(self) -> None:
        """The expected items, in order, make a clean run."""
        expect = AssertionSink([1, 2, 3])
        run_pipeline(FakeSource(["1", "2", "3"]) > Parse() > expect)
        assert expect.items == [1, 2, 3]

    def test_unordered_accepts_any_order(self) -> None:
        """ordered=False compares as multisets."""
        expect = AssertionSink([3, 1, 2, 1], ordered=False)
        run_pipeline(FakeSource([1, 1, 2, 3]) > expect)

    def test_diff_lists_missing_unexpected_and_out_of_order(self) -> None:
        """The end-of-run failure names each kind of difference with positions and times."""
        expect = AssertionSink(["a", "b", "c", "d"], name="expect")
        FakeSource(["a", "c", "x", "b"], interval=10) > expect
        with pytest.raises(SinkAssertionError) as info:
            run_pipeline(expect)
        assert str(info.value) == (
            "AssertionSink 'expect' at the end of the run: received 4 items, expected 4\n"
            "  missing (expected, never arrived): 1\n"
            "    expected[3] 'd'\n"
            "  unexpected (arrived, not expected): 1\n"
            "    received[2] 'x' at t=20\n"
            "  out of order: 1\n"
            "    received[1] 'c' at t=10, expected at position 2"
        )
        assert info.value.missing == ["d"]
        assert info.value.unexpected == ["x"]
        assert info.value.out_of_order == ["c"]

    def test_unordered_diff_has_no_order_section(self) -> None:
        """Without order only missing and unexpected items are reported."""
        expect = AssertionSink([1, 2, 2], ordered=False, name="bag")
        FakeSource([2, 3, 1]) > expect
        with pytest.raises(SinkAssertionError) as info:
            run_pipeline(expect)
        assert "(in any order)" in str(info.value)
        assert info.value.missing == [2]
        assert info.value.unexpected == [3]
        assert "out of order" not in str(info.value)

    def test_nothing_arrived(self) -> None:
        """An empty record is reported as such, with every expected item missing."""
        expect = AssertionSink([1, 2], name="none")
        FakeSource([1]) > DropAll() > expect
        with pytest.raises(SinkAssertionError, match="nothing arrived at all") as info:
            run_pipeline(expect)
        assert info.value.missing == [1, 2]

    def test_long_sections_are_cut(self) -> None:
        """Only the first ten entries of a section are shown, then a count."""
        expect = AssertionSink([], name="long")
        FakeSource(range(25)) > expect
        with pytest.raises(SinkAssertionError, match=r"\.\.\. and 15 more"):
            run_pipeline(expect)

    def test_compares_unhashable_items(self) -> None:
        """Dicts and lists are matched by equality."""
        expect = AssertionSink([{"a": 1}, [2]], ordered=False)
        run_pipeline(FakeSource([[2], {"a": 1}]) > expect)

    def test_fail_fast_ordered(self) -> None:
        """fail_fast stops the run at the first item that differs from the expected one."""
        expect = AssertionSink([1, 2, 3], fail_fast=True, name="strict")
        FakeSource([1, 5, 3], interval=60) > expect
        pipeline = Pipeline(expect)
        with pytest.raises(SinkAssertionError) as info:
            run_pipeline(pipeline)
        assert str(info.value).startswith(
            "AssertionSink 'strict' got a wrong item at position 1 (t=60): 5; expected 2"
        )
        assert pipeline.statistics().elapsed == 60.0

    def test_fail_fast_on_extra_items(self) -> None:
        """fail_fast reports an item beyond the expected count."""
        expect = AssertionSink([1], fail_fast=True)
        with pytest.raises(SinkAssertionError, match="expected only 1 items"):
            run_pipeline(FakeSource([1, 1]) > expect)

    def test_fail_fast_unordered(self) -> None:
        """Unordered fail_fast accepts any order but not a surplus copy."""
        expect = AssertionSink([1, 2], ordered=False, fail_fast=True)
        with pytest.raises(SinkAssertionError, match="not among the expected items"):
            run_pipeline(FakeSource([2, 1, 2]) > expect)

    def test_checks_dead_letters_from_a_retrying_node(self) -> None:
        """Dead letters of a node that runs out of retries reach an AssertionSink."""
        node = FailsTwice(on_error="retry", retry=Retry(attempts=2, backoff=5), name="flaky")
        letters = AssertionSink([], name="letters")
        delivered = AssertionSink([], name="delivered")
        FakeSource(["a"]) > node > delivered
        node.dead_letters > letters
        pipeline = Pipeline(node)
        with pytest.raises(SinkAssertionError) as info:
            run_pipeline(pipeline)
        record = info.value.unexpected[0]
        assert isinstance(record, DeadLetter)
        assert (record.item, record.node, record.attempts, record.time) == ("a", "flaky", 2, 5.0)
        assert pipeline.statistics()["flaky"].retried == 1

    def test_checks_retried_items_and_their_times(self) -> None:
        """A node that succeeds on its third attempt delivers after two backoffs."""
        expect = AssertionSink(["a", "b"])
        node = FailsTwice(on_error="retry", retry=Retry(attempts=3, backoff=1, factor=3))
        FakeSource(["a", "b"]) > node > expect
        run_pipeline(expect)
        # Each item waits 1 s, then 3 s, before its successful third attempt.
        assert expect.arrivals == [4.0, 8.0]
