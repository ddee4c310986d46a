"""Checkpoints: aligned barriers, the coordinator, and the embedded store.

How a checkpoint goes (Flink's aligned barriers, in one process):

1. Every ``interval`` seconds of the Trio clock the :class:`Checkpointer`
   asks each running source for ``Barrier(n)`` (:meth:`NodeRun.request_barrier`).
   The source's driver puts it between two batches, after it has taken the
   source's position (its ``snapshot()``, while the generator is suspended at
   a ``yield``, so the position covers exactly what has been yielded).
2. The barrier travels in-band. An edge with several producers aligns it
   (``Edge.arrive``): a producer that has delivered it waits, the others go
   on. A node that takes ``Barrier(n)`` from its inbox has processed
   everything before it and nothing after: it reports its state
   (``snapshot()``; a sink's ``prepare(n)``) with :meth:`Checkpointer.capture`
   and forwards the barrier to all of its outputs, dead letters included. A
   fused chain reports each of its nodes in order.
3. When every node has reported ``n`` (a node that has ended counts with
   its final state), checkpoint ``n`` is written to the SQLite store in one
   transaction (:class:`CheckpointStore`, WAL mode, in a worker thread), the
   two newest are kept, and only then are sinks told ``commit(n)`` and
   sources ``ack(n)``.

When every node has ended normally (the end of the input or a graceful
stop), a last checkpoint records every node's final state, so a restart
neither repeats nor loses anything. After a failure the last complete
checkpoint stands and a restart replays from it: nodes ``restore(state)``,
sinks ``recover(n, prepared)``, each after its ``setup()`` and before its
first item.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import trio

from ._edges import Barrier
from ._exceptions import ConfigError
from ._node import Port
from ._threads import ThreadWorker

if TYPE_CHECKING:
    from ._node import NanoNode
    from ._runtime import NodeRun

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "UNSET",
    "CheckpointStore",
    "Checkpointer",
    "MemoryStore",
    "ack_interval",
    "check_checkpoint_options",
    "node_shape",
    "open_checkpointer",
]

#: ``Checkpointer.capture(state=UNSET)``: take the node's state by calling its ``snapshot()``.
UNSET: Final[Any] = object()

#: Seconds between checkpoints when ``checkpoint=`` is given without an interval.
DEFAULT_CHECKPOINT_INTERVAL: Final = 5.0

#: Checkpoints the store keeps (the newest complete one, and the one before).
KEEP: Final = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    n INTEGER PRIMARY KEY, written_at REAL NOT NULL, final INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    n INTEGER NOT NULL, node TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY (n, node)
);
"""


def node_shape(nodes: Iterable[NanoNode]) -> dict[str, dict[str, Any]]:
    """What a checkpoint must match to be restored: each node's type and inputs, by name."""
    shape: dict[str, dict[str, Any]] = {}
    for node in nodes:
        inputs = []
        for upstream in node._ns_upstream:
            if isinstance(upstream, Port):
                inputs.append(f"{upstream.node.name}.dead_letters")
            else:
                inputs.append(upstream.name)
        kind = type(node)
        shape[node.name] = {"type": f"{kind.__module__}.{kind.__qualname__}", "inputs": inputs}
    return shape


def _shape_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per node that differs between two shapes."""
    lines = []
    for name in sorted(stored.keys() | current.keys()):
        old, new = stored.get(name), current.get(name)
        if old == new:
            continue
        if old is None:
            lines.append(f"{name!r} is new (not in the checkpoint)")
        elif new is None:
            lines.append(f"{name!r} is in the checkpoint but not in this pipeline")
        elif old["type"] != new["type"]:
            lines.append(f"{name!r} was a {old['type']}, is a {new['type']}")
        else:
            lines.append(f"{name!r} had inputs {old['inputs']}, has {new['inputs']}")
    return lines


_DEFAULT_NUMBER = re.compile(r"-[0-9]+(?=\.|$)")


def _renamed_by_numbering(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, str] | None:
    """Old name -> new name, if the two shapes differ only in default name numbers.

    Nodes nobody named are called ``Class``, ``Class-2``, ... in the order a
    process creates them, so the same pipeline built twice in one process
    (a notebook, a supervisor loop, a test) gets other names the second time.
    The shapes are in pipeline order: position by position, each node must
    have the same type, the same inputs under the renaming, and a name that
    differs at most in those ``-N`` suffixes. Otherwise None.
    """
    if len(stored) != len(current):
        return None
    renamed = dict(zip(stored, current, strict=True))
    for old, new in renamed.items():
        if _DEFAULT_NUMBER.sub("", old) != _DEFAULT_NUMBER.sub("", new):
            return None
        inputs = [_rename_input(name, renamed) for name in stored[old]["inputs"]]
        if stored[old]["type"] != current[new]["type"] or inputs != current[new]["inputs"]:
            return None
    return renamed


def _rename_input(name: str, renamed: dict[str, str]) -> str:
    base, dot, port = name.partition(".dead_letters")
    if name in renamed:
        return renamed[name]
    if dot and not port and base in renamed:
        return f"{renamed[base]}.dead_letters"
    return name


class CheckpointStore:
    """One pipeline's checkpoints in an SQLite file (WAL mode), used from one worker thread.

    Args:
        path: the database file; created with its tables when missing.
        pipeline: the pipeline's name, for errors.
    """

    def __init__(self, path: str, pipeline: str) -> None:
        self.path = path
        self.pipeline = pipeline
        self._db: sqlite3.Connection | None = None
        self._worker: ThreadWorker | None = None

    async def open(self) -> None:
        """Open (or create) the database in the store's worker thread."""
        self._worker = ThreadWorker(f"nanostream-checkpoints-{self.pipeline}")
        try:
            self._db = await self._worker.run(self._connect)
        except (OSError, sqlite3.Error) as exc:
            await self.aclose()
            msg = (
                f"pipeline {self.pipeline!r}: cannot open the checkpoint store {self.path!r}: {exc}"
            )
            raise ConfigError(msg, key="checkpoint") from exc

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            msg = f"directory {directory!r} does not exist; create it or choose another path"
            raise FileNotFoundError(msg)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a checkpoint that was reported written survives a power cut too.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    async def aclose(self) -> None:
        """Close the database and join the worker thread."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            if self._db is not None:
                db, self._db = self._db, None
                with trio.CancelScope(shield=True):
                    await worker.run(db.close)
        finally:
            await worker.aclose()

    async def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        assert self._worker is not None, "the store is not open"
        # Shielded: a transaction that was started is finished, also when the
        # pipeline is being cancelled, so the file never holds half a checkpoint.
        with trio.CancelScope(shield=True):
            return await self._worker.run(func, *args)

    async def load(self) -> tuple[int, bool, dict[str, Any], dict[str, dict[str, Any]]] | None:
        """The newest complete checkpoint: ``(n, final, shape, records by node)``, or None."""
        return await self._call(self._load)  # type: ignore[no-any-return]

    def _load(self) -> tuple[int, bool, dict[str, Any], dict[str, dict[str, Any]]] | None:
        assert self._db is not None
        latest = "SELECT n, final FROM checkpoints ORDER BY n DESC LIMIT 1"
        row = self._db.execute(latest).fetchone()
        if row is None:
            return None
        n, final = row
        shape_row = self._db.execute("SELECT value FROM meta WHERE key = 'shape'").fetchone()
        shape = json.loads(shape_row[0]) if shape_row else {}
        records = {
            node: pickle.loads(record)
            for node, record in self._db.execute(
                "SELECT node, record FROM states WHERE n = ?", (n,)
            )
        }
        return n, bool(final), shape, records

    async def write(
        self, n: int, shape: dict[str, Any], records: dict[str, dict[str, Any]], final: bool
    ) -> int:
        """Write checkpoint ``n`` in one transaction, keep the newest :data:`KEEP`; return bytes."""
        blobs = {node: pickle.dumps(record, protocol=5) for node, record in records.items()}
        return await self._call(self._write, n, json.dumps(shape), blobs, final)  # type: ignore[no-any-return]

    def _write(self, n: int, shape: str, blobs: dict[str, bytes], final: bool) -> int:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('shape', ?)", (shape,))
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)", (n, time.time(), int(final))
            )
            db.executemany(
                "INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                [(n, node, blob) for node, blob in blobs.items()],
            )
            kept = [
                row[0]
                for row in db.execute("SELECT n FROM checkpoints ORDER BY n DESC LIMIT ?", (KEEP,))
            ]
            oldest = min(kept)
            db.execute("DELETE FROM checkpoints WHERE n < ?", (oldest,))
            db.execute("DELETE FROM states WHERE n < ?", (oldest,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return sum(len(blob) for blob in blobs.values())


class MemoryStore(CheckpointStore):
    """A store that keeps nothing: barrier rounds that only exist to ack sources.

    A pipeline without ``checkpoint=`` whose sources declare an
    ``ack_interval`` (RedisStreamSource) still runs barrier rounds, so that a
    source is acked once the items before a barrier have passed every node,
    sinks included. Nothing is written and nothing is restored: a restart
    starts from what the broker still holds unacked.
    """

    def __init__(self, pipeline: str) -> None:
        super().__init__("(memory)", pipeline)

    async def open(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to close."""

    async def load(self) -> None:
        """Never a checkpoint to restore."""
        await trio.lowlevel.checkpoint()

    async def write(
        self, n: int, shape: dict[str, Any], records: dict[str, dict[str, Any]], final: bool
    ) -> int:
        """Keep nothing; 0 bytes."""
        await trio.lowlevel.checkpoint()
        return 0


def ack_interval(nodes: Iterable[NanoNode]) -> float | None:
    """The shortest ``ack_interval`` the pipeline's sources declare, or None.

    A source sets an ``ack_interval`` attribute (seconds) when it must be
    acked after its items have passed the whole pipeline even without a
    checkpoint store (see :class:`MemoryStore`).
    """
    intervals = [
        interval
        for node in nodes
        if node._ns_kind == "source" and (interval := getattr(node, "ack_interval", None))
    ]
    return min(intervals) if intervals else None


def _hook(node: NanoNode, name: str) -> Callable[..., Any] | None:
    hook = getattr(node, name, None)
    return hook if callable(hook) else None


class _Pending:
    """One checkpoint in flight: who has reported, and since when."""

    def __init__(self, n: int, names: Iterable[str]) -> None:
        self.n = n
        self.started = trio.current_time()
        self.missing = set(names)
        self.records: dict[str, dict[str, Any]] = {}
        self.injected: set[str] = set()
        self.alignment = 0.0
        self.done = trio.Event()

    def add(self, name: str, record: dict[str, Any]) -> None:
        if name in self.missing:
            self.missing.discard(name)
            self.records[name] = record
            if not self.missing:
                self.done.set()


class Checkpointer:
    """Coordinates one run's checkpoints (see the module docstring).

    Args:
        store: the open store.
        interval: seconds of the Trio clock between checkpoints (None: only
            on :meth:`checkpoint_now` and at the end).
        runs: every node's run, in pipeline order.
        shape: :func:`node_shape` of the pipeline.
        log: the pipeline's logger.
    """

    def __init__(
        self,
        store: CheckpointStore,
        interval: float | None,
        runs: list[NodeRun],
        shape: dict[str, Any],
        log: Any,
    ) -> None:
        self.store = store
        self.interval = interval
        self.runs = runs
        self.shape = shape
        self.log = log
        # Rounds that only ack sources (a MemoryStore) are routine: debug events.
        self._note = log.debug if isinstance(store, MemoryStore) else log.info
        self.next_n = 1
        self.restored: dict[str, dict[str, Any]] = {}
        self.restored_n: int | None = None
        self.final: dict[str, dict[str, Any]] = {}
        self.pending: _Pending | None = None
        self.last_completed: float | None = None
        self.completed = 0
        #: Called with a moment ("after_prepare", "before_write", "after_write"),
        #: the checkpoint's number and the node's name (None for the store's
        #: moments); nanostream_testing's crash points raise there.
        self.fault: Callable[[str, int, str | None], None] | None = None
        self._lock = trio.Lock()
        for run in runs:
            run.checkpointer = self

    # -- recovery -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read the newest checkpoint; refuse one written by a pipeline of another shape."""
        loaded = await self.store.load()
        if loaded is None:
            return
        n, final, shape, records = loaded
        differences = _shape_differences(shape, self.shape)
        renamed = _renamed_by_numbering(shape, self.shape) if differences else None
        if renamed is not None:
            records = {renamed.get(name, name): record for name, record in records.items()}
        elif differences:
            msg = (
                f"pipeline {self.store.pipeline!r}: the checkpoint store {self.store.path!r} "
                f"was written by a pipeline of another shape: " + "; ".join(differences) + ". "
                "Restore with the pipeline that wrote it, or start from a new store file"
            )
            raise ConfigError(msg, key="checkpoint")
        self.restored, self.restored_n = records, n
        self.next_n = n + 1
        self.log.info(
            "checkpoint_restored",
            checkpoint=n,
            final=final,
            nodes=sorted(records),
            path=self.store.path,
        )

    async def restore_node(self, run: NodeRun) -> None:
        """Give ``run``'s node its state from the restored checkpoint (after its setup)."""
        record = self.restored.get(run.name)
        if not record:
            return
        node = run.node
        assert self.restored_n is not None
        if record.get("state") is not None and (restore := _hook(node, "restore")) is not None:
            await _call(run, restore, record["state"])
        if "prepared" in record and (recover := _hook(node, "recover")) is not None:
            await _call(run, recover, self.restored_n, record["prepared"])

    # -- taking a checkpoint ------------------------------------------------------------

    async def capture(self, run: NodeRun, barrier: Barrier | None, state: Any = UNSET) -> None:
        """Record ``run``'s part of checkpoint ``barrier.n`` (None: its final state).

        ``state``: a source's position already taken (in its thread);
        otherwise its ``snapshot()`` is called here.
        """
        node = run.node
        record: dict[str, Any] = {}
        if state is UNSET:
            node._ns_checkpoint_n = self._snapshot_n(run, barrier)
            snapshot = _hook(node, "snapshot")
            state = await _call(run, snapshot) if snapshot is not None else None
        if state is not None:
            record["state"] = state
        n = barrier.n if barrier is not None else None
        if (prepare := _hook(node, "prepare")) is not None:
            prepared_n = n if n is not None else self._final_n()
            record["prepared"] = await _call(run, prepare, prepared_n)
            if self.fault is not None:
                self.fault("after_prepare", prepared_n, run.name)
        inbox = run.inbox
        if barrier is None:
            self.final[run.name] = record
            pending = self.pending
            if pending is not None:
                pending.add(run.name, record)
            return
        if inbox is not None:
            run.alignment_seconds += inbox.last_alignment
        pending = self.pending
        if pending is not None and pending.n == n:
            if inbox is not None:
                pending.alignment = max(pending.alignment, inbox.last_alignment)
            pending.add(run.name, record)

    def _snapshot_n(self, run: NodeRun, barrier: Barrier | None) -> int:
        """The checkpoint whose ack covers the state ``run`` reports now.

        A final state completes the checkpoint in flight unless the node has
        reported that one already; then it belongs to the next.
        """
        if barrier is not None:
            return barrier.n
        pending = self.pending
        if pending is None:
            return self.next_n
        return pending.n if run.name in pending.missing else pending.n + 1

    def _final_n(self) -> int:
        # A final state completes the checkpoint in flight, if any, then the last one.
        return self.pending.n if self.pending is not None else self.next_n

    def source_injected(self, run: NodeRun, barrier: Barrier) -> None:
        """A source has put ``barrier`` on its outputs."""
        if self.pending is not None and self.pending.n == barrier.n:
            self.pending.injected.add(run.name)

    async def checkpoint_now(self) -> int | None:
        """Take a checkpoint now and wait until it is written; return its number.

        Returns None when nothing is left running to take one.
        """
        async with self._lock:
            running = [run for run in self.runs if run.name not in self.final]
            if not running:
                return None
            n = self.next_n
            self.next_n += 1
            pending = self.pending = _Pending(n, (run.name for run in self.runs))
            for name, record in self.final.items():
                pending.add(name, record)
            self._note("checkpoint_started", checkpoint=n)
            barrier = Barrier(n)
            for run in running:
                if run.node._ns_kind == "source":
                    run.request_barrier(barrier)
            # Late by more than twice the interval: something holds it up.
            patience = 2 * (self.interval or DEFAULT_CHECKPOINT_INTERVAL)
            while not pending.done.is_set():
                with trio.move_on_after(patience):
                    await pending.done.wait()
                if not pending.done.is_set():
                    self._delayed(pending)
            await self._complete(pending, final=False)
            return n

    def _delayed(self, pending: _Pending) -> None:
        sources = [
            run.name
            for run in self.runs
            if run.node._ns_kind == "source"
            and run.name not in pending.injected
            and run.name in pending.missing
        ]
        self.log.warning(
            "checkpoint_delayed",
            checkpoint=pending.n,
            waited=trio.current_time() - pending.started,
            sources_not_yielding=sources,
            waiting_for=sorted(pending.missing),
        )

    async def _complete(self, pending: _Pending, *, final: bool) -> None:
        if self.fault is not None:
            self.fault("before_write", pending.n, None)
        size = await self.store.write(pending.n, self.shape, pending.records, final)
        if self.fault is not None:
            self.fault("after_write", pending.n, None)
        self.pending = None
        self.completed += 1
        now = trio.current_time()
        self.last_completed = now
        for run in self.runs:
            # Sources are told ack(n), every other node commit(n).
            hook = _hook(run.node, "ack" if run.node._ns_kind == "source" else "commit")
            if hook is not None:
                await _call(run, hook, pending.n, in_thread=False)
        self._note(
            "checkpoint_completed",
            checkpoint=pending.n,
            final=final,
            duration=now - pending.started,
            alignment=pending.alignment,
            bytes=size,
        )

    async def run_timer(self) -> None:
        """Take a checkpoint every :attr:`interval` seconds until cancelled."""
        if self.interval is None:
            return
        while True:
            await trio.sleep(self.interval)
            if await self.checkpoint_now() is None:
                return

    async def finish(self) -> None:
        """Every node has ended normally: write the final checkpoint of their final states."""
        async with self._lock:
            if not self.final:
                return
            pending = _Pending(self.next_n, ())
            self.next_n += 1
            pending.records = dict(self.final)
            await self._complete(pending, final=True)


async def _call(run: NodeRun, hook: Callable[..., Any], *args: Any, in_thread: bool = True) -> Any:
    """Call a node's checkpoint hook: awaited if async, in its worker thread if it blocks."""
    from ._runtime import maybe_await

    worker = run.worker if in_thread else None
    note = f"in nanostream node {run.name!r}, in {getattr(hook, '__name__', 'a hook')}()"
    try:
        if worker is not None:
            result = await worker.run(hook, *args)
            return await maybe_await(result)
        return await maybe_await(hook(*args))
    except Exception as exc:
        exc.add_note(note)
        raise


def check_checkpoint_options(path: Any, interval: Any) -> tuple[str | None, float | None]:
    """Validate ``Pipeline(checkpoint=, checkpoint_interval=)``; return them normalized."""
    if path is None:
        return None, interval
    if not isinstance(path, (str, os.PathLike)):
        msg = f"Pipeline checkpoint must be a file path or None; got {path!r}"
        raise ConfigError(msg, key="checkpoint")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0
    ):
        msg = (
            "Pipeline checkpoint_interval must be a positive number of seconds, "
            f"or None for checkpoints only on checkpoint_now() and at the end; got {interval!r}"
        )
        raise ConfigError(msg, key="checkpoint_interval")
    return os.fspath(path), interval


@contextlib.asynccontextmanager
async def open_checkpointer(
    path: str | None,
    interval: float | None,
    pipeline: str,
    nodes: Iterable[NanoNode],
    runs: list[NodeRun],
    log: Any,
    fault: Callable[[str, int, str | None], None] | None = None,
) -> AsyncIterator[Checkpointer | None]:
    """The run's :class:`Checkpointer` over its open store (restored from), or None without one.

    Without a path, sources that declare an ``ack_interval`` get a
    checkpointer over a :class:`MemoryStore` at that interval.
    """
    nodes = list(nodes)
    store: CheckpointStore
    if path is None:
        interval = ack_interval(nodes)
        if interval is None:
            yield None
            return
        store = MemoryStore(pipeline)
    else:
        store = CheckpointStore(path, pipeline)
    await store.open()
    try:
        checkpointer = Checkpointer(store, interval, runs, node_shape(nodes), log)
        checkpointer.fault = fault
        await checkpointer.load()
        yield checkpointer
    finally:
        await store.aclose()
