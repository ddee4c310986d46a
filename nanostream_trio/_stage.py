"""Stages: a node's ``process_item`` called over a whole batch under its error policy.

A :class:`SyncStage` is the unit every sync node (plain function or generator
``process_item``) runs as: :meth:`SyncStage.process` takes a batch (a list)
and returns the outputs (a list), applying the node's policy per item inside
the loop. Items that succeed cost nothing extra under any policy: a plain
function is mapped over the batch with the builtin ``map`` inside one ``try``
(a failure resumes the map after the failing item); a generator is drained
into the output list with ``list.extend`` inside a ``try`` per item (free in
Python 3.11 until something raises).

Some work cannot finish inside one synchronous call: an item to retry after a
backoff (a ``trio.sleep`` on the caller's side), or more outputs than may be
held at once. The stage then returns what it has and sets
:attr:`SyncStage.delay` and :attr:`SyncStage.has_more`; the caller hands the
outputs on, waits ``delay`` seconds, and calls :meth:`SyncStage.resume`. So a
stage never awaits anything itself: a fused chain (``_chain.py``), a thread
(``blocking=True``) or a source can all run it.

:class:`AsyncStage` is the same for ``async`` styles, one item at a time (an
async node may suspend in any call, so each output goes out at once).

Outputs of an item that fails are held back, so a failed item emits nothing
and a retried item never emits twice, up to ``limit`` outputs (the smallest
downstream inbox); an item with more outputs releases them as it goes, and if
it then fails, what was released stands and it is not retried.
"""

from __future__ import annotations

import contextlib
import itertools
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from ._items import Lines
from ._policy import DeadLetter, short_repr

if TYPE_CHECKING:
    from ._edges import Outbox
    from ._runtime import NodeRun

__all__ = ["AsyncStage", "SyncStage", "item_operation"]


def item_operation(node: Any) -> tuple[str, Callable[[Any], Any]]:
    """``("map", func)``, ``("filter", predicate)`` or ``("expand", func)``: what a function
    node does to one item.

    By default ``("map", node.process_item)``: the outputs are the non-None
    results. A node class may define ``_ns_item_operation(self)`` returning
    the same kind of pair, promising that process_item(item) is exactly
    ``func(item)`` (map) or ``item if predicate(item) else None`` (filter);
    the stage then calls the user's function directly, skipping one Python
    call per item. Returning None falls back to the default.

    ``("expand", func)`` (built-in nodes whose items are blocks, such as
    LocalFileReader's lines): ``func(item)`` returns an iterable of batches
    (lists) of outputs, and each batch is handed on whole, one per call, so
    a :class:`~._items.Lines` batch keeps its location.
    """
    hook = getattr(node, "_ns_item_operation", None)
    if hook is not None:
        operation: tuple[str, Callable[[Any], Any]] | None = hook()
        if operation is not None:
            return operation
    return "map", node.process_item


class _Failures:
    """What a stage does with an item that raised: the policy part shared by both stages."""

    def __init__(self, run: NodeRun) -> None:
        self.run = run
        node = run.node
        self.policy = node.on_error
        self.retry = node._ns_retry
        self.to_dead_letters = self.policy == "dead_letter" or (
            self.policy == "retry" and bool(run.dead_letter_outbox.edges)
        )
        #: Dead-letter records made by the last call, for the caller to send.
        self.dead: list[DeadLetter] = []

    async def send_dead(self) -> None:
        """Send the dead-letter records made so far (on the Trio thread)."""
        dead, self.dead = self.dead, []
        await self.run.dead_letter_outbox.send_batch(dead)

    def single_out(self, exc: Exception, items: list[Any], index: int) -> tuple[Exception, Any]:
        """The exception to report for ``items[index]``, which raised ``exc``, and the item.

        A line of a :class:`~._items.Lines` batch is singled out as a
        :class:`~._items.Line` (for the error, the event and the dead letter),
        and the exception names its file and line: rebuilt by the node's
        ``_ns_located_error(exc, line)`` if it returns one (a parser that puts
        the place in its own message), else with a note.
        """
        if items.__class__ is not Lines:
            return exc, items[index]
        line = items.line(index)
        relocate = getattr(self.run.node, "_ns_located_error", None)
        located = relocate(exc, line) if relocate is not None else None
        if located is not None:
            return located, line
        exc.add_note(f"the item is {line.path}, line {line.lineno}")
        if isinstance(exc, AttributeError) and exc.name in ("path", "lineno"):
            exc.add_note(
                "lines from TailFile and LocalFileReader(serialize=True) are plain str; "
                "give them locate=True for Line objects with .path and .lineno"
            )
        return exc, line

    def note(self, exc: Exception, item: Any) -> None:
        exc.add_note(f"in nanostream node {self.run.name!r}, processing item {short_repr(item)}")

    def retry_delay(self, exc: Exception, item: Any, attempt: int, released: int) -> float | None:
        """Seconds to wait before trying ``item`` again, or None to give up on it now."""
        if self.policy != "retry" or attempt >= self.retry.attempts or released:
            return None
        delay = self.retry.delay(attempt)
        self.run.retried += 1
        self.run.log.warning(
            "item_retried",
            item=short_repr(item),
            attempt=attempt,
            delay=delay,
            error=f"{type(exc).__name__}: {exc}",
        )
        return delay

    def give_up(self, exc: Exception, item: Any, attempts: int, released: int, now: float) -> None:
        """Skip or dead-letter ``item``, or raise ``exc`` (noted) under ``"raise"``."""
        run = self.run
        policy = self.policy
        if released:
            exc.add_note(
                f"{released} outputs of this item had already been emitted "
                "(more than can be held back), so it was not retried"
                if policy == "retry"
                else f"{released} outputs of this item had already been emitted"
            )
        if policy == "raise" or (policy == "retry" and not self.to_dead_letters):
            if attempts > 1:
                exc.add_note(f"gave up after {attempts} attempts")
            self.note(exc, item)
            raise exc
        formatted = "".join(traceback.format_exception(exc))
        error = f"{type(exc).__name__}: {exc}"
        if policy == "skip":
            run.skipped += 1
            run.log.warning(
                "item_skipped",
                item=short_repr(item),
                error=error,
                exc_type=type(exc).__name__,
                traceback=formatted,
            )
            return
        run.dead_lettered += 1
        run.log.warning(
            "item_dead_lettered",
            item=short_repr(item),
            error=error,
            exc_type=type(exc).__name__,
            attempts=attempts,
        )
        self.dead.append(
            DeadLetter(
                item=item,
                node=run.name,
                exc_type=type(exc).__qualname__,
                message=str(exc),
                traceback=formatted,
                attempts=attempts,
                time=now,
            )
        )


class SyncStage(_Failures):
    """A sync ``process_item`` (plain function or generator) over a batch, under a policy.

    Args:
        run: the node's per-run state (counters, events, dead-letter outbox).
        limit: how many outputs of one item may be held back (and about how
            many outputs one call returns at most).
    """

    def __init__(self, run: NodeRun, limit: int) -> None:
        super().__init__(run)
        node = run.node
        self.limit = limit
        if node._ns_style == "generator":
            self.kind, self.func = "generator", node.process_item  # type: ignore[attr-defined]
        else:
            self.kind, self.func = item_operation(node)
        self.raises = self.policy == "raise"
        #: Seconds to wait before :meth:`resume` (a retry's backoff), else 0.
        self.delay = 0.0
        #: Whether :meth:`resume` has work left (set by the last call).
        self.has_more = False
        # Where resume() picks up: the batch, the index of the next item, the
        # attempt for that item, a generator item's outputs not yet taken and
        # how many of that item's outputs were already released.
        self._items: list[Any] = []
        self._pos = 0
        self._attempt = 1
        self._open: Iterator[Any] | None = None
        self._released = 0
        self._now = 0.0

    def process(self, items: list[Any], now: float, room: int) -> list[Any]:
        """The outputs of ``items`` (check :attr:`has_more` and :attr:`dead` after).

        ``now`` is the Trio time to record in dead-letter records (the stage
        may run in a worker thread, where the Trio clock is not readable).
        ``room`` is how many outputs the caller can hand on without waiting:
        a generator is not advanced further ahead than that (nor than
        :attr:`limit`, nor, under a policy other than ``"raise"``, less than
        one item's held-back outputs).
        """
        self._now = now
        if self.kind == "generator":
            return self._generate(items, 0, 1, None, 0, room)
        if self.kind == "expand":
            return self._expand(items, 0, 1, None)
        return self._map(items, 0, 1)

    def resume(self, now: float, room: int) -> list[Any]:
        """Carry on where the last call stopped (after waiting :attr:`delay` seconds)."""
        self._now = now
        items, pos, attempt = self._items, self._pos, self._attempt
        if self.kind == "generator":
            return self._generate(items, pos, attempt, self._open, self._released, room)
        if self.kind == "expand":
            return self._expand(items, pos, attempt, self._open)
        return self._map(items, pos, attempt)

    def _pause(self, items: list[Any], pos: int, attempt: int, delay: float = 0.0) -> None:
        self.has_more = True
        self.delay = delay
        self._items, self._pos, self._attempt = items, pos, attempt

    def _map(self, items: list[Any], pos: int, attempt: int) -> list[Any]:
        self.has_more = False
        self.delay = 0.0
        func = self.func
        # results[j] belongs to items[pos + j]: one result per item, failures
        # included (as None, or False for a filter), so len(results) always
        # tells which item raised.
        results: list[Any] = []
        failures = 0
        while True:
            done = pos + len(results)
            try:
                results.extend(map(func, items if done == 0 else items[done:]))
                break
            except Exception as failure:
                index = pos + len(results)
                exc, item = self.single_out(failure, items, index)
                if index != pos:
                    attempt = 1  # the attempt counted is that of items[pos] only
                if self.raises:
                    self.note(exc, item)
                    if exc is failure:
                        raise
                    raise exc from exc.__cause__  # rebuilt by the node, same cause
                delay = self.retry_delay(exc, item, attempt, 0)
                if delay is not None:
                    self._pause(items, index, attempt + 1, delay)
                    break
                self.give_up(exc, item, attempt, 0, self._now)
                attempt = 1
                failures += 1
                results.append(None if self.kind == "map" else False)
        if self.kind == "map":
            outputs = [out for out in results if out is not None]
        else:
            taken = items if pos == 0 and len(results) == len(items) else items[pos:]
            outputs = [out for out in itertools.compress(taken, results) if out is not None]
        self.run.filtered += len(results) - len(outputs) - failures
        return outputs

    def _generate(
        self,
        items: list[Any],
        pos: int,
        attempt: int,
        open_: Iterator[Any] | None,
        released: int,
        room: int,
    ) -> list[Any]:
        self.has_more = False
        self.delay = 0.0
        self._open = None
        limit = self.limit
        # At most ``cap`` outputs per call, roughly (one item may add
        # ``budget``); at most ``budget`` taken from one item before handing
        # over. Under a policy, the budget holds back a whole item's outputs
        # (one more than the limit tells an item with too many).
        cap = min(max(room, 1), limit)
        budget = cap if self.raises else limit + 1
        out: list[Any] = []
        if open_ is not None:
            # The item left open by the last call comes first.
            if self._step(out, items, pos, attempt, open_, released, budget):
                return out
            pos += 1
            attempt = 1
        func = self.func
        append = out.append
        empty = 0
        size = len(out)
        # A plain ``for`` with a counter: cheaper per item than islice + extend.
        last = len(items) - 1
        for index, item in enumerate(items if pos == 0 else items[pos:], pos):
            taken = 0
            try:
                outputs = func(item)
                for output in outputs:
                    append(output)
                    taken += 1
                    if taken == budget:
                        break
            except Exception as exc:
                del out[size:]
                # The attempt counted is that of items[pos] only.
                if self._failed(exc, items, index, attempt if index == pos else 1, 0):
                    break
            else:
                if not taken:
                    empty += 1
                elif taken == budget:
                    # This item may have more outputs than may be taken now:
                    # hand these over, carry on with the same item next call.
                    self._open = outputs
                    self._released = budget
                    self._pause(items, index, attempt if index == pos else 1)
                    break
                else:
                    size += taken
                    if size >= cap and index < last:
                        self._pause(items, index + 1, 1)  # enough for one hand-over
                        break
        self.run.filtered += empty
        return out

    def _expand(
        self, items: list[Any], pos: int, attempt: int, open_: Iterator[Any] | None
    ) -> list[Any]:
        """The next batch of outputs (kind "expand"), whole; the item stays open until its
        iterable of batches is exhausted."""
        self.has_more = False
        self.delay = 0.0
        self._open = None
        released = self._released if open_ is not None else 0
        for index in range(pos, len(items)):
            try:
                batches = open_ if open_ is not None else iter(self.func(items[index]))
                batch: list[Any] | None = next(batches, None)
            except Exception as exc:
                if self._failed(exc, items, index, attempt, released):
                    return []  # a retry: the caller waits, then resumes at this item
            else:
                if batch is not None:
                    self._open, self._released = batches, released + len(batch)
                    self._pause(items, index, attempt)
                    return batch
                if not released:
                    self.run.filtered += 1
            open_, attempt, released = None, 1, 0
        return []

    def _step(
        self,
        out: list[Any],
        items: list[Any],
        pos: int,
        attempt: int,
        outputs: Iterator[Any],
        released: int,
        budget: int,
    ) -> bool:
        """Take more outputs of an item left open; whether this call must stop here."""
        try:
            out.extend(itertools.islice(outputs, budget))
        except Exception as exc:
            out.clear()
            return self._failed(exc, items, pos, attempt, released)
        if len(out) == budget:
            self._open = outputs
            self._released = released + budget
            self._pause(items, pos, attempt)
            return True
        return False

    def _failed(
        self, exc: Exception, items: list[Any], index: int, attempt: int, released: int
    ) -> bool:
        """Apply the policy to ``items[index]``; whether the call must stop (a retry waits)."""
        exc, item = self.single_out(exc, items, index)
        if self.raises:
            self.note(exc, item)
            raise exc
        delay = self.retry_delay(exc, item, attempt, released)
        if delay is not None:
            self._pause(items, index, attempt + 1, delay)
            return True
        self.give_up(exc, item, attempt, released, self._now)
        return False


class AsyncStage(_Failures):
    """An async ``process_item`` (function or generator), one item at a time, under a policy.

    Each output goes out as soon as it is made (the node may suspend in any
    call); under a policy other than ``"raise"`` an item's outputs are held
    back until it has succeeded, up to ``limit`` of them.
    """

    def __init__(self, run: NodeRun, limit: int) -> None:
        super().__init__(run)
        self.func = run.node.process_item  # type: ignore[attr-defined]
        self.generates = run.node._ns_style == "async_generator"
        self.limit = limit

    async def process(self, items: list[Any], outbox: Outbox) -> None:
        """Process ``items`` in order, sending outputs and dead letters as they come."""
        run = self.run
        guarded = self.policy != "raise"
        for index, item in enumerate(items):
            made = run.outbox.sent
            failed = run.skipped + run.dead_lettered
            if guarded:
                await self._guarded(items, index, outbox)
            else:
                try:
                    await self._streamed(item, outbox)
                except Exception as failure:
                    exc, shown = self.single_out(failure, items, index)
                    self.note(exc, shown)
                    if exc is failure:
                        raise
                    raise exc from exc.__cause__  # rebuilt by the node, same cause
            if run.outbox.sent == made and run.skipped + run.dead_lettered == failed:
                run.filtered += 1
            if self.dead:
                await self.send_dead()
            # Each item is progress: a node working through a batch of slow
            # items is not stalled.
            run.last_progress = trio.current_time()

    async def _streamed(self, item: Any, outbox: Outbox) -> None:
        if self.generates:
            # aclosing: a generator left at a yield (the outbox's wait cancelled, a
            # downstream failure) runs its finally here, in the node's task, not later
            # wherever garbage collection finalizes it.
            async with contextlib.aclosing(self.func(item)) as outputs:
                async for out in outputs:
                    if not outbox.has_room():
                        await outbox.wait_room()
                    outbox.push(out)
            return
        out = await self.func(item)
        if out is not None:
            if not outbox.has_room():
                await outbox.wait_room()
            outbox.push(out)

    async def _guarded(self, items: list[Any], index: int, outbox: Outbox) -> None:
        item = items[index]
        attempt = 0
        limit = self.limit
        while True:
            attempt += 1
            held: list[Any] = []
            released = 0
            try:
                if self.generates:
                    async with contextlib.aclosing(self.func(item)) as outputs:
                        async for out in outputs:
                            held.append(out)
                            if len(held) > limit:
                                await outbox.send_batch(held)
                                released += len(held)
                                held = []
                else:
                    out = await self.func(item)
                    if out is not None:
                        held.append(out)
            except Exception as failure:
                exc, shown = self.single_out(failure, items, index)
                delay = self.retry_delay(exc, shown, attempt, released)
                if delay is not None:
                    await trio.sleep(delay)
                    continue
                self.give_up(exc, shown, attempt, released, trio.current_time())
                return
            if held:  # (an empty send_batch awaits nothing: skipping it changes no scheduling)
                await outbox.send_batch(held)
            return
