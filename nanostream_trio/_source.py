"""Source drivers: a source's ``generator()`` turned into batches on its outbox.

Three drivers, by the style of ``generator()``:

* a sync generator (or function) runs in a worker thread (:class:`~._threads.ThreadedSource`)
  unless ``blocking=False``; the Trio side takes everything the thread has
  produced in one step;
* with ``blocking=False`` (or a function returning an iterable) it is advanced
  on the Trio thread, a chunk at a time, no larger than the room downstream;
* an async generator runs in the source's task and appends each item to the
  open batch of the edge it feeds, with a local count of the room left.

A sync source whose consumer can be fused (see ``NodeRun.chain``) runs that
chain itself: each chunk goes through the chain in this task and only the
chain's outputs travel on an edge. :class:`~._items.Items` hands over many
items in one step in every style.

A source's stop scope wraps its whole generator loop, once; ``stop()``
cancels it only while the source is waiting inside its generator, so an item
already yielded is never dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from ._chain import Chain, Slicer, pass_barrier
from ._checkpoint import UNSET
from ._items import Items, Lines
from ._threads import BarrierMark, ThreadedSource

if TYPE_CHECKING:
    from ._runtime import NodeRun

__all__ = ["run_source"]

# The most items a sync source takes from its iterable in one chunk.
_MAX_CHUNK = 1024


async def run_source(run: NodeRun) -> None:
    """The task body of a source, once its setup has returned."""
    if run.stop_requested:  # stopped before (or during) setup
        return
    node = run.node
    style = node._ns_style
    if style in ("generator", "function") and node._ns_blocking is not False:
        await _run_threaded(run)
    elif style == "async_generator":
        await _run_async_generator(run)
    else:
        with run.stop_scope:
            run.in_generator = True
            result = node.generator()  # type: ignore[attr-defined]
            if style == "async_function":
                result = await result
            run.in_generator = False
        if result is not None and not run.stop_scope.cancelled_caught:
            await _run_inline(run, iter(result))


def _flatten(chunk: list[Any]) -> list[Any]:
    """``chunk`` with each :class:`Items` spliced in."""
    if not any(item.__class__ is Items for item in chunk):
        return chunk
    flat: list[Any] = []
    for item in chunk:
        if item.__class__ is Items:
            flat += item
        else:
            flat.append(item)
    return flat


async def _source_chain(run: NodeRun) -> tuple[Chain, int] | None:
    """The chain this source runs itself, and its chunk size; None if its consumer cannot fuse."""
    runs = run.source_chain()
    if not runs:
        return None
    for follower in runs:
        await follower.setup_done.wait()
    head_inbox = runs[0].inbox
    assert head_inbox is not None
    # Chunks no larger than the head's inbox: what is in hand is what that
    # inbox could hold.
    return Chain(run, runs), min(head_inbox.capacity, _MAX_CHUNK)


async def _emit(run: NodeRun, chain: Chain | None, size: int, batch: list[Any]) -> None:
    """Send a batch of source items out, through the chain if there is one."""
    if chain is None:
        await run.outbox.send_batch(batch)
        return
    slicer = Slicer()
    for start in range(0, len(batch), size):
        if start:
            await slicer.tick()
        chunk = batch[start : start + size] if len(batch) > size else batch
        run.outbox.sent += len(chunk)
        run.last_progress = trio.current_time()
        await chain.feed(chunk)


async def _pass_barrier(run: NodeRun, chain: Chain | None, state: Any = UNSET) -> None:
    """Put the barrier asked for (``run.barrier_request``) on the source's outputs.

    The source's position is taken first (its ``snapshot()``, or ``state``
    taken in its thread), then the barrier passes the chain the source runs
    itself, if any.
    """
    barrier = run.barrier_request
    run.barrier_request = None
    checkpointer = run.checkpointer
    if barrier is None or checkpointer is None:
        return
    checkpointer.source_injected(run, barrier)
    await checkpointer.capture(run, barrier, state)
    run.dead_letter_outbox.push_barrier(barrier)
    if chain is None:
        run.outbox.push_barrier(barrier)
    else:
        await pass_barrier([stage.run for stage in chain.stages], barrier, chain.outbox)


async def _run_inline(run: NodeRun, iterator: Iterator[Any]) -> None:
    # A sync iterable runs in the Trio thread here (nothing else runs while it
    # is being advanced), so taking as many items as there is room for and
    # pushing them as one batch hides nothing from the consumer.
    outbox = run.outbox
    fused = await _source_chain(run)
    slicer = Slicer()
    while not run.stop_requested:
        if fused is None:
            room = outbox.room()
            if room <= 0:
                await outbox.wait_room()
                slicer.restart()
                continue
            size = min(room, _MAX_CHUNK)
        else:
            size = fused[1]
        if run.barrier_request is not None:
            await _pass_barrier(run, None if fused is None else fused[0])
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        await slicer.tick()
        chunk = _flatten(chunk)
        if fused is None:
            if len(chunk) > size:
                # Items spliced in made it larger than the room measured:
                # send the rest as room is made, never over the bound.
                await outbox.send_batch(chunk)
            else:
                outbox.push_batch(chunk)
        else:
            await _emit(run, fused[0], size, chunk)


async def _run_async_generator(run: NodeRun) -> None:
    outbox = run.outbox
    agen = run.node.generator()  # type: ignore[attr-defined]
    # The room only shrinks by our own pushes while this task is the edge's
    # only producer: count it down locally, re-measure at zero. With fan-in
    # another producer may fill the edge whenever we suspend.
    # Read from the graph, not from the edges' open producers: at this point the
    # other producers of a fan-in may not have started (and opened) yet.
    exclusive = all(
        edge.owner is not None and len(edge.owner.node._ns_upstream) == 1 for edge in outbox.edges
    )
    # A single exclusive edge: append to its open batch directly (the
    # consumer is not parked while a batch is open, so nobody needs waking).
    edge = outbox.edges[0] if exclusive and len(outbox.edges) == 1 else None
    room = 0
    try:
        with run.stop_scope:
            # stop() cancels the scope while we wait inside the generator; our
            # own waits for room (below) are not in it, so an item in hand is
            # always delivered.
            run.in_generator = True
            async for item in agen:
                kind = item.__class__
                if kind is Items or kind is Lines:  # Lines: only async sources (TailFile)
                    # Pushed whole (a marker never splits it), waiting for room first.
                    if outbox.room() < len(item) and not run.stop_requested:
                        run.in_generator = False
                        await outbox.send_batch(item)
                        run.in_generator = True
                    else:
                        outbox.push_batch(item)
                    room = 0
                else:
                    # After stop() a cancel may be pending in our scope: never
                    # wait then, the edge takes this one item over its capacity.
                    if room <= 0 and not run.stop_requested:
                        room = outbox.room()
                        if edge is not None and edge.queued > edge.peak:
                            edge.peak = edge.queued
                        if room <= 0:
                            run.in_generator = False
                            await outbox.wait_room()
                            run.in_generator = True
                            room = outbox.room()
                    if edge is not None and edge._tail is not None:
                        edge._tail.append(item)
                        edge._count += 1
                        outbox.sent += 1
                        room -= 1
                    else:
                        outbox.push(item)
                        room = room - 1 if exclusive else 0
                if run.barrier_request is not None:
                    run.in_generator = False
                    await _pass_barrier(run, None)
                    run.in_generator = True
                    room = 0
                if run.stop_requested:
                    break
    finally:
        run.in_generator = False
        if edge is not None:
            edge.peak = max(edge.peak, edge.queued)
        await agen.aclose()


async def _run_threaded(run: NodeRun) -> None:
    snapshot = getattr(run.node, "snapshot", None)
    source = run.thread_source = ThreadedSource(
        run.node.generator,  # type: ignore[attr-defined]
        capacity=run.handoff_capacity(),
        name=f"nanostream-{run.name}",
        snapshot=snapshot if callable(snapshot) else None,
    )
    if run.stop_requested:
        source.stop()
    if run.barrier_request is not None:  # asked for before the thread existed
        source.request_barrier(run.barrier_request)
        run.barrier_request = None
    source.start()
    try:
        fused = await _source_chain(run)
        chain, size = fused if fused is not None else (None, 0)
        while True:
            # A scheduling point per batch (see receive_batch).
            batch = await source.receive_batch()
            if batch is None:
                return
            if source.marks_taken == source.marks_made:
                await _emit(run, chain, size, batch)
                continue
            start = 0
            for index, item in enumerate(batch):
                if item.__class__ is BarrierMark:
                    source.marks_taken += 1
                    if index > start:
                        await _emit(run, chain, size, batch[start:index])
                    start = index + 1
                    run.barrier_request = item.barrier
                    await _pass_barrier(run, chain, item.state)
            if start < len(batch):
                await _emit(run, chain, size, batch[start:])
    finally:
        try:
            await source.aclose()
        finally:
            run.report_abandoned(source)
