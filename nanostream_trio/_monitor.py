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
    from ._edges import Outbox
    from ._node import NanoNode
    from ._pipeline import Pipeline
    from ._runtime import NodeRun

__all__ = ["DRAIN_REPORT_INTERVAL", "monitor", "node_statistics", "report_draining"]

#: Seconds (Trio clock) between ``pipeline_draining`` events during a graceful stop.
DRAIN_REPORT_INTERVAL = 1.0


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
        blocked_seconds=_blocked(run.outbox, end) + _blocked(run.dead_letter_outbox, end),
        rate=counted / running if running > 0 else 0.0,
        last_progress=run.last_progress,
        filtered=run.filtered,
        handoff_queued=run.thread_source.queued if run.thread_source is not None else 0,
        alignment_seconds=run.alignment_seconds,
        busy_seconds=run.busy_seconds,
        waiting_for=_waiting_for(run) if run.status == "running" else None,
    )


def _waiting_for(run: NodeRun) -> str | None:
    """What a running node waits for now, in words (None: it is working)."""
    if run.outbox.waiting or run.dead_letter_outbox.waiting:
        return "room downstream"
    node = run.node
    if node._ns_kind != "source":
        inbox = run.inbox
        return "items" if inbox is not None and not inbox.queued else None
    declared = getattr(node, "waiting_for", None)
    if isinstance(declared, str) and declared:
        return declared
    source = run.thread_source
    if source is not None:
        return "its generator() in a worker thread" if not source.queued else None
    return "its generator()" if run.in_generator else None


def _relative(node: NodeStatistics, started: float) -> dict[str, Any]:
    """``node.as_dict()`` for an event: ``last_progress`` in seconds since the pipeline's start."""
    fields = node.as_dict()
    fields["last_progress"] = max(node.last_progress - started, 0.0)
    return fields


async def report_draining(pipeline: Pipeline, log: Any, stopping: trio.Event) -> None:
    """Once a graceful stop begins, emit ``pipeline_draining`` until the run ends.

    Each event gives the items still in edges and source hand-offs, in total
    and per node, so a long drain shows its progress.
    """
    await stopping.wait()
    while True:
        stats = pipeline.statistics()
        left = {
            name: node.inbox_queued + node.handoff_queued
            for name, node in stats.items()
            if node.inbox_queued + node.handoff_queued
        }
        running = [name for name, node in stats.items() if node.status == "running"]
        log.info("pipeline_draining", queued=sum(left.values()), nodes=left, running=running)
        await trio.sleep(DRAIN_REPORT_INTERVAL)


def _blocked(outbox: Outbox, now: float) -> float:
    """Seconds ``outbox`` has waited for room, the wait going on now included."""
    ongoing = now - outbox.waiting_since if outbox.waiting else 0.0
    return outbox.blocked_seconds + ongoing


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
                nodes={name: _relative(node, now - stats.elapsed) for name, node in stats.items()},
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
