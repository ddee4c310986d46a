"""Worker threads bridged into Trio: for blocking sources and blocking nodes.

Two shapes of blocking code run off the Trio thread:

* :class:`ThreadedSource` iterates a blocking iterable (the seed's sources call
  ``time.sleep``) in a dedicated thread. The thread appends items to a
  bounded buffer without a lock and only wakes the Trio side when that side is
  parked waiting, so the Trio side takes whole batches and a fast source costs
  one ``deque.append`` per item, not one scheduler trip.
* :class:`ThreadWorker` runs one blocking call at a time for a node whose
  ``process_item`` is declared ``blocking=True``.

Both threads are started by us, named after their node, told to stop when the
pipeline stops or is cancelled, and joined before the node's task ends. The
one thing a thread cannot be told is to interrupt a call already in progress
(a ``time.sleep(5)`` runs to its end). A graceful end waits for it however
long it takes; a cancellation waits at most :data:`CANCEL_GRACE` seconds of
real time, then leaves the (daemon) thread behind and says so, because a
cancel that never ends is worse than a thread stuck in someone's code.

:func:`thread_activity` counts, per Trio run, how often the Trio side is
waiting on a worker thread right now. ``nanostream_testing`` holds its fake
clock still while the count is not zero: an autojumping clock would otherwise
see every task blocked and race ahead while a thread works.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import outcome
import trio

from ._items import Items

__all__ = [
    "CANCEL_GRACE",
    "BarrierMark",
    "ThreadActivity",
    "ThreadWorker",
    "ThreadedSource",
    "run_sync_in_thread",
    "thread_activity",
]

#: Real seconds a cancellation waits for a worker thread stuck in a blocking
#: call before leaving it behind (a ``thread_abandoned`` event says so).
CANCEL_GRACE = 5.0


class ThreadActivity:
    """How many waits on worker threads are in progress in one Trio run.

    Listeners are called on the Trio thread with the new count whenever it
    goes from 0 to 1 or back to 0.
    """

    def __init__(self) -> None:
        self.waiting = 0
        self._listeners: list[Callable[[int], None]] = []

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(count)`` when waiting starts (1) and when it stops (0)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[int], None]) -> None:
        """Undo :meth:`add_listener`."""
        self._listeners.remove(listener)

    @contextmanager
    def waiting_on_thread(self) -> Iterator[None]:
        """Count the enclosed wait as a wait on a worker thread."""
        self.waiting += 1
        if self.waiting == 1:
            for listener in list(self._listeners):
                listener(1)
        try:
            yield
        finally:
            self.waiting -= 1
            if self.waiting == 0:
                for listener in list(self._listeners):
                    listener(0)


_ACTIVITY: trio.lowlevel.RunVar[ThreadActivity] = trio.lowlevel.RunVar("nanostream_thread_activity")


def thread_activity() -> ThreadActivity:
    """The current Trio run's :class:`ThreadActivity`."""
    try:
        return _ACTIVITY.get()
    except LookupError:
        activity = ThreadActivity()
        _ACTIVITY.set(activity)
        return activity


async def run_sync_in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """``trio.to_thread.run_sync(func, *args)``, counted by :func:`thread_activity`.

    For nodes that do short blocking calls (opening and reading files): a
    fake clock in tests then waits for the call instead of jumping ahead.
    """
    with thread_activity().waiting_on_thread():
        return await trio.to_thread.run_sync(func, *args)


async def _join_within_grace(thread: threading.Thread) -> bool:
    """Wait up to CANCEL_GRACE real seconds for ``thread``; whether it ended."""
    with trio.CancelScope(shield=True), thread_activity().waiting_on_thread():
        await trio.to_thread.run_sync(thread.join, CANCEL_GRACE)
    return not thread.is_alive()


class BarrierMark:
    """A checkpoint barrier in a source thread's hand-off, with the source's position then."""

    __slots__ = ("barrier", "state")

    def __init__(self, barrier: Any, state: Any) -> None:
        self.barrier = barrier
        self.state = state


class ThreadedSource:
    """Iterate ``make_iterable()`` in a worker thread, with a bounded hand-off.

    The hand-off is a ``collections.deque``: its ``append`` and ``popleft``
    are atomic, so the thread hands over each item without taking a lock
    (a lock round trip per item cost more than most sources' own work). Locks
    are taken only on the slow paths: the buffer is full, the Trio side is
    parked waiting, or a stop was requested. Each of those sets a flag first
    and re-checks the buffer afterwards, so no wake-up is ever lost.

    The two sides take turns at the GIL, and each turn costs OS wake-ups, so
    the hand-off is built for long turns (docs/performance.md, "Sync
    sources"). The thread wakes the parked Trio side while holding the lock,
    and the woken side takes that lock before it looks at the buffer: the
    wake-up call itself (a socket write) lets go of the GIL, and without the
    lock the Trio side would grab the GIL right then, take the one item
    there is, park again and be woken again, item by item, while the thread
    waits. With it, the Trio side waits until the thread has finished the
    call and gets the GIL when the thread next lets go of it: when the
    hand-off is full, when the iterable blocks (the prompt case: an item
    followed by a slow one is delivered during the wait), or at the
    interpreter's switch interval.

    Args:
        make_iterable: called in the worker thread; returns what to iterate.
        capacity: how many items may wait in the hand-off before the thread blocks.
        name: the thread's name.
    """

    def __init__(
        self,
        make_iterable: Callable[[], Iterable[Any]],
        capacity: int,
        name: str,
        snapshot: Callable[[], Any] | None = None,
    ):
        self._make_iterable = make_iterable
        self._snapshot = snapshot
        # A checkpoint barrier asked for (see request_barrier), and the marks
        # put into the hand-off for barriers: made by the thread, taken by Trio.
        self._barrier_wanted: Any = None
        self.marks_made = 0
        self.marks_taken = 0
        self._capacity = capacity
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._buffer: collections.deque[Any] = collections.deque()
        self._stop = False
        self._done = False
        self._error: BaseException | None = None
        # Set when the thread must look up from its fast path: the Trio side
        # is parked (_consumer_waiting) or a stop was requested.
        self._attention = False
        self._consumer_waiting = False
        self._producer_waiting = False
        self._token = trio.lowlevel.current_trio_token()
        self._lot = trio.lowlevel.ParkingLot()
        self._finished = trio.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: Set when a cancelled close left the thread behind (see aclose).
        self.abandoned = False

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def _main(self) -> None:
        iterator = None
        buffer = self._buffer
        append = buffer.append
        extend = buffer.extend
        capacity = self._capacity
        try:
            iterator = iter(self._make_iterable())
            # Only the Trio side takes items out, so the room seen here can
            # only grow behind our back: count it down, re-measure at zero.
            room = 0
            for item in iterator:
                if room <= 0:
                    room = capacity - len(buffer)
                    if room <= 0:
                        self._wait_for_room()
                        room = capacity - len(buffer)
                # After a stop the item in hand still goes out (the hand-off
                # is over capacity by at most this one item), then we quit.
                if item.__class__ is Items:
                    # A source's many items in one step (deque.extend holds
                    # the GIL throughout, so the Trio side sees all or none).
                    extend(item)
                    room -= len(item)
                else:
                    append(item)
                    room -= 1
                if self._attention and self._attend():
                    break
        except BaseException as exc:
            self._error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self._error = self._error or exc
            with self._lock:
                self._done = True
            self._token.run_sync_soon(self._on_thread_end)

    def _wait_for_room(self) -> None:
        with self._lock:
            self._producer_waiting = True
            while len(self._buffer) >= self._capacity and not self._stop:
                self._room.wait()
            self._producer_waiting = False

    def _attend(self) -> bool:
        """Wake the parked Trio side if it waits; return whether to stop."""
        with self._lock:
            barrier, self._barrier_wanted = self._barrier_wanted, None
        if barrier is not None:
            # Between two next() calls: the position covers what was handed over.
            state = self._snapshot() if self._snapshot is not None else None
            self.marks_made += 1
            self._buffer.append(BarrierMark(barrier, state))
        with self._lock:
            stop = self._attention = self._stop
            if self._consumer_waiting:
                self._consumer_waiting = False
                # Under the lock on purpose: see the class docstring.
                self._token.run_sync_soon(self._lot.unpark_all)
        return stop

    def _on_thread_end(self) -> None:
        self._lot.unpark_all()
        self._finished.set()

    def request_barrier(self, barrier: Any) -> None:
        """Ask the thread to put a :class:`BarrierMark` after the next item it hands over."""
        with self._lock:
            self._barrier_wanted = barrier
            self._attention = True

    def stop(self) -> None:
        """Ask the thread to stop after the item it is producing now."""
        with self._lock:
            self._stop = True
            self._attention = True
            self._room.notify_all()

    async def receive_batch(self) -> list[Any] | None:
        """Everything the thread has produced since the last call, or None at the end.

        A batch is only returned after a scheduling point: when items are
        waiting already, it yields to the other tasks once before taking
        them, so a caller that never waits for anything else still lets the
        rest of the program run once per batch.

        Raises:
            BaseException: whatever the iterable raised in the thread.
        """
        buffer = self._buffer
        scheduled = False
        while True:
            queued = len(buffer)
            if queued:
                if not scheduled:
                    await trio.lowlevel.checkpoint()
                    scheduled = True
                    continue
                # Only this side pops, so these ``queued`` items are there.
                batch = list(map(collections.deque.popleft, itertools.repeat(buffer, queued)))
                if self._producer_waiting:
                    with self._lock:
                        self._room.notify_all()
                return batch
            if self._done:
                if buffer:
                    continue
                if self._error is not None:
                    raise self._error
                return None
            with self._lock:
                self._consumer_waiting = True
                self._attention = True
            # Re-check after raising the flag: an item appended before the
            # thread could see it would otherwise wait for the next one.
            if buffer or self._done:
                continue
            with thread_activity().waiting_on_thread():
                await self._lot.park()
            scheduled = True
            # Woken by the thread from inside its locked section: wait until
            # it has left it, so the items it keeps appending in the meantime
            # come over in one batch (see the class docstring).
            with self._lock:
                pass

    async def aclose(self) -> None:
        """Stop the thread and join it, also when the caller is being cancelled.

        A graceful close waits as long as the iterable takes to yield once
        more. When the caller is cancelled, the thread gets :data:`CANCEL_GRACE`
        real seconds; if it is stuck in the iterable beyond that it is left
        behind and :attr:`abandoned` is set. The cancellation is re-raised.
        """
        self.stop()
        if self._thread.ident is None:
            return
        try:
            with thread_activity().waiting_on_thread():
                await self._finished.wait()
        except trio.Cancelled:
            self.abandoned = not await _join_within_grace(self._thread)
            raise
        self._thread.join()

    @property
    def name(self) -> str:
        """The worker thread's name."""
        return self._thread.name

    @property
    def queued(self) -> int:
        """Items produced by the thread and not taken by the Trio side yet."""
        return len(self._buffer)


class ThreadWorker:
    """A dedicated thread that runs one blocking call at a time for a node.

    Args:
        name: the thread's name.
    """

    def __init__(self, name: str) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._job: _Job | None = None
        self._job_ready = threading.Condition()
        self._closing = False
        #: Set when a cancelled call did not return within CANCEL_GRACE.
        self.abandoned = False
        self._finished = trio.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            while True:
                with self._job_ready:
                    while self._job is None and not self._closing:
                        self._job_ready.wait()
                    if self._job is None:
                        return
                    job = self._job
                    self._job = None
                result = outcome.capture(job.func, *job.args)
                job.done.set()
                self._token.run_sync_soon(job.deliver, result)
        finally:
            self._token.run_sync_soon(self._finished.set)

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` in the worker thread and return its result.

        A cancellation waits for the call in progress to end, then is raised.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        job = _Job(func, args, trio.lowlevel.current_task())
        with self._job_ready:
            self._job = job
            self._job_ready.notify()
        try:
            with thread_activity().waiting_on_thread():
                return await trio.lowlevel.wait_task_rescheduled(job.abort)
        except trio.Cancelled:
            # The call cannot be interrupted: give it a bounded grace period
            # of real time to return, then leave it behind.
            with trio.CancelScope(shield=True), thread_activity().waiting_on_thread():
                await trio.to_thread.run_sync(job.done.wait, CANCEL_GRACE)
            if not job.done.is_set():
                self.abandoned = True
            raise

    async def aclose(self) -> None:
        """Let the thread finish and join it, also when the caller is being cancelled.

        A thread left behind by a cancelled call (:attr:`abandoned`) is not
        waited for: it exits by itself if that call ever returns.
        """
        with self._job_ready:
            self._closing = True
            self._job_ready.notify()
        if self.abandoned:
            return
        # Counted as a wait on a thread, so that a fake clock holds still
        # while the thread finishes (it would jump to the next deadline).
        with trio.CancelScope(shield=True), thread_activity().waiting_on_thread():
            await self._finished.wait()
        self._thread.join()

    @property
    def name(self) -> str:
        """The worker thread's name."""
        return self._thread.name


class _Job:
    """One call for a ThreadWorker, and how its result gets back to the waiting task."""

    __slots__ = ("args", "done", "func", "settled", "task")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], task: Any) -> None:
        self.func = func
        self.args = args
        self.task = task
        self.done = threading.Event()  # set by the worker thread when the call returned
        self.settled = False  # the waiting task was rescheduled or gave up (Trio thread)

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        # Cancelled while waiting: stop waiting here; run() then gives the
        # call its grace period. The result, if it comes, is dropped.
        self.settled = True
        return trio.lowlevel.Abort.SUCCEEDED

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        if not self.settled:
            self.settled = True
            trio.lowlevel.reschedule(self.task, result)
