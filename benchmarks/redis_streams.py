"""Issue 11's benchmark: Redis Streams scale-out, entries per second with 1, 2 and 4 workers.

Each row fills a fresh stream with ``N`` entries and starts ``W`` worker
processes of one consumer group; the time runs from the moment every worker
is ready until the last entry is done, and the rate is ``N`` over that time.
Three kinds of worker share the work the same way:

* *nanostream*: ``RedisStreamSource > Map > sink`` with default options (no
  checkpoint store: store-less ack rounds every second), the sink a plain
  counting ``NanoNode``; an entry is done when the sink has taken it (its ack
  follows within the next round, which the row waits for but does not time);
* *plain coredis*: the loop a user would write by hand, ``XREADGROUP`` of
  500 entries then one ``XACK`` of the batch; an entry is done when acked;
* *nanostream to a stream*: the pipeline of ``docs/scaling.md``, ending in
  ``RedisStreamSink`` (an ``XADD`` per entry, pipelined per batch); an entry
  is done when its output is in the output stream.

Both ratios are over the plain loop's rate with as many workers; the plain
loop writes nothing, so the last one compares a pipeline that writes with
one that does not.

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

from nanostream_trio import NanoNode  # noqa: E402 - from this checkout when run standalone

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


class _Count(NanoNode):
    """The counting sink of the *nanostream* kind: how many, and the wall time of the last."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last = 0.0

    def process_item(self, item: Any) -> None:
        self.count += 1
        self.last = time.time()


async def _nanostream_worker(url: str, stream: str, group: str, name: str, sink: str) -> None:
    from nanostream_trio import Pipeline
    from nanostream_trio.nodes import Map, RedisStreamSink, RedisStreamSource

    source = RedisStreamSource(url, stream, group, name, batch_size=BATCH, block=0.2)
    counter = _Count()
    if sink == "stream":
        source > Map(_passthrough) > RedisStreamSink(url, f"{stream}:out", batch_size=BATCH)
    else:
        source > Map(_passthrough) > counter
    pipeline = Pipeline(source)
    await _ready_and_go()  # reading starts once every worker is ready
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                pipeline.stop()
                break
    print(f"done {counter.count} {counter.last!r}", flush=True)


async def _plain_worker(url: str, stream: str, group: str, name: str) -> None:
    from nanostream_trio.nodes._redis import _open_client

    count, last = 0, 0.0
    async with _open_client(url) as client:
        await _ready_and_go()
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def loop() -> None:
                    nonlocal count, last
                    while True:
                        reply = await client.xreadgroup(
                            group, name, {stream: ">"}, count=BATCH, block=200
                        )
                        entries = reply.get(stream, ()) if reply else ()
                        if entries:
                            ids = [entry.identifier for entry in entries]
                            await client.xack(stream, group, ids)
                            count, last = count + len(ids), time.time()

                nursery.start_soon(loop)
                async for _ in signals:
                    nursery.cancel_scope.cancel(reason="SIGTERM")
                    break
    print(f"done {count} {last!r}", flush=True)


# -- the parent -----------------------------------------------------------------------


async def _fill(url: str, stream: str, group: str, entries: int) -> None:
    from nanostream_trio.nodes._redis import _open_client

    async with _open_client(url) as client:
        await client.xgroup_create(stream, group, "0", mkstream=True)
        for first in range(0, entries, 5000):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + 5000, entries)):
                    pipe.xadd(stream, {"n": str(n)})


async def _done(url: str, stream: str, group: str, kind: str) -> int:
    """Entries done: added to the output stream, or delivered to the group and acked."""
    from nanostream_trio.nodes._redis import _open_client

    async with _open_client(url) as client:
        if kind == "nanostream-stream":
            return int(await client.xlen(f"{stream}:out"))
        for info in await client.xinfo_groups(stream):
            if info.get("name") == group:
                if int(info.get("pending") or 0):
                    return 0
                return int(info.get("entries-read") or 0)
    return 0


def _row(url: str, kind: str, workers: int, entries: int, row: int) -> float:
    """Entries per second of ``workers`` processes of ``kind`` over ``entries`` entries.

    The end is the wall time of the last entry a worker's sink took (or acked, in the
    plain loop), which each worker reports when it stops; to a stream, the moment the
    output stream was seen complete.
    """
    stream, group = f"bench-{row}-{kind}-{workers}", "bench"
    trio.run(_fill, url, stream, group, entries)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, url, stream, group, f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(workers)
    ]
    reports: list[str] = []
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != "ready":
                msg = f"a {kind} worker did not start (exit {child.wait()})"
                raise RuntimeError(msg)
        started = time.time()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        while trio.run(_done, url, stream, group, kind) < entries:
            if time.time() - started > ROW_TIMEOUT:
                msg = f"{kind} with {workers} workers: not done in {ROW_TIMEOUT} s"
                raise RuntimeError(msg)
            time.sleep(0.01)  # polling real worker processes for the end
        seen_complete = time.time()
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                out, _ = child.communicate(timeout=30)
                reports += [line for line in out.splitlines() if line.startswith("done ")]
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if kind == "nanostream-stream":
        return entries / (seen_complete - started)
    counted = [(int(count), float(last)) for _, count, last in (r.split() for r in reports)]
    if len(counted) != workers or sum(count for count, _ in counted) < entries:
        msg = f"{kind} with {workers} workers: reports {reports} do not add up to {entries}"
        raise RuntimeError(msg)
    return entries / (max(last for _, last in counted) - started)


KINDS = ("nanostream", "plain", "nanostream-stream")


def run(entries: int, workers_per_row: tuple[int, ...]) -> list[tuple[int, dict[str, float]]]:
    """``(workers, {kind: rate})`` per row."""
    from _redis import redis_server, skip_reason

    reason = skip_reason()
    if reason is not None:
        raise SystemExit(f"cannot run the Redis benchmark: {reason}")
    rows = []
    with redis_server() as server:
        for row, workers in enumerate(workers_per_row):
            rates = {kind: _row(server.url, kind, workers, entries, row) for kind in KINDS}
            rows.append((workers, rates))
    return rows


def table(rows: list[tuple[int, dict[str, float]]], entries: int) -> str:
    """The markdown table of ``rows``."""
    lines = [
        f"Redis Streams, {entries} entries per row: `RedisStreamSource > Map > sink` (default "
        "options; acks in store-less rounds every second) vs a plain XREADGROUP + XACK loop; "
        "last columns: the same pipeline ending in `RedisStreamSink` (an XADD per entry)",
        "",
        "| workers | nanostream (entries/s) | plain coredis (entries/s) | ratio "
        "| to a stream (entries/s) | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, rates in rows:
        ours, plain, out = (rates[kind] for kind in KINDS)
        lines.append(
            f"| {workers} | {ours:,.0f} | {plain:,.0f} | {ours / plain:.2f} "
            f"| {out:,.0f} | {out / plain:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: the benchmark, or (``--worker``) one of its worker processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few entries, a few seconds")
    parser.add_argument("--worker", nargs=5, metavar=("KIND", "URL", "STREAM", "GROUP", "NAME"))
    args = parser.parse_args(argv)
    if args.worker:
        kind, url, stream, group, name = args.worker
        if kind == "plain":
            trio.run(_plain_worker, url, stream, group, name)
        else:
            sink = "stream" if kind == "nanostream-stream" else "count"
            trio.run(_nanostream_worker, url, stream, group, name, sink)
        return
    entries = QUICK_ENTRIES if args.quick else FULL_ENTRIES
    print(table(run(entries, QUICK_WORKERS if args.quick else WORKERS), entries))


if __name__ == "__main__":
    main()
