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
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from ._edges import END_OF_STREAM, Edge, Marker, Outbox
from ._policy import DeadLetter, short_repr
from ._threads import ThreadedSource, ThreadWorker

if TYPE_CHECKING:
    from ._node import NanoNode
    from ._stats import NodeStatus

__all__ = ["NodeRun"]


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
        try:
            await _maybe_await(node.setup())
            ready()
            if node._ns_kind == "source":
                await self._run_source()
            else:
                await self._run_processor()
        except trio.Cancelled:
            self.status = "cancelled"
            raise
        except BaseException as exc:
            self.status = "failed"
            self.log.error(
                "node_failed",
                error=f"{type(exc).__name__}: {exc}",
                exc_type=type(exc).__name__,
                items_in=self.items_in,
                items_out=self.outbox.sent,
            )
            raise
        finally:
            try:
                with trio.CancelScope(shield=self.status != "running"):
                    await _maybe_await(node.teardown())
            finally:
                self.ended_at = trio.current_time()
                self.outbox.close()
                self.dead_letter_outbox.close()
        self.status = "finished"
        self.log.info(
            "node_finished",
            items_in=self.items_in,
            items_out=self.outbox.sent,
            skipped=self.skipped,
            dead_lettered=self.dead_lettered,
            elapsed=self.ended_at - self.started_at,
        )

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
        outbox = self.outbox
        for item in items:
            if not outbox.has_room():
                await outbox.wait_room()
            outbox.push(item)
            if self.stop_requested:
                return

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
                        outbox.push(item)
                        break
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(item)
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
            capacity=max(outbox.edges[0].capacity if outbox.edges else 256, 1),
            name=f"nanostream-{self.name}",
        )
        if self.stop_requested:
            source.stop()
        source.start()
        try:
            while True:
                batch = await source.receive_batch()
                if batch is None:
                    return
                for item in batch:
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(item)
        finally:
            await source.aclose()

    # -- processors --------------------------------------------------------------------

    async def _run_processor(self) -> None:
        node = self.node
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
        finally:
            if worker is not None:
                await worker.aclose()

    async def _consume(self, call: Callable[[Any], Any]) -> None:
        inbox = self.inbox
        assert inbox is not None
        checkpoint = trio.lowlevel.checkpoint_if_cancelled
        while True:
            entry = inbox.receive_nowait() if inbox._entries else await inbox.receive()
            if entry.__class__ is Marker:
                if entry is END_OF_STREAM:
                    return
                continue
            # A batch may hold up to a whole inbox of items: one cancellation
            # check per batch keeps cancellation prompt without a per-item cost.
            await checkpoint()
            self.items_in += len(entry)
            self.last_progress = trio.current_time()
            item = None
            try:
                for item in entry:
                    await call(item)
            except Exception as exc:
                exc.add_note(f"in nanostream node {self.name!r}, processing item {short_repr(item)}")
                raise

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

    def _threaded_call(self, worker: ThreadWorker) -> Callable[[Any], Any]:
        collect = self._collector()

        async def call(item: Any) -> None:
            for out in await worker.run(collect, item):
                await self.outbox.send(out)

        return call

    def _collector(self) -> Callable[[Any], Any]:
        """A sync function returning the list of outputs for one item."""
        func = self.node.process_item  # type: ignore[attr-defined]
        if self.node._ns_style == "generator":
            return lambda item: list(func(item))

        def collect(item: Any) -> list[Any]:
            out = func(item)
            return [] if out is None else [out]

        return collect

    async def _outputs(self, item: Any) -> list[Any]:
        """All outputs of one item, computed before any is emitted."""
        node = self.node
        style = node._ns_style
        if style in ("function", "generator"):
            collect = self._collector()
            worker = getattr(self, "_worker", None)
            if worker is not None:
                return await worker.run(collect, item)  # type: ignore[no-any-return]
            return collect(item)  # type: ignore[no-any-return]
        func = node.process_item  # type: ignore[attr-defined]
        if style == "async_function":
            out = await func(item)
            return [] if out is None else [out]
        return [out async for out in func(item)]

    async def _guarded_call(self, item: Any) -> None:
        """Process one item under the skip, retry or dead-letter policy."""
        node = self.node
        policy = node.on_error
        retry = node._ns_retry
        attempt = 0
        while True:
            attempt += 1
            try:
                outputs = await self._outputs(item)
            except Exception as exc:
                if policy == "retry" and attempt < retry.attempts:
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
                await self._give_up(item, exc, attempt)
                return
            for out in outputs:
                await self.outbox.send(out)
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
