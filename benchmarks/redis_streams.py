"""Issue 11's benchmark: Redis Streams scale-out, entries per second with 1, 2 and 4 workers.

Each row fills a fresh stream with ``N`` entries and starts ``W`` worker
processes of one consumer group; the time runs from the moment every worker
is ready until the last entry is done, and the rate is ``N`` over that time.
Two kinds of worker share the work the same way:

* *nanostream*: ``RedisStreamSource > Map > RedisStreamSink``, the pipeline
  of ``docs/scaling.md`` (no checkpoint store: store-less ack rounds every
  second); an entry is done when the sink has added it to the output stream;
* *plain coredis*: the loop a user would write by hand, ``XREADGROUP`` of
  500 entries then one ``XACK`` of the batch; an entry is done when acked.

The ratio is nanostream's rate over the plain loop's with as many workers.
The plain loop writes nothing, so it is an upper bound for any consumer.

It starts its own ``redis-server`` (persistence off, a free port; the test
suite's ``tests/_redis.py``). Run it standalone::

    python benchmarks/redis_streams.py [--quick]

and it prints a markdown table. ``--quick`` uses few entries and 1 and 2
workers, and takes a few seconds (``tests/test_benchmarks_redis.py`` runs it).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's throwaway redis-server
sys.path.insert(0, str(ROOT))

#: Entries per row, and worker counts.
FULL_ENTRIES = 200_000
QUICK_ENTRIES = 4_000
WORKERS = (1, 2, 4)
QUICK_WORKERS = (1, 2)
#: Entries per read in both kinds of worker.
BATCH = 500
#: Real seconds a row may take before the benchmark gives up on it.
ROW_TIMEOUT = 600.0


# -- workers (child processes) ---------------------------------------------------------


def _passthrough(entry: Any) -> dict[str, Any]:
    return {"n": entry["n"]}


async def _ready_and_go() -> None:
    """Say ``ready``, then wait for the parent's ``go`` (so every worker starts at once)."""
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)


async def _nanostream_worker(url: str, stream: str, group: str, name: str) -> None:
    from nanostream_trio import Pipeline
    from nanostream_trio.nodes import Map, RedisStreamSink, RedisStreamSource

    source = RedisStreamSource(url, stream, group, name, batch_size=BATCH, block=0.2)
    source > Map(_passthrough) > RedisStreamSink(url, f"{stream}:out", batch_size=BATCH)
    pipeline = Pipeline(source, stats_interval=None, stall_timeout=None)
    await _ready_and_go()  # reading starts once every worker is ready
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                pipeline.stop()
                break


async def _plain_worker(url: str, stream: str, group: str, name: str) -> None:
    from nanostream_trio.nodes._redis import _open_client

    async with _open_client(url) as client:
        await _ready_and_go()
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def loop() -> None:
                    while True:
                        reply = await client.xreadgroup(
                            group, name, {stream: ">"}, count=BATCH, block=200
                        )
                        entries = reply.get(stream, ()) if reply else ()
                        if entries:
                            ids = [entry.identifier for entry in entries]
                            await client.xack(stream, group, ids)
                            await client.incrby(f"{stream}:acked", len(ids))

                nursery.start_soon(loop)
                async for _ in signals:
                    nursery.cancel_scope.cancel(reason="SIGTERM")
                    break


# -- the parent -----------------------------------------------------------------------


async def _fill(url: str, stream: str, group: str, entries: int) -> None:
    from nanostream_trio.nodes._redis import _open_client

    async with _open_client(url) as client:
        await client.xgroup_create(stream, group, "0", mkstream=True)
        for first in range(0, entries, 5000):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + 5000, entries)):
                    pipe.xadd(stream, {"n": str(n)})


async def _done(url: str, stream: str, kind: str) -> int:
    from nanostream_trio.nodes._redis import _open_client

    async with _open_client(url) as client:
        if kind == "nanostream":
            return int(await client.xlen(f"{stream}:out"))
        return int(await client.get(f"{stream}:acked") or 0)


def _row(url: str, kind: str, workers: int, entries: int, row: int) -> float:
    """Entries per second of ``workers`` processes of ``kind`` over ``entries`` entries."""
    stream, group = f"bench-{row}-{kind}-{workers}", "bench"
    trio.run(_fill, url, stream, group, entries)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, url, stream, group, f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for i in range(workers)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != b"ready":
                msg = f"a {kind} worker did not start (exit {child.wait()})"
                raise RuntimeError(msg)
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        while trio.run(_done, url, stream, kind) < entries:
            if time.perf_counter() - started > ROW_TIMEOUT:
                msg = f"{kind} with {workers} workers: not done in {ROW_TIMEOUT} s"
                raise RuntimeError(msg)
            time.sleep(0.01)  # polling real worker processes for the end
        elapsed = time.perf_counter() - started
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return entries / elapsed


def run(entries: int, workers_per_row: tuple[int, ...]) -> list[tuple[int, float, float]]:
    """``(workers, nanostream rate, plain rate)`` per row."""
    from _redis import redis_server, skip_reason

    reason = skip_reason()
    if reason is not None:
        raise SystemExit(f"cannot run the Redis benchmark: {reason}")
    rows = []
    with redis_server() as server:
        for row, workers in enumerate(workers_per_row):
            ours = _row(server.url, "nanostream", workers, entries, row)
            plain = _row(server.url, "plain", workers, entries, row)
            rows.append((workers, ours, plain))
    return rows


def table(rows: list[tuple[int, float, float]], entries: int) -> str:
    """The markdown table of ``rows``."""
    lines = [
        f"Redis Streams, {entries} entries per row, source > Map > sink "
        "vs a plain XREADGROUP + XACK loop",
        "",
        "| workers | nanostream (entries/s) | plain coredis (entries/s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for workers, ours, plain in rows:
        lines.append(f"| {workers} | {ours:,.0f} | {plain:,.0f} | {ours / plain:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: the benchmark, or (``--worker``) one of its worker processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few entries, a few seconds")
    parser.add_argument("--worker", nargs=5, metavar=("KIND", "URL", "STREAM", "GROUP", "NAME"))
    args = parser.parse_args(argv)
    if args.worker:
        kind, url, stream, group, name = args.worker
        worker = _nanostream_worker if kind == "nanostream" else _plain_worker
        trio.run(worker, url, stream, group, name)
        return
    entries = QUICK_ENTRIES if args.quick else FULL_ENTRIES
    print(table(run(entries, QUICK_WORKERS if args.quick else WORKERS), entries))


if __name__ == "__main__":
    main()
