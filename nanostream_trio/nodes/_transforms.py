"""Transforms built from plain functions: Map, Filter, FlatMap, Batch, TumblingWindow,
Throttle and Dedupe.

Per-item transforms are ordinary nodes whose ``process_item`` calls the user's
function, so an exception from it goes through the node's error policy with the
item that caused it.

Batch and TumblingWindow must emit when a timer fires and when the stream
ends, which a ``process_item`` cannot do (it only runs when an item arrives).
Each is a composite of two inner nodes (see ``_stages.py``): ``<name>``
takes the items (user functions run here, so a failing key function or
reducer goes through the error policy for that item) and ``<name>.emit``,
started by the first item, runs a loop that emits closed batches or windows
when they are full, when their time comes on the Trio clock, and at the end of
the stream. The intake waits while closed results pile up, so memory stays
bounded and back-pressure reaches upstream.

Checkpoints (see docs/nodes.md): the state of Batch and TumblingWindow lives in
the composite and is snapshotted by the intake, the stage named ``<name>``
(the name the user gave, so it is stable across restarts). The emitter keeps
a result in the ready queue until it has been handed on, so a snapshot taken
between two batches of the intake holds exactly what has not gone downstream.
Trio-clock times mean nothing in another run, so they are stored relative to
the time of the snapshot. Dedupe stores its remembered keys; Map, Filter,
FlatMap and Throttle keep no state worth a checkpoint.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import inspect
import math
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator
from typing import Any, Final, Unpack

import trio

from .._exceptions import ConfigError
from .._node import NanoNode
from .._policy import short_repr
from ._errors import LateItemError
from ._stages import EngineOptions, _Staged

__all__ = [
    "Batch",
    "Dedupe",
    "Filter",
    "FlatMap",
    "Map",
    "Throttle",
    "TumblingWindow",
    "WindowResult",
]


def _check_sync_callable(node: str, what: str, func: object) -> None:
    if not callable(func):
        msg = f"node {node!r} needs a callable {what}; got {short_repr(func)}"
        raise ConfigError(msg, node=node, key=what)
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        msg = (
            f"node {node!r} got an async {what} {short_repr(func)}; transforms take plain "
            "functions: write a NanoNode subclass with an async process_item instead"
        )
        raise ConfigError(msg, node=node, key=what)


class Map(NanoNode):
    """Emit ``func(item)`` for each item (nothing when it returns ``None``).

    Args:
        func: a plain function of one item.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity``, ``blocking`` (see :class:`NanoNode`).

    Example::

        source > Map(str.upper) > sink
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        *,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _check_sync_callable(self.name, "func", func)
        self.func = func

    def process_item(self, item: Any) -> Any:
        """Return ``func(item)``."""
        return self.func(item)

    def _ns_item_operation(self) -> tuple[str, Callable[[Any], Any]]:
        # Tells an engine that fuses chains of nodes that process_item is
        # exactly func(item), so it may call func directly.
        return "map", self.func


class Filter(NanoNode):
    """Pass on the items for which ``predicate(item)`` is true; drop the others.

    Args:
        predicate: a plain function of one item.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity``, ``blocking`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        predicate: Callable[[Any], Any],
        *,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _check_sync_callable(self.name, "predicate", predicate)
        self.predicate = predicate

    def process_item(self, item: Any) -> Any:
        """Return ``item`` if the predicate holds, else ``None`` (nothing emitted)."""
        return item if self.predicate(item) else None

    def _ns_item_operation(self) -> tuple[str, Callable[[Any], Any]]:
        # process_item is exactly "item if predicate(item) else None".
        return "filter", self.predicate


class FlatMap(NanoNode):
    """Emit every element of the iterable ``func(item)`` returns, in order.

    Args:
        func: a plain function of one item returning an iterable.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity``, ``blocking`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        func: Callable[[Any], Iterable[Any]],
        *,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _check_sync_callable(self.name, "func", func)
        self.func = func

    def process_item(self, item: Any) -> Iterator[Any]:
        """Yield the elements of ``func(item)``."""
        yield from self.func(item)


class Dedupe(NanoNode):
    """Drop items whose key was seen recently; memory is bounded by ``max_keys``.

    The node remembers the ``max_keys`` most recently seen keys (an item whose
    key is remembered refreshes it). A key forgotten to make room may pass
    again later. Dropped duplicates are counted in :attr:`duplicates`.

    Checkpoints: :meth:`snapshot` stores the remembered keys (so keys must be
    picklable), :meth:`restore` takes them back, so an item replayed after a
    restart is still dropped if its key had been seen before the checkpoint.

    Args:
        key: a function of the item giving a hashable key; default the item itself.
        max_keys: how many keys to remember.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity``, ``blocking`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        key: Callable[[Any], Hashable] | None = None,
        *,
        max_keys: int = 100_000,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if key is not None:
            _check_sync_callable(self.name, "key", key)
        if max_keys < 1:
            msg = f"node {self.name!r} got max_keys={max_keys!r}; expected at least 1"
            raise ConfigError(msg, node=self.name, key="max_keys")
        self.key = key
        self.max_keys = max_keys
        self._seen: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
        #: Items dropped as duplicates since the node was created.
        self.duplicates = 0

    def process_item(self, item: Any) -> Any:
        """Return ``item`` the first time its key is seen, else ``None``."""
        key = item if self.key is None else self.key(item)
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
            self.duplicates += 1
            return None
        seen[key] = None
        if len(seen) > self.max_keys:
            seen.popitem(last=False)
        return item

    def snapshot(self) -> list[Hashable]:
        """The remembered keys, least recently seen first (checkpoint hook)."""
        return list(self._seen)

    def restore(self, state: list[Hashable]) -> None:
        """Remember the keys of a :meth:`snapshot` (checkpoint hook).

        With a smaller ``max_keys`` than when the snapshot was taken, only the
        most recently seen ``max_keys`` of them are kept. :attr:`duplicates`
        is not restored: it counts what this node object has dropped.
        """
        self._seen = collections.OrderedDict.fromkeys(state[-self.max_keys :])


class Throttle(NanoNode):
    """Pass items on at most at ``rate`` per ``per`` seconds, delaying (never dropping) them.

    A token bucket on the Trio clock: up to ``burst`` items pass at once after
    a quiet spell, then one every ``per / rate`` seconds. While the node waits,
    its inbox fills and back-pressure slows the nodes upstream.

    Checkpoints: none. The bucket is the node's only state, and restoring it
    would need the time the pipeline was down, which the Trio clock does not
    know: as at any start, a restarted run begins with a full bucket (up to
    ``burst`` items may pass at once). An item being delayed when a barrier
    arrives is handed on before the barrier passes, so none is lost or repeated.

    Args:
        rate: items allowed per ``per`` seconds.
        per: the period, in seconds.
        burst: items that may pass back to back.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        rate: float,
        *,
        per: float = 1.0,
        burst: int = 1,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if not rate > 0 or not per > 0 or burst < 1:
            msg = (
                f"node {self.name!r} needs rate > 0, per > 0 and burst >= 1; "
                f"got rate={rate!r}, per={per!r}, burst={burst!r}"
            )
            raise ConfigError(msg, node=self.name, key="rate")
        self.rate = rate
        self.per = per
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def setup(self) -> None:
        """Start each run with a full bucket."""
        self._tokens = float(self.burst)
        self._last = None

    async def process_item(self, item: Any) -> Any:
        """Wait for a token, then return ``item``."""
        per_second = self.rate / self.per
        now = trio.current_time()
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
        else:
            await trio.sleep((1 - self._tokens) / per_second)
            self._tokens = 0.0
            self._last = trio.current_time()
        return item


# -- timed composites ---------------------------------------------------------

_START: Final = object()  # what the intake sends once to start the emitter's loop
_MAX_READY: Final = 2  # closed results waiting to be emitted before the intake waits


class _Timed(_Staged):
    """A composite whose intake accumulates and whose emitter emits on time."""

    _ready: collections.deque[Any]
    _closed: bool
    _started: bool
    _changed: trio.Event
    _room: trio.Event

    def _ns_build(self) -> None:
        self.intake = _Intake(self)
        self.emitter = _Emitter(self)
        # The intake's snapshot holds all the composite's state: checkpoint
        # barriers go past the emitter (whose process_item runs for ever).
        self.intake._ns_barrier_passes_over = self.emitter
        self._ns_set_stages([("intake", self.intake), ("emit", self.emitter)], self.intake)

    def _reset(self) -> None:
        self._ready = collections.deque()
        self._closed = False
        self._started = False
        self._changed = trio.Event()
        self._room = trio.Event()

    # What subclasses define:
    def _add(self, item: Any, now: float) -> None:
        raise NotImplementedError

    def _due(self, now: float) -> None:
        """Move what is due at ``now`` to ``self._ready``."""
        raise NotImplementedError

    def _deadline(self) -> float:
        raise NotImplementedError

    def _flush(self) -> list[Any]:
        raise NotImplementedError

    def _snapshot(self, now: float) -> Any:
        """What is buffered or ready but not yet handed on; ``now`` is the Trio time."""
        raise NotImplementedError

    def _restore(self, state: Any, now: float) -> None:
        """Take back what :meth:`_snapshot` returned (after ``_reset``)."""
        raise NotImplementedError


class _Intake(NanoNode):
    """The stage named like the composite: takes items, and holds the checkpoint hooks."""

    #: The emitter it feeds: barriers go past it (see ``_chain.pass_barrier``).
    _ns_barrier_passes_over: NanoNode | None = None

    def __init__(self, owner: _Timed) -> None:
        super().__init__()
        self.owner = owner

    def setup(self) -> None:
        self.owner._reset()

    def snapshot(self) -> Any:
        """The composite's buffered state: what has come in and not yet gone out.

        Returns None once the input has ended: the emitter then emits
        everything before its own end, so a final checkpoint holds nothing.
        """
        if self.owner._closed:
            return None
        return self.owner._snapshot(trio.current_time())

    def restore(self, state: Any) -> None:
        """Take back a :meth:`snapshot`; results restored are emitted from the first item on,
        or at the end of the stream if no item comes."""
        self.owner._restore(state, trio.current_time())

    async def process_item(self, item: Any) -> Any:
        owner = self.owner
        owner._add(item, trio.current_time())
        owner._changed.set()
        if not owner._started:
            owner._started = True
            return _START
        while len(owner._ready) >= _MAX_READY:
            owner._room = trio.Event()
            await owner._room.wait()
        return None

    def finish(self) -> None:
        # The input has ended: the final snapshot (taken after this) is empty,
        # since the emitter will emit everything left.
        self.owner._closed = True
        self.owner._changed.set()

    def teardown(self) -> None:
        self.owner._closed = True
        self.owner._changed.set()


class _Emitter(NanoNode):
    def __init__(self, owner: _Timed) -> None:
        super().__init__(on_error="raise")
        self.owner = owner

    async def process_item(self, start: Any) -> AsyncIterator[Any]:
        owner = self.owner
        while True:
            changed = owner._changed = trio.Event()
            owner._due(trio.current_time())
            while owner._ready:
                # Taken off the queue only once handed on (the generator resumes
                # after the push): a snapshot meanwhile still holds it.
                yield owner._ready[0]
                owner._ready.popleft()
                owner._room.set()
            if owner._closed:
                for result in owner._flush():
                    yield result
                return
            if changed.is_set():
                continue
            with trio.move_on_at(owner._deadline()):
                await changed.wait()

    def finish(self) -> Iterator[Any]:
        """Emit what a restore left if no item came to start the loop."""
        owner = self.owner
        if owner._started:
            return  # the loop ran and emitted everything when the input ended
        while owner._ready:
            yield owner._ready.popleft()
        yield from owner._flush()


class Batch(_Timed):
    """Group items into lists of ``size``, or of whatever arrived within ``interval`` seconds.

    A batch is emitted when it holds ``size`` items, or ``interval`` seconds
    (Trio clock) after its first item arrived, whichever comes first; at the
    end of the stream the last, partial batch is emitted too. Give either
    limit or both.

    In statistics the node appears as ``<name>`` (items in) and ``<name>.emit``
    (batches out).

    Checkpoints: the stage ``<name>`` stores the open batch's items, the time
    left until its ``interval`` ends, and any closed batch not yet handed on
    (so items must be picklable). After a restore the open batch fills up as
    before: it is emitted when it holds ``size`` items, when the stored time
    left has passed (counted from the restore: time the pipeline was down does
    not count), or at the end of the stream.

    Args:
        size: items per batch.
        interval: seconds after a batch's first item at which it is emitted anyway.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Example::

        source > Batch(size=500, interval=1.0) > write_rows
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        interval: float | None = None,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        if size is None and interval is None:
            msg = "Batch needs size=..., interval=... or both"
            raise ConfigError(msg, key="size")
        if (size is not None and size < 1) or (interval is not None and not interval > 0):
            msg = (
                f"Batch needs size >= 1 and interval > 0; got size={size!r}, interval={interval!r}"
            )
            raise ConfigError(msg, key="size")
        self.size = size
        self.interval = interval
        self._batch: list[Any] = []
        self._batch_deadline = math.inf
        self._ns_build()
        super().__init__(name, **engine)

    def _reset(self) -> None:
        super()._reset()
        self._batch = []
        self._batch_deadline = math.inf

    def _add(self, item: Any, now: float) -> None:
        # An item arriving when the open batch is due starts the next one, also
        # when the emitter has not closed it yet (e.g. just after a restore).
        self._due(now)
        if not self._batch and self.interval is not None:
            self._batch_deadline = now + self.interval
        self._batch.append(item)
        if self.size is not None and len(self._batch) >= self.size:
            self._close_batch()

    def _close_batch(self) -> None:
        self._ready.append(self._batch)
        self._batch = []
        self._batch_deadline = math.inf

    def _due(self, now: float) -> None:
        if self._batch and self._batch_deadline <= now:
            self._close_batch()

    def _deadline(self) -> float:
        return self._batch_deadline

    def _flush(self) -> list[Any]:
        batch, self._batch = self._batch, []
        return [batch] if batch else []

    def _snapshot(self, now: float) -> dict[str, Any] | None:
        if not self._batch and not self._ready:
            return None
        left = None if self._batch_deadline == math.inf else self._batch_deadline - now
        return {
            "batch": list(self._batch),
            "time_left": left,
            "ready": [list(batch) for batch in self._ready],
        }

    def _restore(self, state: dict[str, Any], now: float) -> None:
        self._ready.extend(state["ready"])
        items: list[Any] = state["batch"]
        # The node may have been made with a smaller size since the snapshot.
        while self.size is not None and len(items) >= self.size:
            self._ready.append(items[: self.size])
            items = items[self.size :]
        self._batch = items
        if items and self.interval is not None:
            left = state["time_left"]
            left = self.interval if left is None else min(max(left, 0.0), self.interval)
            self._batch_deadline = now + left


@dataclasses.dataclass(frozen=True, slots=True)
class WindowResult:
    """What TumblingWindow emits: one key's aggregate over one window.

    Attributes:
        start: the window's start (Trio time, or event time when ``timestamp`` is given).
        end: the window's end (``start + size``).
        key: the key the items were grouped by (``None`` without a key function).
        value: the count, or the reducer's result.
    """

    start: float
    end: float
    key: Any
    value: Any

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict, e.g. for JSONLinesWriter."""
        return {"start": self.start, "end": self.end, "key": self.key, "value": self.value}


class TumblingWindow(_Timed):
    """Aggregate items per key over fixed, back-to-back windows of ``size`` seconds.

    Each item falls in the window ``[k * size, (k + 1) * size)`` holding its
    time: the Trio clock's time when it arrives, or ``timestamp(item)`` (event
    time, e.g. a log record's own time in seconds). Per window and key the node
    counts items, or folds them with ``reducer(accumulator, item)`` starting
    from ``initial``. It emits one :class:`WindowResult` per key, keys in order
    of first appearance, windows in time order:

    * on the Trio clock, when the window's end time comes;
    * with ``timestamp``, once an item ``allowed_lateness`` seconds past the
      window's end has been seen; an item for a window already emitted then
      raises :class:`LateItemError` through the error policy;
    * in both cases, every open window at the end of the stream.

    A key function or reducer that raises fails only that item, through the
    node's error policy; the window is left as it was.

    Checkpoints: the stage ``<name>`` stores every open window with its keys
    and values (so keys and accumulators must be picklable), the watermark,
    how far windows have been emitted, and results not yet handed on. A
    restart then neither loses nor counts twice an item of an open window:
    the items before the checkpoint are in the stored values, the items
    replayed after it are added to them. With ``timestamp`` all of it is
    event time and is restored as it was. On the Trio clock (which starts
    afresh in each run) the windows are moved by whole windows so that the
    window open at the checkpoint is the current one after the restore:
    replayed items fall into it, and it closes at the end of the current
    window of the new run.

    Args:
        size: window length in seconds.
        key: a function of the item giving its group; default one group (``None``).
        reducer: ``reducer(accumulator, item) -> accumulator``; default counting.
        initial: the accumulator a new group starts from (with ``reducer``); a
            callable is called for a fresh one (e.g. ``list``).
        timestamp: a function of the item giving its event time in seconds.
        allowed_lateness: with ``timestamp``: how far behind the newest item an
            item may be and still count.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Example::

        records > TumblingWindow(60, key=lambda r: r["level"]) > sink
    """

    def __init__(
        self,
        size: float,
        *,
        key: Callable[[Any], Hashable] | None = None,
        reducer: Callable[[Any, Any], Any] | None = None,
        initial: Any = None,
        timestamp: Callable[[Any], float] | None = None,
        allowed_lateness: float = 0.0,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        if not size > 0 or allowed_lateness < 0:
            msg = (
                "TumblingWindow needs size > 0 and allowed_lateness >= 0; "
                f"got size={size!r}, allowed_lateness={allowed_lateness!r}"
            )
            raise ConfigError(msg, key="size")
        for what, func in (("key", key), ("reducer", reducer), ("timestamp", timestamp)):
            if func is not None:
                _check_sync_callable("TumblingWindow", what, func)
        self.size = size
        self.key = key
        self.reducer = reducer
        self.initial = initial
        self.timestamp = timestamp
        self.allowed_lateness = allowed_lateness
        self._windows: dict[float, dict[Any, Any]] = {}
        self._watermark = -math.inf
        self._emitted_until = -math.inf
        self._ns_build()
        super().__init__(name, **engine)

    def _reset(self) -> None:
        super()._reset()
        self._windows = {}
        self._watermark = -math.inf
        self._emitted_until = -math.inf

    def _add(self, item: Any, now: float) -> None:
        when = now if self.timestamp is None else float(self.timestamp(item))
        start = math.floor(when / self.size) * self.size
        if start + self.size <= self._emitted_until:
            msg = (
                f"item {short_repr(item)} has time {when} in window "
                f"[{start}, {start + self.size}), "
                f"which was emitted already (allowed_lateness={self.allowed_lateness}); "
                "raise allowed_lateness to wait longer for late items"
            )
            raise LateItemError(msg, content=short_repr(item))
        group = None if self.key is None else self.key(item)
        window = self._windows.get(start)
        groups: dict[Any, Any] = {} if window is None else window
        if self.reducer is None:
            value = groups.get(group, 0) + 1
        else:
            if group in groups:
                accumulator = groups[group]
            else:
                accumulator = self.initial() if callable(self.initial) else self.initial
            value = self.reducer(accumulator, item)
        groups[group] = value
        if window is None:
            self._windows[start] = groups
            if len(self._windows) > 1 and start < max(self._windows):
                self._windows = dict(sorted(self._windows.items()))
        if self.timestamp is not None and when > self._watermark:
            self._watermark = when
            self._close_until(when - self.allowed_lateness)

    def _close_until(self, time: float) -> None:
        for start in list(self._windows):
            if start + self.size > time:
                break
            self._emit_window(start)

    def _emit_window(self, start: float) -> None:
        groups = self._windows.pop(start)
        end = start + self.size
        self._emitted_until = max(self._emitted_until, end)
        self._ready.extend(WindowResult(start, end, key, value) for key, value in groups.items())

    def _due(self, now: float) -> None:
        if self.timestamp is None:
            self._close_until(now)

    def _deadline(self) -> float:
        if self.timestamp is not None or not self._windows:
            return math.inf
        first: float = next(iter(self._windows))
        return first + self.size

    def _flush(self) -> list[Any]:
        for start in list(self._windows):
            self._emit_window(start)
        flushed = list(self._ready)
        self._ready.clear()
        return flushed

    def _snapshot(self, now: float) -> dict[str, Any] | None:
        if not self._windows and not self._ready and self._emitted_until == -math.inf:
            return None
        return {
            # Deep: a reducer may change an accumulator in place after this.
            "windows": copy.deepcopy(self._windows),
            "watermark": self._watermark,
            "emitted_until": self._emitted_until,
            "ready": list(self._ready),
            "clock": now if self.timestamp is None else None,
        }

    def _restore(self, state: dict[str, Any], now: float) -> None:
        windows: dict[float, dict[Any, Any]] = state["windows"]
        emitted_until: float = state["emitted_until"]
        if state["clock"] is not None and self.timestamp is None:
            # Whole windows between the window open at the snapshot and the one open now.
            moved = math.floor(now / self.size) - math.floor(state["clock"] / self.size)
            windows = {self._moved(start, moved): groups for start, groups in windows.items()}
            if emitted_until != -math.inf:
                emitted_until = self._moved(emitted_until, moved)
        self._windows = dict(sorted(windows.items()))
        self._watermark = state["watermark"]
        self._emitted_until = emitted_until
        self._ready.extend(state["ready"])

    def _moved(self, time: float, windows: int) -> float:
        # Computed as _add computes a window's start, so equal windows get equal keys.
        return (round(time / self.size) + windows) * self.size
