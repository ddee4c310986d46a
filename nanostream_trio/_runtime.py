"""The task body of each node while a pipeline runs.

A :class:`NodeRun` holds one node's per-run state (inbox, outboxes, counters,
the stop scope of a source) and its task body. The processor loop has a fast
path for the default ``"raise"`` policy, which streams outputs straight into
the outbox, and a guarded path for the other policies, which collects an
item's outputs and emits them only once processing it has succeeded (so a
retried item never emits twice).
"""

from __future__ import annotations

import inspect
import itertools
import traceback
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
import trio

from . import _threads
from ._edges import DEFAULT_CAPACITY, END_OF_STREAM, Edge, Marker, Outbox
from ._items import Items
from ._policy import DeadLetter, short_repr
from ._threads import ThreadedSource, ThreadWorker

if TYPE_CHECKING:
    from ._node import NanoNode
    from ._stats import NodeStatus

__all__ = ["FUSE_CHAINS", "THREAD_HANDOFF_FACTOR", "NodeRun"]

#: Fuse linear chains of sync function nodes into one task (see ``NodeRun._chain``
#: and docs/performance.md). Tests turn it off to compare both ways.
FUSE_CHAINS = True

#: A source thread's hand-off holds this many times the capacity of the inbox
#: it feeds. The thread and the Trio side take turns at the GIL, and each turn
#: costs OS wake-ups of the other thread (50 to 300 microseconds when the two
#: threads sit on different CPUs of a virtual machine), so a thread that can run
#: ahead further works in longer stretches. Measured on the benchmark's 2-CPU
#: VM (docs/performance.md, "Sync sources"): about 0.24 of the inline loop at
#: 1x, 0.54 at 16x, 0.59 at 32x. The read-ahead stays bounded: 32 x 256 items
#: with the default capacity.
THREAD_HANDOFF_FACTOR = 32

# The most items a sync source takes from its iterable before pushing them.
_MAX_CHUNK = 1024
# A source running a fused chain yields to the scheduler once per this many chunks.
_CHUNKS_PER_YIELD = 4


# (node run, "map" or "filter", function): one step of a fused chain.
_Stage = tuple["NodeRun", str, Callable[[Any], Any]]


def _item_operation(node: NanoNode) -> tuple[str, Callable[[Any], Any]]:
    """``("map", func)`` or ``("filter", predicate)``: what the node does to one item.

    By default ``("map", node.process_item)``: the outputs are the non-None
    results. A node class may define ``_ns_item_operation(self)`` returning
    the same kind of pair, promising that process_item(item) is exactly
    ``func(item)`` (map) or ``item if predicate(item) else None`` (filter);
    the engine then calls the user's function directly, skipping one Python
    call per item. Returning None falls back to the default.
    """
    hook = getattr(node, "_ns_item_operation", None)
    if hook is not None:
        operation: tuple[str, Callable[[Any], Any]] | None = hook()
        if operation is not None:
            return operation
    return "map", node.process_item  # type: ignore[attr-defined]


def _take(iterator: Iterator[Any], count: int) -> list[Any]:
    """Up to ``count`` next items of ``iterator`` (fewer only at its end)."""
    return list(itertools.islice(iterator, count))


def _flatten(chunk: list[Any]) -> list[Any] | None:
    """``chunk`` with each :class:`Items` spliced in; None if ``chunk`` is empty."""
    if not chunk:
        return None
    if not any(item.__class__ is Items for item in chunk):
        return chunk
    flat: list[Any] = []
    for item in chunk:
        if item.__class__ is Items:
            flat += item
        else:
            flat.append(item)
    return flat


def _push_any(outbox: Outbox, item: Any) -> None:
    """Push one item, or all of an :class:`Items` in one step."""
    if item.__class__ is Items:
        outbox.push_batch(item)
    else:
        outbox.push(item)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


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
        self.skipped = 0
        self.retried = 0
        self.dead_lettered = 0
        self.started_at = 0.0
        self.ended_at: float | None = None
        self.last_progress = 0.0
        # A source's stop scope wraps its whole generator loop, once; stop()
        # cancels it only while the source is waiting inside its generator, so
        # an item already yielded is never dropped.
        self.stop_scope = trio.CancelScope()
        self.stop_requested = False
        self.in_generator = False
        self.thread_source: ThreadedSource | None = None
        # Set once setup() has returned: a node that fuses this one into its
        # own loop (see _chain) calls its process_item only after that.
        self.setup_done = trio.Event()
        # A failure of a node fused into this one's loop: that node reports it
        # (node_failed, status "failed"); this task just carries it out.
        self.carried_failure: BaseException | None = None
        self._chunks = 0
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

    # -- task body ---------------------------------------------------------------

    async def run(self, ready: Callable[[], None]) -> None:
        """The node's task: setup, loop, teardown, with events at each step."""
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
            await _maybe_await(node.setup())
            self.setup_done.set()
            ready()
            if node._ns_kind == "source":
                phase = "generator()"
                await self._run_source()
            else:
                phase = ""
                await self._run_processor()
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
            # Fused into an upstream node's loop, it failed there (that task
            # raised and reported it); the end of stream that followed is not
            # a normal finish.
            return
        self.status = "finished"
        assert self.ended_at is not None  # set by _teardown
        self.log.info(
            "node_finished",
            items_in=self.items_in,
            items_out=self.outbox.sent,
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
                await _maybe_await(node.teardown())
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

    # -- sources -------------------------------------------------------------------

    async def _run_source(self) -> None:
        if self.stop_requested:  # stopped before (or during) setup
            return
        node = self.node
        style = node._ns_style
        blocking = node._ns_blocking
        if style in ("generator", "function") and blocking is not False:
            await self._run_threaded_source()
        elif style == "async_generator":
            await self._run_async_generator_source()
        else:
            with self.stop_scope:
                self.in_generator = True
                result = await _maybe_await(node.generator())  # type: ignore[attr-defined]
                self.in_generator = False
            if result is not None and not self.stop_scope.cancelled_caught:
                await self._emit_all(result)

    async def _emit_all(self, items: Any) -> None:
        # A sync iterable runs in the Trio thread here (nothing else runs while
        # it is being advanced), so taking as many items as there is room for
        # and pushing them as one batch hides nothing from the consumer.
        outbox = self.outbox
        iterator = iter(items)
        fused = await self._fused_source_stages()
        if fused is not None:
            stages, size = fused
            while not self.stop_requested:
                chunk = _flatten(list(itertools.islice(iterator, size)))
                if not chunk:
                    if chunk is None:
                        return
                    continue
                await self._emit_through(stages, chunk)
            return
        while not self.stop_requested:
            room = outbox.room()
            if room <= 0:
                await outbox.wait_room()
                continue
            chunk = _flatten(list(itertools.islice(iterator, min(room, _MAX_CHUNK))))
            if not chunk:
                if chunk is None:
                    return
                continue
            outbox.push_batch(chunk)

    # A source whose consumer is a fusable chain (see _chain) runs that chain
    # itself: each chunk of source items goes through the stages in this task
    # and only the chain's outputs travel on an edge. Chunks are no larger than
    # the head's inbox, so everything in hand is what that inbox could hold.

    async def _fused_source_stages(self) -> tuple[list[_Stage], int] | None:
        chain = self._source_chain()
        if not chain:
            return None
        for run in chain:
            await run.setup_done.wait()
        head_inbox = chain[0].inbox
        assert head_inbox is not None
        self._chunks = 0
        stages: list[_Stage] = [(run, *_item_operation(run.node)) for run in chain]
        return stages, min(head_inbox.capacity, _MAX_CHUNK)

    async def _emit_through(self, stages: list[_Stage], chunk: list[Any]) -> None:
        """Emit ``chunk`` from this source through the fused ``stages``."""
        # A chain ending in a sink never waits, so give other tasks a turn
        # now and then; cancellation is checked at every chunk.
        self._chunks += 1
        if self._chunks % _CHUNKS_PER_YIELD:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
        self.outbox.sent += len(chunk)
        self.last_progress = trio.current_time()
        outputs = self._run_stages(stages, chunk)
        if outputs:
            await stages[-1][0].outbox.send_batch(outputs)

    async def _run_async_generator_source(self) -> None:
        outbox = self.outbox
        agen = self.node.generator()  # type: ignore[attr-defined]
        try:
            with self.stop_scope:
                self.in_generator = True
                async for item in agen:
                    self.in_generator = False
                    if self.stop_requested:
                        # A cancel may be pending in our scope: never wait here,
                        # the edge takes this one item over its capacity.
                        _push_any(outbox, item)
                        break
                    if not outbox.has_room():
                        await outbox.wait_room()
                    _push_any(outbox, item)
                    if self.stop_requested:
                        break
                    self.in_generator = True
        finally:
            self.in_generator = False
            await agen.aclose()

    async def _run_threaded_source(self) -> None:
        node = self.node
        outbox = self.outbox
        source = self.thread_source = ThreadedSource(
            node.generator,  # type: ignore[attr-defined]
            capacity=THREAD_HANDOFF_FACTOR
            * min((edge.capacity for edge in outbox.edges), default=DEFAULT_CAPACITY),
            name=f"nanostream-{self.name}",
        )
        if self.stop_requested:
            source.stop()
        source.start()
        try:
            fused = await self._fused_source_stages()
            checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
            while True:
                # A scheduling point per batch (see receive_batch); the chunks
                # of a batch below only check for cancellation: each trip
                # through the scheduler lets the waiting source thread contend
                # for the GIL in the middle of the batch (docs/performance.md).
                batch = await source.receive_batch()
                if batch is None:
                    return
                if fused is None:
                    await outbox.send_batch(batch)
                    continue
                stages, size = fused
                last_outbox = stages[-1][0].outbox
                for start in range(0, len(batch), size):
                    await checkpoint_if_cancelled()
                    chunk = batch[start : start + size]
                    outbox.sent += len(chunk)
                    self.last_progress = trio.current_time()
                    outputs = self._run_stages(stages, chunk)
                    if outputs:
                        await last_outbox.send_batch(outputs)
        finally:
            try:
                await source.aclose()
            finally:
                self._report_abandoned(source)

    # -- processors --------------------------------------------------------------------

    async def _run_processor(self) -> None:
        node = self.node
        if node.on_error == "raise" and not node._ns_blocking:
            if node._ns_style == "function" and self._fusable():
                await self._consume_chain()
                return  # a fusable node has no finish()
            if node._ns_style == "generator":
                await self._consume_generator()
                await self._finish(None)
                return
        if node.on_error == "raise":
            call = self._fast_call()
        else:
            call = self._guarded_call
        worker = None
        if node._ns_blocking and node._ns_style in ("function", "generator"):
            worker = ThreadWorker(f"nanostream-{self.name}")
            call = self._threaded_call(worker) if node.on_error == "raise" else call
            self._worker = worker
        try:
            await self._consume(call)
            await self._finish(worker)
        finally:
            if worker is not None:
                try:
                    await worker.aclose()
                finally:
                    self._report_abandoned(worker)

    def _report_abandoned(self, thread: ThreadedSource | ThreadWorker) -> None:
        if thread.abandoned:
            self.log.error(
                "thread_abandoned",
                thread=thread.name,
                grace=_threads.CANCEL_GRACE,
                reason="still in a blocking call after the grace period of a cancellation",
            )

    async def _finish(self, worker: ThreadWorker | None) -> None:
        """Call the node's ``finish()`` once its input has ended; emit what it gives.

        A sync ``finish`` runs in the node's worker thread when the node is
        ``blocking``, like its ``process_item``.
        """
        node = self.node
        style = node._ns_finish_style
        if not style:
            return
        finish = node.finish
        outbox = self.outbox
        try:
            if style == "generator" and worker is None:
                for out in finish():
                    await outbox.send(out)
            elif style == "generator":
                assert worker is not None
                generator = finish()  # creating it runs none of its code
                limit = self._hold_limit()
                while chunk := await worker.run(_take, generator, limit):
                    await outbox.send_batch(chunk)
            elif style == "function":
                out = finish() if worker is None else await worker.run(finish)
                if out is not None:
                    await outbox.send(out)
            elif style == "async_function":
                out = await finish()
                if out is not None:
                    await outbox.send(out)
            else:
                async for out in finish():
                    await outbox.send(out)
        except Exception as exc:
            exc.add_note(f"in nanostream node {self.name!r}, in finish()")
            raise

    async def _next_batch(self, *, count: bool = True) -> list[Any] | None:
        """The next batch from the inbox, or None once the stream has ended.

        Control markers other than the end of stream are passed over. A batch
        may hold up to a whole inbox of items: one cancellation check per batch
        keeps cancellation prompt (it lands within one batch's work) at no
        per-item cost. ``count`` adds the batch to this node's ``items_in``.
        """
        inbox = self.inbox
        assert inbox is not None
        while True:
            entry = inbox.receive_nowait() if inbox._entries else await inbox.receive()
            if not isinstance(entry, Marker):
                break
            if entry is END_OF_STREAM:
                return None
        await trio.lowlevel.checkpoint_if_cancelled()
        if count:
            self.items_in += len(entry)
            self.last_progress = trio.current_time()
        return entry

    async def _consume(self, call: Callable[[Any], Any]) -> None:
        while (entry := await self._next_batch()) is not None:
            item = None
            try:
                for item in entry:
                    await call(item)
                    # Each item is progress: a node working through a batch of
                    # slow items is not stalled.
                    self.last_progress = trio.current_time()
            except Exception as exc:
                exc.add_note(
                    f"in nanostream node {self.name!r}, processing item {short_repr(item)}"
                )
                raise

    # -- fast paths for sync process_item (policy "raise", not blocking) ----------
    #
    # A per-item ``await call(item)`` costs a coroutine per item. The loops
    # below run a whole batch synchronously instead and hand its outputs to the
    # outbox in one push_batch, before the node next waits for anything (an
    # empty inbox, room downstream): no other task runs in between, so nobody
    # could have seen the items earlier, and batching adds no latency.

    def _fusable(self) -> bool:
        """Whether this node may run inside another node's loop (see :meth:`_chain`)."""
        node = self.node
        return (
            node._ns_kind == "processor"
            and node._ns_style == "function"
            and node.on_error == "raise"
            and not node._ns_blocking
            and not self.dead_letter_outbox.edges
            and not node._ns_finish_style
        )

    def _chain(self) -> list[NodeRun]:
        """This node, then every node fused into its loop.

        A node is fused into its upstream when it is a plain sync function
        node with the ``"raise"`` policy, its only input is that upstream's
        main output and it is that output's only consumer. A fused node keeps
        its task (setup, teardown, events, statistics) but its inbox stays
        empty: the head of the chain calls its process_item directly, a whole
        batch at a time, so the items skip one scheduler trip per hop.
        """
        chain = [self]
        run = self
        while FUSE_CHAINS and len(run.outbox.edges) == 1 and not run.dead_letter_outbox.edges:
            following: NodeRun | None = run.outbox.edges[0].owner
            if (
                following is None
                or not following._fusable()
                or len(following.node._ns_upstream) != 1
                or following.node._ns_upstream[0] is not run.node
            ):
                break
            chain.append(following)
            run = following
        return chain

    async def _consume_chain(self) -> None:
        """Run batches through this node and the nodes fused after it, stage by stage.

        Each stage maps (or filters) a whole batch with the builtin ``map``,
        whose loop runs in C; the outputs of one stage are the next stage's
        input. Counters are kept per stage, so statistics read as if each node
        ran alone. A failure is reported by the stage that failed, naming its
        item.
        """
        chain = self._chain()
        for run in chain[1:]:
            await run.setup_done.wait()
        stages: list[_Stage] = [(run, *_item_operation(run.node)) for run in chain]
        outbox = chain[-1].outbox
        # _run_stages counts items_in per stage, this node's included.
        while (entry := await self._next_batch(count=False)) is not None:
            items = self._run_stages(stages, entry)
            if items:
                await outbox.send_batch(items)

    def _run_stages(self, stages: list[_Stage], items: list[Any]) -> list[Any]:
        """Pass one batch through every stage; return what the last stage emits."""
        now = trio.current_time()
        last = stages[-1][0]
        for run, operation, func in stages:
            run.items_in += len(items)
            run.last_progress = now
            results: list[Any] = []
            try:
                # list.extend keeps what map produced before a failure, so
                # len(results) is the index of the failing item.
                results.extend(map(func, items))
            except Exception as exc:
                self._fail_in_stage(run, exc, items[len(results)])
            # None is never emitted (process_item returning None means
            # "nothing"), not even an input None that passes a filter.
            if operation == "map":
                items = [out for out in results if out is not None]
            else:
                kept = itertools.compress(items, results)
                items = [out for out in kept if out is not None]
            if run is last or not items:
                break
            run.outbox.sent += len(items)
        # The last stage's items_out is counted when its outbox takes them.
        return items if run is last else []

    def _source_chain(self) -> list[NodeRun]:
        """The nodes fused into this source's own loop (none if its consumer cannot be)."""
        edges = self.outbox.edges
        if not FUSE_CHAINS or len(edges) != 1 or self.dead_letter_outbox.edges:
            return []
        head: NodeRun | None = edges[0].owner
        if (
            head is None
            or not head._fusable()
            or len(head.node._ns_upstream) != 1
            or head.node._ns_upstream[0] is not self.node
        ):
            return []
        return head._chain()

    def _fail_in_stage(self, run: NodeRun, exc: Exception, item: Any) -> NoReturn:
        exc.add_note(f"in nanostream node {run.name!r}, processing item {short_repr(item)}")
        if run is not self:
            # As if the fused node had failed in its own task: it reports the
            # failure, and this task (its upstream) ends as cancelled.
            run.report_failure(exc)
            self.carried_failure = exc
        raise exc

    async def _consume_generator(self) -> None:
        """A sync generator ``process_item``, a batch at a time without a coroutine per item."""
        func = self.node.process_item  # type: ignore[attr-defined]
        outbox = self.outbox
        while (entry := await self._next_batch()) is not None:
            results: list[Any] = []
            room = outbox.room()
            item = None
            try:
                for item in entry:
                    for out in func(item):
                        if room <= 0:
                            # Hand over what we have before waiting for room.
                            outbox.push_batch(results)
                            results = []
                            await outbox.wait_room()
                            room = outbox.room()
                        results.append(out)
                        room -= 1
            except Exception as exc:
                outbox.push_batch(results)
                note = f"in nanostream node {self.name!r}, processing item {short_repr(item)}"
                exc.add_note(note)
                raise
            outbox.push_batch(results)

    def _fast_call(self) -> Callable[[Any], Any]:
        """The per-item call for ``on_error="raise"``, specialised by style."""
        func = self.node.process_item  # type: ignore[attr-defined]
        outbox = self.outbox
        style = self.node._ns_style

        if style == "function":

            async def call(item: Any) -> None:
                out = func(item)
                if out is not None:
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(out)

        elif style == "generator":

            async def call(item: Any) -> None:
                for out in func(item):
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(out)

        elif style == "async_function":

            async def call(item: Any) -> None:
                out = await func(item)
                if out is not None:
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(out)

        else:

            async def call(item: Any) -> None:
                async for out in func(item):
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(out)

        return call

    def _hold_limit(self) -> int:
        """How many outputs of one item may be held back: the smallest downstream inbox."""
        return min((edge.capacity for edge in self.outbox.edges), default=DEFAULT_CAPACITY)

    def _threaded_call(self, worker: ThreadWorker) -> Callable[[Any], Any]:
        """The per-item call of a ``blocking=True`` node under ``"raise"``: outputs stream."""

        async def call(item: Any) -> None:
            async with aclosing(self._output_chunks(item)) as chunks:
                async for chunk in chunks:
                    await self.outbox.send_batch(chunk)

        return call

    async def _output_chunks(self, item: Any) -> AsyncGenerator[list[Any], None]:
        """One item's outputs, in lists of at most :meth:`_hold_limit` items.

        Never the whole of a generator's output at once: a node yielding a
        million rows for one input streams them in bounded chunks. A sync
        node declared ``blocking`` runs in its worker thread, a chunk per trip.
        """
        node = self.node
        style = node._ns_style
        func = node.process_item  # type: ignore[attr-defined]
        limit = self._hold_limit()
        worker: ThreadWorker | None = getattr(self, "_worker", None)
        if style == "generator":
            generator = func(item)  # creating it runs none of its code
            while True:
                if worker is not None:
                    chunk = await worker.run(_take, generator, limit)
                else:
                    chunk = _take(generator, limit)
                if not chunk:
                    return
                yield chunk
        elif style == "async_generator":
            chunk = []
            async for out in func(item):
                chunk.append(out)
                if len(chunk) >= limit:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        else:
            if style == "function":
                out = func(item) if worker is None else await worker.run(func, item)
            else:
                out = await func(item)
            if out is not None:
                yield [out]

    async def _guarded_call(self, item: Any) -> None:
        """Process one item under the skip, retry or dead-letter policy.

        An item's outputs are held back until it has succeeded, so that a
        failed item emits nothing and a retried one never emits twice, up to
        :meth:`_hold_limit` outputs. An item with more outputs than that
        releases them as it goes (memory stays bounded); if it then fails, the
        outputs already released stand and it is not retried.
        """
        node = self.node
        policy = node.on_error
        retry = node._ns_retry
        limit = self._hold_limit()
        attempt = 0
        while True:
            attempt += 1
            held: list[Any] = []
            released = 0
            try:
                async with aclosing(self._output_chunks(item)) as chunks:
                    async for chunk in chunks:
                        held.extend(chunk)
                        if len(held) > limit:
                            await self.outbox.send_batch(held)
                            released += len(held)
                            held = []
            except Exception as exc:
                if policy == "retry" and attempt < retry.attempts and not released:
                    delay = retry.delay(attempt)
                    self.retried += 1
                    self.log.warning(
                        "item_retried",
                        item=short_repr(item),
                        attempt=attempt,
                        delay=delay,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    await trio.sleep(delay)
                    continue
                if released:
                    exc.add_note(
                        f"{released} outputs of this item had already been emitted "
                        "(more than can be held back), so it was not retried"
                        if policy == "retry"
                        else f"{released} outputs of this item had already been emitted"
                    )
                await self._give_up(item, exc, attempt)
                return
            await self.outbox.send_batch(held)
            return

    async def _give_up(self, item: Any, exc: Exception, attempts: int) -> None:
        node = self.node
        policy = node.on_error
        formatted = "".join(traceback.format_exception(exc))
        if policy == "skip":
            self.skipped += 1
            self.log.warning(
                "item_skipped",
                item=short_repr(item),
                error=f"{type(exc).__name__}: {exc}",
                exc_type=type(exc).__name__,
                traceback=formatted,
            )
            return
        if policy == "dead_letter" or (policy == "retry" and self.dead_letter_outbox.edges):
            record = DeadLetter(
                item=item,
                node=self.name,
                exc_type=type(exc).__qualname__,
                message=str(exc),
                traceback=formatted,
                attempts=attempts,
                time=trio.current_time(),
            )
            self.dead_lettered += 1
            self.log.warning(
                "item_dead_lettered",
                item=short_repr(item),
                error=f"{type(exc).__name__}: {exc}",
                exc_type=type(exc).__name__,
                attempts=attempts,
            )
            await self.dead_letter_outbox.send(record)
            return
        if attempts > 1:
            exc.add_note(f"gave up after {attempts} attempts")
        raise exc
