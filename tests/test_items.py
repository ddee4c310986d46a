"""Sources hand over many items at once with ``Items``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from nanostream_testing import CollectingSink, run_pipeline
from nanostream_trio import Items, NanoNode


class SyncChunks(NanoNode):
    def generator(self) -> Iterator[Any]:
        time.sleep(0)
        for start in range(0, 1000, 100):
            yield Items(range(start, start + 100))
        yield Items()
        yield "last"


class InlineChunks(NanoNode):
    def __init__(self) -> None:
        super().__init__(blocking=False)

    def generator(self) -> Iterator[Any]:
        yield Items([1, 2])
        yield [3, 4]  # a plain list is one item
        yield Items()
        yield 5


class AsyncChunks(NanoNode):
    async def generator(self) -> AsyncIterator[Any]:
        yield Items(["a", "b"])
        yield "c"
        yield Items(["d"])


class Double(NanoNode):
    def process_item(self, item: Any) -> Any:
        return item * 2


class TestItems:
    def test_threaded_source_items_are_spliced_in_order(self) -> None:
        """Items yielded by a sync source in its thread arrive one by one, in order."""
        source = SyncChunks()
        sink = CollectingSink()
        source > sink
        stats = run_pipeline(source)
        assert sink.items == [*range(1000), "last"]
        assert stats.nodes[source.name].items_out == 1001

    def test_inline_source_keeps_plain_lists_whole(self) -> None:
        """Only the exact Items type is spliced; a plain list stays one item."""
        source = InlineChunks()
        sink = CollectingSink()
        source > Double() > sink
        run_pipeline(source)
        assert sink.items == [2, 4, [3, 4, 3, 4], 10]

    def test_async_source_items(self) -> None:
        """An async generator source may yield Items too."""
        source = AsyncChunks()
        sink = CollectingSink()
        source > sink
        stats = run_pipeline(source)
        assert sink.items == ["a", "b", "c", "d"]
        assert stats.nodes[source.name].items_out == 4

    def test_repr(self) -> None:
        """Items shows as what it is."""
        assert repr(Items([1])) == "Items([1])"
