"""RedisStreamSource and RedisStreamSink against a real redis-server (tests/_redis.py)."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio
from _redis import RedisServer, redis_server, skip_reason
from structlog.testing import capture_logs

from nanostream_trio import ConfigError, NanoNode, Pipeline
from nanostream_trio.nodes import Map, RedisEntry, RedisStreamSink, RedisStreamSource

#: Real seconds a condition about real processes may take to come true.
DEADLINE = 30.0

# coredis 6.9 leaves the anyio streams of a connection cut by a cancellation or
# a server restart unclosed; their ResourceWarnings come from its internals.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _collect_coredis_leftovers() -> Iterator[None]:
    """Collect garbage after each test, so coredis' unclosed streams warn under the marks above.

    Otherwise their ResourceWarnings could surface in whatever test runs next.
    """
    yield
    gc.collect()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A throwaway redis-server for this module (skipped without one)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with redis_server() as running:
        yield running


@pytest.fixture
def names(request: pytest.FixtureRequest) -> dict[str, str]:
    """Stream and group names of this test, so tests sharing the server never meet."""
    base = request.node.name.replace("[", "-").replace("]", "")
    return {"stream": f"{base}:in", "out": f"{base}:out", "group": f"{base}:group"}


async def admin(url: str) -> Any:
    """A coredis client for checking the server's state (used in ``async with``)."""
    from nanostream_trio.nodes._redis import _open_client

    return _open_client(url)


async def add_entries(url: str, stream: str, count: int, *, start: int = 0) -> None:
    """XADD ``count`` entries ``{"n": i}`` (pipelined)."""
    async with await admin(url) as client:
        for first in range(start, start + count, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + 1000, start + count)):
                    pipe.xadd(stream, {"n": str(n)})


async def read_all(url: str, stream: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of ``stream``: ``(id, fields)``."""
    async with await admin(url) as client:
        entries = await client.xrange(stream, "-", "+")
        return [(str(e.identifier), dict(e.field_values)) for e in entries]


async def group_pending(url: str, stream: str, group: str) -> int:
    """Pending entries of ``group`` (all consumers)."""
    async with await admin(url) as client:
        summary = await client.xpending(stream, group)
        return int(summary.pending)


async def wait_until(condition: Callable[[], Any], what: str, within: float = DEADLINE) -> None:
    """Poll the async ``condition`` until it is true; fail naming ``what`` after ``within`` s."""
    deadline = trio.current_time() + within
    while True:
        if await condition():
            return
        if trio.current_time() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await trio.sleep(0.02)  # polling real I/O, bounded by the deadline


class Gate(NanoNode):
    """A sink that records entries' ``n``, taking one per ``allow()`` (or all once ``opened``)."""

    def __init__(self) -> None:
        super().__init__(name="gate")
        self.opened = trio.Event()
        self.allowed = trio.Semaphore(0)
        self.seen: list[int] = []

    def allow(self, count: int) -> None:
        for _ in range(count):
            self.allowed.release()

    async def process_item(self, item: RedisEntry) -> None:
        if not self.opened.is_set():
            await self.allowed.acquire()
        self.seen.append(int(item["n"]))


class FailOn(NanoNode):
    """Fails on the entry whose ``n`` is ``bad``; counts the rest."""

    def __init__(self, bad: int, seen: list[int] | None = None) -> None:
        super().__init__(name="fail_on")
        self.bad = bad
        self.seen: list[int] = [] if seen is None else seen

    def process_item(self, item: RedisEntry) -> RedisEntry:
        if int(item["n"]) == self.bad:
            msg = f"poison entry {item.id}"
            raise ValueError(msg)
        self.seen.append(int(item["n"]))
        return item


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Pipeline], Any]]:
    """Start pipelines in the background; ``await start(p)`` returns once ``p`` is running."""
    async with trio.open_nursery() as nursery:

        async def start(pipeline: Pipeline) -> None:
            await nursery.start(pipeline.run)

        yield start
        nursery.cancel_scope.cancel(reason="test finished")


class TestConfiguration:
    """Arguments are checked when the node is made."""

    def test_bad_url_names_the_node_and_the_schemes(self) -> None:
        """A URL that is not a Redis one is a ConfigError naming the node and the schemes."""
        with pytest.raises(ConfigError, match=r"node 'src' got url='http://x'.*redis://"):
            RedisStreamSource("http://x", "s", "g", name="src")

    def test_bad_number(self) -> None:
        """max_deliveries must be a whole number >= 1."""
        with pytest.raises(ConfigError, match=r"max_deliveries=0"):
            RedisStreamSource("redis://localhost", "s", "g", max_deliveries=0)

    def test_without_coredis_the_error_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without coredis the module imports, and making a node names the [redis] extra."""
        monkeypatch.setitem(sys.modules, "coredis", None)
        with pytest.raises(ImportError, match=r"nanostream-trio\[redis\]"):
            RedisStreamSink("redis://localhost", "s", name="out")

    def test_default_consumer_is_host_and_pid(self) -> None:
        """Without a consumer name the source takes ``<host>-<pid>``."""
        import os
        import socket

        source = RedisStreamSource("redis://localhost", "s", "g")
        assert source.consumer == f"{socket.gethostname()}-{os.getpid()}"
        assert source.dead_letter_stream == "s:dead"


class TestSourceToSink:
    """Entries flow from a stream through the pipeline into another stream."""

    async def test_every_entry_arrives_and_is_acked(
        self, server: RedisServer, names: dict[str, str], running: Any
    ) -> None:
        """5000 entries reach the output stream in order, and the group has none pending."""
        await add_entries(server.url, names["stream"], 5000)
        source = RedisStreamSource(
            server.url,
            names["stream"],
            names["group"],
            "c1",
            ack_interval=0.2,
            info_interval=0.1,
            name="src",
        )
        sink = RedisStreamSink(server.url, names["out"], name="out")
        source > Map(lambda entry: {"n": entry["n"], "id": entry.id}) > sink
        pipeline = Pipeline(source)
        await running(pipeline)

        async def all_written() -> bool:
            return len(await read_all(server.url, names["out"])) == 5000

        await wait_until(all_written, "5000 entries in the output stream")

        async def all_acked() -> bool:
            return await group_pending(server.url, names["stream"], names["group"]) == 0

        await wait_until(all_acked, "no entry pending")

        async def counted() -> bool:  # the source counts an ack once Redis has answered it
            await trio.lowlevel.checkpoint()
            return source.statistics().acked == 5000

        await wait_until(counted, "5000 acks counted")

        async def group_drained() -> bool:  # XINFO GROUPS, refreshed every info_interval
            await trio.lowlevel.checkpoint()
            stats = source.statistics()
            return (stats.group_lag, stats.group_pending, stats.consumers) == (0, 0, 1)

        await wait_until(group_drained, "the group's lag and pending count at 0 in statistics")
        pipeline.stop()
        written = await read_all(server.url, names["out"])
        assert [int(fields["n"]) for _, fields in written] == list(range(5000))
        stats = source.statistics()
        assert stats.entries_read == 5000
        assert sink.statistics().entries_written == 5000

    async def test_acks_wait_for_the_sink(
        self, server: RedisServer, names: dict[str, str], running: Any
    ) -> None:
        """Entries read but not yet taken by the sink stay pending; once taken they are acked."""
        await add_entries(server.url, names["stream"], 50)
        source = RedisStreamSource(
            server.url,
            names["stream"],
            names["group"],
            "c1",
            batch_size=10,
            ack_interval=0.05,
            name="src",
        )
        gate = Gate()
        source > gate
        pipeline = Pipeline(source)
        await running(pipeline)
        gate.allow(5)

        async def all_read() -> bool:
            await trio.lowlevel.checkpoint()
            return source.statistics().entries_read == 50 and len(gate.seen) == 5

        await wait_until(all_read, "50 entries read, 5 taken by the sink")
        assert await group_pending(server.url, names["stream"], names["group"]) == 50
        assert source.statistics().unacked == 50
        gate.opened.set()
        gate.allow(45)

        async def none_pending() -> bool:
            return await group_pending(server.url, names["stream"], names["group"]) == 0

        await wait_until(none_pending, "every entry acked once the sink took them")
        assert gate.seen == list(range(50))
        assert source.statistics().acked == 50
        pipeline.stop()

    async def test_with_a_checkpoint_store_acks_ride_on_checkpoints(
        self, server: RedisServer, names: dict[str, str], tmp_path: Any
    ) -> None:
        """With checkpoint=, entries are acked by the checkpoints, and the store is written."""
        await add_entries(server.url, names["stream"], 200)
        source = RedisStreamSource(
            server.url, names["stream"], names["group"], "c1", ack_interval=1000.0, name="src"
        )
        gate = Gate()
        gate.opened.set()
        source > gate
        store = tmp_path / "state.db"
        pipeline = Pipeline(source, checkpoint=store, checkpoint_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)

            async def all_acked() -> bool:
                if len(gate.seen) < 200:
                    return False
                return await group_pending(server.url, names["stream"], names["group"]) == 0

            await wait_until(all_acked, "every entry taken by the sink and acked by a checkpoint")
            assert pipeline.statistics().checkpoints >= 1
            pipeline.stop()
        assert gate.seen == list(range(200))
        assert store.exists()

    async def test_json_data_is_decoded_and_written_back(
        self, server: RedisServer, names: dict[str, str], running: Any
    ) -> None:
        """With decode_json the ``data`` field arrives decoded; the sink writes it as JSON."""
        async with await admin(server.url) as client:
            await client.xadd(names["stream"], {"data": '{"a": [1, 2]}', "kind": "x"})
        seen: list[RedisEntry] = []
        source = RedisStreamSource(
            server.url, names["stream"], names["group"], "c1", decode_json=True, name="src"
        )
        sink = RedisStreamSink(server.url, names["out"], name="out")
        source > Map(lambda entry: seen.append(entry) or entry) > sink
        pipeline = Pipeline(source)
        await running(pipeline)

        async def written() -> bool:
            return len(await read_all(server.url, names["out"])) == 1

        await wait_until(written, "the entry written")
        pipeline.stop()
        assert seen[0] == {"data": {"a": [1, 2]}, "kind": "x"}
        assert seen[0].stream == names["stream"]
        [(_, fields)] = await read_all(server.url, names["out"])
        assert fields == {"data": '{"a": [1, 2]}', "kind": "x"}


class TestRedelivery:
    """Entries not acked come back: to the same consumer, or claimed by another."""

    async def test_a_failed_run_redelivers_to_the_same_consumer(
        self, server: RedisServer, names: dict[str, str]
    ) -> None:
        """After a run fails, the same consumer re-reads its pending entries first."""
        await add_entries(server.url, names["stream"], 100)
        first = FailOn(bad=60)
        source = RedisStreamSource(server.url, names["stream"], names["group"], "c1", name="src")
        source > first
        with pytest.raises(ValueError, match="poison entry"):
            await Pipeline(source).run()
        assert await group_pending(server.url, names["stream"], names["group"]) == 100

        again = Gate()
        again.opened.set()
        source = RedisStreamSource(server.url, names["stream"], names["group"], "c1", name="src")
        source > again
        async with trio.open_nursery() as nursery:
            pipeline = Pipeline(source)
            await nursery.start(pipeline.run)

            async def all_seen() -> bool:
                await trio.lowlevel.checkpoint()
                return len(again.seen) == 100

            await wait_until(all_seen, "100 entries seen again")
            pipeline.stop()
        assert sorted(again.seen) == list(range(100))
        assert source.statistics().redelivered == 100
        assert await group_pending(server.url, names["stream"], names["group"]) == 0

    async def test_idle_entries_of_another_consumer_are_claimed(
        self, server: RedisServer, names: dict[str, str]
    ) -> None:
        """A consumer that died with pending entries loses them to a live one after claim_idle."""
        await add_entries(server.url, names["stream"], 30)
        source = RedisStreamSource(server.url, names["stream"], names["group"], "dead", name="src")
        source > FailOn(bad=0)
        with pytest.raises(ValueError, match="poison entry"):
            await Pipeline(source).run()
        dead_at = trio.current_time()
        gate = Gate()
        gate.opened.set()
        live = RedisStreamSource(
            server.url,
            names["stream"],
            names["group"],
            "live",
            claim_idle=0.5,
            claim_interval=0.1,
            name="src",
        )
        live > gate
        with capture_logs() as events:
            async with trio.open_nursery() as nursery:
                pipeline = Pipeline(live)
                await nursery.start(pipeline.run)

                async def all_seen() -> bool:
                    await trio.lowlevel.checkpoint()
                    return len(gate.seen) == 30

                await wait_until(all_seen, "30 entries claimed and seen")
                claimed_after = trio.current_time() - dead_at
                pipeline.stop()
        assert sorted(gate.seen) == list(range(30))
        assert claimed_after >= 0.5
        assert live.statistics().claimed == 30
        claims = [e for e in events if e["event"] == "redis_entries_claimed"]
        assert sum(e["entries"] for e in claims) == 30

    async def test_a_poison_entry_goes_to_the_dead_letter_stream(
        self, server: RedisServer, names: dict[str, str]
    ) -> None:
        """An entry that fails every run is dead-lettered after max_deliveries, and acked."""
        await add_entries(server.url, names["stream"], 10)
        runs = 0
        seen: list[int] = []  # over all runs
        while True:
            runs += 1
            assert runs <= 5, "the poison entry was never dead-lettered"
            good = FailOn(bad=3, seen=seen)
            source = RedisStreamSource(
                server.url,
                names["stream"],
                names["group"],
                "c1",
                max_deliveries=2,
                ack_interval=0.05,
                name="src",
            )
            source > good
            failed = False
            try:
                with trio.fail_after(DEADLINE):
                    async with trio.open_nursery() as nursery:
                        pipeline = Pipeline(source)
                        await nursery.start(pipeline.run)

                        async def nine_seen(node: FailOn = good) -> bool:
                            await trio.lowlevel.checkpoint()
                            return set(node.seen) == {0, 1, 2, 4, 5, 6, 7, 8, 9}

                        await wait_until(nine_seen, "the good entries seen")
                        pipeline.stop()
            except* ValueError:
                failed = True
            if not failed:
                break
        # Delivered in run 1 and run 2, both failed; run 3 dead-letters it, alone.
        assert runs == 3
        assert source.statistics().dead_lettered == 1
        [(_, dead)] = await read_all(server.url, f"{names['stream']}:dead")
        assert dead["n"] == "3"
        assert dead["_deliveries"] == "3"
        assert "max_deliveries=2" in dead["_error"]
        assert await group_pending(server.url, names["stream"], names["group"]) == 0


class ReplyCutter:
    """A TCP proxy to a Redis server that cuts the connection carrying the next XREADGROUP.

    The command reaches Redis, which runs it (its entries now pending with the
    consumer); its reply is dropped and the connection closed, as when a server
    dies after a write and before its reply is sent. Later connections pass.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.url = ""
        self.cut = trio.Event()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        read_sent = trio.Event()
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as server:
            async with trio.open_nursery() as nursery:

                async def requests() -> None:
                    while data := await client.receive_some():
                        if not self.cut.is_set() and b"XREADGROUP" in data.upper():
                            read_sent.set()
                        await server.send_all(data)
                    nursery.cancel_scope.cancel(reason="client closed")

                async def replies() -> None:
                    while data := await server.receive_some():
                        if read_sent.is_set() and not self.cut.is_set():
                            self.cut.set()
                            nursery.cancel_scope.cancel(reason="reply cut")
                            return
                        await client.send_all(data)
                    nursery.cancel_scope.cancel(reason="server closed")

                nursery.start_soon(requests)
                nursery.start_soon(replies)


class TestConnectionLoss:
    """A Redis restart is survived: reconnect with backoff, nothing acked lost."""

    async def test_redis_restart_mid_run(self, names: dict[str, str], running: Any) -> None:
        """Killed and restarted (with its append-only file), Redis loses nothing; events say so."""
        reason = skip_reason()
        if reason is not None:
            pytest.skip(reason)
        with redis_server(durable=True) as durable:
            await add_entries(durable.url, names["stream"], 3000)
            source = RedisStreamSource(
                durable.url,
                names["stream"],
                names["group"],
                "c1",
                batch_size=100,
                ack_interval=0.1,
                backoff=0.05,
                max_backoff=0.5,
                name="src",
            )
            sink = RedisStreamSink(durable.url, names["out"], batch_size=50, name="out")
            source > Map(lambda entry: {"n": entry["n"]}) > sink
            pipeline = Pipeline(source)
            with capture_logs() as events:
                await running(pipeline)

                async def some_written() -> bool:
                    return len(await read_all(durable.url, names["out"])) >= 500

                await wait_until(some_written, "500 entries written before the restart")
                await trio.to_thread.run_sync(durable.restart)
                await add_entries(durable.url, names["stream"], 1000, start=3000)

                async def all_written() -> bool:
                    written = {int(f["n"]) for _, f in await read_all(durable.url, names["out"])}
                    return written == set(range(4000))

                await wait_until(all_written, "every entry written after the restart")

                async def none_pending() -> bool:
                    return await group_pending(durable.url, names["stream"], names["group"]) == 0

                await wait_until(none_pending, "every entry acked")
                pipeline.stop()
            kinds = [e["event"] for e in events]
            assert "redis_connection_lost" in kinds
            assert "redis_reconnected" in kinds
            assert source.statistics().reconnects + sink.statistics().reconnects >= 1

    async def test_entries_of_a_lost_read_reply_are_read_again(
        self, server: RedisServer, names: dict[str, str]
    ) -> None:
        """Entries Redis delivered in a reply the connection lost are re-read after reconnecting.

        They are pending with this consumer, so no ``>`` read returns them;
        ``claim_idle`` is an hour, so only the source's own recovery can.
        """
        await add_entries(server.url, names["stream"], 300)
        cutter = ReplyCutter(server.port)
        seen = Gate()
        seen.opened.set()
        with capture_logs() as events:
            async with trio.open_nursery() as nursery:
                await nursery.start(cutter.serve)
                source = RedisStreamSource(
                    cutter.url,
                    names["stream"],
                    names["group"],
                    "c1",
                    batch_size=100,
                    claim_idle=3600.0,
                    ack_interval=0.1,
                    backoff=0.01,
                    name="src",
                )
                source > seen
                pipeline = Pipeline(source)
                async with trio.open_nursery() as pipelines:
                    await pipelines.start(pipeline.run)

                    async def all_acked() -> bool:
                        if len(seen.seen) < 300:  # (the group may not exist yet)
                            return False
                        pending = await group_pending(server.url, names["stream"], names["group"])
                        return pending == 0

                    await wait_until(all_acked, "every entry seen and acked")
                    pipeline.stop()
                nursery.cancel_scope.cancel(reason="test finished")
        assert cutter.cut.is_set()
        assert sorted(seen.seen) == list(range(300))
        assert source.statistics().redelivered == 100
        lost = [e for e in events if e["event"] == "redis_connection_lost"]
        assert [e["command"] for e in lost] == ["XREADGROUP"]


class Numbers(NanoNode):
    """Yields 0, 1, 2."""

    async def generator(self) -> AsyncIterator[Any]:
        for n in range(3):
            await trio.lowlevel.checkpoint()
            yield n


class TestSinkPolicy:
    """A send that keeps failing is raised from the item, so the node's on_error decides."""

    async def test_unreachable_redis_skips_items_under_skip(self) -> None:
        """With Redis down past reconnect_timeout, each item is skipped and the run ends."""
        import socket

        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        sink = RedisStreamSink(
            f"redis://127.0.0.1:{port}",
            "nowhere",
            batch_size=1,
            backoff=0.01,
            reconnect_timeout=0.05,
            on_error="skip",
            name="out",
        )
        source = Numbers(name="numbers")
        source > sink
        with capture_logs() as events:
            summary = await Pipeline(source).run()
        assert summary["out"].skipped == 3
        assert sink.statistics().entries_written == 0
        lost = [e for e in events if e["event"] == "redis_connection_lost"]
        assert lost
        assert lost[0]["url"] == f"redis://127.0.0.1:{port}"
        skipped = [e for e in events if e["event"] == "item_skipped"]
        assert "unreachable for" in skipped[0]["traceback"]
