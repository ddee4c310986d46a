"""The metrics and health endpoint, scraped with a real HTTP client during a real run."""

from __future__ import annotations

import http.client
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.lowlevel

from nanostream_trio import ConfigError, NanoNode, Pipeline
from nanostream_trio._metrics import health, parse_address, render_metrics, serve_metrics


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    """One request with the standard library's HTTP client: status, content type, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


class Gate(NanoNode):
    """Emits ``count`` items, then waits until the test opens the gate."""

    def __init__(self, count: int, gate: trio.Event, **options: Any) -> None:
        self.count, self.gate = count, gate
        super().__init__(**options)

    async def generator(self) -> AsyncIterator[int]:
        for number in range(self.count):
            yield number
        await self.gate.wait()


class Half(NanoNode):
    def process_item(self, item: int) -> int | None:
        return item if item % 2 else None


class Drop(NanoNode):
    def process_item(self, item: Any) -> None:
        return None


class Seen(NanoNode):
    """A sink that sets ``event`` once it has taken ``count`` items."""

    def __init__(self, count: int, event: trio.Event, **options: Any) -> None:
        self.count, self.event, self.seen = count, event, 0
        super().__init__(**options)

    def process_item(self, item: Any) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.event.set()


async def scrape_during_run(
    pipeline: Pipeline, arrived: trio.Event, gate: trio.Event, paths: list[str]
) -> list[tuple[int, str, str]]:
    """Run the pipeline and the endpoint; fetch each path once the items have passed."""
    results: list[tuple[int, str, str]] = []
    finished = trio.Event()

    async def run_pipeline(task_status: trio.TaskStatus[None]) -> None:
        await pipeline.run(task_status=task_status)
        finished.set()

    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_metrics, pipeline, "127.0.0.1:0")
        await nursery.start(run_pipeline)
        await arrived.wait()
        for path in paths:
            results.append(await trio.to_thread.run_sync(fetch, port, path))
        gate.set()
        await finished.wait()
        results.append(await trio.to_thread.run_sync(fetch, port, "/health"))
        nursery.cancel_scope.cancel(reason="test done")
    return results


class TestEndpoint:
    async def test_metrics_and_health_during_a_run(self) -> None:
        """/metrics shows each node's counters and status; /health is 200 running, 503 after."""
        gate, arrived = trio.Event(), trio.Event()
        source = Gate(10, gate, name="source")
        source > Half(name="half") > Seen(5, arrived, name="sink")
        pipeline = Pipeline(source, name="demo")
        metrics, healthy, missing, after = await scrape_during_run(
            pipeline, arrived, gate, ["/metrics", "/health", "/nope"]
        )
        status, content_type, body = metrics
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        assert 'nanostream_node_items_out_total{pipeline="demo",node="source"} 10' in body
        assert 'nanostream_node_items_in_total{pipeline="demo",node="half"} 10' in body
        assert 'nanostream_node_items_out_total{pipeline="demo",node="half"} 5' in body
        assert 'nanostream_node_status{pipeline="demo",node="sink",status="running"} 1' in body
        assert 'nanostream_pipeline_status{pipeline="demo",status="running"} 1' in body
        assert "# TYPE nanostream_node_items_in_total counter" in body
        assert healthy[:1] == (200,)
        assert healthy[2] == "ok\n"
        assert missing[0] == 404
        assert after[0] == 503
        assert "finished" in after[2]

    async def test_bad_requests_get_clear_answers(self) -> None:
        """A non-GET method gets 405 and garbage gets 400; the server keeps serving."""
        pipeline = Pipeline(Gate(0, trio.Event(), name="source") > Drop(name="sink"))
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(serve_metrics, pipeline, "127.0.0.1:0")
            status, _, body = await trio.to_thread.run_sync(fetch, port, "/metrics", "POST")
            assert status == 405
            assert "only GET" in body
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"hello\r\n\r\n")
                reply = b""
                while chunk := await stream.receive_some():
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 400 ")
            status, _, _ = await trio.to_thread.run_sync(fetch, port, "/health")
            assert status == 503  # not running
            nursery.cancel_scope.cancel()

    async def test_a_silent_client_times_out(self, autojump_clock: trio.testing.MockClock) -> None:
        """A client that never sends its request is answered 408 after the request timeout."""
        pipeline = Pipeline(Gate(0, trio.Event(), name="source") > Drop(name="sink"))
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(serve_metrics, pipeline, "127.0.0.1:0")
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                start = trio.current_time()
                reply = b""
                while chunk := await stream.receive_some():
                    reply += chunk
                assert trio.current_time() - start == pytest.approx(10.0)
            assert reply.startswith(b"HTTP/1.1 408 ")
            nursery.cancel_scope.cancel()


class TestRendering:
    def test_address_parsing(self) -> None:
        """HOST:PORT parses, IPv6 in brackets too; a missing or bad port is a ConfigError."""
        assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
        assert parse_address("[::1]:0") == ("::1", 0)
        for bad in ("9464", "localhost:", "host:http", "host:70000"):
            with pytest.raises(ConfigError, match="metrics address"):
                parse_address(bad)

    def test_label_values_are_escaped(self) -> None:
        """Quotes, backslashes and newlines in names cannot break the exposition format."""
        source = Gate(0, trio.Event(), name='a"b\\c')
        source > Drop(name="sink")
        text = render_metrics(Pipeline(source, name="p\nq").statistics())
        assert 'node="a\\"b\\\\c"' in text
        assert 'pipeline="p\\nq"' in text

    def test_health_names_the_stalled_node(self) -> None:
        """A running node with a waiting inbox and no progress for stall_timeout is unhealthy."""
        source = Gate(0, trio.Event(), name="source")
        source > Drop(name="sink")
        stats = Pipeline(source).statistics()
        node = stats.nodes["sink"]
        running = type(stats)(
            name=stats.name,
            status="running",
            elapsed=1.0,
            nodes={
                "source": stats.nodes["source"],
                "sink": type(node)(**{**node.as_dict(), "status": "running", "inbox_queued": 3}),
            },
        )
        assert health(running, now=100.0, stall_timeout=30.0) == (
            503,
            "stalled for 30 s or more: sink",
        )
        assert health(running, now=20.0, stall_timeout=30.0) == (200, "ok")
        assert health(running, now=100.0, stall_timeout=None) == (200, "ok")


class TestWiring:
    async def test_pipeline_metrics_option_serves_during_the_run(self) -> None:
        """Pipeline(metrics=...) serves /metrics from its own nursery and stops with the run."""
        gate, arrived = trio.Event(), trio.Event()
        source = Gate(3, gate, name="source")
        source > Seen(3, arrived, name="sink")
        pipeline = Pipeline(source, name="wired", metrics="127.0.0.1:0")
        assert pipeline.metrics_address is None
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await arrived.wait()
            address = pipeline.metrics_address
            assert address is not None
            status, _, body = await trio.to_thread.run_sync(fetch, address[1], "/metrics")
            assert status == 200
            assert 'nanostream_node_items_in_total{pipeline="wired",node="sink"} 3' in body
            gate.set()
        assert pipeline.metrics_address is None
        with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
            await trio.to_thread.run_sync(fetch, address[1], "/metrics")

    async def test_checkpoint_count_and_age_are_scraped(self, tmp_path: Any) -> None:
        """With checkpoint=, /metrics shows checkpoints written and the age of the last one."""
        gate, arrived = trio.Event(), trio.Event()
        source = Gate(3, gate, name="source")
        source > Seen(3, arrived, name="sink")
        pipeline = Pipeline(
            source, name="ck", metrics="127.0.0.1:0", checkpoint=tmp_path / "s.db",
            checkpoint_interval=None,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await arrived.wait()
            address = pipeline.metrics_address
            assert address is not None
            _, _, before = await trio.to_thread.run_sync(fetch, address[1], "/metrics")
            assert "nanostream_pipeline_checkpoints_total" not in before
            # Gate waits without yielding: the checkpoint passes with its final state.
            with trio.move_on_after(0.2):
                await pipeline.checkpoint_now()
            gate.set()
            await trio.lowlevel.checkpoint()
        stats = pipeline.statistics()
        text = render_metrics(stats)
        assert f'nanostream_pipeline_checkpoints_total{{pipeline="ck"}} {stats.checkpoints}' in text
        assert stats.checkpoints >= 1
        assert 'nanostream_pipeline_checkpoint_age_seconds{pipeline="ck"}' in text
        assert "nanostream_node_barrier_alignment_seconds_total" in text

    def test_a_bad_address_fails_at_construction(self) -> None:
        """A metrics address without a port is refused when the pipeline is made."""
        source = Gate(0, trio.Event(), name="source")
        source > Drop(name="sink")
        with pytest.raises(ConfigError, match="HOST:PORT"):
            Pipeline(source, metrics="localhost")


class TestCommand:
    def test_nanostream_run_metrics_flag(self, tmp_path: Any) -> None:
        """`nanostream run --metrics` serves the endpoint; a scrape during the run sees nodes."""
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        data = tmp_path / "in"
        data.mkdir()
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(
            "name: scraped\n"
            "nodes:\n"
            "  - name: watch\n"
            "    class: LocalDirectoryWatchdog\n"
            f"    args: {{directory: '{data}'}}\n"
            "  - name: show\n"
            "    class: PrinterOfThings\n"
            "links:\n"
            "  - [watch, show]\n"
        )
        command = [sys.executable, "-m", "nanostream_trio", "run", str(pipeline)]
        command += ["--metrics", f"127.0.0.1:{port}", "--table", "never"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        ) as process:
            assert process.stderr is not None
            try:
                for line in process.stderr:
                    if "metrics_serving" in line:
                        break
                status, _, body = fetch(port, "/metrics")
                health_status, _, _ = fetch(port, "/health")
            finally:
                process.terminate()
                process.wait(timeout=30)
        assert status == 200
        assert 'nanostream_node_status{pipeline="scraped",node="watch",status="running"} 1' in body
        assert health_status == 200
