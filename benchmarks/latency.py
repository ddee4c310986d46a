"""Idle latency of one item through 5 hops, and peak memory.

Latency: the driver sends one item, waits on a ``trio.Event`` that the last
node sets, and only then sends the next, so every item travels through an
idle pipeline. The reference is bare Trio memory channels with the
``send_nowait``/``receive_nowait`` fast path (the best a hand-written Trio
relay does), measured in the same process.

Memory: peak RSS (``ru_maxrss``) of a child process that runs the workload
pipeline, or that feeds a sink which stalls forever and is cancelled once
back-pressure has stopped the source.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import trio
from systems import RecordSource, builtin_nodes, nanostream_builtins
from workload import add_v2, even_id, to_tuple

from nanostream_trio import NanoNode, Pipeline

HOPS = 5


def _summary(samples: list[float], warmup: int) -> dict[str, float]:
    kept = sorted(samples[warmup:])
    return {
        "median_us": statistics.median(kept) * 1e6,
        "p99_us": kept[min(len(kept) - 1, int(len(kept) * 0.99))] * 1e6,
    }


def bare_trio_latency(count: int) -> dict[str, float]:
    """5 hops over bare Trio memory channels, with the ``*_nowait`` fast path."""
    samples: list[float] = []

    async def main() -> None:
        arrived = trio.Event()
        channels = [trio.open_memory_channel[Any](256) for _ in range(HOPS)]

        async def relay(rx: Any, tx: Any) -> None:
            with rx, tx:
                while True:
                    try:
                        item = rx.receive_nowait()
                    except trio.WouldBlock:
                        try:
                            item = await rx.receive()
                        except trio.EndOfChannel:
                            return
                    except trio.EndOfChannel:
                        return
                    tx.send_nowait(item)

        async def last(rx: Any) -> None:
            with rx:
                while True:
                    try:
                        rx.receive_nowait()
                    except trio.WouldBlock:
                        try:
                            await rx.receive()
                        except trio.EndOfChannel:
                            return
                    except trio.EndOfChannel:
                        return
                    arrived.set()

        async with trio.open_nursery() as nursery:
            for hop in range(HOPS - 1):
                nursery.start_soon(relay, channels[hop][1], channels[hop + 1][0])
            nursery.start_soon(last, channels[HOPS - 1][1])
            first = channels[0][0]
            with first:
                for i in range(count):
                    arrived = trio.Event()
                    started = time.perf_counter()
                    first.send_nowait(i)
                    await arrived.wait()
                    samples.append(time.perf_counter() - started)

    trio.run(main)
    return _summary(samples, warmup=min(100, count // 10))


class _Driver(NanoNode):
    """Async source: yields one item, then waits until the sink has it."""

    def __init__(self, count: int, **kwargs: Any) -> None:
        self.count = count
        self.samples: list[float] = []
        self.arrived: trio.Event | None = None
        super().__init__(**kwargs)

    async def generator(self) -> Any:
        for i in range(self.count):
            self.arrived = trio.Event()
            started = time.perf_counter()
            yield i
            await self.arrived.wait()
            self.samples.append(time.perf_counter() - started)


class _Arrival(NanoNode):
    """Sink: tells the driver its item arrived."""

    def __init__(self, driver: _Driver, **kwargs: Any) -> None:
        self.driver = driver
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> None:
        assert self.driver.arrived is not None
        self.driver.arrived.set()


def _identity(item: Any) -> Any:
    return item


def nanostream_latency(count: int, fuse: bool = True) -> dict[str, float]:
    """5 hops through nanostream-trio: driver > 4 Map(identity) > sink."""
    try:
        from nanostream_trio import _runtime
    except ImportError:  # a private module: an engine without it is measured as it is
        _runtime = None  # type: ignore[assignment]

    map_node, _, _ = builtin_nodes()
    driver = _Driver(count)
    node: Any = driver
    for _ in range(HOPS - 1):
        node = node > map_node(_identity)
    node > _Arrival(driver)
    previous = getattr(_runtime, "FUSE_CHAINS", None)
    if previous is not None:
        _runtime.FUSE_CHAINS = fuse
    try:
        trio.run(Pipeline(driver, stats_interval=None, stall_timeout=None).run)
    finally:
        if previous is not None:
            _runtime.FUSE_CHAINS = previous
    if len(driver.samples) != count:
        msg = f"latency run lost items: {len(driver.samples)} of {count} arrived"
        raise AssertionError(msg)
    return _summary(driver.samples, warmup=min(100, count // 10))


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rss(n: int) -> dict[str, float]:
    """Peak RSS after running the workload pipeline over ``n`` records."""
    before = peak_rss_mib()
    seconds, _ = nanostream_builtins(n)
    return {"rss_before_mib": before, "rss_peak_mib": peak_rss_mib(), "seconds": seconds}


class _Stall(NanoNode):
    """A sink that takes one item and never finishes it."""

    async def process_item(self, item: Any) -> None:
        await trio.sleep_forever()


def run_stalled(n: int) -> dict[str, float]:
    """Peak RSS while a sink stalls and back-pressure holds an ``n``-record source."""
    map_node, filter_node, _ = builtin_nodes()
    source = RecordSource(n)
    nodes: list[NanoNode] = [map_node(add_v2), filter_node(even_id), map_node(to_tuple), _Stall()]
    node: Any = source
    for following in nodes:
        node = node > following
    pipeline = Pipeline(source, stats_interval=None, stall_timeout=None)
    outcome: dict[str, float] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            # Wait until the source is held by back-pressure: its count stops moving.
            last = -1
            while True:
                await trio.sleep(0.2)
                emitted = pipeline.statistics()[source.name].items_out
                if emitted == last:
                    break
                last = emitted
            stats = pipeline.statistics()
            outcome["source_emitted"] = stats[source.name].items_out
            outcome["queued"] = sum(s.inbox_queued for s in stats.values())
            outcome["capacity"] = sum(s.inbox_capacity for s in stats.values())
            outcome["rss_peak_mib"] = peak_rss_mib()
            pipeline.cancel()

    trio.run(main)
    # Bound: every inbox full, plus what is in hand (one batch taken by the
    # fused map/filter chain, one item in the stalled sink).
    bound = 2 * outcome["capacity"] + 1
    if outcome["source_emitted"] > bound:
        msg = (
            f"stalled sink did not hold the source back: it emitted "
            f"{outcome['source_emitted']:.0f} records, more than {bound:.0f}"
        )
        raise AssertionError(msg)
    return outcome
