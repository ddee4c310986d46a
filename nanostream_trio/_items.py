"""``Items``: how a source hands over many items at once.

A source's ``generator()`` (any of its styles) may yield ``Items(list_of_items)``
instead of one item: the engine takes the whole list in one step, as if each
element had been yielded on its own, in order. Built-in sources that read in
chunks (``TailFile``, ``LocalFileReader``) use it so that a 64 KiB read costs
one hand-over, not one per line. Only the exact type counts: a plain list
yielded by a source is one item (a ``Batch`` node's output, for example).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Items"]


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
