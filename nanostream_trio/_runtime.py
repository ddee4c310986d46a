"""One node's state for one run of a pipeline, and its task body.

A :class:`NodeRun` holds a node's per-run state (inbox, outboxes, counters,
status, the stop scope of a source) and runs its life: setup, the work,
teardown, with an event at each step. The work itself is done by the pieces
next to it:

* ``_stage.py``: a *stage* calls the user's ``process_item`` over a batch
  under the node's error policy;
* ``_chain.py``: a *chain* of sync stages fused into one task, and the
  *driver* that takes batches and markers from an inbox and feeds them to it;
* ``_source.py``: the *source drivers*, one per style of ``generator()``.

A sync node fused into its upstream's chain keeps its own task: it is set up,
waits for the end of its (empty) inbox, runs its ``finish()`` through the rest
of the chain and is torn down, so its events and statistics are its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from . import _threads
from ._chain import run_processor
from ._edges import Edge, Outbox
from ._source import run_source
from ._stage import SyncStage

if TYPE_CHECKING:
    from ._checkpoint import Checkpointer
    from ._edges import Barrier
    from ._node import NanoNode
    from ._stats import NodeStatus
    from ._threads import ThreadedSource, ThreadWorker

__all__ = ["FUSE_CHAINS", "THREAD_HANDOFF_FACTOR", "NodeRun"]

#: Fuse runs of sync nodes into one task (see :meth:`NodeRun.chain` and
#: docs/performance.md). Tests and benchmarks turn it off to compare both ways.
FUSE_CHAINS = True

#: A source thread's hand-off holds this many times the capacity of the inbox
#: it feeds (see ``ThreadedSource``; counted in ``NodeStatistics.handoff_queued``).
THREAD_HANDOFF_FACTOR = 1


async def maybe_await(value: Any) -> Any:
    """``await value`` if it is awaitable, else ``value`` (for sync-or-async hooks)."""
    if inspect.isawaitable(value):
        return await value
    return value


_maybe_await = maybe_await


class NodeRun:
    """One node's state for one run of a pipeline."""

    def __init__(self, node: NanoNode, inbox: Edge | None, log: Any) -> None:
        self.node = node
        self.name = node.name
        self.inbox = inbox
        self.outbox = Outbox([])
        self.dead_letter_outbox = Outbox([])
        self.log: structlog.typing.FilteringBoundLogger = log
        node._ns_log = log
        self.status: NodeStatus = "pending"
        self.items_in = 0
        self.filtered = 0
        self.skipped = 0
        self.retried = 0
        self.dead_lettered = 0
        self.started_at = 0.0
        self.ended_at: float | None = None
        self.last_progress = 0.0
        self.stop_scope = trio.CancelScope()
        self.stop_requested = False
        self.in_generator = False
        self.thread_source: ThreadedSource | None = None
        # Set once setup() has returned: a chain that runs this node's stage
        # calls its process_item only after that.
        self.setup_done = trio.Event()
        # A failure of a node fused into this one's chain: that node reports it
        # (node_failed, status "failed"); this task just carries it out.
        self.carried_failure: BaseException | None = None
        self._stage: SyncStage | None = None
        # Checkpoints: the run's coordinator (None: no checkpoint store), the
        # barrier a source is asked to put out next, the worker thread of a
        # blocking node (its hooks run there), seconds spent aligning barriers.
        self.checkpointer: Checkpointer | None = None
        self.barrier_request: Barrier | None = None
        self.worker: ThreadWorker | None = None
        self.alignment_seconds = 0.0
        # Seconds spent working on batches (see _chain.consume).
        self.busy_seconds = 0.0
        if inbox is not None:
            inbox.owner = self

    # -- control ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop of a source: no new items, the ones emitted drain."""
        self.stop_requested = True
        if self.in_generator:
            self.stop_scope.cancel()
        if self.thread_source is not None:
            self.thread_source.stop()

    def request_barrier(self, barrier: Barrier) -> None:
        """Ask a source to put ``barrier`` between its next two batches (see ``_checkpoint``)."""
        if self.thread_source is not None:
            self.thread_source.request_barrier(barrier)
        else:
            self.barrier_request = barrier

    # -- task body ---------------------------------------------------------------

    async def run(self, ready: Callable[[], None]) -> None:
        """The node's task: setup, work, teardown, with events at each step.

        A node class may define ``_ns_session()``, an async context manager
        entered here around all of it, in the node's own task: for a client
        that must live in a task group of its own (coredis' connection pool),
        which ``setup()`` cannot open and ``teardown()`` close.
        """
        session = getattr(self.node, "_ns_session", None)
        if session is None:
            await self._run(ready)
            return
        async with session():
            await self._run(ready)

    async def _run(self, ready: Callable[[], None]) -> None:
        node = self.node
        self.status = "running"
        self.started_at = self.last_progress = trio.current_time()
        self.outbox.open()
        self.dead_letter_outbox.open()
        self.log.info("node_started", role=self.role)
        # Where a failure happened, for its note; processors note the item
        # (or finish()) themselves.
        phase = "setup()"
        try:
            await maybe_await(node.setup())
            checkpointer = self.checkpointer
            if checkpointer is not None:
                phase = ""  # the hooks note themselves
                await checkpointer.restore_node(self)
            self.setup_done.set()
            ready()
            if node._ns_kind == "source":
                phase = "generator()"
                await run_source(self)
            else:
                phase = ""
                await run_processor(self)
            if checkpointer is not None:
                # Ended normally (finish() has emitted): its final state, for
                # the checkpoint that ends a graceful stop or the input.
                phase = ""
                await checkpointer.capture(self, None)
        except trio.Cancelled:
            if self.status == "running":  # not a fused node that already failed
                self.status = "cancelled"
            raise
        except BaseException as exc:
            if exc is self.carried_failure:
                self.status = "cancelled"
                raise
            if phase and isinstance(exc, Exception):
                exc.add_note(f"in nanostream node {self.name!r}, in {phase}")
            self.report_failure(exc)
            raise
        finally:
            await self._teardown()
        status: str = self.status  # (set by another task meanwhile: no narrowing)
        if status == "failed":
            # Fused into an upstream node's chain, it failed there (that task
            # raised and reported it); the end of stream that followed is not
            # a normal finish.
            return
        self.status = "finished"
        assert self.ended_at is not None  # set by _teardown
        self.log.info(
            "node_finished",
            items_in=self.items_in,
            items_out=self.outbox.sent,
            filtered=self.filtered,
            skipped=self.skipped,
            dead_lettered=self.dead_lettered,
            elapsed=self.ended_at - self.started_at,
        )

    def report_failure(self, exc: BaseException) -> None:
        """Mark this node failed and emit ``node_failed``."""
        self.status = "failed"
        self.log.error(
            "node_failed",
            error=f"{type(exc).__name__}: {exc}",
            exc_type=type(exc).__name__,
            items_in=self.items_in,
            items_out=self.outbox.sent,
        )

    def report_abandoned(self, thread: ThreadedSource | ThreadWorker) -> None:
        """Emit ``thread_abandoned`` if a cancelled close left ``thread`` behind."""
        if thread.abandoned:
            self.log.error(
                "thread_abandoned",
                thread=thread.name,
                grace=_threads.CANCEL_GRACE,
                reason="still in a blocking call after the grace period of a cancellation",
            )

    async def _teardown(self) -> None:
        """Run the node's teardown; close its outputs if it ended normally.

        A teardown failure after a clean run fails the node. During a failure
        or a cancellation it is recorded by a ``teardown_failed`` event and the
        original exception keeps propagating: the first failure is the one
        the user needs to see.
        """
        node = self.node
        failing = self.status != "running"
        try:
            with trio.CancelScope(shield=failing):
                await maybe_await(node.teardown())
        except Exception as exc:
            exc.add_note(f"in nanostream node {self.name!r}, in teardown()")
            if not failing:
                self.report_failure(exc)
                raise
            self.log.error(
                "teardown_failed", error=f"{type(exc).__name__}: {exc}", exc_type=type(exc).__name__
            )
        finally:
            self.ended_at = trio.current_time()
            node._ns_log = None
            # Only a node that ended normally sends the end of stream: after a
            # failure or a cancel the whole nursery is being cancelled, and a
            # downstream node must not mistake that for a clean finish.
            if self.status == "running":
                self.outbox.close()
                self.dead_letter_outbox.close()

    @property
    def role(self) -> str:
        if self.node._ns_kind == "source":
            return "source"
        return "processor" if self.outbox.edges else "sink"

    # -- the shape of the work -----------------------------------------------------

    def hold_limit(self) -> int:
        """How many outputs of one item may be held back: the smallest downstream inbox."""
        return self.outbox.capacity()

    def handoff_capacity(self) -> int:
        """How many items a source's worker thread may produce ahead of its task."""
        return THREAD_HANDOFF_FACTOR * self.outbox.capacity()

    def sync_stage(self) -> SyncStage:
        """This node's sync stage (made once per run: a chain and the node's own task share it)."""
        if self._stage is None:
            self._stage = SyncStage(self, self.hold_limit())
        return self._stage

    def _fusable(self) -> bool:
        """Whether this node's stage may run in its upstream's task (see :meth:`chain`)."""
        node = self.node
        return (
            node._ns_kind == "processor"
            and node._ns_style in ("function", "generator")
            and not node._ns_blocking
        )

    def _follower(self) -> NodeRun | None:
        """The node fused after this one, if any."""
        edges = self.outbox.edges
        if not FUSE_CHAINS or len(edges) != 1:
            return None
        following: NodeRun | None = edges[0].owner
        if (
            following is None
            or not following._fusable()
            or len(following.node._ns_upstream) != 1
            or following.node._ns_upstream[0] is not self.node
        ):
            return None
        return following

    def chain(self) -> list[NodeRun]:
        """This node, then every node fused into its task.

        A node is fused into its upstream when it is a sync node (plain
        function or generator ``process_item``, any policy) that does not
        block, its only input is that upstream's main output and it is that
        output's only consumer. Fan-out, fan-in, async and blocking nodes end a
        chain (a node's ``dead_letters`` port does not). A fused node keeps
        its task (setup, teardown, events, statistics) but its inbox stays
        empty: the chain calls its stage directly, a batch at a time.
        """
        runs = [self]
        following = self._follower()
        while following is not None:
            runs.append(following)
            following = following._follower()
        return runs

    def source_chain(self) -> list[NodeRun]:
        """The nodes fused into this source's own task (none if its consumer cannot be)."""
        head = self._follower()
        return head.chain() if head is not None else []
