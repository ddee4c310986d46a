"""Redis Streams nodes on coredis: RedisStreamSource (a consumer group member) and RedisStreamSink.

coredis is an optional dependency (the ``[redis]`` extra); this module
imports it only when a node is constructed or run, so ``import
nanostream_trio`` works without it. coredis runs on anyio, so natively under
Trio; its connection pool lives in a task group of its own, which is why each
node opens its client in ``_ns_session()`` (entered by the engine around the
node's setup, work and teardown, in the node's task) rather than in ``setup()``.

How the source reads (see ``docs/scaling.md``):

1. it creates the group if missing (``XGROUP CREATE ... MKSTREAM``);
2. it re-reads its own pending entries (``XPENDING`` for its consumer, then
   ``XCLAIM`` to itself), the ones a previous run of the same consumer did
   not acknowledge;
3. every ``claim_interval`` it takes over entries idle longer than
   ``claim_idle`` from other consumers (``XAUTOCLAIM``), dead ones presumably;
4. otherwise it reads new entries (``XREADGROUP ... BLOCK``).

Entries re-delivered (2 and 3) carry a delivery count; one over
``max_deliveries`` goes to the dead-letter stream instead, and is acked.
Every emitted entry's id waits in the source until a barrier that follows it
has passed every node and the checkpoint is complete (``ack(n)``: ``XACK``);
without a checkpoint store the engine runs store-less barrier rounds every
``ack_interval`` seconds for this (``_checkpoint.MemoryStore``).

:class:`_Link` is the connection handling both nodes share: each Redis call
goes through :meth:`_Link.call`, which survives connection loss by retrying
with exponential backoff, with events when the link is lost and back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, Unpack

import trio

from .._exceptions import ConfigError
from .._items import Items
from .._node import NanoNode
from .._policy import short_repr
from ._stages import EngineOptions

if TYPE_CHECKING:
    import coredis

__all__ = [
    "RedisEntry",
    "RedisSinkStatistics",
    "RedisSourceStatistics",
    "RedisStreamSink",
    "RedisStreamSource",
]

T = TypeVar("T")

_SCHEMES: Final = ("redis://", "rediss://", "unix://")
#: Most ids in one XACK (a long list is split).
_ACK_CHUNK: Final = 5000
#: ``_Link.call(give_up_after=)``: the link's own ``timeout``.
_UNSET: Final = object()
#: Seconds an ack keeps trying (the entries stay pending, delivered again, if it gives up).
_ACK_TIMEOUT: Final = 10.0
#: Seconds a shielded call may take beyond its BLOCK before it counts as a lost connection.
_SHIELD_MARGIN: Final = 5.0
#: Seconds to make a TCP connection before the attempt counts as failed.
_CONNECT_TIMEOUT: Final = 5.0
#: Seconds between the empty yields of a source waiting for an ack (barriers pass at a yield).
_ACK_POLL: Final = 0.02


def _require_coredis(node: str) -> None:
    try:
        import coredis  # noqa: F401
    except ImportError as exc:
        msg = (
            f"node {node!r} needs coredis, which is not installed; "
            "install the extra: pip install 'nanostream-trio[redis]'"
        )
        raise ImportError(msg, name="coredis") from exc


def _check_url(node: str, url: Any) -> str:
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        msg = (
            f"node {node!r} got url={url!r}; expected a Redis URL such as "
            "'redis://localhost:6379/0' (schemes: redis://, rediss://, unix://)"
        )
        raise ConfigError(msg, node=node, key="url")
    return url


def _check_positive(node: str, **values: Any) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            msg = f"node {node!r} got {key}={value!r}; expected a positive number"
            raise ConfigError(msg, node=node, key=key)


def _check_count(node: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"node {node!r} got {key}={value!r}; expected a whole number >= 1"
        raise ConfigError(msg, node=node, key=key)
    return value


def _check_name(node: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        msg = f"node {node!r} got {key}={value!r}; expected a non-empty string"
        raise ConfigError(msg, node=node, key=key)
    return value


def default_consumer() -> str:
    """The consumer name a source takes when given none: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _connection_errors() -> tuple[type[BaseException], ...]:
    import coredis.exceptions

    return (coredis.exceptions.ConnectionError, TimeoutError, OSError, trio.TooSlowError)


@contextlib.asynccontextmanager
async def _open_client(url: str) -> AsyncIterator[coredis.Redis[str]]:
    """A coredis client with its pool open; an error of the body comes out unwrapped.

    The pool's task group wraps whatever the body raises in an exception
    group; the engine and the node's error policy must see the original.
    """
    import coredis
    import coredis.retry

    # No retries inside coredis (its default retries any command twice): a
    # retried XREADGROUP whose first reply was lost would hide that loss from
    # _Link, whose retries are the ones that log, back off and recover.
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url,
        decode_responses=True,
        connect_timeout=_CONNECT_TIMEOUT,
        retry_policy=coredis.retry.NoRetryPolicy(),
    )
    try:
        async with client:
            yield client
    except BaseExceptionGroup as group:
        # One error (the body's, or a connection's seen by several tasks): the error itself.
        first = group.exceptions[0]
        if all(type(exc) is type(first) for exc in group.exceptions):
            raise first from None
        # A cancellation, and the connections it cut: the cancellation.
        cancelled, rest = group.split(trio.Cancelled)
        if cancelled is not None and (rest is None or rest.split(_connection_errors())[1] is None):
            raise cancelled.exceptions[0] from None
        raise


class _Link:
    """One node's client, and calls that survive connection loss (retried with backoff).

    Args:
        node: the node (for events and ``waiting_for``).
        url: the Redis URL.
        backoff: seconds before the first retry; doubled after each failure.
        max_backoff: the longest wait between two attempts.
        timeout: seconds of failed attempts after which the error is raised
            (None: retry until cancelled).
    """

    def __init__(
        self, node: NanoNode, url: str, backoff: float, max_backoff: float, timeout: float | None
    ) -> None:
        self.node = node
        self.url = url
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.client: coredis.Redis[str] | None = None
        #: Seconds one attempt may take, shielded from cancellation; None: not shielded.
        self.shield: float | None = None
        self.reconnects = 0
        self.lost_since: float | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Keep the client open for the block (the node's session)."""
        async with _open_client(self.url) as client:
            self.client = client
            try:
                yield
            finally:
                self.client = None

    @contextlib.asynccontextmanager
    async def client_now(self) -> AsyncIterator[coredis.Redis[str]]:
        """The session's client, or one opened for the block once the session has closed."""
        if self.client is not None:
            yield self.client
            return
        async with _open_client(self.url) as client:
            yield client

    async def call(
        self,
        what: str,
        request: Callable[[Any], Awaitable[T]],
        *,
        give_up_after: float | object | None = _UNSET,
    ) -> T:
        """``await request(client)``, retried with backoff while the connection is down.

        ``give_up_after`` overrides the link's ``timeout`` for this call.

        Raises:
            coredis.exceptions.ConnectionError: still failing after ``timeout``
                seconds (with a note saying so).
        """
        limit = self.timeout if give_up_after is _UNSET else give_up_after
        errors = _connection_errors()
        failures = 0
        while True:
            try:
                return await self._attempt(what, request, failures)
            except errors as exc:
                lost: BaseException = exc
            except BaseExceptionGroup as group:
                # Several of the pool's tasks saw the connection go.
                matched, rest = group.split(errors)
                if matched is None or rest is not None:
                    raise
                lost = matched.exceptions[0]
            failures += 1
            delay = self._lost(what, lost, failures, limit)
            self.node.waiting_for = f"Redis at {self.url} (reconnecting)"  # type: ignore[attr-defined]
            await trio.sleep(delay)

    async def _attempt(self, what: str, request: Callable[[Any], Awaitable[T]], failures: int) -> T:
        if self.shield is None:
            async with self.client_now() as client:
                result = await request(client)
        else:
            # A reply a cancellation would drop (entries delivered to this
            # consumer, never emitted; an ack half done) is taken; a hung
            # server is bounded.
            with trio.CancelScope(shield=True), trio.fail_after(self.shield):
                async with self.client_now() as client:
                    result = await request(client)
        if self.lost_since is not None:
            self.reconnects += 1
            self.node.log_event(
                "redis_reconnected",
                url=self.url,
                command=what,
                attempts=failures + 1,
                downtime=trio.current_time() - self.lost_since,
            )
            self.lost_since = None
            self.node.waiting_for = None  # type: ignore[attr-defined]
        return result

    def _lost(self, what: str, exc: BaseException, failures: int, limit: Any) -> float:
        """Record a failed attempt; the seconds to wait, or raise ``exc`` past ``limit``."""
        now = trio.current_time()
        if self.lost_since is None:
            self.lost_since = now
            self.node.log_event(
                "redis_connection_lost",
                "warning",
                url=self.url,
                command=what,
                error=f"{type(exc).__name__}: {exc}",
            )
        if limit is not None and now - self.lost_since >= limit:
            exc.add_note(
                f"node {self.node.name!r}: Redis at {self.url} unreachable for "
                f"{now - self.lost_since:.1f} s ({failures} attempts of {what})"
            )
            raise exc
        return float(min(self.backoff * 2 ** (failures - 1), self.max_backoff))

    async def command(
        self, name: str, *args: Any, give_up_after: float | object | None = _UNSET, **kwargs: Any
    ) -> Any:
        """The client's method ``name`` called with the arguments, through :meth:`call`."""

        async def request(client: Any) -> Any:
            return await getattr(client, name)(*args, **kwargs)

        return await self.call(name.upper(), request, give_up_after=give_up_after)


# -- the source ---------------------------------------------------------------------


class RedisEntry(dict[str, Any]):
    """One stream entry as the source emits it: its fields, with ``id`` and ``stream``.

    A plain dict of the entry's fields (strings; the ``data`` field decoded from
    JSON when the source has ``decode_json=True``), so nodes downstream use it
    like any dict, plus two attributes.

    Attributes:
        id: the entry's id in the stream, e.g. ``"1700000000000-0"``.
        stream: the stream it was read from.
    """

    id: str
    stream: str

    def __init__(self, fields: Mapping[str, Any], id: str, stream: str) -> None:
        super().__init__(fields)
        self.id = id
        self.stream = stream

    def __repr__(self) -> str:
        return f"RedisEntry({dict(self)!r}, id={self.id!r}, stream={self.stream!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisEntry, (dict(self), self.id, self.stream))


@dataclasses.dataclass(frozen=True)
class RedisSourceStatistics:
    """A snapshot of a :class:`RedisStreamSource`'s counters (``node.statistics()``).

    Attributes:
        entries_read: entries emitted in this run (re-deliveries included).
        acked: entries acknowledged (``XACK``) in this run, dead letters included.
        unacked: entries emitted and not acknowledged yet (waiting for a checkpoint).
        claimed: entries taken over from other consumers (``XAUTOCLAIM``).
        redelivered: own pending entries read again at the start.
        dead_lettered: entries sent to the dead-letter stream.
        reconnects: times the connection was lost and made again.
        group_pending: the group's pending entries, all consumers (``XINFO GROUPS``
            at the last refresh; None before the first).
        group_lag: entries in the stream not yet delivered to the group (None
            when Redis cannot tell, or before the first refresh).
        consumers: consumers the group has (at the last refresh).
    """

    entries_read: int
    acked: int
    unacked: int
    claimed: int
    redelivered: int
    dead_lettered: int
    reconnects: int
    group_pending: int | None
    group_lag: int | None
    consumers: int | None


class RedisStreamSource(NanoNode):
    """A source that reads a Redis stream as one consumer of a consumer group.

    Several processes (``nanostream run`` of the same file on several machines)
    with the same ``stream`` and ``group`` share the entries: each entry goes to
    one consumer, and is acknowledged only once it has passed the whole
    pipeline. See ``docs/scaling.md`` for what is guaranteed.

    Each entry is emitted as a :class:`RedisEntry` (a dict of its fields, with
    ``.id``). Order: the source re-reads this consumer's own unacknowledged
    entries first, then takes over entries idle for ``claim_idle`` seconds from
    other consumers (every ``claim_interval``), and reads new entries in
    between. An entry about to be delivered for more than ``max_deliveries``
    times is added to ``dead_letter_stream`` (its fields plus ``_id``,
    ``_stream``, ``_group``, ``_deliveries``, ``_error``) and acked instead.

    Acknowledgement: with ``checkpoint=`` on the pipeline an entry is acked
    (``XACK``) when the checkpoint after it is written; without one, the
    pipeline runs store-less barrier rounds every ``ack_interval`` seconds, so
    the ack comes once the entry has passed every node, sinks included. A
    crash acks nothing more: the entries come back (to this consumer when it
    restarts with the same name, or to another after ``claim_idle``).

    Connection loss and Redis restarts: every call is retried with
    exponential backoff (``backoff`` to ``max_backoff``), with
    ``redis_connection_lost`` and ``redis_reconnected`` events; a group lost
    with a restarted server's data is created again. After a reconnection the
    source re-reads its own pending entries that it has not emitted: those of
    a read whose reply the connection took with it.

    Args:
        url: the server, ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        stream: the stream's key.
        group: the consumer group (created at the stream's start, ``0``, if missing).
        consumer: this consumer's name (default: ``<host>-<pid>``). Give a stable
            name to have a restarted worker re-read its own pending entries
            at once rather than waiting for ``claim_idle``.
        batch_size: entries per read (``COUNT``).
        block: seconds one read waits for new entries (an empty ``Items()``
            is yielded after each empty wait, so barriers pass).
        claim_idle: seconds an entry must have been pending with another
            consumer before this one takes it over.
        claim_interval: seconds between two ``XAUTOCLAIM`` sweeps (default
            ``claim_idle / 2``).
        max_deliveries: deliveries after which an entry is dead-lettered.
        dead_letter_stream: where (default ``<stream>:dead``).
        decode_json: decode the ``data`` field as JSON (an entry whose ``data``
            is not JSON is dead-lettered with the parse error).
        ack_interval: seconds between store-less ack rounds (no ``checkpoint=``).
        info_interval: seconds between two ``XINFO GROUPS`` (statistics, and a
            ``redis_group_info`` event).
        backoff: seconds before the first reconnection attempt.
        max_backoff: the longest wait between two attempts.
        reconnect_timeout: give up (and fail) after this many seconds without
            a connection; None (default): keep trying.
        name: the node's name.
        **engine: ``capacity`` and the other engine settings (see :class:`NanoNode`).

    Raises:
        ImportError: coredis is not installed (``pip install 'nanostream-trio[redis]'``).
        ConfigError: a bad URL or option.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        group: str,
        consumer: str | None = None,
        *,
        batch_size: int = 500,
        block: float = 1.0,
        claim_idle: float = 60.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        dead_letter_stream: str | None = None,
        decode_json: bool = False,
        ack_interval: float = 1.0,
        info_interval: float = 5.0,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        reconnect_timeout: float | None = None,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _require_coredis(self.name)
        self.url = _check_url(self.name, url)
        self.stream = _check_name(self.name, "stream", stream)
        self.group = _check_name(self.name, "group", group)
        self.consumer = (
            default_consumer() if consumer is None else _check_name(self.name, "consumer", consumer)
        )
        self.dead_letter_stream = (
            f"{stream}:dead"
            if dead_letter_stream is None
            else _check_name(self.name, "dead_letter_stream", dead_letter_stream)
        )
        _check_count(self.name, "batch_size", batch_size)
        _check_count(self.name, "max_deliveries", max_deliveries)
        _check_positive(
            self.name,
            block=block,
            claim_idle=claim_idle,
            claim_interval=claim_interval,
            ack_interval=ack_interval,
            info_interval=info_interval,
            backoff=backoff,
            max_backoff=max_backoff,
            reconnect_timeout=reconnect_timeout,
        )
        self.batch_size = batch_size
        self.block = block
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval if claim_interval is not None else claim_idle / 2
        self.max_deliveries = max_deliveries
        self.decode_json = decode_json
        #: Seconds between store-less ack rounds (read by the engine; see the class docstring).
        self.ack_interval = ack_interval
        self.info_interval = info_interval
        #: What the node waits for while idle (in its ``statistics()`` entry), or None.
        self.waiting_for: str | None = None
        self._link = _Link(self, url, backoff, max_backoff, reconnect_timeout)
        # A stop must not cut a read whose entries Redis has already handed to us.
        self._link.shield = block + _SHIELD_MARGIN
        self._emitted: list[str] = []  # ids emitted since the last barrier
        # Ids emitted before a barrier, by the checkpoint that acks them.
        self._unacked: dict[int, list[str]] = {}
        self._ack_done = trio.Event()  # set (and replaced) by each ack
        self._acking: set[str] = set()  # ids of an XACK under way
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._read = self._acked = self._claimed = self._redelivered = self._dead = 0
        self._group_pending: int | None = None
        self._group_lag: int | None = None
        self._consumers: int | None = None

    def statistics(self) -> RedisSourceStatistics:
        """A snapshot of the node's counters."""
        return RedisSourceStatistics(
            entries_read=self._read,
            acked=self._acked,
            unacked=len(self._emitted) + sum(len(ids) for ids in self._unacked.values()),
            claimed=self._claimed,
            redelivered=self._redelivered,
            dead_lettered=self._dead,
            reconnects=self._link.reconnects,
            group_pending=self._group_pending,
            group_lag=self._group_lag,
            consumers=self._consumers,
        )

    def _ns_session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._link.open()

    def setup(self) -> None:
        """Start the run's counters (the client is opened by the node's session)."""
        self._reset_counters()
        self._emitted = []
        self._unacked = {}
        self._acking = set()
        self._ack_done = trio.Event()

    # -- checkpoints ----------------------------------------------------------------

    def snapshot(self) -> None:
        """A barrier passes: the ids emitted before it wait for its checkpoint.

        Nothing is stored: Redis keeps the pending list, which a restart reads.
        """
        if self._emitted:
            n = self._ns_checkpoint_n if self._ns_checkpoint_n is not None else 0
            self._unacked.setdefault(n, []).extend(self._emitted)
            self._emitted = []

    async def ack(self, n: int) -> None:
        """Checkpoint ``n`` is complete: ``XACK`` every entry emitted before its barrier.

        If Redis cannot be reached the ids wait for the next checkpoint (an
        entry left pending is delivered again, never lost).
        """
        covered = [m for m in self._unacked if m <= n]
        ids = [entry_id for m in covered for entry_id in self._unacked.pop(m)]
        if not ids:
            return
        done = 0
        self._acking.update(ids)
        try:
            while done < len(ids):
                chunk = ids[done : done + _ACK_CHUNK]
                await self._link.command(
                    "xack", self.stream, self.group, chunk, give_up_after=_ACK_TIMEOUT
                )
                done += len(chunk)
                self._acked += len(chunk)
            self._ack_done.set()
            self._ack_done = trio.Event()
        except BaseException as exc:
            # Not acked: they wait for the next checkpoint (or are delivered again).
            self._unacked.setdefault(n, [])[:0] = ids[done:]
            if not isinstance(exc, _connection_errors()):
                raise
            self.log_event(
                "redis_ack_failed",
                "warning",
                checkpoint=n,
                entries=len(ids) - done,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            self._acking.difference_update(ids)

    def _in_flight(self) -> set[str]:
        """Ids emitted and not acknowledged yet (still pending with this consumer in Redis)."""
        in_flight = set(self._emitted).union(self._acking)
        for ids in self._unacked.values():
            in_flight.update(ids)
        return in_flight

    # -- reading ----------------------------------------------------------------------

    async def generator(self) -> AsyncIterator[Any]:
        """Own pending entries, then claimed and new ones, until stopped."""
        await self._ensure_group()
        async with contextlib.aclosing(self._own_pending()) as inner:
            async for batch in inner:
                yield batch
        now = trio.current_time()
        next_claim, next_info = now, now
        reconnects = self._link.reconnects
        while True:
            if self._link.reconnects != reconnects:
                # A reply lost with the connection (XREADGROUP, XCLAIM) leaves its
                # entries pending with this consumer, never emitted: read them again.
                reconnects = self._link.reconnects
                async with contextlib.aclosing(self._own_pending()) as inner:
                    async for batch in inner:
                        yield batch
            now = trio.current_time()
            if now >= next_info:
                await self._refresh_info()
                next_info = now + self.info_interval
            if now >= next_claim:
                async with contextlib.aclosing(self._claim()) as inner:
                    async for batch in inner:
                        yield batch
                next_claim = trio.current_time() + self.claim_interval
            batch = await self._read_new()
            yield batch

    async def _ensure_group(self) -> None:
        import coredis.exceptions

        async def create(client: Any) -> bool:
            try:
                await client.xgroup_create(self.stream, self.group, "0", mkstream=True)
            except coredis.exceptions.StreamDuplicateConsumerGroupError:
                return False
            return True

        if await self._link.call("XGROUP CREATE", create):
            self.log_event(
                "redis_group_created", stream=self.stream, group=self.group, url=self.url
            )
        self.log_event(
            "redis_connected",
            url=self.url,
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
        )

    async def _call_group(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """A command on the group; a group lost with a restarted server's data is made again."""
        import coredis.exceptions

        try:
            return await self._link.command(name, *args, **kwargs)
        except coredis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.log_event(
                "redis_group_missing",
                "warning",
                stream=self.stream,
                group=self.group,
                command=name.upper(),
            )
            await self._ensure_group()
            return await self._link.command(name, *args, **kwargs)

    async def _own_pending(self) -> AsyncGenerator[Items, None]:
        """This consumer's pending entries not in flight, claimed back to itself.

        At the start they are a previous run's; after a reconnection, entries
        whose delivery reply the lost connection took.
        """
        start = "-"
        while True:
            pending = await self._call_group(
                "xpending",
                self.stream,
                self.group,
                start,
                "+",
                self.batch_size,
                consumer=self.consumer,
            )
            if not pending:
                return
            in_flight = self._in_flight()
            counts = {
                str(p.identifier): int(p.delivered)
                for p in pending
                if str(p.identifier) not in in_flight
            }
            if counts:
                async with contextlib.aclosing(self._redeliver(counts, claimed=False)) as inner:
                    async for batch in inner:
                        yield batch
            if len(pending) < self.batch_size:
                return
            start = f"({pending[-1].identifier!s}"

    async def _claim(self) -> AsyncGenerator[Items, None]:
        """Entries idle longer than ``claim_idle`` with other consumers, taken over."""
        cursor = "0-0"
        idle_ms = int(self.claim_idle * 1000)
        while True:
            # JUSTID: ownership moves to this consumer, the delivery count stays.
            reply = await self._call_group(
                "xautoclaim",
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                cursor,
                count=self.batch_size,
                justid=True,
            )
            cursor, ids = str(reply[0]), [str(entry_id) for entry_id in reply[1]]
            if ids:
                self.log_event(
                    "redis_entries_claimed",
                    stream=self.stream,
                    group=self.group,
                    entries=len(ids),
                    first=ids[0],
                    last=ids[-1],
                )
                async with contextlib.aclosing(
                    self._redeliver(await self._deliveries(ids), claimed=True)
                ) as inner:
                    async for batch in inner:
                        yield batch
            if cursor == "0-0":
                return

    async def _deliveries(self, ids: list[str]) -> dict[str, int]:
        """Delivery counts of ``ids``, pending with this consumer (``XPENDING``)."""
        # This consumer's in-flight entries may lie between them too.
        count = min(len(ids) + self.statistics().unacked + 16, 100_000)
        pending = await self._call_group(
            "xpending", self.stream, self.group, ids[0], ids[-1], count, consumer=self.consumer
        )
        wanted = set(ids)
        return {str(p.identifier): int(p.delivered) for p in pending if str(p.identifier) in wanted}

    async def _redeliver(
        self, counts: dict[str, int], *, claimed: bool
    ) -> AsyncGenerator[Items, None]:
        """Deliver pending entries again (``counts``: deliveries so far, by id).

        Entries over ``max_deliveries`` are dead-lettered. An entry on its last
        delivery goes out alone, and the next only once it is acked, so a
        poison entry that fails the run takes only itself to the dead letters,
        not the entries delivered with it.
        """
        last = [i for i, count in counts.items() if count + 1 == self.max_deliveries]
        rest = [i for i, count in counts.items() if count + 1 != self.max_deliveries]
        groups = [rest] + [[entry_id] for entry_id in last] if rest else [[i] for i in last]
        for index, ids in enumerate(groups):
            # XCLAIM to itself counts the delivery (and skips entries deleted meanwhile).
            entries = await self._call_group(
                "xclaim", self.stream, self.group, self.consumer, 0, ids
            )
            batch = await self._deliver(entries, {i: counts[i] + 1 for i in ids})
            if claimed:
                self._claimed += len(batch)
            else:
                self._redelivered += len(batch)
            if batch:
                yield batch
                if index > 0 or not rest:
                    async with contextlib.aclosing(self._until_acked()) as inner:
                        async for idle in inner:
                            yield idle

    async def _until_acked(self) -> AsyncGenerator[Items, None]:
        """Empty ``Items()`` (so barriers pass) until every entry emitted has been acked."""
        while self._emitted or self._unacked:
            with trio.move_on_after(_ACK_POLL):
                await self._ack_done.wait()
            yield Items()

    async def _read_new(self) -> Items:
        self.waiting_for = f"new entries in {self.stream!r}"
        try:
            reply = await self._call_group(
                "xreadgroup",
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=self.batch_size,
                block=int(self.block * 1000),
            )
        finally:
            self.waiting_for = None
        entries = reply.get(self.stream, ()) if reply else ()
        return await self._deliver(entries, None)

    async def _deliver(self, entries: tuple[Any, ...], deliveries: dict[str, int] | None) -> Items:
        """The entries to emit (their ids recorded); the ones over the limit dead-lettered."""
        emitted = Items()
        dead: list[tuple[Any, int, str]] = []
        for entry in entries:
            entry_id = str(entry.identifier)
            fields = entry.field_values
            if fields is None:  # deleted from the stream while pending
                continue
            count = deliveries.get(entry_id, 1) if deliveries is not None else 1
            if count > self.max_deliveries:
                why = (
                    f"delivered {count} times without being acknowledged "
                    f"(max_deliveries={self.max_deliveries})"
                )
                dead.append((entry, count, why))
                continue
            values: dict[str, Any] = dict(fields)
            if self.decode_json and "data" in values:
                try:
                    values["data"] = json.loads(values["data"])
                except ValueError as exc:
                    dead.append((entry, count, f"field 'data' is not JSON: {exc}"))
                    continue
            emitted.append(RedisEntry(values, entry_id, self.stream))
            self._emitted.append(entry_id)
        if dead:
            await self._dead_letter(dead)
        self._read += len(emitted)
        return emitted

    async def _dead_letter(self, dead: list[tuple[Any, int, str]]) -> None:
        """Add each entry to the dead-letter stream, then acknowledge it."""
        ids = [str(entry.identifier) for entry, _, _ in dead]

        async def send(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for entry, count, why in dead:
                    record = dict(entry.field_values)
                    record.update(
                        _id=str(entry.identifier),
                        _stream=self.stream,
                        _group=self.group,
                        _consumer=self.consumer,
                        _deliveries=str(count),
                        _error=why,
                    )
                    pipe.xadd(self.dead_letter_stream, record)
                pipe.xack(self.stream, self.group, ids)

        await self._link.call("XADD (dead letters)", send)
        self._dead += len(dead)
        self._acked += len(dead)
        for entry, count, why in dead:
            self.log_event(
                "redis_entry_dead_lettered",
                "warning",
                id=str(entry.identifier),
                stream=self.stream,
                dead_letter_stream=self.dead_letter_stream,
                deliveries=count,
                error=why,
            )

    async def _refresh_info(self) -> None:
        """The group's pending count and lag (``XINFO GROUPS``), for statistics."""
        groups = await self._call_group("xinfo_groups", self.stream)
        for info in groups:
            if info.get("name") == self.group:
                pending, lag, consumers = (
                    info.get("pending"),
                    info.get("lag"),
                    info.get("consumers"),
                )
                self._group_pending = int(pending) if pending is not None else None
                self._group_lag = int(lag) if lag is not None else None
                self._consumers = int(consumers) if consumers is not None else None
                self.log_event(
                    "redis_group_info",
                    stream=self.stream,
                    group=self.group,
                    pending=self._group_pending,
                    lag=self._group_lag,
                    consumers=self._consumers,
                )
                return


# -- the sink -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RedisSinkStatistics:
    """A snapshot of a :class:`RedisStreamSink`'s counters (``node.statistics()``).

    Attributes:
        entries_written: entries the server has added (``XADD``) in this run.
        batches: pipelines sent.
        buffered: items received and not sent yet.
        reconnects: times the connection was lost and made again.
    """

    entries_written: int
    batches: int
    buffered: int
    reconnects: int


def _field_value(value: Any) -> str | bytes | int | float:
    if isinstance(value, (str, bytes, int, float)) and not isinstance(value, bool):
        return value
    return json.dumps(value)


class RedisStreamSink(NanoNode):
    """A sink that adds each item to a Redis stream (``XADD``), in pipelined batches.

    A mapping item becomes the entry's fields (strings, bytes and numbers as
    they are, anything else as JSON); any other item becomes one field
    ``data`` holding its JSON (a string as it is). So a :class:`RedisEntry`
    read with ``decode_json=True`` is written back as it was read.

    Items are buffered and sent as one pipeline of ``XADD`` commands when
    ``batch_size`` are waiting, when the node has taken every item in its
    inbox, at each checkpoint barrier (``prepare``) and at the end, so the
    buffer never waits for items that are not coming and a checkpoint (or the
    source's ack) covers only entries the server has. With ``maxlen`` the
    stream is trimmed to about that many entries (``MAXLEN ~``).

    Connection loss: a send is retried with exponential backoff for
    ``reconnect_timeout`` seconds (``redis_connection_lost`` /
    ``redis_reconnected`` events); after that the error is raised from the
    item being processed, so the node's ``on_error`` policy decides
    (``"retry"`` tries again after its backoff; ``"skip"`` or
    ``"dead_letter"`` drop that one item and keep the rest for the next
    send; ``"raise"`` fails the run, and a Redis source upstream acks nothing
    more). A send that fails after the last item of a batch or at a barrier
    fails the run. A batch sent again after a lost reply may add entries
    twice (at-least-once).

    Args:
        url: the server, ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        stream: the stream's key.
        maxlen: trim the stream to about this many entries (None: no trimming).
        batch_size: the most ``XADD`` commands in one pipeline.
        backoff: seconds before the first reconnection attempt.
        max_backoff: the longest wait between two attempts.
        reconnect_timeout: seconds of failed attempts before the error is raised.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Raises:
        ImportError: coredis is not installed (``pip install 'nanostream-trio[redis]'``).
        ConfigError: a bad URL or option.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        maxlen: int | None = None,
        *,
        batch_size: int = 500,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        reconnect_timeout: float = 30.0,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        _require_coredis(self.name)
        self.url = _check_url(self.name, url)
        self.stream = _check_name(self.name, "stream", stream)
        _check_count(self.name, "batch_size", batch_size)
        if maxlen is not None:
            _check_count(self.name, "maxlen", maxlen)
        _check_positive(
            self.name, backoff=backoff, max_backoff=max_backoff, reconnect_timeout=reconnect_timeout
        )
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.waiting_for: str | None = None
        self._link = _Link(self, url, backoff, max_backoff, reconnect_timeout)
        self._buffer: list[dict[str, Any]] = []
        self._written = 0
        self._batches = 0

    def statistics(self) -> RedisSinkStatistics:
        """A snapshot of the node's counters."""
        return RedisSinkStatistics(
            entries_written=self._written,
            batches=self._batches,
            buffered=len(self._buffer),
            reconnects=self._link.reconnects,
        )

    def _ns_session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._link.open()

    def setup(self) -> None:
        """Start the run's counters (the client is opened by the node's session)."""
        self._buffer = []
        self._written = 0
        self._batches = 0

    def _fields(self, item: Any) -> dict[str, Any]:
        if isinstance(item, Mapping):
            if not item:
                msg = f"node {self.name!r} cannot add an empty mapping to stream {self.stream!r}"
                raise ValueError(msg)
            return {str(key): _field_value(value) for key, value in item.items()}
        if isinstance(item, (str, bytes)):
            return {"data": item}
        try:
            return {"data": json.dumps(item)}
        except TypeError as exc:
            msg = (
                f"node {self.name!r} writes dicts, or JSON-serializable items in a 'data' "
                f"field, to stream {self.stream!r}; got {type(item).__name__}: {short_repr(item)}"
            )
            raise TypeError(msg) from exc

    async def process_item(self, item: Any) -> None:
        """Buffer ``item``; send the buffer once it holds ``batch_size`` entries."""
        self._buffer.append(self._fields(item))
        if len(self._buffer) >= self.batch_size:
            try:
                await self._send()
            except Exception:
                # The policy decides about this item; the others stay for the next send.
                self._buffer.pop()
                raise

    async def _ns_after_batch(self) -> None:
        await self._send()

    async def prepare(self, n: int) -> dict[str, int]:
        """Checkpoint ``n``: send every item received before the barrier."""
        await self._send()
        return {"entries_written": self._written}

    async def finish(self) -> None:
        """Send the last, partial batch."""
        await self._send()

    async def _send(self) -> None:
        import coredis

        batch = self._buffer
        if not batch:
            return

        async def send(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for fields in batch:
                    if self.maxlen is None:
                        pipe.xadd(self.stream, fields)
                    else:
                        pipe.xadd(
                            self.stream,
                            fields,
                            trim_strategy=coredis.PureToken.MAXLEN,
                            threshold=self.maxlen,
                            trim_operator=coredis.PureToken.APPROXIMATELY,
                        )

        await self._link.call("XADD", send)
        self._buffer = []
        self._written += len(batch)
        self._batches += 1
