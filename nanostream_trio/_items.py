"""What a source hands over: ``Items`` (many items at once), ``Lines`` and ``Line``.

A source's ``generator()`` (any of its styles) may yield ``Items(list_of_items)``
instead of one item: the engine takes the whole list in one step, as if each
element had been yielded on its own, in order. Built-in sources that read in
chunks (``TailFile``, ``LocalFileReader``) use it so that a 64 KiB read costs
one hand-over, not one per line. Only the exact type counts: a plain list
yielded by a source is one item (a ``Batch`` node's output, for example).

:class:`Lines` is ``Items`` made of consecutive lines of one file, as plain
``str``, with one location record for the whole batch (``path`` and the
number of its first line) instead of a :class:`Line` object per line: a
``str`` subclass instance costs 300-650 ns a line in a pipeline (its
creation, its ``__dict__``, and the garbage collector tracking it), a plain
``str`` from ``str.split`` nothing. Edges keep a ``Lines`` batch whole (or
cut it into ``Lines`` pieces), so the node that receives it knows where item
``i`` came from: ``first + i``. The engine uses that only when an item fails
(see ``_stage.py``): the failing line becomes a :class:`Line`, so its error,
its ``item_*`` event and its dead letter name the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Items", "Line", "Lines", "batch_piece"]


class Items(list[Any]):
    """A list of items a source emits in one step.

    Example::

        class Numbers(NanoNode):
            def generator(self):
                for start in range(0, 1_000_000, 1000):
                    yield Items(range(start, start + 1000))

    The elements are emitted in order, each counted as one item. An empty
    ``Items()`` emits nothing. Yielding ``Items`` from a source never splits
    a control marker (end of stream, checkpoint barrier) into the middle of
    the list: a barrier goes before or after it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Items({list.__repr__(self)})"


class Line(str):
    """One line of text (without its line ending) that knows its ``path`` and ``lineno``.

    Attributes:
        path: the file it was read from (``None`` if unknown).
        lineno: its 1-based line number in that file.
    """

    path: str | None
    lineno: int

    def __new__(cls, text: str = "", path: str | None = None, lineno: int = 0) -> Line:
        self = super().__new__(cls, text)
        self.path = path
        self.lineno = lineno
        return self


# Where users import it from (it is defined here so that the engine can make one).
Line.__module__ = "nanostream_trio.nodes"


class Lines(Items):
    """Consecutive lines of one file (plain ``str``), numbered from ``first``.

    An async generator source (TailFile) yields one as it would ``Items``;
    other sources keep to ``Items`` (their paths check for that exact type,
    to cost nothing per item).

    Args:
        lines: the lines, in order.
        path: the file they were read from.
        first: the 1-based number of the first line.
    """

    __slots__ = ("first", "path")

    def __init__(self, lines: Iterable[str], path: str, first: int) -> None:
        super().__init__(lines)
        self.path = path
        self.first = first

    def __repr__(self) -> str:
        return f"Lines({list.__repr__(self)}, {self.path!r}, {self.first})"

    def line(self, index: int) -> Line:
        """Item ``index`` as a :class:`Line` that knows its path and number."""
        return Line(self[index], self.path, self.first + index)

    def piece(self, start: int, stop: int) -> Lines:
        """Items ``start`` to ``stop`` (a slice), still located."""
        return Lines(self[start:stop], self.path, self.first + start)


def batch_piece(items: list[Any], start: int, stop: int) -> list[Any]:
    """``items[start:stop]``, located if ``items`` is :class:`Lines`."""
    if items.__class__ is Lines:
        return items.piece(start, stop)
    return items[start:stop]
