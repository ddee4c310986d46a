"""What a pipeline reports about itself while it runs: statistics and the monitor task.

:func:`node_statistics` builds one node's frozen snapshot from its run's
counters; :func:`monitor` is the task that emits ``pipeline_stats``
periodically and ``node_stalled`` when a node stops taking items.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._stats import NodeStatistics

if TYPE_CHECKING:
    from ._node import NanoNode
    from ._pipeline import Pipeline
    from ._runtime import NodeRun

__all__ = ["monitor", "node_statistics"]


def node_statistics(node: NanoNode, run: NodeRun | None, now: float) -> NodeStatistics:
    """One node's :class:`NodeStatistics` now (``run`` is None before its first run)."""
    role: Literal["source", "processor", "sink"] = (
        "source" if node._ns_kind == "source" else ("processor" if node._ns_downstream else "sink")
    )
    if run is None:
        return NodeStatistics(
            name=node.name, role=role, status="pending", items_in=0, items_out=0,
            skipped=0, retried=0, dead_lettered=0, inbox_queued=0,
            inbox_capacity=0 if role == "source" else node._ns_capacity, inbox_peak=0,
            blocked_seconds=0.0, rate=0.0, last_progress=0.0,
        )  # fmt: skip
    end = run.ended_at if run.ended_at is not None else now
    running = end - run.started_at
    counted = run.outbox.sent if role == "source" else run.items_in
    inbox = run.inbox
    return NodeStatistics(
        name=node.name,
        role=role,
        status=run.status,
        items_in=run.items_in,
        items_out=run.outbox.sent,
        skipped=run.skipped,
        retried=run.retried,
        dead_lettered=run.dead_lettered,
        inbox_queued=inbox.queued if inbox is not None else 0,
        inbox_capacity=inbox.capacity if inbox is not None else 0,
        inbox_peak=inbox.peak if inbox is not None else 0,
        blocked_seconds=run.outbox.blocked_seconds + run.dead_letter_outbox.blocked_seconds,
        rate=counted / running if running > 0 else 0.0,
        last_progress=run.last_progress,
        filtered=run.filtered,
        handoff_queued=run.thread_source.queued if run.thread_source is not None else 0,
        alignment_seconds=run.alignment_seconds,
    )


async def monitor(
    pipeline: Pipeline, log: Any, stats_every: float | None, stall_after: float | None
) -> None:
    """Emit ``pipeline_stats`` periodically and ``node_stalled`` when a node stops moving."""
    if stats_every is None and stall_after is None:
        return
    now = trio.current_time()
    next_stats = now + stats_every if stats_every is not None else math.inf
    stalled: set[str] = set()
    # When the monitor first saw each inbox non-empty: an item that arrived
    # a moment ago at an idle node is not a stall.
    busy_since: dict[str, float] = {}
    while True:
        now = trio.current_time()
        if now >= next_stats:
            stats = pipeline.statistics()
            log.info(
                "pipeline_stats",
                elapsed=stats.elapsed,
                nodes={name: node.as_dict() for name, node in stats.nodes.items()},
            )
            next_stats = now + stats_every  # type: ignore[operator]
        wake = next_stats
        if stall_after is not None:
            wake = min(wake, now + stall_after / 4)
            for run in pipeline._runs.values():
                inbox = run.inbox
                if inbox is None or run.status != "running" or not inbox.queued:
                    stalled.discard(run.name)
                    busy_since.pop(run.name, None)
                    continue
                if run.outbox.waiting or run.dead_letter_outbox.waiting:
                    # Held back by a slower node downstream, which is the
                    # one to report; count again once it moves.
                    busy_since[run.name] = now
                    continue
                since = max(run.last_progress, busy_since.setdefault(run.name, now))
                deadline = since + stall_after
                if now >= deadline and run.name not in stalled:
                    stalled.add(run.name)
                    log.bind(node=run.name).warning(
                        "node_stalled",
                        inbox_queued=inbox.queued,
                        seconds=now - since,
                        items_in=run.items_in,
                    )
                elif now < deadline:
                    stalled.discard(run.name)
                    wake = min(wake, deadline)
        await trio.sleep_until(wake)
