"""Edges: the bounded, batching channels between node tasks.

Every node that consumes has exactly one inbox, an :class:`Edge`. Every
upstream node (fan-in) writes into it through its :class:`Outbox`; an outbox
that feeds several nodes (fan-out) appends each item to each of their inboxes.

Why not ``trio.open_memory_channel``: a per-item ``await send()`` is a full
trip through Trio's scheduler even when the channel has room (several
microseconds), while appending to a list costs a tenth of a microsecond. So:

* A producer appends items synchronously to the open batch at the tail of the
  edge (:meth:`Edge.push`). The item is visible to the consumer at once: there
  is no producer-side buffer to flush, so batching can never add latency, not
  even when an async source yields and then sleeps.
* A consumer takes a whole batch at a time (:meth:`Edge.receive`): everything
  queued since it last looked. It only parks when the edge is empty.
* Capacity counts items, not batches. A producer that finds the edge full
  parks until the consumer has taken a batch (:meth:`Edge.wait_room`).
* A :class:`~._items.Lines` batch (lines of one file, located once for the
  batch) stays a batch of its own, or is cut into ``Lines`` pieces, so its
  consumer knows the file and line of each item (see ``_items.py``).
* Besides batches the edge carries control markers (:class:`Marker`): the
  end of stream and checkpoint barriers (:class:`Barrier`). A marker closes
  the open batch so that order between data and markers is kept.
* Barriers are aligned by the edge itself (fan-in): a producer that has
  delivered ``Barrier(n)`` gets no room on that edge until every other open
  producer has delivered it too; then one ``Barrier(n)`` is queued for the
  consumer. So everything any producer sent before its barrier is ahead of
  the barrier, nothing sent after it is, and the producers that are behind
  keep running, so bounded edges cannot deadlock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import trio

from ._items import Lines, batch_piece

__all__ = ["DEFAULT_CAPACITY", "END_OF_STREAM", "Barrier", "Edge", "Marker", "Outbox"]

#: Items an edge holds before its producers wait (per-node override: ``capacity=``).
DEFAULT_CAPACITY: Final = 256


class Marker:
    """A control marker travelling in-band on an edge, between batches."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<Marker {self.kind}>"


#: Sent once by the edge itself when its last producer has closed.
END_OF_STREAM: Final = Marker("end-of-stream")


class Barrier(Marker):
    """Checkpoint barrier ``n``: what was sent before it belongs to checkpoint ``n``."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        super().__init__("barrier")
        self.n = n

    def __repr__(self) -> str:
        return f"<Barrier {self.n}>"


class Edge:
    """A bounded multi-producer, single-consumer queue of item batches.

    Args:
        capacity: how many items the edge holds before producers wait.
        consumer: name of the consuming node, for statistics and errors.
    """

    __slots__ = (
        "_align_lot",
        "_align_started",
        "_arrived",
        "_barrier",
        "_capacity",
        "_count",
        "_entries",
        "_open_producers",
        "_receiver_lot",
        "_sender_lot",
        "_tail",
        "consumer",
        "last_alignment",
        "owner",
        "peak",
        "released",
    )

    def __init__(self, capacity: int, consumer: str) -> None:
        if capacity < 1:
            msg = f"edge into node {consumer!r} needs a capacity of at least 1; got {capacity}"
            raise ValueError(msg)
        self._capacity = capacity
        self.consumer = consumer
        # Entries are batches (lists of items) or Marker objects. _tail is the
        # batch still open for appends, always the last entry when not None.
        self._entries: deque[list[Any] | Marker] = deque()
        self._tail: list[Any] | None = None
        self._count = 0
        self._open_producers = 0
        self._receiver_lot = trio.lowlevel.ParkingLot()
        self._sender_lot = trio.lowlevel.ParkingLot()
        #: Highest number of items ever queued at once (for tests and stats).
        self.peak = 0
        #: The consumer's per-run state (a ``NodeRun``), set by the runtime so
        #: that a node can find the node it feeds when it fuses a chain.
        self.owner: Any = None
        # Barrier alignment: the barrier some producers have delivered and how
        # many; producers that delivered it park on _align_lot until released.
        self._barrier: Barrier | None = None
        self._arrived = 0
        self._align_lot = trio.lowlevel.ParkingLot()
        self._align_started = 0.0
        #: The number of the last barrier queued for the consumer (-1: none yet).
        self.released = -1
        #: Seconds (Trio clock) the last barrier waited for all producers.
        self.last_alignment = 0.0

    # -- producer side -------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Items the edge holds before producers wait."""
        return self._capacity

    @property
    def queued(self) -> int:
        """Items queued now, not yet taken by the consumer."""
        return self._count

    @property
    def producers(self) -> int:
        """Producers registered and not yet closed."""
        return self._open_producers

    def has_room(self) -> bool:
        """Whether one more item may be pushed now."""
        return self._count < self._capacity

    def add_producer(self) -> None:
        """Register one more producer; the edge ends when all have closed."""
        self._open_producers += 1

    def push(self, item: Any) -> None:
        """Append one item; the caller has checked :meth:`has_room`."""
        tail = self._tail
        if tail is None:
            tail = self._tail = []
            self._entries.append(tail)
        tail.append(item)
        count = self._count = self._count + 1
        if count > self.peak:
            self.peak = count
        if self._receiver_lot:
            self._receiver_lot.unpark_all()

    def push_batch(self, items: list[Any]) -> None:
        """Append several items at once; the caller has checked they fit.

        The batch-at-a-time form of :meth:`push` for the engine's fast paths:
        one call, one wake-up of the consumer, whatever the number of items.
        """
        if not items:
            return
        if items.__class__ is Lines:
            # Kept whole, not merged into the open batch: it carries its location.
            self._tail = None
            self._entries.append(items)
        else:
            tail = self._tail
            if tail is None:
                tail = self._tail = []
                self._entries.append(tail)
            tail += items
        count = self._count = self._count + len(items)
        if count > self.peak:
            self.peak = count
        if self._receiver_lot:
            self._receiver_lot.unpark_all()

    def room(self) -> int:
        """How many more items may be pushed now (0 when full)."""
        return max(self._capacity - self._count, 0)

    async def wait_room(self) -> None:
        """Park until the consumer has made room (or has gone away)."""
        while self._count >= self._capacity:
            await self._sender_lot.park()

    def push_marker(self, marker: Marker) -> None:
        """Append a control marker after everything pushed so far."""
        self._tail = None
        self._entries.append(marker)
        if self._receiver_lot:
            self._receiver_lot.unpark_all()

    def arrive(self, barrier: Barrier) -> bool:
        """A producer delivers ``barrier``; return whether it is released at once.

        Not released (other producers have yet to deliver it), the producer
        must not push again until :attr:`released` reaches ``barrier.n``
        (:meth:`wait_aligned`).
        """
        if self._barrier is None:
            self._barrier = barrier
            self._arrived = 0
            self._align_started = trio.current_time() if self._open_producers > 1 else 0.0
        elif self._barrier.n != barrier.n:  # pragma: no cover - one checkpoint at a time
            msg = f"edge into {self.consumer!r}: {barrier!r} while {self._barrier!r} aligns"
            raise RuntimeError(msg)
        self._arrived += 1
        return self._maybe_release()

    def _maybe_release(self) -> bool:
        barrier = self._barrier
        if barrier is None or self._arrived < self._open_producers:
            return barrier is None
        self._barrier = None
        self.released = barrier.n
        self.last_alignment = (
            trio.current_time() - self._align_started if self._align_started else 0.0
        )
        self.push_marker(barrier)
        if self._align_lot:
            self._align_lot.unpark_all()
        return True

    @property
    def aligning(self) -> bool:
        """Whether some producers have delivered a barrier that others have not."""
        return self._barrier is not None

    async def wait_aligned(self, n: int) -> None:
        """Park until barrier ``n`` has been released to the consumer."""
        while self.released < n:
            await self._align_lot.park()

    def close_producer(self, arrived: bool = False) -> None:
        """One producer is done; the last one sends :data:`END_OF_STREAM`.

        A producer that ends counts as having delivered a barrier that is
        aligning: the ones still open need not wait for it. ``arrived``: this
        producer had delivered it already (it is counted once, not twice).
        """
        self._open_producers -= 1
        if arrived:
            self._arrived -= 1
        if self._barrier is not None:
            self._maybe_release()
        if self._open_producers == 0:
            self.push_marker(END_OF_STREAM)

    # -- consumer side -------------------------------------------------------

    def receive_nowait(self) -> list[Any] | Marker:
        """Take the oldest batch or marker.

        Raises:
            trio.WouldBlock: the edge is empty.
        """
        entries = self._entries
        if not entries:
            raise trio.WouldBlock
        entry = entries.popleft()
        if entry is self._tail:
            self._tail = None
        if entry.__class__ is list or entry.__class__ is Lines:
            self._count -= len(entry)
            if self._sender_lot:
                self._sender_lot.unpark_all()
        return entry

    async def receive(self) -> list[Any] | Marker:
        """Take the oldest batch or marker, parking while the edge is empty."""
        while not self._entries:
            await self._receiver_lot.park()
        return self.receive_nowait()


class Outbox:
    """What a node writes to: the inboxes of all of its downstream nodes.

    The engine's node loops use :meth:`push` after checking :meth:`has_room`,
    awaiting :meth:`wait_room` when it says no. ``edges`` is empty for a sink.
    """

    __slots__ = ("blocked_seconds", "edges", "paused", "sent", "waiting", "waiting_since")

    def __init__(self, edges: list[Edge]) -> None:
        self.edges = edges
        #: Edges where this producer has delivered a barrier not yet aligned,
        #: with its number: no room on any edge until each is released.
        self.paused: list[tuple[Edge, int]] = []
        #: Whether the producer is waiting for room downstream now (for stall
        #: detection: a node held back by back-pressure is not itself stalled).
        self.waiting = False
        #: Items pushed through this outbox (counted once, however many edges).
        self.sent = 0
        #: Seconds, on the Trio clock, spent waiting for room downstream (waits that ended).
        self.blocked_seconds = 0.0
        #: When the wait going on now began (meaningful while :attr:`waiting`).
        self.waiting_since = 0.0

    def _still_paused(self) -> bool:
        """Drop the pauses whose barrier has been released; return whether any is left."""
        self.paused = [(edge, n) for edge, n in self.paused if edge.released < n]
        return bool(self.paused)

    def has_room(self) -> bool:
        """Whether every downstream edge can take one more item now."""
        if self.paused and self._still_paused():
            return False
        for edge in self.edges:
            if edge._count >= edge._capacity:
                return False
        return True

    async def wait_room(self) -> None:
        """Park until every downstream edge has room, counting the time spent."""
        started = self.waiting_since = trio.current_time()
        self.waiting = True
        try:
            # Re-check: with fan-in, another producer may refill an edge we
            # already waited on while we waited on the next one.
            while not self.has_room():
                for edge, n in self.paused:
                    await edge.wait_aligned(n)
                for edge in self.edges:
                    await edge.wait_room()
        finally:
            self.waiting = False
            self.blocked_seconds += trio.current_time() - started

    def push(self, item: Any) -> None:
        """Append one item to every downstream edge."""
        self.sent += 1
        for edge in self.edges:
            edge.push(item)

    def capacity(self) -> int:
        """The smallest capacity of the downstream edges (:data:`DEFAULT_CAPACITY` for none)."""
        return min((edge.capacity for edge in self.edges), default=DEFAULT_CAPACITY)

    def room(self) -> int:
        """How many more items every downstream edge takes now (a sink: unlimited)."""
        if self.paused and self._still_paused():
            return 0
        edges = self.edges
        if len(edges) == 1:
            return edges[0].room()
        if not edges:
            return 1 << 62
        return min(edge.room() for edge in edges)

    def push_batch(self, items: list[Any]) -> None:
        """Append ``items`` to every downstream edge; the caller has checked :meth:`room`."""
        self.sent += len(items)
        edges = self.edges
        if items.__class__ is Lines and len(edges) > 1:
            # Fan-out: each consumer gets its own batch (a Lines batch is queued as is).
            for edge in edges:
                edge.push_batch(items.piece(0, len(items)))
            return
        for edge in edges:
            edge.push_batch(items)

    async def send_batch(self, items: list[Any]) -> None:
        """Push ``items`` in order, as many at a time as there is room, waiting for the rest.

        Whatever fits goes out before any wait, so nothing is held back while
        the node is parked.
        """
        start = 0
        remaining = len(items)
        while remaining:
            room = self.room()
            if room <= 0:
                await self.wait_room()
                continue
            if room >= remaining and not start:
                self.push_batch(items)
                return
            chunk = batch_piece(items, start, start + room)
            self.push_batch(chunk)
            start += len(chunk)
            remaining -= len(chunk)

    async def send(self, item: Any) -> None:
        """Wait for room if needed, then push (the convenient, slower form)."""
        if not self.has_room():
            await self.wait_room()
        self.push(item)

    def push_marker(self, marker: Marker) -> None:
        """Append a control marker to every downstream edge, after every item pushed so far."""
        for edge in self.edges:
            edge.push_marker(marker)

    def push_barrier(self, barrier: Barrier, edges: list[Edge] | None = None) -> None:
        """Deliver ``barrier`` to every downstream edge (or to ``edges`` of them).

        It goes after every item pushed so far. On an edge with other
        producers this producer then gets no room until they have all
        delivered it (see :meth:`Edge.arrive`).
        """
        for edge in self.edges if edges is None else edges:
            if not edge.arrive(barrier):
                self.paused.append((edge, barrier.n))

    def open(self) -> None:
        """Register as a producer on every downstream edge."""
        for edge in self.edges:
            edge.add_producer()

    def close(self) -> None:
        """Tell every downstream edge this producer is done."""
        waiting = {id(edge) for edge, n in self.paused if edge.released < n}
        self.paused = []
        for edge in self.edges:
            edge.close_producer(arrived=id(edge) in waiting)
