"""Chains and the task that drives them between two edges.

A :class:`Chain` is a run of sync stages (``_stage.py``) fused into one task:
the outputs of one stage are the next stage's batch, and only the last
stage's outputs travel on an edge. Each stage keeps its own node's counters,
so statistics, events and failures read as if every node ran alone.

:func:`run_processor` is the task body of a processor between its inbox and
its outboxes: it takes a batch (or a control marker) from the inbox and hands
the batch to what runs this node: its chain, its worker thread
(``blocking=True``), or its :class:`~._stage.AsyncStage`. Batches and markers
are handled strictly in order, and a batch is finished (every output handed
on) before the next entry is taken, so a marker passes a chain exactly
between the outputs of the batches before and after it, and never splits a
user's call.

Fair scheduling: a driver that never has to wait (a sink, an always-full
inbox) still passes a real scheduling point (``trio.lowlevel.checkpoint``) at
least every :data:`TIME_SLICE` seconds, measured with ``time.perf_counter``
once per batch, and once per resumption of a stage that stopped early (one
item with many outputs, such as a CSV chunk's rows). A chain also asks fewer
outputs of each resumption while handing them on takes over half a slice
(``Chain._pace``), so the work between two such points stays near a slice
however costly the nodes downstream are.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._edges import END_OF_STREAM, Barrier, Marker, Outbox
from ._items import Lines, batch_piece
from ._stage import AsyncStage, SyncStage
from ._threads import ThreadWorker

if TYPE_CHECKING:
    from ._runtime import NodeRun

__all__ = ["TIME_SLICE", "Chain", "run_finish", "run_processor"]

#: Longest stretch, in seconds, a node task works without letting other tasks
#: and timers of the same Trio run have a turn.
TIME_SLICE = 0.001

_clock = time.perf_counter

# Bounds of the outputs a chain asks of one resumption of a stage (``Chain._pace``);
# the inboxes downstream bound them too.
_MIN_BURST = 16
_MAX_BURST = 1 << 16


class Slicer:
    """Time slices of one task: a real checkpoint once the slice is used up."""

    __slots__ = ("_ends",)

    def __init__(self) -> None:
        self._ends = 0.0  # 0: the slice starts at the next tick

    def restart(self) -> None:
        """The task has just waited (a real scheduling point): a new slice begins."""
        self._ends = 0.0

    async def tick(self) -> None:
        """Check for cancellation; yield to the scheduler if the slice is used up."""
        now = _clock()
        if now < self._ends:
            await trio.lowlevel.checkpoint_if_cancelled()
        elif self._ends:
            await trio.lowlevel.checkpoint()
            self._ends = _clock() + TIME_SLICE
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._ends = now + TIME_SLICE


class Chain:
    """Sync stages run one after the other in the task of ``owner``.

    Args:
        owner: the node whose task runs the chain (a source, or the first stage's node).
        runs: the nodes whose stages make up the chain, in order.
    """

    def __init__(self, owner: NodeRun, runs: list[NodeRun]) -> None:
        self.owner = owner
        self.stages: list[SyncStage] = [run.sync_stage() for run in runs]
        self.outbox = runs[-1].outbox
        self._last = len(runs) - 1
        # One batch may keep a stage resuming for long (a CSV chunk's rows): a real
        # scheduling point between two resumptions once a time slice is used up, and
        # no more outputs per resumption than fit in half a slice (see _pace).
        self._slicer = Slicer()
        self._burst = _MAX_BURST

    async def feed(self, items: list[Any], start: int = 0) -> None:
        """Pass one batch through ``stages[start:]``; send what the last stage emits."""
        stages = self.stages
        now = trio.current_time()
        k = start
        while True:
            stage = stages[k]
            run = stage.run
            run.items_in += len(items)
            run.last_progress = now
            # What the chain's last edge takes now bounds every stage's
            # outputs: nothing runs further ahead than it could hand on.
            room = min(self.outbox.room(), self._burst)
            try:
                items = stage.process(items, now, room)
            except Exception as exc:
                self._failed(run, exc)
                raise
            if stage.dead:
                await stage.send_dead()
            if stage.has_more:
                await self._drain(k, items)
                return
            if not items:
                return
            if k == self._last:
                await self.outbox.send_batch(items)
                return
            run.outbox.sent += len(items)
            k += 1

    async def pass_on(self, k: int, items: list[Any]) -> None:
        """Hand ``items``, the outputs of stage ``k`` (or of the owner, -1), to what follows."""
        if not items:
            return
        if k == self._last:
            await self.outbox.send_batch(items)
            return
        if k >= 0:
            self.stages[k].run.outbox.sent += len(items)
        await self.feed(items, k + 1)

    async def _drain(self, k: int, items: list[Any]) -> None:
        """Stage ``k`` stopped early: pass on its outputs, wait if asked, resume it, until done."""
        stage = self.stages[k]
        started = 0.0
        while True:
            await self.pass_on(k, items)
            if started:
                self._pace(_clock() - started)
            if not stage.has_more:
                return
            if stage.delay:
                await trio.sleep(stage.delay)
                self._slicer.restart()
            else:
                await self._slicer.tick()
            started = _clock()
            try:
                room = min(self.outbox.room(), self._burst)
                items = stage.resume(trio.current_time(), room)
            except Exception as exc:
                self._failed(stage.run, exc)
                raise
            if stage.dead:
                await stage.send_dead()

    def _pace(self, seconds: float) -> None:
        """A resumption and the hand-over of its outputs took ``seconds``: halve the
        outputs asked of a resumption if that is over half a time slice, double them
        (up to :data:`_MAX_BURST`) if it is under an eighth."""
        if seconds > TIME_SLICE / 2:
            self._burst = max(self._burst // 2, _MIN_BURST)
        elif seconds < TIME_SLICE / 8 and self._burst < _MAX_BURST:
            self._burst *= 2

    def _failed(self, run: NodeRun, exc: BaseException) -> None:
        if run is not self.owner:
            # As if the fused node had failed in its own task: it reports the
            # failure, and the owner's task ends as cancelled.
            run.report_failure(exc)
            self.owner.carried_failure = exc


async def consume(
    run: NodeRun,
    handle: Callable[[list[Any]], Awaitable[None]],
    on_marker: Callable[[Marker], Awaitable[None]] | None = None,
    outbox: Outbox | None = None,
) -> None:
    """Take batches from ``run``'s inbox until the end of stream, handing each to ``handle``.

    A control marker other than the end of stream goes to ``on_marker`` once
    ``handle`` has finished every batch before it (checkpoint barriers: align,
    snapshot, then ``Outbox.push_marker`` after the outputs of those
    batches); without ``on_marker`` it is passed over.

    The time ``handle`` takes, less the time ``outbox`` (default the node's)
    spent waiting for room, is the node's ``busy_seconds``.
    """
    inbox = run.inbox
    assert inbox is not None
    waits = outbox if outbox is not None else run.outbox
    now = trio.current_time
    slicer = Slicer()
    while True:
        if inbox._entries:
            entry = inbox.receive_nowait()
            waited = False
        else:
            # Parking is a real scheduling point (and a cancellation lands there).
            entry = await inbox.receive()
            waited = True
        if entry.__class__ is not list and entry.__class__ is not Lines:
            if entry is END_OF_STREAM:
                return
            if on_marker is not None:
                await on_marker(entry)  # type: ignore[arg-type]
            continue
        if waited:
            slicer.restart()
        else:
            await slicer.tick()
        started, blocked = now(), waits.blocked_seconds
        await handle(entry)
        run.busy_seconds += now() - started - (waits.blocked_seconds - blocked)


async def pass_barrier(runs: list[NodeRun], barrier: Barrier, outbox: Outbox) -> None:
    """``barrier`` has reached ``runs`` (a node, or a fused chain): report each, forward it.

    Everything before the barrier has been processed and handed on, so each
    node's state is the state checkpoint ``barrier.n`` needs. The barrier
    then goes to ``outbox`` (the last node's outputs) and to every node's
    dead letters, so that each downstream node sees it once.
    """
    checkpointer = runs[0].checkpointer
    if checkpointer is not None:
        for run in runs:
            await checkpointer.capture(run, barrier)
    for run in runs:
        run.dead_letter_outbox.push_barrier(barrier)
    # A node whose state covers the node it feeds (a timed composite's intake
    # and its emitter, whose process_item never returns) forwards the barrier
    # on that node's behalf: what the emitter has not handed on is in the
    # intake's snapshot, so the cut is exact at this moment.
    passes_over = getattr(runs[-1].node, "_ns_barrier_passes_over", None)
    if passes_over is None:
        outbox.push_barrier(barrier)
        return
    for edge in outbox.edges:
        target = edge.owner
        if target is None or target.node is not passes_over:
            outbox.push_barrier(barrier, edges=[edge])
            continue
        if checkpointer is not None:
            await checkpointer.capture(target, barrier)
        target.dead_letter_outbox.push_barrier(barrier)
        target.outbox.push_barrier(barrier)


def _barrier_handler(runs: list[NodeRun], outbox: Outbox) -> Callable[[Marker], Awaitable[None]]:
    async def on_marker(marker: Marker) -> None:
        if isinstance(marker, Barrier):
            await pass_barrier(runs, marker, outbox)

    return on_marker


async def run_processor(run: NodeRun) -> None:
    """The task body of a processor or sink, once its setup has returned."""
    node = run.node
    if node._ns_blocking and node._ns_style in ("function", "generator"):
        await _run_blocking(run)
        return
    if node._ns_style in ("function", "generator"):
        runs = run.chain()
        for follower in runs[1:]:
            await follower.setup_done.wait()
        chain = Chain(run, runs)
        await consume(run, chain.feed, _barrier_handler(runs, chain.outbox), chain.outbox)
        await run_finish(run, lambda chunk: chain.pass_on(0, chunk))
        return
    stage = AsyncStage(run, run.hold_limit())
    # A node that buffers its writes (RedisStreamSink) sends them after each
    # batch, so buffering never waits for items that are not coming.
    after_batch = getattr(node, "_ns_after_batch", None)

    async def handle(batch: list[Any]) -> None:
        run.items_in += len(batch)
        run.last_progress = trio.current_time()
        await stage.process(batch, run.outbox)
        if after_batch is not None:
            try:
                await after_batch()
            except Exception as exc:
                exc.add_note(f"in nanostream node {run.name!r}, after a batch of {len(batch)}")
                raise

    await consume(run, handle, _barrier_handler([run], run.outbox))
    await run_finish(run, run.outbox.send_batch)


async def _run_blocking(run: NodeRun) -> None:
    """A sync node declared ``blocking=True``: its stage runs in a worker thread, item by item."""
    worker = run.worker = ThreadWorker(f"nanostream-{run.name}")
    stage = run.sync_stage()
    outbox = run.outbox

    async def handle(batch: list[Any]) -> None:
        for index in range(len(batch)):
            run.items_in += 1
            one = batch_piece(batch, index, index + 1)  # [item], located if batch is Lines
            outputs = await worker.run(stage.process, one, trio.current_time(), outbox.room())
            while True:
                if stage.dead:
                    await stage.send_dead()
                await outbox.send_batch(outputs)
                if not stage.has_more:
                    break
                if stage.delay:
                    await trio.sleep(stage.delay)
                outputs = await worker.run(stage.resume, trio.current_time(), outbox.room())
            # Each item is progress: a node working through slow items is not stalled.
            run.last_progress = trio.current_time()

    try:
        await consume(run, handle, _barrier_handler([run], outbox))
        await run_finish(run, outbox.send_batch, worker)
    finally:
        run.worker = None
        try:
            await worker.aclose()
        finally:
            run.report_abandoned(worker)


def _take(iterator: Any, count: int) -> list[Any]:
    """Up to ``count`` next items of ``iterator`` (fewer only at its end)."""
    return list(itertools.islice(iterator, count))


async def run_finish(
    run: NodeRun,
    emit: Callable[[list[Any]], Awaitable[None]],
    worker: ThreadWorker | None = None,
) -> None:
    """Call the node's ``finish()`` once its input has ended; ``emit`` each chunk it gives.

    A sync ``finish`` runs in the node's worker thread when the node is
    ``blocking``, like its ``process_item``. A generator's outputs go out in
    chunks of at most :meth:`NodeRun.hold_limit` items.
    """
    node = run.node
    style = node._ns_finish_style
    if not style:
        return
    note = f"in nanostream node {run.name!r}, in finish()"
    finish = node.finish
    limit = run.hold_limit()
    if style == "generator":
        generator = finish()  # creating it runs none of its code
        while True:
            try:
                if worker is None:
                    chunk = _take(generator, limit)
                else:
                    chunk = await worker.run(_take, generator, limit)
            except Exception as exc:
                exc.add_note(note)
                raise
            if not chunk:
                return
            await emit(chunk)
    if style == "async_generator":
        agen = finish()
        while True:
            try:
                out = await agen.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                exc.add_note(note)
                raise
            await emit([out])
    try:
        if style == "function":
            out = finish() if worker is None else await worker.run(finish)
        else:
            out = await finish()
    except Exception as exc:
        exc.add_note(note)
        raise
    if out is not None:
        await emit([out])
