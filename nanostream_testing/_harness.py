"""The single-node harness: drive one node without building a pipeline by hand.

:func:`run_node` (sync) and :func:`run_node_async` feed items to a node and
return what came out of it. They do not imitate the engine: they link the
node, for the duration of one run, between a :class:`FakeSource` and
:class:`CollectingSink`\\s and run that tiny pipeline on the fake clock, so
the node's error policy (skip, retry with backoff, dead letter), its
``setup``/``teardown`` and its threads behave exactly as in production.
The node's links are restored afterwards, so the same node can be driven
again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import trio

from nanostream_trio import (
    DeadLetter,
    GraphError,
    NanoNode,
    NodeStatistics,
    Pipeline,
    PipelineStatistics,
)

from ._events import EventLog
from ._running import DEFAULT_TIME_LIMIT, check_time_limit, run_pipeline_async, run_sync
from ._sinks import CollectingSink
from ._sources import FakeSource

__all__ = ["NodeResult", "run_node", "run_node_async"]


@dataclasses.dataclass(frozen=True)
class NodeResult:
    """What one node did with the items it was fed.

    Attributes:
        outputs: the items the node emitted, in order.
        arrivals: virtual seconds since the run started at which each output was emitted.
        dead_letters: the :class:`~nanostream_trio.DeadLetter` records from its
            ``dead_letters`` port (when that port was linked).
        statistics: the node's final :class:`~nanostream_trio.NodeStatistics`
            (``skipped``, ``retried``, ``dead_lettered``...).
        summary: the whole run's :class:`~nanostream_trio.PipelineStatistics`.
        events: the structlog events of the run (``item_skipped``, ``item_retried``...).
    """

    outputs: list[Any]
    arrivals: list[float]
    dead_letters: list[DeadLetter]
    statistics: NodeStatistics
    summary: PipelineStatistics
    events: EventLog


@contextlib.contextmanager
def _borrowed_links(node: NanoNode) -> Iterator[None]:
    """Give the node back its (empty) links however the run ends."""
    entry, exit_ = node._ns_entry(), node._ns_exit()
    saved = (
        list(entry._ns_upstream),
        list(exit_._ns_downstream),
        list(node.dead_letters.downstream),
    )
    try:
        yield
    finally:
        entry._ns_upstream[:] = saved[0]
        exit_._ns_downstream[:] = saved[1]
        node.dead_letters.downstream[:] = saved[2]


def _check_alone(node: NanoNode) -> None:
    if not isinstance(node, NanoNode):
        msg = f"run_node() drives a NanoNode; got {type(node).__name__} {node!r}"
        raise TypeError(msg)
    links = [
        *(f"from {getattr(u, 'name', u)!r}" for u in node._ns_entry().upstream),
        *(f"to {d.name!r}" for d in node._ns_exit().downstream),
        *(f"dead letters to {d.name!r}" for d in node.dead_letters.downstream),
    ]
    if links:
        msg = (
            f"run_node() drives one node on its own, but node {node.name!r} is linked "
            f"({', '.join(links)}); use run_pipeline() for a linked graph, or a fresh node"
        )
        raise GraphError(msg, upstream=node.name)


async def run_node_async(
    node: NanoNode,
    items: Iterable[Any] = (),
    *,
    interval: float = 0.0,
    at: Sequence[float] | None = None,
    dead_letters: bool | None = None,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    **options: Any,
) -> NodeResult:
    """Feed ``items`` to one node on the current (fake) clock and collect its outputs.

    Args:
        node: the node to drive; it must not be linked to anything. A source
            node is run on its own (``items`` must then be empty).
        items: the input script, as for :class:`FakeSource` (markers allowed).
        interval: virtual seconds between input items.
        at: explicit virtual times of the input items.
        dead_letters: link the node's ``dead_letters`` port and collect the
            records. Default: only when the node's policy is
            ``on_error="dead_letter"``. Linking it also makes a node with
            ``on_error="retry"`` dead-letter an item once its attempts run
            out, instead of raising (as in a pipeline).
        time_limit: virtual seconds the run may take (``None``: no limit).
        **options: keyword arguments for the ``Pipeline`` (``stall_timeout``...).

    Returns:
        A :class:`NodeResult`.

    Raises:
        Exception: the node's failure under ``on_error="raise"``, with its
            original type and a note naming the node and the item.
        TimeLimitExceeded: the node did not finish within ``time_limit``.
        GraphError: the node is linked to other nodes.
        ValueError: ``items`` given for a source node.
    """
    _check_alone(node)
    script = list(items)
    events = EventLog()
    with _borrowed_links(node):
        if node.is_source:
            if script or at is not None:
                msg = f"node {node.name!r} is a source: run_node() cannot feed it items"
                raise ValueError(msg)
        else:
            FakeSource(script, interval=interval, at=at, name=f"{node.name}:input") > node
        outputs = CollectingSink(name=f"{node.name}:output", allow_empty=True)
        node > outputs
        letters = None
        # The node is unlinked here, so on_error reads "dead_letter" only when set explicitly.
        if dead_letters or (dead_letters is None and node.on_error == "dead_letter"):
            letters = CollectingSink(name=f"{node.name}:dead_letters", allow_empty=True)
            node.dead_letters > letters
        options.setdefault("name", f"run_node({node.name})")
        options.setdefault("logger", events.logger())
        pipeline = Pipeline(node, **options)
        summary = await run_pipeline_async(pipeline, time_limit=time_limit)
    return NodeResult(
        outputs=outputs.items,
        arrivals=outputs.arrivals,
        dead_letters=letters.items if letters is not None else [],
        statistics=summary[node._ns_exit().name],
        summary=summary,
        events=events,
    )


def run_node(
    node: NanoNode,
    items: Iterable[Any] = (),
    *,
    interval: float = 0.0,
    at: Sequence[float] | None = None,
    dead_letters: bool | None = None,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    clock: trio.abc.Clock | None = None,
    **options: Any,
) -> NodeResult:
    """Feed ``items`` to one node with ``trio.run`` on a fake clock; collect its outputs.

    The sync twin of :func:`run_node_async` (same arguments, plus ``clock``,
    default a fresh ``MockClock(autojump_threshold=0)``), for plain test functions.

    Example::

        result = run_node(Parse(on_error="skip"), ["1", "x", "3"])
        assert result.outputs == [1, 3]
        assert result.statistics.skipped == 1
    """
    check_time_limit(time_limit)
    run = partial(
        run_node_async,
        node,
        items,
        interval=interval,
        at=at,
        dead_letters=dead_letters,
        time_limit=time_limit,
        **options,
    )
    result: NodeResult = run_sync("run_node", run, clock)
    return result
