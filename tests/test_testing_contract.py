"""check_node_contract: well-behaved nodes pass, each kind of misbehaviour is named."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from nanostream_testing import (
    ContractViolation,
    FakeSource,
    check_node_contract,
)
from nanostream_trio import NanoNode
from nanostream_trio.nodes import (
    Batch,
    CSVReader,
    Filter,
    FlatMap,
    JSONLinesParser,
    Map,
    TailFile,
)


class Parse(NanoNode):
    def process_item(self, item: str) -> int:
        return int(item)


class SlowEcho(NanoNode):
    async def process_item(self, item: Any) -> AsyncIterator[Any]:
        await trio.sleep(5)
        yield item
        yield item


class Heartbeat(NanoNode):
    """Emits a tick a minute until stopped."""

    async def generator(self) -> AsyncIterator[int]:
        tick = 0
        while True:
            await trio.sleep(60)
            yield tick
            tick += 1


# -- nodes that break one clause each ------------------------------------------------


class HangsOnTwo(NanoNode):
    async def process_item(self, item: int) -> int:
        if item == 2:
            await trio.sleep_forever()
        return item


class SideChannel(NanoNode):
    """Hands items straight to its first downstream node instead of emitting them."""

    def process_item(self, item: Any) -> None:
        self.downstream[0].process_item(item)  # type: ignore[attr-defined]


class CatchesCancelled(NanoNode):
    async def process_item(self, item: Any) -> Any:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            return "emitted after cancel"
        return item


class ShieldsItsWork(NanoNode):
    async def process_item(self, item: Any) -> Any:
        with trio.CancelScope(shield=True):
            await trio.sleep(5)
        return item


class RaisesOnCancel(NanoNode):
    async def process_item(self, item: Any) -> Any:
        try:
            await trio.sleep(1)
        except trio.Cancelled:
            msg = "connection closed"
            raise RuntimeError(msg) from None
        return item


class SwallowsErrors(NanoNode):
    def process_item(self, item: str) -> int | None:
        try:
            return int(item)
        except ValueError:
            return None


class StubbornSource(NanoNode):
    """Holds out for two virtual hours when stopped."""

    async def generator(self) -> AsyncIterator[int]:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.sleep(7200)
            raise
        yield 0  # pragma: no cover - makes this an async generator


class SourceCatchesCancelled(NanoNode):
    async def generator(self) -> AsyncIterator[int]:
        for tick in range(3):
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                pass
            yield tick


class TestWellBehavedNodes:
    @pytest.mark.parametrize(
        ("factory", "inputs", "bad_inputs"),
        [
            (functools.partial(Map, str.upper), ["a", "b"], [1]),
            (functools.partial(Filter, lambda s: s.startswith("a")), ["a", "b"], [None]),
            (JSONLinesParser, [json.dumps({"a": 1}), "[2]"], ["{not json"]),
            (functools.partial(FlatMap, str.split), ["a b", "c"], [None]),
            (functools.partial(Batch, 2), [1, 2, 3], []),
            (CSVReader, ["a,b\n1,2\n", "a\n3\n"], []),
        ],
        ids=["Map", "Filter", "JSONLinesParser", "FlatMap", "Batch", "CSVReader"],
    )
    def test_built_in_nodes_keep_the_contract(
        self, factory: Any, inputs: list[Any], bad_inputs: list[Any]
    ) -> None:
        """The engine's built-in transforms and the CSV composite pass every clause."""
        check_node_contract(factory, inputs, bad_inputs=bad_inputs)

    def test_user_nodes_keep_the_contract(self) -> None:
        """Plain and async-generator user nodes pass, bad input included."""
        check_node_contract(Parse, ["1", "2"], bad_inputs=["x"])
        check_node_contract(SlowEcho, [1, 2])

    def test_tail_file_keeps_the_contract(self, tmp_path: Path) -> None:
        """The built-in TailFile source passes, reading to the end and following until stopped."""
        log = tmp_path / "app.log"
        log.write_text("one\ntwo\n")
        check_node_contract(lambda: TailFile(str(log), follow=False))
        check_node_contract(lambda: TailFile(str(log)), endless=True)

    def test_sources_keep_the_contract(self) -> None:
        """A finite FakeSource and an endless source (stopped when idle) pass."""
        check_node_contract(lambda: FakeSource([1, 2, 3], interval=5))
        check_node_contract(Heartbeat, endless=True)


class TestViolations:
    def contract_violation(self, factory: Any, *args: Any, **kwargs: Any) -> ContractViolation:
        with pytest.raises(ContractViolation) as info:
            check_node_contract(factory, *args, **kwargs)
        return info.value

    def test_a_node_that_never_ends(self) -> None:
        """A node stuck on an item breaks 'ends when its input ends', naming the time limit."""
        error = self.contract_violation(HangsOnTwo, [1, 2, 3], time_limit=600)
        assert error.clause == "ends when its input ends"
        assert error.node.startswith("HangsOnTwo")
        assert "did not finish within its time limit of 600 s" in str(error)
        assert "(test_testing_contract.HangsOnTwo)" in str(error)

    def test_a_node_that_emits_around_the_engine(self) -> None:
        """Handing items to another node directly breaks 'emits through its output only'."""
        error = self.contract_violation(SideChannel, [1, 2, 3])
        assert error.clause == "emits through its output only"
        assert "received different items (3 and 0)" in str(error)

    def test_a_node_that_catches_cancelled(self) -> None:
        """Emitting after a caught Cancelled breaks 'propagates cancellation'."""
        error = self.contract_violation(CatchesCancelled, [1])
        assert error.clause == "propagates cancellation"
        assert "emitted 1 items after it was cancelled" in str(error)

    def test_a_node_that_shields_its_work(self) -> None:
        """A shielded wait delays shutdown and breaks 'propagates cancellation'."""
        error = self.contract_violation(ShieldsItsWork, [1])
        assert error.clause == "propagates cancellation"
        assert "took 5 s of virtual time to end" in str(error)

    def test_a_node_that_turns_cancellation_into_an_error(self) -> None:
        """Raising its own error when cancelled breaks 'propagates cancellation'."""
        error = self.contract_violation(RaisesOnCancel, [1])
        assert error.clause == "propagates cancellation"
        assert "made the run raise RuntimeError: connection closed" in str(error)

    def test_a_node_that_swallows_its_errors(self) -> None:
        """Returning None for a bad input breaks 'does not swallow errors'."""
        error = self.contract_violation(SwallowsErrors, ["1"], bad_inputs=["x"])
        assert error.clause == "does not swallow errors"
        assert "processed the bad input 'x' without raising" in str(error)

    def test_a_node_that_fails_on_the_good_inputs(self) -> None:
        """Inputs the node rejects are reported as a misuse of the check."""
        error = self.contract_violation(Parse, ["x"])
        assert "it failed on the contract inputs with ValueError" in str(error)
        assert isinstance(error.__cause__, ValueError)

    def test_a_source_that_ignores_stop(self) -> None:
        """An endless source that holds out after stop() breaks 'ends when stopped'."""
        error = self.contract_violation(StubbornSource, endless=True)
        assert error.clause == "ends when stopped"
        assert "still running 3600 s after pipeline.stop()" in str(error)

    def test_a_source_that_catches_cancelled(self) -> None:
        """A source that keeps yielding after Cancelled breaks 'propagates cancellation'."""
        error = self.contract_violation(SourceCatchesCancelled)
        assert error.clause == "propagates cancellation"


class TestArguments:
    def test_a_source_takes_no_inputs(self) -> None:
        """Inputs for a source are refused, naming the node."""
        with pytest.raises(ValueError, match="is a source: it takes no inputs"):
            check_node_contract(Heartbeat, [1])

    def test_the_factory_must_make_nodes(self) -> None:
        """A factory returning something else is refused."""
        with pytest.raises(TypeError, match="must return a NanoNode"):
            check_node_contract(lambda: "not a node")  # type: ignore[arg-type,return-value]
