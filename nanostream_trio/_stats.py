"""Frozen snapshots of a pipeline's counters: ``pipeline.statistics()``.

The same numbers travel in the ``pipeline_stats`` and ``pipeline_finished``
events (see ``docs/events.md``). Times are on the Trio clock, so under a fake
clock they are exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["NodeStatistics", "NodeStatus", "PipelineStatistics", "PipelineStatus"]

NodeStatus = Literal["pending", "running", "finished", "failed", "cancelled"]
PipelineStatus = Literal["pending", "running", "stopping", "finished", "failed", "cancelled"]


@dataclasses.dataclass(frozen=True)
class NodeStatistics:
    """One node's counters at one moment.

    Attributes:
        name: the node's name.
        role: ``"source"``, ``"processor"`` (has downstream nodes) or ``"sink"``.
        status: ``"pending"``, ``"running"``, ``"finished"``, ``"failed"`` or ``"cancelled"``.
        items_in: items taken from the inbox (0 for a source).
        items_out: items emitted on the main output (counted once under fan-out).
        skipped: items dropped by ``on_error="skip"``.
        retried: retry attempts made (not items).
        dead_lettered: items sent out of the ``dead_letters`` port.
        inbox_queued: items waiting in the inbox now.
        inbox_capacity: the inbox's capacity (0 for a source, which has none).
        inbox_peak: the most items the inbox ever held at once.
        blocked_seconds: time spent waiting for room downstream (back-pressure).
        rate: items per second over the node's running time, counting
            ``items_in`` for a consumer and ``items_out`` for a source.
        last_progress: Trio time of the last item taken or emitted, or of the
            node's start.
        filtered: items taken that produced no output and no error (a
            function ``process_item`` returned None, a ``Filter`` dropped the
            item, a generator yielded nothing). For a node that emits at most
            one output per item, ``items_in == items_out + filtered + skipped
            + dead_lettered`` once its inbox is drained.
        handoff_queued: for a sync source run in a worker thread, items the
            thread has produced that the Trio side has not taken yet (at most
            the capacity of the inbox it feeds); 0 otherwise.
        busy_seconds: Trio-clock seconds the node's task spent working on
            batches, waits for room downstream excluded (for a chain of fused
            nodes, the chain's time is counted on its first node; 0 for a source).
        waiting_for: what a running node waits for now, in words: ``"items"``
            (an empty inbox), ``"room downstream"``, a source's own account
            (``TailFile``: ``"new lines in app.log"`` or ``"app.log to
            appear"``; ``LocalDirectoryWatchdog``: ``"file events in DIR"``;
            any source may set a ``waiting_for`` attribute), else
            ``"its generator()"``; None while it works or once it has ended.
        alignment_seconds: with checkpoints, Trio-clock seconds checkpoint
            barriers waited in this node's inbox for all of its inputs
            (fan-in alignment; 0 for a node with one input).
    """

    name: str
    role: Literal["source", "processor", "sink"]
    status: NodeStatus
    items_in: int
    items_out: int
    skipped: int
    retried: int
    dead_lettered: int
    inbox_queued: int
    inbox_capacity: int
    inbox_peak: int
    blocked_seconds: float
    rate: float
    last_progress: float
    filtered: int = 0
    handoff_queued: int = 0
    alignment_seconds: float = 0.0
    busy_seconds: float = 0.0
    waiting_for: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for logging and JSON)."""
        # Shallow on purpose: every field is a scalar, and dataclasses.asdict's
        # deep copy is what made periodic stats costly over long virtual runs.
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class PipelineStatistics(Mapping[str, NodeStatistics]):
    """A snapshot of a whole pipeline; also the summary ``run()`` returns.

    It is a read-only mapping from node name to :class:`NodeStatistics`, so
    ``summary["parse"].items_out`` reads one node's count.

    Attributes:
        name: the pipeline's name.
        status: ``"pending"``, ``"running"``, ``"stopping"``, ``"finished"``,
            ``"failed"`` or ``"cancelled"``.
        elapsed: Trio-clock seconds since the run started (0 before).
        nodes: per-node statistics, in the pipeline's node order.
        checkpoints: checkpoints written during the run (0 without ``checkpoint=``).
        checkpoint_age: Trio-clock seconds since the last checkpoint was
            written, or None when none has been during this run.
    """

    name: str
    status: PipelineStatus
    elapsed: float
    nodes: Mapping[str, NodeStatistics]
    checkpoints: int = 0
    checkpoint_age: float | None = None

    def __getitem__(self, node: str) -> NodeStatistics:
        return self.nodes[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dicts (for logging and JSON)."""
        return {
            "name": self.name,
            "status": self.status,
            "elapsed": self.elapsed,
            "checkpoints": self.checkpoints,
            "checkpoint_age": self.checkpoint_age,
            "nodes": {name: stats.as_dict() for name, stats in self.nodes.items()},
        }
