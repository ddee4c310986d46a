"""Tests of HttpRequest, HttpPost and HttpPoll against a real HTTP server on 127.0.0.1.

The server is a small HTTP/1.1 server (h11, which httpx itself uses) running in
the test's own Trio run, so the autojump fake clock drives the server's delays
and the nodes' timeouts, backoffs and rate limits alike: times are exact.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import pytest
import trio

from nanostream_testing import CollectingSink, FakeSource, capture_events, run_pipeline_async
from nanostream_trio import (
    ConfigError,
    ConfigFileError,
    DeadLetter,
    NanoNode,
    Pipeline,
    load_pipeline_text,
)
from nanostream_trio.nodes import (
    HttpPoll,
    HttpPost,
    HttpRequest,
    HttpResponse,
    HttpStatusError,
    HttpTemplateError,
)

# -- the local server --------------------------------------------------------------


@dataclasses.dataclass
class Request:
    """One request the server received, with the virtual time it arrived."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    time: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass
class Reply:
    """What the server answers: status, body (JSON unless bytes or str), headers, delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Request], Awaitable[Reply]]


class Server:
    """An HTTP/1.1 server on 127.0.0.1 in the current Trio run (keep-alive included)."""

    def __init__(self, handler: Handler, port: int) -> None:
        self.handler = handler
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[Request] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.received = trio.Event()  # set at each request (replace it to wait for the next)

    async def serve(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while await self._one(stream, connection):
                connection.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the client went away (a timeout, a cancellation)

    async def _one(self, stream: trio.SocketStream, connection: h11.Connection) -> bool:
        head: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed, PAUSED
                return False
        assert head is not None
        target = urlsplit(head.target.decode())
        request = Request(
            method=head.method.decode(),
            path=target.path,
            query=dict(parse_qsl(target.query)),
            headers={k.decode().lower(): v.decode() for k, v in head.headers},
            body=body,
            time=trio.current_time(),
        )
        self.requests.append(request)
        self.received.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            reply = await self.handler(request)
            await trio.sleep(reply.delay)
        finally:
            self.in_flight -= 1
        if isinstance(reply.body, bytes):
            payload, kind = reply.body, "application/octet-stream"
        elif isinstance(reply.body, str):
            payload, kind = reply.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, kind = json.dumps(reply.body).encode(), "application/json"
        headers = {"content-type": kind, "content-length": str(len(payload)), **reply.headers}
        response = h11.Response(status_code=reply.status, headers=list(headers.items()))
        await stream.send_all(connection.send(response))
        await stream.send_all(connection.send(h11.Data(data=payload)))
        await stream.send_all(connection.send(h11.EndOfMessage()))
        return connection.our_state is not h11.MUST_CLOSE


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    """Run a Server for the body of the ``async with``, then stop it."""
    async with trio.open_nursery() as nursery:
        server: Server | None = None

        async def serve(stream: trio.SocketStream) -> None:
            assert server is not None
            await server.serve(stream)

        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        server = Server(handler, listeners[0].socket.getsockname()[1])
        yield server
        nursery.cancel_scope.cancel("the test is over")


def route(replies: dict[str, list[Reply] | Reply]) -> Handler:
    """A handler answering each path from its list of replies in turn (the last one repeats)."""
    calls: dict[str, int] = {}

    async def handle(request: Request) -> Reply:
        script = replies.get(request.path, Reply(404, "no such page"))
        if isinstance(script, Reply):
            return script
        index = calls.get(request.path, 0)
        calls[request.path] = index + 1
        return script[min(index, len(script) - 1)]

    return handle


async def echo(request: Request) -> Reply:
    """Answer with what was asked: path, query, a few headers, the JSON body."""
    return Reply(
        body={
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "token": request.headers.get("x-token"),
            "json": request.json() if request.body else None,
        }
    )


# -- HttpRequest ----------------------------------------------------------------------


class TestHttpRequestTemplates:
    async def test_url_headers_params_and_json_come_from_the_item(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Each {field} in the URL, header and query values and JSON strings is the item's."""
        async with serving(echo) as server:
            node = HttpRequest(
                server.url + "/users/{id}",
                "post",
                headers={"X-Token": "t-{id}"},
                params={"expand": "{part}", "fixed": 1},
                json={"id": "{id}", "label": "user {id}", "nested": ["{part}"]},
            )
            sink = CollectingSink()
            await run_pipeline_async(
                FakeSource([{"id": 7, "part": "a"}, {"id": 8, "part": "b"}]) > node > sink
            )
        first = sink.items[0]
        assert isinstance(first, HttpResponse)
        assert first.status == 200
        assert first.headers["content-type"] == "application/json"
        assert first.item == {"id": 7, "part": "a"}
        assert first.body == {
            "method": "POST",
            "path": "/users/7",
            "query": {"expand": "a", "fixed": "1"},
            "token": "t-7",
            "json": {"id": 7, "label": "user 7", "nested": ["a"]},
        }
        assert [r.body["path"] for r in sink.items] == ["/users/7", "/users/8"]

    async def test_a_missing_field_names_node_template_and_item(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """An item without a field the URL needs fails with an error naming all three."""
        async with serving(echo) as server:
            node = HttpRequest(server.url + "/users/{id}", name="users")
            with pytest.raises(HttpTemplateError) as caught:
                await run_pipeline_async(FakeSource([{"name": "ada"}]) > node > CollectingSink())
        message = str(caught.value)
        for part in ("'users'", "/users/{id}", "'id'", "'ada'"):
            assert part in message
        assert caught.value.field == "id"
        assert server.requests == []

    def test_a_bad_template_or_url_is_refused_at_construction(self) -> None:
        """A template that does not parse, a positional field or a URL without a scheme."""
        with pytest.raises(ConfigError, match="not a valid template"):
            HttpRequest("http://x/{id")
        with pytest.raises(ConfigError, match="needs a name"):
            HttpRequest("http://x/{}")
        with pytest.raises(ConfigError, match="http:// or https://"):
            HttpRequest("example.org/{id}")
        with pytest.raises(ConfigError, match="concurrency"):
            HttpRequest("http://x/", concurrency=0)

    def test_without_httpx_the_error_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Constructing a node without httpx installed says which extra to install."""
        monkeypatch.setitem(sys.modules, "httpx", None)
        with pytest.raises(ImportError, match=r"pip install 'nanostream-trio\[http\]'"):
            HttpRequest("http://x/")


class TestHttpRequestRetries:
    async def test_429_waits_what_retry_after_says(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 429 with Retry-After: 7 is sent again exactly 7 seconds later, then succeeds."""
        replies = [Reply(429, "slow down", {"retry-after": "7"}), Reply(body={"ok": True})]
        async with serving(route({"/a": replies})) as server:
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([1]) > HttpRequest(server.url + "/a") > sink)
        assert [r.time for r in server.requests] == [0.0, 7.0]
        assert [r.body for r in sink.items] == [{"ok": True}]

    async def test_retry_after_as_a_past_http_date_retries_at_once(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Retry-After as an HTTP date already past means no wait (not the 5 s backoff)."""
        past = "Wed, 21 Oct 2015 07:28:00 GMT"
        replies = [Reply(503, "busy", {"retry-after": past}), Reply(body=1)]
        async with serving(route({"/a": replies})) as server:
            node = HttpRequest(server.url + "/a", backoff=5.0, jitter=0)
            await run_pipeline_async(FakeSource([1]) > node > CollectingSink())
        assert [r.time for r in server.requests] == [0.0, 0.0]

    async def test_a_burst_of_503_backs_off_exponentially(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Three 503s, then 200: attempts at 0, 1, 3 and 7 seconds (backoff 1 s, doubling)."""
        replies = [Reply(503, "busy")] * 3 + [Reply(body=[1, 2])]
        async with serving(route({"/a": replies})) as server:
            sink = CollectingSink()
            with capture_events() as events:
                await run_pipeline_async(
                    FakeSource([1]) > HttpRequest(server.url + "/a", backoff=1.0, jitter=0) > sink
                )
        assert [r.time for r in server.requests] == [0.0, 1.0, 3.0, 7.0]
        assert [r.body for r in sink.items] == [[1, 2]]
        assert [e["delay"] for e in events if e["event"] == "http_retry"] == [1.0, 2.0, 4.0]

    async def test_jitter_spreads_the_backoff_within_its_bounds(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """With jitter=0.5 the first wait of a 2 s backoff lies between 1 and 3 seconds."""
        replies = [Reply(502), Reply(body=1)]
        async with serving(route({"/a": replies})) as server:
            node = HttpRequest(server.url + "/a", backoff=2.0, jitter=0.5)
            await run_pipeline_async(FakeSource([1]) > node > CollectingSink())
        assert 1.0 <= server.requests[1].time <= 3.0

    async def test_503_after_the_last_retry_fails_with_the_status(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """When every attempt is a 503, the error carries status, body and the attempt count."""
        async with serving(route({"/a": Reply(503, "down for maintenance")})) as server:
            node = HttpRequest(server.url + "/a", retries=2, backoff=0.5, jitter=0)
            with pytest.raises(HttpStatusError) as caught:
                await run_pipeline_async(FakeSource([1]) > node > CollectingSink())
        assert caught.value.status == 503
        assert caught.value.body == "down for maintenance"
        assert caught.value.attempts == 3
        assert len(server.requests) == 3

    async def test_404_goes_through_the_policy_with_status_and_body(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 404 is not retried: the item is dead-lettered with status and body in the message."""
        async with serving(route({"/users/1": Reply(body={"id": 1})})) as server:
            node = HttpRequest(server.url + "/users/{id}", name="users")
            dead = CollectingSink()
            sink = CollectingSink()
            _ = node.dead_letters > dead
            await run_pipeline_async(FakeSource([{"id": 1}, {"id": 2}]) > node > sink)
        assert [r.body for r in sink.items] == [{"id": 1}]
        [letter] = dead.items
        assert isinstance(letter, DeadLetter)
        assert letter.item == {"id": 2}
        assert letter.exc_type == "HttpStatusError"
        assert "HTTP 404 Not Found" in letter.message
        assert "no such page" in letter.message
        assert [r.path for r in server.requests] == ["/users/1", "/users/2"]

    async def test_404_under_raise_fails_the_run_with_the_error(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Under the default policy the run raises HttpStatusError with status and body."""
        async with serving(route({})) as server:
            with pytest.raises(HttpStatusError) as caught:
                await run_pipeline_async(
                    FakeSource([1]) > HttpRequest(server.url + "/x") > CollectingSink()
                )
        assert (caught.value.status, caught.value.body) == (404, "no such page")
        assert caught.value.url == server.url + "/x"

    async def test_a_hanging_server_times_out_through_the_policy(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A server that never answers: the item fails with a timeout at timeout seconds."""

        async def hang_on_slow(request: Request) -> Reply:
            if request.path == "/slow":
                await trio.sleep_forever()
            return Reply(body="fast")

        async with serving(hang_on_slow) as server:
            node = HttpRequest(server.url + "/{item}", timeout=2.0, retries=0, on_error="skip")
            sink = CollectingSink()
            with capture_events() as events:
                await run_pipeline_async(FakeSource(["slow", "fast"]) > node > sink)
        [skipped] = [e for e in events if e["event"] == "item_skipped"]
        assert skipped["exc_type"] == "ReadTimeout"
        assert [r.body for r in sink.items] == ["fast"]
        assert server.requests[1].time == 2.0

    async def test_on_error_retry_sends_the_request_again(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """The node's own retry policy re-sends a request that failed with a 4xx."""
        replies = [Reply(409, "conflict"), Reply(body="done")]
        async with serving(route({"/a": replies})) as server:
            node = HttpRequest(server.url + "/a", on_error="retry")
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([1]) > node > sink)
        assert [r.body for r in sink.items] == ["done"]
        assert len(server.requests) == 2


async def _delayed(request: Request) -> Reply:
    """Answer /d/<seconds> after that many seconds, with the number."""
    seconds = float(request.path.rsplit("/", 1)[1])
    if seconds < 0:
        return Reply(500 if seconds == -1 else 400, "bad")
    return Reply(body=seconds, delay=seconds)


class TestHttpRequestConcurrency:
    async def test_slow_responses_come_out_in_input_order(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Three requests in flight at once; outputs keep the input order whatever the delays."""
        delays = [5, 1, 4, 2, 3, 1]
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=3)
            sink = CollectingSink()
            await run_pipeline_async(FakeSource(delays) > node > sink)
        assert [r.body for r in sink.items] == [5, 1, 4, 2, 3, 1]
        assert server.most_in_flight == 3
        # Each answer frees a slot: 2 goes at 1 (after 1), 3 at 3 (after 2), 1 at 4 (after 4).
        assert [r.time for r in server.requests] == [0, 0, 0, 1, 3, 4]
        assert sink.arrivals == [5, 5, 5, 5, 6, 6]

    async def test_the_reorder_buffer_is_bounded_by_window(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """window=3 with a slow head: no fourth item is taken until the head is answered."""
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=2, window=3)
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([5, 1, 1, 1]) > node > sink)
        assert [r.time for r in server.requests] == [0, 0, 1, 5]
        assert [r.body for r in sink.items] == [5, 1, 1, 1]

    async def test_checkpoints_pass_the_window_with_the_order_kept(
        self, nanostream_clock: trio.testing.MockClock, tmp_path: Any
    ) -> None:
        """Barriers every 3 s pass a concurrent HttpRequest; every output arrives once, in order."""
        delays = [2, 1, 0, 3, 1, 2, 0, 1] * 3
        async with serving(_delayed) as server:
            sink = CollectingSink()
            pipeline = Pipeline(
                FakeSource(delays, interval=0.5)
                > HttpRequest(server.url + "/d/{item}", concurrency=3)
                > sink,
                checkpoint=str(tmp_path / "state.db"),
                checkpoint_interval=3.0,
            )
            with capture_events() as events:
                await run_pipeline_async(pipeline)
        assert [r.body for r in sink.items] == delays
        completed = [e for e in events if e["event"] == "checkpoint_completed" and not e["final"]]
        assert len(completed) >= 3
        assert not [e for e in events if e["event"] == "checkpoint_delayed"]

    async def test_unordered_output_comes_as_answers_arrive(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """With ordered=False the fastest answer comes first."""
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=3, ordered=False)
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([3, 1, 2]) > node > sink)
        assert [r.body for r in sink.items] == [1, 2, 3]
        assert sink.arrivals == [1, 2, 3]

    async def test_a_failure_in_the_window_is_dead_lettered_with_its_item(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 400 among concurrent requests fails that item only, which the dead letter holds."""
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=2)
            dead = CollectingSink()
            sink = CollectingSink()
            _ = node.dead_letters > dead
            await run_pipeline_async(FakeSource([2, -2, 1]) > node > sink)
        assert [r.body for r in sink.items] == [2, 1]
        assert [d.item for d in dead.items] == [-2]
        assert "HTTP 400" in dead.items[0].message

    async def test_a_failure_in_the_window_under_raise_fails_the_run(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Under the default policy the first failed item in order fails the run."""
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=4)
            with pytest.raises(HttpStatusError, match="HTTP 400"):
                await run_pipeline_async(FakeSource([1, -2, 3]) > node > CollectingSink())

    async def test_on_error_retry_in_the_window_keeps_items_and_outcomes_paired(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 4xx retried by the policy succeeds; the same item object next gets its own answer."""
        calls = {"n": 0}

        async def flaky_once(request: Request) -> Reply:
            calls["n"] += 1
            return Reply(409, "conflict") if calls["n"] == 1 else Reply(body=calls["n"])

        async with serving(flaky_once) as server:
            item = {"id": 1}
            node = HttpRequest(server.url + "/{id}", concurrency=2, window=2, on_error="retry")
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([item, item, item]) > node > sink)
        assert len(server.requests) == 4
        assert sorted(r.body for r in sink.items) == [2, 3, 4]

    async def test_rate_spaces_the_requests_on_the_trio_clock(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """rate=2 with concurrency=4: one request every half second, however many may fly."""
        async with serving(_delayed) as server:
            node = HttpRequest(server.url + "/d/{item}", concurrency=4, rate=2.0)
            await run_pipeline_async(FakeSource([0, 0, 0, 0]) > node > CollectingSink())
        assert [r.time for r in server.requests] == [0.0, 0.5, 1.0, 1.5]

    async def test_cancellation_mid_request_stops_the_pipeline_at_once(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Cancelling a run while both its requests hang ends it within a second."""

        async def hang(request: Request) -> Reply:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async with serving(hang) as server:
            pipeline = Pipeline(
                FakeSource([1, 2])
                > HttpRequest(server.url + "/{item}", timeout=None, concurrency=2)
            )
            with trio.move_on_after(3600) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pipeline.run)
                    while len(server.requests) < 2:
                        server.received = trio.Event()
                        await server.received.wait()
                    cancelled_at = trio.current_time()
                    nursery.cancel_scope.cancel("test: stop mid-request")
            assert not scope.cancelled_caught
            assert trio.current_time() - cancelled_at < 1.0
            assert server.in_flight == 2  # the server is still waiting: the client gave up


# -- HttpPost -----------------------------------------------------------------------


async def _accept(request: Request) -> Reply:
    return Reply(204 if request.path == "/in" else 404, b"")


class TestHttpPost:
    async def test_one_item_per_request_as_json(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """batch_size=1 sends each item as the JSON body of its own POST."""
        async with serving(_accept) as server:
            node = HttpPost(server.url + "/in")
            await run_pipeline_async(FakeSource([{"a": 1}, {"a": 2}]) > node)
        assert [(r.method, r.json()) for r in server.requests] == [
            ("POST", {"a": 1}),
            ("POST", {"a": 2}),
        ]
        assert node.sent == 2

    async def test_arrays_of_batch_size_and_the_rest_at_the_end(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """batch_size=2 sends JSON arrays of two, and the last, partial one at the end."""
        async with serving(_accept) as server:
            await run_pipeline_async(
                FakeSource([1, 2, 3, 4, 5]) > HttpPost(server.url + "/in", batch_size=2)
            )
        assert [r.json() for r in server.requests] == [[1, 2], [3, 4], [5]]

    async def test_ndjson_batches(self, nanostream_clock: trio.testing.MockClock) -> None:
        """format='ndjson' sends one JSON document per line, with the NDJSON content type."""
        async with serving(_accept) as server:
            node = HttpPost(server.url + "/in", batch_size=3, format="ndjson")
            await run_pipeline_async(FakeSource([{"a": 1}, [2], "x"]) > node)
        [request] = server.requests
        assert request.headers["content-type"] == "application/x-ndjson"
        assert request.body == b'{"a":1}\n[2]\n"x"\n'

    async def test_a_503_is_retried_and_the_batch_arrives_once(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 503 then a 204: the same batch is sent again after the backoff."""
        replies = [Reply(503, "busy"), Reply(204, b"")]
        async with serving(route({"/in": replies})) as server:
            node = HttpPost(server.url + "/in", batch_size=2, backoff=1.0, jitter=0)
            await run_pipeline_async(FakeSource([1, 2]) > node)
        assert [(r.time, r.json()) for r in server.requests] == [(0.0, [1, 2]), (1.0, [1, 2])]

    async def test_a_refused_item_goes_through_the_policy(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A 422 for one item skips it (with an event) and the next item is still sent."""

        async def refuse_negative(request: Request) -> Reply:
            return Reply(422, "negative") if request.json() < 0 else Reply(204, b"")

        async with serving(refuse_negative) as server:
            node = HttpPost(server.url + "/in", on_error="skip")
            with capture_events() as events:
                await run_pipeline_async(FakeSource([1, -1, 2]) > node)
        assert [r.json() for r in server.requests] == [1, -1, 2]
        [skipped] = [e for e in events if e["event"] == "item_skipped"]
        assert "HTTP 422" in skipped["error"]
        assert "negative" in skipped["error"]
        assert node.sent == 2

    async def test_a_checkpoint_sends_the_buffered_items(
        self, nanostream_clock: trio.testing.MockClock, tmp_path: Any
    ) -> None:
        """At each checkpoint barrier prepare() sends the partial batch, before batch_size."""
        async with serving(_accept) as server:
            node = HttpPost(server.url + "/in", batch_size=100)
            pipeline = Pipeline(
                FakeSource(list(range(10)), interval=1.0) > node,
                checkpoint=str(tmp_path / "state.db"),
                checkpoint_interval=4.5,
            )
            await run_pipeline_async(pipeline)
        batches = [r.json() for r in server.requests]
        assert len(batches) >= 2
        assert [item for batch in batches for item in batch] == list(range(10))
        assert server.requests[0].time < 9.0

    def test_bad_options_are_refused(self) -> None:
        """A templated URL, batching with format='json' or batch_size=0."""
        with pytest.raises(ConfigError, match="no templates"):
            HttpPost("http://x/{id}")
        with pytest.raises(ConfigError, match="format"):
            HttpPost("http://x/", batch_size=2, format="json")
        with pytest.raises(ConfigError, match="batch_size"):
            HttpPost("http://x/", batch_size=0)


# -- HttpPoll ---------------------------------------------------------------------------


class TestHttpPoll:
    async def test_next_field_pagination_emits_every_page_including_the_first(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Pages linked by a relative and an absolute next URL are all emitted, in order."""
        pages: dict[str, list[Reply] | Reply] = {}
        async with serving(route(pages)) as server:
            pages["/p1"] = Reply(body={"items": [1, 2], "next": "/p2"})
            pages["/p2"] = Reply(body={"items": [3], "next": server.url + "/p3?x=1"})
            pages["/p3"] = Reply(body={"items": [4], "next": None})
            node = HttpPoll(server.url + "/p1", next_field="next", polls=1)
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert [page["items"] for page in sink.items] == [[1, 2], [3], [4]]
        assert [r.path for r in server.requests] == ["/p1", "/p2", "/p3"]
        assert server.requests[2].query == {"x": "1"}

    async def test_cursor_parameter_pagination(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """The body's cursor goes back as a query parameter until it is null."""

        async def feed(request: Request) -> Reply:
            after = int(request.query.get("after", "0"))
            return Reply(body={"items": [after + 1], "cursor": after + 1 if after < 2 else None})

        async with serving(feed) as server:
            node = HttpPoll(
                server.url + "/feed",
                cursor_param="after",
                cursor_field="cursor",
                params={"limit": 1},
                polls=1,
            )
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert [page["items"] for page in sink.items] == [[1], [2], [3]]
        assert [r.query for r in server.requests] == [
            {"limit": "1"},
            {"limit": "1", "after": "1"},
            {"limit": "1", "after": "2"},
        ]

    async def test_offset_pagination_advances_by_the_items_of_each_page(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """offset=0, 2, 4 with limit=2; the short third page is the last one."""
        rows = list(range(5))

        async def feed(request: Request) -> Reply:
            offset, limit = int(request.query["offset"]), int(request.query["limit"])
            return Reply(body={"data": rows[offset : offset + limit]})

        async with serving(feed) as server:
            node = HttpPoll(
                server.url + "/rows",
                offset_param="offset",
                page_size=2,
                limit_param="limit",
                items_field="data",
                params={"q": "x"},
                polls=1,
            )
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert [page["data"] for page in sink.items] == [[0, 1], [2, 3], [4]]
        assert [r.query for r in server.requests] == [
            {"q": "x", "limit": "2", "offset": "0"},
            {"q": "x", "limit": "2", "offset": "2"},
            {"q": "x", "limit": "2", "offset": "4"},
        ]
        assert node.snapshot() == {"next": None, "etag": None, "offset": None}

    async def test_offset_pagination_without_page_size_ends_at_an_empty_page(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Without page_size the body itself is the list, and an empty list ends the poll."""
        rows = ["a", "b", "c"]

        async def feed(request: Request) -> Reply:
            offset = int(request.query["start"])
            return Reply(body=rows[offset : offset + 2])

        async with serving(feed) as server:
            sink = CollectingSink()
            node = HttpPoll(server.url + "/rows", offset_param="start", polls=1)
            await run_pipeline_async(node > sink)
        assert sink.items == [["a", "b"], ["c"], []]
        assert [r.query["start"] for r in server.requests] == ["0", "2", "3"]

    async def test_an_offset_page_that_is_not_a_list_fails_with_the_fix(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """A body that is no list (and no items_field) names items_field in its error."""
        async with serving(route({"/rows": Reply(body={"data": [1]})})) as server:
            node = HttpPoll(server.url + "/rows", offset_param="offset", polls=1)
            with pytest.raises(TypeError, match="set items_field"):
                await run_pipeline_async(node > CollectingSink())

    async def test_the_cursor_is_the_checkpoint_position(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """snapshot() holds the next cursor; restore() builds the next URL from it."""

        async def feed(request: Request) -> Reply:
            after = int(request.query.get("after", "0"))
            return Reply(body={"n": after + 1, "cursor": after + 1 if after < 3 else None})

        async with serving(feed) as server:
            node = HttpPoll(
                server.url + "/feed",
                cursor_param="after",
                cursor_field="cursor",
                params={"limit": 1},
                polls=1,
            )
            node.restore({"cursor": 2, "next": "http://elsewhere.invalid/old", "etag": None})
            assert node.snapshot()["next"] == server.url + "/feed?limit=1&after=2"
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert [page["n"] for page in sink.items] == [3, 4]
        assert [r.query for r in server.requests] == [
            {"limit": "1", "after": "2"},
            {"limit": "1", "after": "3"},
        ]
        assert node.snapshot() == {"next": None, "etag": None, "cursor": None}

    @pytest.mark.parametrize("mode", ["cursor", "offset"])
    async def test_a_crashed_run_resumes_from_the_checkpointed_position(
        self, nanostream_clock: trio.testing.MockClock, tmp_path: Any, mode: str
    ) -> None:
        """A run that dies mid-pagination restarts at the page after the last checkpoint."""

        async def feed(request: Request) -> Reply:
            if mode == "cursor":
                at = int(request.query.get("after", "0"))
                return Reply(body={"items": [at], "next": at + 1 if at < 5 else None}, delay=1.0)
            at = int(request.query["offset"])
            return Reply(body={"items": [at] if at <= 5 else []}, delay=1.0)

        options: dict[str, Any] = (
            {"cursor_param": "after", "cursor_field": "next"}
            if mode == "cursor"
            else {"offset_param": "offset", "items_field": "items"}
        )
        seen: list[int] = []

        class CrashAtThree(NanoNode):
            armed = True

            def process_item(self, item: Any) -> None:
                if item["items"] == [3] and CrashAtThree.armed:
                    CrashAtThree.armed = False
                    raise RuntimeError("crash")
                seen.extend(item["items"])

        def build() -> Pipeline:
            poll = HttpPoll(server.url + "/feed", polls=1, name="poll", **options)
            return Pipeline(
                poll > CrashAtThree(name="sink"),
                checkpoint=str(tmp_path / "state.db"),
                checkpoint_interval=0.5,
            )

        async with serving(feed) as server:
            with pytest.raises(RuntimeError, match="crash"):
                await run_pipeline_async(build())
            first_run = len(server.requests)
            await run_pipeline_async(build())
        assert seen[:3] == [0, 1, 2]
        assert sorted(set(seen)) == [0, 1, 2, 3, 4, 5]
        resumed = server.requests[first_run].query["after" if mode == "cursor" else "offset"]
        assert resumed in ("2", "3")  # not the first page again
        assert seen[3:5] in ([2, 3], [3, 4])  # at most the page in flight is repeated

    async def test_link_header_pagination(self, nanostream_clock: trio.testing.MockClock) -> None:
        """Without next_field, a Link rel="next" header leads to the next page."""
        pages = {
            "/a": Reply(body=["a"], headers={"link": '</b>; rel="next", </a>; rel="first"'}),
            "/b": Reply(body=["b"]),
        }
        async with serving(route(pages)) as server:  # type: ignore[arg-type]
            sink = CollectingSink()
            await run_pipeline_async(HttpPoll(server.url + "/a", polls=1) > sink)
        assert sink.items == [["a"], ["b"]]

    async def test_etag_makes_an_unchanged_poll_emit_nothing(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """The second poll, interval seconds later, sends If-None-Match and a 304 emits nothing."""

        async def feed(request: Request) -> Reply:
            if request.headers.get("if-none-match") == '"v1"':
                return Reply(304, b"")
            return Reply(body={"v": 1}, headers={"etag": '"v1"'})

        async with serving(feed) as server:
            node = HttpPoll(server.url + "/feed", interval=10.0, polls=2)
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert sink.items == [{"v": 1}]
        assert [r.time for r in server.requests] == [0.0, 10.0]
        assert server.requests[1].headers["if-none-match"] == '"v1"'
        assert node.not_modified == 1

    async def test_checkpoints_pass_while_it_waits_between_polls(
        self, nanostream_clock: trio.testing.MockClock, tmp_path: Any
    ) -> None:
        """Waiting 30 s between polls, the source yields so checkpoints every 5 s complete."""
        async with serving(route({"/feed": Reply(body=[1])})) as server:
            pipeline = Pipeline(
                HttpPoll(server.url + "/feed", interval=30.0, polls=2) > CollectingSink(),
                checkpoint=str(tmp_path / "state.db"),
                checkpoint_interval=5.0,
            )
            with capture_events() as events:
                await run_pipeline_async(pipeline)
        completed = [e for e in events if e["event"] == "checkpoint_completed" and not e["final"]]
        assert len(completed) >= 4
        assert not [e for e in events if e["event"] == "checkpoint_delayed"]

    async def test_restore_resumes_the_pagination_after_the_last_page_emitted(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """The snapshot names the next page; restored, the poll starts there."""
        pages = {
            "/p1": Reply(body={"n": 1, "next": "/p2"}),
            "/p2": Reply(body={"n": 2, "next": "/p3"}),
            "/p3": Reply(body={"n": 3}),
        }
        async with serving(route(pages)) as server:  # type: ignore[arg-type]
            node = HttpPoll(server.url + "/p1", next_field="next", polls=1)
            node.restore({"next": server.url + "/p2", "etag": None})
            sink = CollectingSink()
            await run_pipeline_async(node > sink)
        assert [page["n"] for page in sink.items] == [2, 3]
        assert node.snapshot() == {"next": None, "etag": None}

    async def test_a_4xx_fails_the_source(self, nanostream_clock: trio.testing.MockClock) -> None:
        """A 403 on a page fails the run with the status and body."""
        async with serving(route({"/p": Reply(403, "forbidden")})) as server:
            with pytest.raises(HttpStatusError, match="forbidden") as caught:
                await run_pipeline_async(HttpPoll(server.url + "/p", polls=1) > CollectingSink())
        assert caught.value.status == 403


# -- pipeline files -----------------------------------------------------------------------

_PIPELINE = """\
name: api-to-api
nodes:
  - name: pages
    class: HttpPoll
    args: {url: "${BASE}/p1", next_field: next, polls: 1}
  - name: user
    class: HttpRequest
    args: {url: "${BASE}/users/{id}", output: body, concurrency: 2}
  - name: post
    class: HttpPost
    args: {url: "${BASE}/in", batch_size: 2}
links:
  - [pages, user, post]
"""


class TestPipelineFiles:
    async def test_the_three_nodes_run_from_a_pipeline_file(
        self, nanostream_clock: trio.testing.MockClock
    ) -> None:
        """Poll two pages, fetch the user each names, post the users in one batch."""

        async def api(request: Request) -> Reply:
            if request.path == "/p1":
                return Reply(body={"id": 1, "next": "/p2"})
            if request.path == "/p2":
                return Reply(body={"id": 2})
            if request.path.startswith("/users/"):
                return Reply(body={"user": int(request.path.rsplit("/", 1)[1])})
            return Reply(204, b"")

        async with serving(api) as server:
            pipeline = load_pipeline_text(_PIPELINE, env={"BASE": server.url})
            await run_pipeline_async(pipeline)
        posted = [r.json() for r in server.requests if r.path == "/in"]
        assert posted == [[{"user": 1}, {"user": 2}]]

    def test_a_bad_template_is_located_in_the_file(self) -> None:
        """A template that does not parse is reported with file, line and key path."""
        text = _PIPELINE.replace("/users/{id}", "/users/{id")
        with pytest.raises(ConfigFileError) as caught:
            load_pipeline_text(text, source="api.yaml", env={"BASE": "http://127.0.0.1:1"})
        message = str(caught.value)
        assert message.startswith("api.yaml:8:")
        assert "nodes[1].args.url" in message
        assert "not a valid template" in message

    def test_bad_offset_options_are_located_in_the_file(self) -> None:
        """page_size without offset_param, in a pipeline file, names the file, line and key."""
        text = _PIPELINE.replace("next_field: next, polls: 1", "page_size: 10, polls: 1")
        with pytest.raises(ConfigFileError) as caught:
            load_pipeline_text(text, source="api.yaml", env={"BASE": "http://127.0.0.1:1"})
        message = str(caught.value)
        assert message.startswith("api.yaml:")
        assert "nodes[0].args.page_size" in message
        assert "only with offset_param" in message


class TestHttpPollOffsetOptions:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"offset_param": "o", "next_field": "next"}, "not together with next_field"),
            ({"offset_param": "o", "cursor_param": "c", "cursor_field": "c"}, "not together"),
            ({"offset_param": "o", "page_size": 0}, "page_size=0"),
            ({"offset_param": "o", "limit_param": "limit"}, "needs page_size"),
            ({"items_field": "data"}, "only with offset_param"),
            ({"offset_param": ""}, "offset_param=''"),
        ],
    )
    def test_bad_combinations_are_refused(self, options: dict[str, Any], message: str) -> None:
        """Each inconsistent offset option is a ConfigError saying what to change."""
        with pytest.raises(ConfigError, match=message):
            HttpPoll("http://127.0.0.1:1/", **options)
