"""Responsiveness and memory under load: a 1 ms ticker beside busy pipelines, and a
stalled sink behind a threaded source of 100 KB items.

Ticker: a task in the same Trio run loops on ``trio.sleep(0.001)`` and records
how late each wake-up is (Trio's clock after waking minus the deadline it
asked for). It runs while a busy shape runs in the same ``trio.run``, and is
cancelled when the pipeline ends; the reference is the same ticker alone in a
bare ``trio.run`` for about as long.

Stalled sink: a threaded source of distinct 100 KB ``bytes`` feeds a sink
whose ``process_item`` awaits forever. The source's generator counts what it
produced itself (the engine's statistics may not see what a hand-off holds),
the run waits until that count stops moving, then reads the peak RSS and
cancels. The reference is bare Trio: a worker thread sending the same items
through ``trio.from_thread.run(send, ...)`` into a memory channel of the
engine's default inbox capacity, read by a task that takes one item and waits
forever.
"""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from systems import AsyncRecordSource, RecordSource, Sink, builtin_nodes
from workload import add_v2, even_id, expected_pipeline, to_tuple

from nanostream_trio import DEFAULT_CAPACITY, NanoNode, Pipeline

TICK = 0.001
ITEM_BYTES = 100_000


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _lateness(samples: list[float]) -> dict[str, float]:
    kept = sorted(samples)
    return {
        "ticks": len(kept),
        "p50_ms": statistics.median(kept) * 1e3,
        "p99_ms": kept[min(len(kept) - 1, int(len(kept) * 0.99))] * 1e3,
        "max_ms": kept[-1] * 1e3,
    }


async def _ticker(samples: list[float]) -> None:
    while True:
        deadline = trio.current_time() + TICK
        await trio.sleep(TICK)
        samples.append(trio.current_time() - deadline)


def ticker_alone(seconds: float) -> dict[str, float]:
    """The ticker in a bare ``trio.run`` for ``seconds``."""
    samples: list[float] = []

    async def main() -> None:
        with trio.move_on_after(seconds):
            await _ticker(samples)

    trio.run(main)
    return _lateness(samples)


def ticker_beside(busy: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """The ticker in the same ``trio.run`` as ``await busy()``, until that returns."""
    samples: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ticker, samples)
            started = time.perf_counter()
            await busy()
            samples_seconds[0] = time.perf_counter() - started
            nursery.cancel_scope.cancel("the busy pipeline ended")

    samples_seconds = [0.0]
    trio.run(main)
    result = _lateness(samples)
    result["seconds"] = samples_seconds[0]
    return result


def _builtin_chain(source: NanoNode, n: int) -> Callable[[], Awaitable[Any]]:
    map_node, filter_node, _ = builtin_nodes()
    sink = Sink()
    source > map_node(add_v2) > filter_node(even_id) > map_node(to_tuple) > sink
    pipeline = Pipeline(source)

    async def busy() -> None:
        await pipeline.run()
        got = (sink.count, sink.total)
        if got != expected_pipeline(n):
            msg = f"busy pipeline: wrong result {got}, expected {expected_pipeline(n)}"
            raise AssertionError(msg)

    return busy


def busy_threaded(n: int, files: dict[str, str]) -> Callable[[], Awaitable[Any]]:
    """A sync source in its worker thread > ``Map`` > ``Filter`` > ``Map`` > sink."""
    return _builtin_chain(RecordSource(n), n)


def busy_async(n: int, files: dict[str, str]) -> Callable[[], Awaitable[Any]]:
    """An async generator source > ``Map`` > ``Filter`` > ``Map`` > sink."""
    return _builtin_chain(AsyncRecordSource(n), n)


def busy_csv(n: int, files: dict[str, str]) -> Callable[[], Awaitable[Any]]:
    """The CSV job (``LocalFileReader > CSVReader > Filter > JSONLinesWriter``)."""
    from realworld import OnePath, shipped

    from nanostream_trio.nodes import CSVReader, Filter, JSONLinesWriter, LocalFileReader

    out = Path(files["scratch"]) / "orders-ticker.jsonl"
    out.unlink(missing_ok=True)
    source = OnePath(files["csv"])
    source > LocalFileReader() > CSVReader() > Filter(shipped) > JSONLinesWriter(out)
    pipeline = Pipeline(source)

    async def busy() -> None:
        await pipeline.run()
        out.unlink()

    return busy


#: name -> (label, busy shape builder)
BUSY: dict[str, tuple[str, Callable[[int, dict[str, str]], Callable[[], Awaitable[Any]]]]] = {
    "threaded": ("threaded source > `Map` > `Filter` > `Map` > sink", busy_threaded),
    "async": ("async generator source > `Map` > `Filter` > `Map` > sink", busy_async),
    "csv": ("the CSV job (`LocalFileReader > CSVReader > Filter > JSONLinesWriter`)", busy_csv),
}


# -- stalled sink, 100 KB items -----------------------------------------------------------


class _Produced:
    """Items a source produced, counted by the source itself (a thread writes, Trio reads)."""

    def __init__(self) -> None:
        self.count = 0


def _big_items(produced: _Produced, n: int) -> Any:
    for i in range(n):
        item = bytes((i % 251,)) * ITEM_BYTES  # distinct, every page touched
        produced.count += 1
        yield item


class BigSource(NanoNode):
    """A sync source of ``n`` distinct 100 KB items, counting what it produced."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        self.n = n
        self.produced = _Produced()
        super().__init__(**kwargs)

    def generator(self) -> Any:
        return _big_items(self.produced, self.n)


class _Stall(NanoNode):
    """A sink that takes one item and never finishes it."""

    async def process_item(self, item: Any) -> None:
        await trio.sleep_forever()


async def _until_still(produced: _Produced, quiet: float = 0.5) -> None:
    """Return once ``produced.count`` has not moved for ``quiet`` seconds."""
    last, still_since = -1, trio.current_time()
    while trio.current_time() - still_since < quiet:
        await trio.sleep(0.05)
        if produced.count != last:
            last, still_since = produced.count, trio.current_time()


def stalled_nanostream(n: int) -> dict[str, float]:
    """Peak RSS with a stalled sink behind a threaded source of 100 KB items."""
    source = BigSource(n)
    source > _Stall()
    pipeline = Pipeline(source)
    before = peak_rss_mib()
    outcome: dict[str, float] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await _until_still(source.produced)
            stats = pipeline.statistics()
            outcome["produced"] = source.produced.count
            outcome["visible"] = sum(s.inbox_queued for s in stats.values())
            outcome["capacity"] = sum(s.inbox_capacity for s in stats.values())
            outcome["rss_peak_mib"] = peak_rss_mib()
            pipeline.cancel()

    trio.run(main)
    outcome["rss_before_mib"] = before
    return outcome


def stalled_bare_trio(n: int) -> dict[str, float]:
    """The same with bare Trio: a thread sending into a channel of ``DEFAULT_CAPACITY``."""
    produced = _Produced()
    before = peak_rss_mib()
    outcome: dict[str, float] = {}
    stop = threading.Event()

    async def main() -> None:
        outbox, inbox = trio.open_memory_channel[bytes](DEFAULT_CAPACITY)

        def produce() -> None:
            with outbox:
                for item in _big_items(produced, n):
                    if stop.is_set():
                        return
                    trio.from_thread.run(outbox.send, item)

        async def stalled() -> None:
            async with inbox:
                await inbox.receive()
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, produce)
            nursery.start_soon(stalled)
            await _until_still(produced)
            outcome["produced"] = produced.count
            outcome["capacity"] = DEFAULT_CAPACITY
            outcome["rss_peak_mib"] = peak_rss_mib()
            stop.set()
            nursery.cancel_scope.cancel("measured")

    trio.run(main)
    outcome["rss_before_mib"] = before
    return outcome
