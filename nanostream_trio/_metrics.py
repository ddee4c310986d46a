"""A Prometheus metrics and health endpoint for a running pipeline.

:func:`serve_metrics` is a task for the pipeline's own nursery. It answers two
paths over plain HTTP/1.1 on a TCP socket, with no dependency beyond Trio:

* ``GET /metrics``: the Prometheus text exposition format (version 0.0.4),
  rendered from :meth:`Pipeline.statistics` by :func:`render_metrics`;
* ``GET /health``: ``200 ok`` while the pipeline runs and no node is stalled,
  ``503`` with the reason otherwise (see :func:`health`).

Every request is read with a size limit and a real-time deadline, and every
connection is closed after one response, so a slow or hostile client holds at
most one handler task for :data:`REQUEST_TIMEOUT` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import ConfigError

if TYPE_CHECKING:
    from ._stats import PipelineStatistics

__all__ = ["health", "parse_address", "render_metrics", "serve_metrics"]

#: Seconds of real time a client has to send its request.
REQUEST_TIMEOUT: Final = 10.0
#: Largest request head (request line and headers) read, in bytes.
MAX_REQUEST_BYTES: Final = 8192

# (statistics field, metric suffix, type, help). Counters end in _total.
_NODE_FIELDS: Final = (
    ("items_in", "items_in_total", "counter", "Items taken from the node's inbox."),
    ("items_out", "items_out_total", "counter", "Items emitted on the node's main output."),
    ("filtered", "filtered_total", "counter", "Items consumed that produced no output."),
    ("skipped", "skipped_total", "counter", "Items dropped by the skip policy."),
    ("retried", "retried_total", "counter", "Retry attempts made."),
    ("dead_lettered", "dead_lettered_total", "counter", "Items sent to dead_letters."),
    ("inbox_queued", "inbox_queued", "gauge", "Items waiting in the node's inbox."),
    ("inbox_capacity", "inbox_capacity", "gauge", "Capacity of the node's inbox."),
    ("inbox_peak", "inbox_peak", "gauge", "Most items the inbox ever held at once."),
    ("handoff_queued", "handoff_queued", "gauge", "Items waiting in a source thread's hand-off."),
    ("blocked_seconds", "blocked_seconds_total", "counter", "Seconds spent waiting for room."),
    ("busy_seconds", "busy_seconds_total", "counter", "Seconds spent processing items."),
    (
        "alignment_seconds",
        "barrier_alignment_seconds_total",
        "counter",
        "Seconds checkpoint barriers waited in the inbox for all inputs.",
    ),
)
_STATUSES: Final = ("pending", "running", "finished", "failed", "cancelled")
_PIPELINE_STATUSES: Final = ("pending", "running", "stopping", "finished", "failed", "cancelled")


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` as a pair; ``[::1]:9464`` for IPv6.

    Raises:
        ConfigError: the address has no port, or the port is not 0-65535.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        msg = f"metrics address must be HOST:PORT (e.g. 127.0.0.1:9464); got {address!r}"
        raise ConfigError(msg, key="metrics")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"metrics address {address!r} has no valid port; give 0-65535 (0 picks a free one)"
        raise ConfigError(msg, key="metrics")
    return host, port


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render_metrics(stats: PipelineStatistics, *, extra: dict[str, float] | None = None) -> str:
    """The Prometheus text format for one statistics snapshot.

    Per node (label ``node``, plus ``pipeline`` everywhere): the counters and
    gauges of :class:`NodeStatistics` that the snapshot has, and
    ``nanostream_node_status`` (1 for the node's current status, 0 for the
    others). Per pipeline: ``nanostream_pipeline_uptime_seconds``,
    ``nanostream_pipeline_status`` and, once a checkpoint has been written,
    ``nanostream_pipeline_checkpoints_total`` and
    ``nanostream_pipeline_checkpoint_age_seconds``; ``extra`` adds more pipeline gauges
    (name without the ``nanostream_pipeline_`` prefix).
    """
    pipeline = _label(stats.name)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("nanostream_pipeline_uptime_seconds", "gauge", "Seconds since the run started.")
    lines.append(f'nanostream_pipeline_uptime_seconds{{pipeline="{pipeline}"}} '
                 f"{_number(stats.elapsed)}")  # fmt: skip
    family("nanostream_pipeline_status", "gauge", "1 for the pipeline's current status.")
    for status in _PIPELINE_STATUSES:
        current = int(stats.status == status)
        lines.append(
            f'nanostream_pipeline_status{{pipeline="{pipeline}",status="{status}"}} {current}'
        )
    if stats.checkpoints:
        family("nanostream_pipeline_checkpoints_total", "counter", "Checkpoints written.")
        lines.append(
            f'nanostream_pipeline_checkpoints_total{{pipeline="{pipeline}"}} {stats.checkpoints}'
        )
    if stats.checkpoint_age is not None:
        family(
            "nanostream_pipeline_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last checkpoint was written.",
        )
        lines.append(
            f'nanostream_pipeline_checkpoint_age_seconds{{pipeline="{pipeline}"}} '
            f"{_number(stats.checkpoint_age)}"
        )
    for key, value in sorted((extra or {}).items()):
        name = f"nanostream_pipeline_{key}"
        family(name, "gauge", f"Pipeline {key.replace('_', ' ')}.")
        lines.append(f'{name}{{pipeline="{pipeline}"}} {_number(value)}')
    nodes = list(stats.nodes.values())
    for field, suffix, kind, help_text in _NODE_FIELDS:
        present = [node for node in nodes if hasattr(node, field)]
        if not present:
            continue
        name = f"nanostream_node_{suffix}"
        family(name, kind, help_text)
        for node in present:
            value = getattr(node, field)
            labels = f'pipeline="{pipeline}",node="{_label(node.name)}"'
            lines.append(f"{name}{{{labels}}} {_number(value)}")
    family("nanostream_node_status", "gauge", "1 for the node's current status.")
    for node in nodes:
        for status in _STATUSES:
            labels = f'pipeline="{pipeline}",node="{_label(node.name)}",status="{status}"'
            lines.append(f"nanostream_node_status{{{labels}}} {int(node.status == status)}")
    return "\n".join(lines) + "\n"


def health(stats: PipelineStatistics, now: float, stall_timeout: float | None) -> tuple[int, str]:
    """``(200, "ok")`` while the pipeline runs and no node is stalled, else ``(503, reason)``.

    A node is stalled when it is running, items wait in its inbox, and it has
    taken none for ``stall_timeout`` seconds (``now`` and the statistics'
    ``last_progress`` are Trio-clock times). ``None`` disables the stall check.
    """
    if stats.status not in ("running", "stopping"):
        return 503, f"pipeline {stats.name!r} is {stats.status}"
    if stall_timeout is not None:
        stalled = [
            node.name
            for node in stats.nodes.values()
            if node.status == "running"
            and node.inbox_queued
            and now - node.last_progress >= stall_timeout
        ]
        if stalled:
            return 503, f"stalled for {stall_timeout:g} s or more: {', '.join(stalled)}"
    return 200, "ok"


_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   408: "Request Timeout", 431: "Request Header Fields Too Large",
                   503: "Service Unavailable"}  # fmt: skip


def _response(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request head, or None if the client closed or sent too much."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return data or None
        data += chunk
    return data.partition(b"\r\n\r\n")[0]


def _answer(head: bytes | None, snapshot: Callable[[], tuple[str, tuple[int, str]]]) -> bytes:
    if head is None:
        return _response(431, "request too large or incomplete\n")
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response(400, f"not an HTTP request line: {request_line[:80]!r}\n")
    method, target, _ = parts
    if method != "GET":
        return _response(405, f"only GET is served here; got {method}\n")
    path = target.split("?", 1)[0]
    if path == "/metrics":
        text, _ = snapshot()
        return _response(200, text, "text/plain; version=0.0.4; charset=utf-8")
    if path == "/health":
        _, (status, reason) = snapshot()
        return _response(status, reason + "\n")
    return _response(404, f"no such path {path!r}; try /metrics or /health\n")


async def serve_metrics(
    pipeline: Any,
    address: str,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/health`` for ``pipeline`` on ``address`` until cancelled.

    Args:
        pipeline: the :class:`Pipeline` whose statistics are served.
        address: ``"host:port"``; port 0 picks a free port.
        task_status: ``nursery.start`` gets the bound ``(host, port)``.

    Raises:
        ConfigError: the address does not parse.
        OSError: the address cannot be bound (in use, not local).
    """
    host, port = parse_address(address)
    listeners = await trio.open_tcp_listeners(port, host=host)

    def snapshot() -> tuple[str, tuple[int, str]]:
        stats = pipeline.statistics()
        state = health(stats, trio.current_time(), pipeline._stall_timeout)
        return render_metrics(stats), state

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT) as scope:
                head = await _read_head(stream)
            reply = _answer(head, snapshot) if not scope.cancelled_caught else None
            if reply is None:
                reply = _response(408, "request not received in time\n")
            try:
                await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        task_status.started((bound[0], bound[1]))
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)
