"""Every system of the benchmark, each a function ``(n) -> (seconds, totals)``.

The limits (fused loops) call the workload functions directly. The other
systems move the same items through the same functions with nanostream-trio
or with what a user would otherwise write with the standard library (one
thread per node over ``queue.Queue(256)``, ``asyncio.Queue(256)`` tasks) or
with bare Trio channels. Each returns the wall-clock seconds of the run and the
sink's totals, which the caller checks.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import trio
from workload import (
    Totals,
    add_v2,
    count_record,
    count_row,
    even_id,
    records,
    to_tuple,
)

from nanostream_trio import NanoNode, Pipeline

QUEUE_SIZE = 256
_END = object()

Result = tuple[float, Any]


# -- limits ----------------------------------------------------------------------


def fused_loop(n: int) -> Result:
    """The limit: one ``for`` loop calling the workload functions."""
    totals = Totals()
    add = totals.add
    started = time.perf_counter()
    for record in records(n):
        record = add_v2(record)
        if even_id(record):
            add(to_tuple(record))
    return time.perf_counter() - started, totals


def fused_generator_loop(n: int) -> Result:
    """The generator nodes' own limit: nested loops over the same generator methods."""
    add, even, tup, sink = AddV2Gen(), EvenGen(), TupleGen(), Sink()
    started = time.perf_counter()
    for record in records(n):
        for a in add.process_item(record):
            for b in even.process_item(a):
                for c in tup.process_item(b):
                    sink.process_item(c)
    return time.perf_counter() - started, sink


def inline_source_loop(n: int) -> Result:
    """The threaded source's limit: the same generator iterated inline into the sink."""
    totals = Totals()
    add = totals.add_record
    started = time.perf_counter()
    for record in records(n):
        add(record)
    return time.perf_counter() - started, totals


# -- nanostream-trio ---------------------------------------------------------------


class RecordSource(NanoNode):
    """The workload's source as a node (sync; ``blocking=False`` runs it inline)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self.n = n
        super().__init__(**kwargs)

    def generator(self) -> Any:
        return records(self.n)


class Sink(NanoNode):
    """The workload's sink as a node: ``process_item`` *is* :func:`workload.count_row`."""

    def __init__(self, **kwargs: Any) -> None:
        self.count = 0
        self.total = 0
        super().__init__(**kwargs)

    process_item = count_row


class RecordSink(NanoNode):
    """The source-only workload's sink: ``process_item`` *is* :func:`workload.count_record`."""

    def __init__(self, **kwargs: Any) -> None:
        self.count = 0
        self.total = 0
        super().__init__(**kwargs)

    process_item = count_record


class AddV2Gen(NanoNode):
    """Map 1 in the seed's style: ``process_item`` is a generator."""

    def process_item(self, item: Any) -> Any:
        yield add_v2(item)


class EvenGen(NanoNode):
    """The filter in the seed's style."""

    def process_item(self, item: Any) -> Any:
        if even_id(item):
            yield item


class TupleGen(NanoNode):
    """Map 2 in the seed's style."""

    def process_item(self, item: Any) -> Any:
        yield to_tuple(item)


def builtin_nodes() -> tuple[Any, Any, bool]:
    """``(Map, Filter, real)``: the built-in nodes, or stand-ins if they are missing."""
    try:
        from nanostream_trio.nodes import Filter, Map
    except ImportError:
        return _StandInMap, _StandInFilter, False
    return Map, Filter, True


class _StandInMap(NanoNode):
    def __init__(self, func: Callable[[Any], Any], **kwargs: Any) -> None:
        self.func = func
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> Any:
        return self.func(item)


class _StandInFilter(NanoNode):
    def __init__(self, predicate: Callable[[Any], Any], **kwargs: Any) -> None:
        self.predicate = predicate
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> Any:
        return item if self.predicate(item) else None


def _run_pipeline(source: NanoNode, sink: Any, check_counts: bool = True) -> Result:
    pipeline = Pipeline(source, stats_interval=None, stall_timeout=None)
    started = time.perf_counter()
    summary = trio.run(pipeline.run)
    elapsed = time.perf_counter() - started
    if check_counts and summary[sink.name].items_in != sink.count:
        msg = (
            f"statistics disagree: sink items_in={summary[sink.name].items_in}, "
            f"sink counted {sink.count}"
        )
        raise AssertionError(msg)
    return elapsed, sink


def nanostream_builtins(n: int) -> Result:
    """nanostream-trio: built-in Map/Filter nodes over the plain workload functions."""
    map_node, filter_node, _ = builtin_nodes()
    source, sink = RecordSource(n, blocking=False), Sink()
    source > map_node(add_v2) > filter_node(even_id) > map_node(to_tuple) > sink
    return _run_pipeline(source, sink)


def nanostream_generators(n: int) -> Result:
    """nanostream-trio: NanoNode subclasses whose process_item is a generator."""
    source, sink = RecordSource(n, blocking=False), Sink()
    source > AddV2Gen() > EvenGen() > TupleGen() > sink
    return _run_pipeline(source, sink)


def nanostream_thread_source(n: int) -> Result:
    """nanostream-trio: a sync generator source in its worker thread, into a sink."""
    source, sink = RecordSource(n), RecordSink()
    source > sink
    return _run_pipeline(source, sink)


def has_engine_knob(knob: str) -> bool:
    """Whether the engine still has the private tuning constant ``knob`` (``_runtime``).

    The rows that turn a private knob are comparisons for engine developers; an
    engine without the knob skips them rather than failing the suite.
    """
    try:
        from nanostream_trio import _runtime
    except ImportError:
        return False
    return hasattr(_runtime, knob)


def nanostream_thread_source_handoff1(n: int) -> Result:
    """The same with a hand-off only as large as the inbox (``THREAD_HANDOFF_FACTOR = 1``)."""
    from nanostream_trio import _runtime

    previous = _runtime.THREAD_HANDOFF_FACTOR
    _runtime.THREAD_HANDOFF_FACTOR = 1
    try:
        return nanostream_thread_source(n)
    finally:
        _runtime.THREAD_HANDOFF_FACTOR = previous


# -- seed-style shapes, default Pipeline options ----------------------------------------


class AsyncRecordSource(NanoNode):
    """The workload's source as an async generator (no ``await`` between items)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self.n = n
        super().__init__(**kwargs)

    async def generator(self) -> Any:
        for record in records(self.n):
            yield record


def _run_default_pipeline(source: NanoNode, sink: Any) -> Result:
    """Run with ``Pipeline(source)``'s defaults (monitoring on) and check the sink's count."""
    pipeline = Pipeline(source)
    started = time.perf_counter()
    summary = trio.run(pipeline.run)
    elapsed = time.perf_counter() - started
    if summary[sink.name].items_in != sink.count:
        seen = summary[sink.name].items_in
        msg = f"statistics disagree: sink items_in={seen}, counted {sink.count}"
        raise AssertionError(msg)
    return elapsed, sink


def seed_async_source(n: int) -> Result:
    """(a) Generator ``process_item`` nodes behind an async generator source."""
    source, sink = AsyncRecordSource(n), Sink()
    source > AddV2Gen() > EvenGen() > TupleGen() > sink
    return _run_default_pipeline(source, sink)


def seed_thread_source(n: int) -> Result:
    """(b) The same behind a sync ``generator()`` source in its worker thread (the default)."""
    source, sink = RecordSource(n), Sink()
    source > AddV2Gen() > EvenGen() > TupleGen() > sink
    return _run_default_pipeline(source, sink)


def seed_inline_source(n: int) -> Result:
    """(c) The same with the sync source run inline (``blocking=False``)."""
    source, sink = RecordSource(n, blocking=False), Sink()
    source > AddV2Gen() > EvenGen() > TupleGen() > sink
    return _run_default_pipeline(source, sink)


FLOOR_BATCH = 512


def seed_trio_floor(n: int) -> Result:
    """The floor of (a): bare Trio, a task iterating the async generator hands lists of
    ``FLOOR_BATCH`` records over a memory channel to a task running the fused generator loop."""
    add, even, tup, sink = AddV2Gen(), EvenGen(), TupleGen(), Sink()

    async def produce() -> Any:
        for record in records(n):
            yield record

    async def source(outbox: trio.MemorySendChannel[list[Any]]) -> None:
        async with outbox:
            batch: list[Any] = []
            async for record in produce():
                batch.append(record)
                if len(batch) >= FLOOR_BATCH:
                    await outbox.send(batch)
                    batch = []
            if batch:
                await outbox.send(batch)

    async def chain(inbox: trio.MemoryReceiveChannel[list[Any]]) -> None:
        async with inbox:
            async for batch in inbox:
                for record in batch:
                    for a in add.process_item(record):
                        for b in even.process_item(a):
                            for c in tup.process_item(b):
                                sink.process_item(c)

    async def main() -> None:
        outbox, inbox = trio.open_memory_channel[list[Any]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source, outbox)
            nursery.start_soon(chain, inbox)

    started = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - started, sink


# -- what users would otherwise write -------------------------------------------------


def thread_per_node(n: int) -> Result:
    """The original nanostream's design: one thread per node over ``queue.Queue(256)``."""
    totals = Totals()
    edges = [queue.Queue[Any](QUEUE_SIZE) for _ in range(4)]

    def source() -> None:
        put = edges[0].put
        for record in records(n):
            put(record)
        put(_END)

    def stage(inbox: queue.Queue[Any], outbox: queue.Queue[Any], func: Any, keep: bool) -> None:
        get, put = inbox.get, outbox.put
        while (item := get()) is not _END:
            if keep:
                if func(item):
                    put(item)
            else:
                put(func(item))
        put(_END)

    def sink() -> None:
        get, add = edges[3].get, totals.add
        while (item := get()) is not _END:
            add(item)

    threads = [
        threading.Thread(target=source),
        threading.Thread(target=stage, args=(edges[0], edges[1], add_v2, False)),
        threading.Thread(target=stage, args=(edges[1], edges[2], even_id, True)),
        threading.Thread(target=stage, args=(edges[2], edges[3], to_tuple, False)),
        threading.Thread(target=sink),
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, totals


def asyncio_queues(n: int) -> Result:
    """One asyncio task per node over ``asyncio.Queue(256)``."""
    totals = Totals()

    async def main() -> None:
        edges = [asyncio.Queue[Any](QUEUE_SIZE) for _ in range(4)]

        async def source() -> None:
            put = edges[0].put
            for record in records(n):
                await put(record)
            await put(_END)

        async def stage(inbox: Any, outbox: Any, func: Any, keep: bool) -> None:
            get, put = inbox.get, outbox.put
            while (item := await get()) is not _END:
                if keep:
                    if func(item):
                        await put(item)
                else:
                    await put(func(item))
            await put(_END)

        async def sink() -> None:
            get, add = edges[3].get, totals.add
            while (item := await get()) is not _END:
                add(item)

        await asyncio.gather(
            source(),
            stage(edges[0], edges[1], add_v2, False),
            stage(edges[1], edges[2], even_id, True),
            stage(edges[2], edges[3], to_tuple, False),
            sink(),
        )

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started, totals


def trio_channels(n: int) -> Result:
    """Bare Trio memory channels, one task per node, a per-item ``await send()``."""
    totals = Totals()

    async def main() -> None:
        channels = [trio.open_memory_channel[Any](QUEUE_SIZE) for _ in range(4)]

        async def source(tx: Any) -> None:
            async with tx:
                for record in records(n):
                    await tx.send(record)

        async def stage(rx: Any, tx: Any, func: Any, keep: bool) -> None:
            async with rx, tx:
                async for item in rx:
                    if keep:
                        if func(item):
                            await tx.send(item)
                    else:
                        await tx.send(func(item))

        async def sink(rx: Any) -> None:
            add = totals.add
            async with rx:
                async for item in rx:
                    add(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(source, channels[0][0])
            nursery.start_soon(stage, channels[0][1], channels[1][0], add_v2, False)
            nursery.start_soon(stage, channels[1][1], channels[2][0], even_id, True)
            nursery.start_soon(stage, channels[2][1], channels[3][0], to_tuple, False)
            nursery.start_soon(sink, channels[3][1])

    started = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - started, totals
