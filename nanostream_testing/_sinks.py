"""Sinks that record what reaches them, and check it against what a test expects.

:class:`CollectingSink` keeps every item and its virtual arrival time.
:class:`AssertionSink` also compares the items with an expected list and,
at the end of the run, fails with a diff naming the missing, unexpected and
out-of-order items (or fails at the first wrong item with ``fail_fast``).

Both check themselves in ``teardown`` when the run ended cleanly (not when
it failed or was cancelled, so they never mask the real error), which works
with any runner: :func:`run_pipeline`, ``trio.run(pipeline.run)`` or
``global_start()``.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Hashable, Iterable
from typing import Any

import trio

from nanostream_trio import NanoNode

from ._exceptions import SinkAssertionError

__all__ = ["AssertionSink", "CollectingSink"]

# Lines of each section shown in a diff before "... and N more".
_SHOWN = 10


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def _run_ended_cleanly() -> bool:
    # teardown runs in the engine's ``finally`` block: an exception in
    # flight there means the node failed or was cancelled. A node that
    # fails upstream still closes its output, so the sink can see a normal
    # end of stream; the pipeline's nursery is cancelled by then, though,
    # which makes our effective deadline -inf.
    return sys.exc_info()[1] is None and trio.current_effective_deadline() != -math.inf


class CollectingSink(NanoNode):
    """A sink that keeps every item it receives, with its virtual arrival time.

    Args:
        name: the node's name (default ``CollectingSink``, ``CollectingSink-2``...).
        allow_empty: do not fail when the run ends without any item arriving.
        **options: further ``NanoNode`` options (e.g. ``capacity``).

    Attributes:
        items: the items received in the last run, in arrival order.
        arrivals: for each item, virtual seconds since the run started
            (the sink's setup) at which it arrived.

    Raises:
        SinkAssertionError: (at the end of a clean run) nothing arrived and
            ``allow_empty`` is false: the usual sign of a mislinked pipeline.

    Example::

        sink = CollectingSink()
        run_pipeline(FakeSource([1, 2], interval=60) > sink)
        assert sink.items == [1, 2] and sink.arrivals == [0.0, 60.0]
    """

    def __init__(self, name: str | None = None, *, allow_empty: bool = False, **options: Any):
        super().__init__(name, **options)
        self.allow_empty = allow_empty
        self.items: list[Any] = []
        self.arrivals: list[float] = []
        self._started = 0.0

    def setup(self) -> None:
        """Start a new record: each run of the pipeline starts from empty lists."""
        self.items = []
        self.arrivals = []
        self._started = trio.current_time()

    def process_item(self, item: Any) -> None:
        """Record one item and its arrival time."""
        self.items.append(item)
        self.arrivals.append(trio.current_time() - self._started)

    def teardown(self) -> None:
        """At the end of a clean run, check the record (see :meth:`verify`)."""
        if _run_ended_cleanly():
            self.verify()

    def verify(self) -> None:
        """Check what arrived; called by ``teardown`` at the end of a clean run.

        Raises:
            SinkAssertionError: nothing arrived and ``allow_empty`` is false.
        """
        if not self.items and not self.allow_empty:
            upstream = ", ".join(repr(_name(node)) for node in self.upstream) or "nothing"
            msg = (
                f"{type(self).__name__} {self.name!r} saw no items at all by the end of the "
                f"run (linked from {upstream}); check the links and the upstream nodes' "
                "filters, or pass allow_empty=True if an empty result is what you expect"
            )
            raise SinkAssertionError(msg, node=self.name)


def _name(node: object) -> str:
    return str(getattr(node, "name", None) or getattr(getattr(node, "node", None), "name", node))


class AssertionSink(CollectingSink):
    """A sink that checks the items it receives against a list of expected items.

    At the end of a clean run it compares the items with ``expected`` (by
    ``==``) and fails with a readable diff: expected items that never arrived,
    items that were not expected, and, when ``ordered``, items that arrived
    out of order (the fewest moves that explain the order seen).

    Args:
        expected: the items the sink should receive.
        ordered: whether the order of arrival must match ``expected``.
        fail_fast: fail as soon as an item arrives that cannot be right,
            instead of at the end of the run.
        name: the node's name.
        **options: further ``NanoNode`` options.

    Raises:
        SinkAssertionError: the items differ (at the end of the run, or at
            the first wrong item with ``fail_fast``).

    Example::

        expect = AssertionSink([2, 4, 6])
        run_pipeline(FakeSource([1, 2, 3]) > Double() > expect)
    """

    def __init__(
        self,
        expected: Iterable[Any],
        *,
        ordered: bool = True,
        fail_fast: bool = False,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, allow_empty=True, **options)
        self.expected: list[Any] = list(expected)
        self.ordered = ordered
        self.fail_fast = fail_fast
        self._remaining = _Multiset(self.expected)

    def setup(self) -> None:
        """Start a new record for this run."""
        super().setup()
        self._remaining = _Multiset(self.expected)

    def process_item(self, item: Any) -> None:
        """Record one item; with ``fail_fast``, fail at once if it cannot be right."""
        position = len(self.items)
        super().process_item(item)
        if not self.fail_fast:
            return
        if self.ordered:
            if position < len(self.expected) and self.expected[position] == item:
                return
            wanted = (
                f"expected {_short(self.expected[position])}"
                if position < len(self.expected)
                else f"expected only {len(self.expected)} items"
            )
        else:
            if self._remaining.take(item) is not None:
                return
            wanted = "it is not among the expected items still to come"
        msg = (
            f"AssertionSink {self.name!r} got a wrong item at position {position} "
            f"(t={self.arrivals[-1]:g}): {_short(item)}; {wanted}"
        )
        raise SinkAssertionError(msg, node=self.name, unexpected=[item])

    def verify(self) -> None:
        """Compare the items received with the expected ones.

        Raises:
            SinkAssertionError: with the diff, if they differ.
        """
        missing, unexpected, moved = _diff(self.expected, self.items, ordered=self.ordered)
        if not (missing or unexpected or moved):
            return
        lines = [
            f"AssertionSink {self.name!r} at the end of the run: received {len(self.items)} "
            f"items, expected {len(self.expected)}" + ("" if self.ordered else " (in any order)")
        ]
        if not self.items:
            lines[0] += "; nothing arrived at all (check the links)"
        _section(lines, "missing (expected, never arrived)", [
            f"expected[{j}] {_short(self.expected[j])}" for j in missing
        ])  # fmt: skip
        _section(lines, "unexpected (arrived, not expected)", [
            f"received[{i}] {_short(self.items[i])} at t={self.arrivals[i]:g}" for i in unexpected
        ])  # fmt: skip
        _section(lines, "out of order", [
            f"received[{i}] {_short(self.items[i])} at t={self.arrivals[i]:g}, "
            f"expected at position {j}"
            for i, j in moved
        ])  # fmt: skip
        raise SinkAssertionError(
            "\n".join(lines),
            node=self.name,
            missing=[self.expected[j] for j in missing],
            unexpected=[self.items[i] for i in unexpected],
            out_of_order=[self.items[i] for i, _ in moved],
        )


def _section(lines: list[str], title: str, entries: list[str]) -> None:
    if not entries:
        return
    lines.append(f"  {title}: {len(entries)}")
    lines.extend(f"    {entry}" for entry in entries[:_SHOWN])
    if len(entries) > _SHOWN:
        lines.append(f"    ... and {len(entries) - _SHOWN} more")


class _Multiset:
    """Expected items by position, matched by ``==``; hashable ones looked up by hash."""

    def __init__(self, items: list[Any]) -> None:
        self._by_hash: dict[Any, list[int]] = {}
        self._unhashable: list[int] = []
        self._items = items
        for index, item in enumerate(items):
            if isinstance(item, Hashable):
                try:
                    self._by_hash.setdefault(item, []).append(index)
                    continue
                except TypeError:  # a tuple holding a list, for example
                    pass
            self._unhashable.append(index)

    def take(self, item: Any) -> int | None:
        """Remove and return the first position of an item equal to ``item``."""
        try:
            positions = self._by_hash.get(item)
        except TypeError:
            positions = None
        if positions:
            return positions.pop(0)
        for k, index in enumerate(self._unhashable):
            if self._items[index] == item:
                del self._unhashable[k]
                return index
        return None

    def left(self) -> list[int]:
        """Positions never taken, in order."""
        rest = [i for positions in self._by_hash.values() for i in positions]
        return sorted(rest + self._unhashable)


def _diff(
    expected: list[Any], received: list[Any], *, ordered: bool
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Missing expected positions, unexpected received positions, and moved pairs.

    Each received item is matched to the first unmatched equal expected item.
    When ``ordered``, matched pairs off the longest run that keeps the
    expected order are reported as out of order (received, expected position).
    """
    remaining = _Multiset(expected)
    pairs: list[tuple[int, int]] = []
    unexpected: list[int] = []
    for i, item in enumerate(received):
        j = remaining.take(item)
        if j is None:
            unexpected.append(i)
        else:
            pairs.append((i, j))
    moved: list[tuple[int, int]] = []
    if ordered:
        keep = _longest_increasing([j for _, j in pairs])
        moved = [pair for k, pair in enumerate(pairs) if k not in keep]
    return remaining.left(), unexpected, moved


def _longest_increasing(values: list[int]) -> set[int]:
    """Indexes of one longest strictly increasing subsequence of ``values``."""

    tails: list[int] = []  # values at the end of the best run of each length
    tail_index: list[int] = []
    previous = [-1] * len(values)
    for k, value in enumerate(values):
        length = bisect.bisect_left(tails, value)
        if length == len(tails):
            tails.append(value)
            tail_index.append(k)
        else:
            tails[length] = value
            tail_index[length] = k
        previous[k] = tail_index[length - 1] if length else -1
    keep: set[int] = set()
    k = tail_index[-1] if tail_index else -1
    while k != -1:
        keep.add(k)
        k = previous[k]
    return keep
