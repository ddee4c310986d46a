"""The node contract: a reusable check that a NanoNode subclass behaves.

In the spirit of ``trio.testing.check_one_way_stream``, which any stream
implementation can run against itself, :func:`check_node_contract` runs a
node (built fresh by a factory for each scenario) through a set of small
pipelines on the fake clock and checks that it:

1. **ends when its input ends**: fed a finite input, it returns within the
   time limit (a source: when its own items run out, or when stopped);
2. **emits through its output only**: two downstream nodes linked to it
   receive the same items, as many as the engine counted it emitting;
3. **propagates cancellation**: cancelled while busy, it ends at once (no
   virtual time passes) and emits nothing more;
4. **does not swallow errors**: when its upstream or downstream fails, the
   run fails with that error and nothing else; and each of the
   ``bad_inputs`` makes it raise (so ``on_error`` policies apply: with
   ``on_error="skip"`` the item is counted as skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import trio
import trio.testing

from nanostream_trio import NanoNode, Pipeline, PipelineStatistics

from ._events import EventLog
from ._exceptions import ContractViolation, TimeLimitExceeded
from ._running import check_time_limit, holding_clock, run_pipeline
from ._sinks import CollectingSink
from ._sources import FakeSource, Pause, Raise

__all__ = ["check_node_contract"]

#: Default virtual-time limit of each scenario of the contract check.
CONTRACT_TIME_LIMIT = 3_600.0


class ContractProbeError(Exception):
    """The error the contract check injects up- or downstream of the node under test."""


class _FailingSink(NanoNode):
    """A sink that fails on the first item it receives."""

    def process_item(self, item: Any) -> None:
        msg = f"contract probe: downstream failure on {item!r}"
        raise ContractProbeError(msg)


class _Check:
    """One contract check: the factory, the inputs, and the helpers the scenarios share."""

    def __init__(
        self,
        make_node: Callable[[], NanoNode],
        inputs: list[Any],
        bad_inputs: list[Any],
        time_limit: float,
        endless: bool,
    ) -> None:
        self.make_node = make_node
        self.inputs = inputs
        self.bad_inputs = bad_inputs
        self.time_limit = time_limit
        self.endless = endless
        probe = self.fresh()
        self.is_source = probe.is_source
        self.label = f"node {probe.name!r} ({type(probe).__module__}.{type(probe).__qualname__})"
        self.node_name = probe.name

    def fresh(self) -> NanoNode:
        node = self.make_node()
        if not isinstance(node, NanoNode):
            msg = (
                f"the node factory {self.make_node!r} must return a NanoNode; it returned {node!r}"
            )
            raise TypeError(msg)
        return node

    def violation(self, clause: str, problem: str) -> ContractViolation:
        msg = f"{self.label} breaks the node contract ({clause}): {problem}"
        return ContractViolation(msg, node=self.node_name, clause=clause)

    def wire(self, node: NanoNode, script: list[Any], *sinks: NanoNode) -> Pipeline:
        """``FakeSource(script) > node > sinks``, or ``node > sinks`` for a source."""
        if not self.is_source:
            FakeSource(script, name="contract:input") > node
        node > list(sinks)
        return Pipeline(node, name=f"contract({node.name})", logger=EventLog().logger())

    def run(self, pipeline: Pipeline, clause: str) -> PipelineStatistics:
        try:
            return run_pipeline(pipeline, time_limit=self.time_limit)
        except TimeLimitExceeded as exc:
            raise self.violation(clause, f"the run did not end: {exc}") from None

    # -- the clauses --------------------------------------------------------------

    def ends_and_emits_through_output(self) -> list[Any]:
        clause = "ends when its input ends"
        node = self.fresh()
        first = CollectingSink(name="contract:output-1", allow_empty=True)
        second = CollectingSink(name="contract:output-2", allow_empty=True)
        pipeline = self.wire(node, self.inputs, first, second)
        if self.endless:
            summary = trio.run(holding_clock, self._run_then_stop, pipeline, clock=_clock())
        else:
            try:
                summary = self.run(pipeline, clause)
            except ContractViolation:
                raise
            except Exception as exc:
                problem = (
                    f"it failed on the contract inputs with {type(exc).__name__}: {exc}; "
                    "give inputs it accepts (and ones it must reject as bad_inputs=)"
                )
                raise self.violation(clause, problem) from exc
        stats = summary[node._ns_exit().name]
        if stats.status != "finished":
            raise self.violation(clause, f"it ended with status {stats.status!r}, not 'finished'")
        clause = "emits through its output only"
        if first.items != second.items:
            problem = (
                f"its two downstream nodes received different items ({len(first.items)} "
                f"and {len(second.items)}): it must emit by returning or yielding, not by "
                "handing items to other nodes"
            )
            raise self.violation(clause, problem)
        if len(first.items) != stats.items_out:
            problem = (
                f"the engine counted {stats.items_out} items emitted but each downstream "
                f"node received {len(first.items)}"
            )
            raise self.violation(clause, problem)
        return first.items

    async def _run_then_stop(self, pipeline: Pipeline) -> PipelineStatistics:
        clause = "ends when stopped"
        result: list[PipelineStatistics] = []
        ended = trio.Event()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                result.append(await pipeline.run(task_status=task_status))
            finally:
                ended.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            await trio.testing.wait_all_tasks_blocked()
            pipeline.stop()
            with trio.move_on_after(self.time_limit):
                await ended.wait()
            if not ended.is_set():
                pipeline.cancel()
        if not result or result[0].status == "cancelled":
            problem = f"it was still running {self.time_limit:g} s after pipeline.stop()"
            raise self.violation(clause, problem)
        return result[0]

    def propagates_cancellation(self) -> None:
        trio.run(holding_clock, self._cancel_while_busy, clock=_clock())

    async def _cancel_while_busy(self) -> None:
        clause = "propagates cancellation"
        node = self.fresh()
        sink = CollectingSink(name="contract:output", allow_empty=True)
        pipeline = self.wire(node, [*self.inputs, Pause(math.inf)], sink)
        name = node._ns_exit().name
        outcome: list[Any] = []

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                outcome.append(await pipeline.run(task_status=task_status))
            except Exception as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            if not self.is_source:
                # Let the node take its inputs: it is now busy with one, or idle.
                await trio.testing.wait_all_tasks_blocked()
            emitted = pipeline.statistics()[name].items_out
            cancelled_at = trio.current_time()
            pipeline.cancel()
        if isinstance(outcome[0], BaseException):
            problem = (
                f"cancelling the pipeline made the run raise {type(outcome[0]).__name__}: "
                f"{outcome[0]}; a cancelled node must let trio.Cancelled through unchanged"
            )
            raise self.violation(clause, problem) from outcome[0]
        summary: PipelineStatistics = outcome[0]
        waited = trio.current_time() - cancelled_at
        if waited > 0:
            problem = (
                f"it took {waited:g} s of virtual time to end after the pipeline was "
                "cancelled; a shielded wait or a caught trio.Cancelled delays every shutdown"
            )
            raise self.violation(clause, problem)
        stats = summary[name]
        if stats.items_out != emitted:
            problem = (
                f"it emitted {stats.items_out - emitted} items after it was cancelled: "
                "it caught trio.Cancelled and went on"
            )
            raise self.violation(clause, problem)
        if stats.status not in ("cancelled", "finished"):
            raise self.violation(clause, f"it ended with status {stats.status!r}")

    def fails_with_upstream(self) -> None:
        clause = "does not swallow errors"
        node = self.fresh()
        probe = ContractProbeError("contract probe: upstream failure")
        pipeline = self.wire(node, [*self.inputs, Raise(probe)], CollectingSink(allow_empty=True))
        self._expect_probe(pipeline, clause, "its upstream node failed")

    def fails_with_downstream(self) -> None:
        clause = "does not swallow errors"
        node = self.fresh()
        pipeline = self.wire(node, self.inputs, _FailingSink(name="contract:failing-sink"))
        self._expect_probe(pipeline, clause, "its downstream node failed")

    def _expect_probe(self, pipeline: Pipeline, clause: str, what: str) -> None:
        try:
            self.run(pipeline, clause)
        except ContractProbeError:
            return
        except ContractViolation:
            raise
        except BaseException as exc:
            problem = (
                f"{what} with ContractProbeError, but the run raised "
                f"{type(exc).__name__}: {exc} instead; a node must not replace or add "
                "to the error that stopped the pipeline"
            )
            raise self.violation(clause, problem) from exc
        problem = f"{what} with ContractProbeError, but the run finished without an error"
        raise self.violation(clause, problem)

    def raises_on_bad_input(self, bad: Any) -> None:
        clause = "does not swallow errors"
        node = self.fresh()
        pipeline = self.wire(node, [bad], CollectingSink(allow_empty=True))
        try:
            self.run(pipeline, clause)
        except ContractViolation:
            raise
        except Exception:
            pass
        else:
            problem = (
                f"it processed the bad input {bad!r} without raising; a node must let its "
                "errors propagate so that its on_error policy can apply"
            )
            raise self.violation(clause, problem)
        node = self.fresh().configure(on_error="skip")
        pipeline = self.wire(node, [bad], CollectingSink(allow_empty=True))
        summary = self.run(pipeline, clause)
        skipped = summary[node._ns_exit().name].skipped
        if skipped != 1:
            problem = (
                f"with on_error='skip' the bad input {bad!r} was counted as skipped "
                f"{skipped} times, not once"
            )
            raise self.violation(clause, problem)


def _clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def check_node_contract(
    make_node: Callable[[], NanoNode],
    inputs: Iterable[Any] = (),
    *,
    bad_inputs: Iterable[Any] = (),
    endless: bool = False,
    time_limit: float = CONTRACT_TIME_LIMIT,
) -> None:
    """Check that a node class keeps the node contract (see the module docs).

    Runs several small pipelines, each with ``trio.run`` on a fresh fake
    clock, so call it from a plain (sync) test function.

    Args:
        make_node: returns a new, unlinked node each time it is called
            (a class, a ``functools.partial`` or a lambda).
        inputs: items the node accepts (ignored for a source).
        bad_inputs: items the node must reject by raising (processors only).
        endless: the node is a source that runs until stopped (a watcher);
            it is then stopped once idle instead of being run to its end.
        time_limit: virtual seconds each scenario may take (default one hour).

    Raises:
        ContractViolation: the node broke a clause; the message says which and how.
        ValueError: ``inputs`` or ``bad_inputs`` given for a source.

    Example::

        def test_parse_keeps_the_contract():
            check_node_contract(Parse, ["1", "2"], bad_inputs=["not a number"])
    """
    check_time_limit(time_limit)
    check = _Check(make_node, list(inputs), list(bad_inputs), time_limit, endless)
    if check.is_source and (check.inputs or check.bad_inputs):
        msg = f"{check.label} is a source: it takes no inputs or bad_inputs"
        raise ValueError(msg)
    outputs = check.ends_and_emits_through_output()
    check.propagates_cancellation()
    if not check.is_source:
        check.fails_with_upstream()
    if outputs and not check.endless:
        check.fails_with_downstream()
    for bad in check.bad_inputs:
        check.raises_on_bad_input(bad)
