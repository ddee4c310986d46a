"""Issue 12's benchmark: the connectors against what a user would write without them.

Two rows, each a ratio of throughputs (the node's over the plain loop's; the
goal is at least :data:`GOAL`):

* *HTTP*: requests per second through ``source > HttpRequest(url,
  concurrency=16) > counting sink`` against the same requests from a plain
  loop: a Trio nursery of 16 workers sharing one ``httpx.AsyncClient``, each
  taking the next id, sending ``GET /items/<id>`` and decoding the JSON.
  The server is a small HTTP/1.1 keep-alive server (Trio and h11, as in
  httpx's own stack) in a child process on 127.0.0.1, so it does not share
  the client's interpreter; both sides talk to the same server.
* *SQLite*: rows per second into a fresh SQLite file through ``source >
  SQLSink(path, "t")`` (default options: transactions of 500 rows) against a
  plain ``executemany`` loop over the same dicts, committing every 500 rows.

Runs alternate (plain, node, plain, node, ...) so that noise on a shared
machine hits both sides; each side's best run counts. Run it standalone::

    python benchmarks/connectors.py [--quick]

It prints a markdown table. ``--serve`` is the child server's entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package next to it
    sys.path.insert(0, str(ROOT))

from nanostream_trio import Items, NanoNode, Pipeline  # noqa: E402

#: The issue's goal: the node at least this fraction of the plain loop's throughput.
GOAL = 0.8
#: Requests in flight at once, on both sides of the HTTP row.
CONCURRENCY = 16
#: Rows per transaction: SQLSink's default, and the plain loop's batch.
SQL_BATCH = 500
#: (requests, rows, runs per side) in full and quick mode.
FULL = (4000, 200_000, 3)
QUICK = (300, 5_000, 1)
#: Items per batch the benchmark's source yields.
SOURCE_CHUNK = 256


# -- the HTTP server (a child process) ---------------------------------------------------


async def _serve(ready: Callable[[int], None]) -> None:
    """Answer every ``GET /items/<id>`` with ``{"id": <id>, "name": "item-<id>"}``."""
    import h11

    async def connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    ident = event.target.rsplit(b"/", 1)[-1].decode()
                    body = json.dumps({"id": ident, "name": f"item-{ident}"}).encode()
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                    ]
                    out = conn.send(h11.Response(status_code=200, headers=headers))
                    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                elif isinstance(event, h11.EndOfMessage):
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, connection, 0, host="127.0.0.1")
        )
        ready(listeners[0].socket.getsockname()[1])


def _serve_main() -> None:
    def ready(port: int) -> None:
        print(port, flush=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, ready)
            # The parent closes our stdin to stop us (abandoned if the server fails).
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel("the benchmark is over")

    trio.run(main)


@contextmanager
def serving() -> Iterator[str]:
    """The server in a child process; yields its base URL, and stops it at the end."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- the pieces both pipelines use --------------------------------------------------------


class Numbers(NanoNode):
    """A source of ``0 .. count - 1`` (or of ``make(i)``), in batches."""

    def __init__(self, count: int, make: Callable[[int], Any] = int, **kwargs: Any) -> None:
        self.count = count
        self.make = make
        super().__init__(**kwargs)

    async def generator(self) -> AsyncIterator[Items]:
        make = self.make
        for start in range(0, self.count, SOURCE_CHUNK):
            yield Items([make(i) for i in range(start, min(start + SOURCE_CHUNK, self.count))])


class Counter(NanoNode):
    """Counts what arrives (and checks it is a decoded answer or a value)."""

    def __init__(self, **kwargs: Any) -> None:
        self.count = 0
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> None:
        self.count += 1


@dataclasses.dataclass
class Row:
    """One benchmark row: label, units, the node's and the plain loop's best throughputs."""

    label: str
    unit: str
    node: float
    plain: float

    @property
    def ratio(self) -> float:
        return self.node / self.plain


def _best_alternating(
    runs: int, plain: Callable[[], float], node: Callable[[], float]
) -> tuple[float, float]:
    """Plain, node, plain, node...: each side's best throughput."""
    plain_rates, node_rates = [], []
    for _ in range(runs):
        plain_rates.append(plain())
        node_rates.append(node())
    return max(node_rates), max(plain_rates)


# -- HTTP ----------------------------------------------------------------------------------


def http_node(base: str, requests: int) -> float:
    """Requests per second through ``Numbers > HttpRequest(concurrency=16) > Counter``."""
    from nanostream_trio.nodes import HttpRequest

    sink = Counter()
    _ = Numbers(requests) > HttpRequest(f"{base}/items/{{item}}", concurrency=CONCURRENCY) > sink
    pipeline = Pipeline(sink, stats_interval=None)
    started = time.perf_counter()
    trio.run(pipeline.run)
    seconds = time.perf_counter() - started
    if sink.count != requests:
        msg = f"HttpRequest answered {sink.count} of {requests} requests"
        raise AssertionError(msg)
    return requests / seconds


def http_plain(base: str, requests: int) -> float:
    """Requests per second from 16 Trio workers sharing one ``httpx.AsyncClient``."""
    import httpx

    answered = 0

    async def main() -> None:
        nonlocal answered
        ids = iter(range(requests))
        async with httpx.AsyncClient(timeout=10.0) as client:

            async def worker() -> None:
                nonlocal answered
                for ident in ids:
                    response = await client.get(f"{base}/items/{ident}")
                    response.raise_for_status()
                    response.json()
                    answered += 1

            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENCY):
                    nursery.start_soon(worker)

    started = time.perf_counter()
    trio.run(main)
    seconds = time.perf_counter() - started
    if answered != requests:
        msg = f"the plain loop answered {answered} of {requests} requests"
        raise AssertionError(msg)
    return requests / seconds


def http_row(requests: int, runs: int) -> Row:
    with serving() as base:
        http_plain(base, min(requests, 100))  # warm up the server and the imports
        node, plain = _best_alternating(
            runs, lambda: http_plain(base, requests), lambda: http_node(base, requests)
        )
    return Row(
        f"`HttpRequest(concurrency={CONCURRENCY})` vs 16 Trio workers on one `httpx.AsyncClient`"
        f" ({requests:,} GETs, local server)",
        "requests/s",
        node,
        plain,
    )


# -- SQLite --------------------------------------------------------------------------------


def _row(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"name-{i}", "amount": i * 0.5, "flag": i % 2}


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def _count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])


def sql_node(scratch: Path, rows: int) -> float:
    """Rows per second through ``Numbers(dicts) > SQLSink(path, "t")``."""
    from nanostream_trio.nodes import SQLSink

    path = _fresh(scratch / "node.db")
    source = Numbers(rows, _row)
    _ = source > SQLSink(path, "t")
    pipeline = Pipeline(source, stats_interval=None)
    started = time.perf_counter()
    trio.run(pipeline.run)
    seconds = time.perf_counter() - started
    if (written := _count(path)) != rows:
        msg = f"SQLSink wrote {written} of {rows} rows"
        raise AssertionError(msg)
    return rows / seconds


def sql_plain(scratch: Path, rows: int) -> float:
    """Rows per second from ``executemany`` over the same dicts, a transaction per 500."""
    path = _fresh(scratch / "plain.db")
    started = time.perf_counter()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(
            'CREATE TABLE t ("id" INTEGER, "name" TEXT, "amount" REAL, "flag" INTEGER)'
        )
        sql = 'INSERT INTO t ("id", "name", "amount", "flag") VALUES (?, ?, ?, ?)'
        for start in range(0, rows, SQL_BATCH):
            batch = [_row(i) for i in range(start, min(start + SQL_BATCH, rows))]
            connection.execute("BEGIN")
            connection.executemany(sql, [tuple(row.values()) for row in batch])
            connection.execute("COMMIT")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    if (written := _count(path)) != rows:
        msg = f"the plain loop wrote {written} of {rows} rows"
        raise AssertionError(msg)
    return rows / seconds


def sql_row(rows: int, runs: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="nanostream-bench-sql-") as temp:
        scratch = Path(temp)
        node, plain = _best_alternating(
            runs, lambda: sql_plain(scratch, rows), lambda: sql_node(scratch, rows)
        )
    return Row(
        f'`SQLSink(path, "t")` vs `executemany` in transactions of {SQL_BATCH}'
        f" ({rows:,} rows of 4 columns, SQLite file)",
        "rows/s",
        node,
        plain,
    )


# -- the table -------------------------------------------------------------------------------


def table(rows: list[Row]) -> list[str]:
    """The markdown table: throughputs, ratio, goal, met or missed."""
    lines = [
        "## Connectors (issue 12)",
        "",
        "| workload | node | plain loop | ratio | goal | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        verdict = "met" if row.ratio >= GOAL else "**missed**"
        lines.append(
            f"| {row.label} | {row.node:,.0f} {row.unit} | {row.plain:,.0f} {row.unit} "
            f"| {row.ratio:.2f} | >= {GOAL} | {verdict} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Issue 12's connector benchmark.")
    parser.add_argument("--quick", action="store_true", help="small inputs, one run per side")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("http", "sql"), help="one row only")
    args = parser.parse_args(argv)
    if args.serve:
        _serve_main()
        return 0
    requests, rows, runs = QUICK if args.quick else FULL
    results = []
    if args.only in (None, "http"):
        results.append(http_row(requests, runs))
    if args.only in (None, "sql"):
        results.append(sql_row(rows, runs))
    print("\n".join(table(results)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
