"""SQL databases: a sink writing dict items as rows, and a source streaming query results.

* :class:`SQLSink` runs as three inner nodes. ``<name>.rows``, a sync stage
  (no await per row), checks each row and gathers lists of ``batch_size``;
  ``<name>.write`` inserts each list in one transaction, runs of rows of the
  same keys with one ``executemany`` under a savepoint (BEGIN, COMMIT and
  every call that may wait run in a worker thread; see
  :attr:`_Dialect.inline`), and writes the partial list at each checkpoint
  (``prepare``) and at the end of input. If the database refuses a row of a
  run, the run is undone and inserted row by row, and each refused row is
  handed to the third stage, named like the sink, which raises the
  database's own exception for that row alone: the sink's ``on_error``
  policy then skips, dead-letters or fails on it, while the batch's other
  rows stay written.
* :class:`SQLQuery` is an async source: blocking calls (execute, ``fetchmany``)
  go to a worker thread one at a time, rows go out ``fetch_size`` at a time
  as :class:`~nanostream_trio.Items`, so memory stays bounded whatever the
  size of the result. In incremental mode it polls every ``interval`` seconds
  for rows whose ``incremental_column`` is past the last value seen; that
  value is its checkpoint position.

``database`` is a path or ``sqlite:///path`` URL (the stdlib ``sqlite3``) or a
``postgresql://`` URL (psycopg 3, the ``[postgres]`` extra, imported only when
such a URL is used). :class:`_Dialect` holds what differs between the two.
PostgreSQL connections come from a ``psycopg_pool.ConnectionPool`` per URL,
shared by the nodes of the process that use it (:class:`_Pools`): opened by
the first node's setup, sized to the nodes holding a connection, closed (its
threads joined) by the last one's teardown.

With ``checkpoint_column``, SQLSink is effectively-once without a key: each
row carries the number of the last checkpoint before it, committed with it in
the same transaction, and ``recover(n)`` deletes the rows that came after
checkpoint ``n`` before they are replayed.
"""

from __future__ import annotations

import importlib
import operator
import os
import re
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Unpack

import trio

from .._exceptions import ConfigError
from .._items import Items
from .._node import NanoNode
from .._policy import short_repr
from .._threads import run_sync_in_thread
from ._stages import EngineOptions, _Staged

__all__ = ["SQLQuery", "SQLSink"]

DEFAULT_BATCH_SIZE = 500
DEFAULT_FETCH_SIZE = 500
#: How long a SQLite call waits for another connection's lock (sqlite3's default, 5 s).
BUSY_TIMEOUT_MS = 5000
#: Longest wait between two ``yield Items()`` of an idle SQLQuery (so barriers pass).
IDLE_YIELD = 1.0

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


# -- databases ---------------------------------------------------------------------------


class _Dialect:
    """How to connect to one kind of database and spell the SQL that differs (SQLite)."""

    kind = "sqlite"
    #: Whether an insert into the open transaction may run on the Trio thread.
    #: SQLite: yes, it touches only memory (the write lock is taken by BEGIN
    #: IMMEDIATE in a thread, and cache_spill=OFF keeps pages in memory until
    #: COMMIT, which runs in a thread). A server round trip: no.
    inline = True
    #: Errors that may mean "this row is refused" (checked further by :meth:`refuses`).
    row_errors: tuple[type[BaseException], ...] = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
        sqlite3.ProgrammingError,
        sqlite3.OperationalError,
        OverflowError,
    )

    def __init__(self, target: str) -> None:
        self.target = target

    def connect(self) -> Any:
        # isolation_level=None: we issue BEGIN and COMMIT ourselves. The
        # connection is used by worker threads, one call at a time.
        return sqlite3.connect(
            self.target,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )

    def connect_for_sink(self) -> Any:
        connection = self.connect()
        connection.execute("PRAGMA cache_spill = OFF")
        return connection

    def refuses(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by one row's insert, is about that row (not the database)."""
        if isinstance(exc, sqlite3.OperationalError):
            # A key the table has no column for; "database is locked", a
            # missing table or a full disk are not one row's fault.
            return "no column named" in str(exc) or "has no column" in str(exc)
        return isinstance(exc, self.row_errors)

    def placeholder(self, name: str) -> str:
        return f":{name}"

    def table_exists(self, connection: Any, table: str) -> bool:
        found = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return found is not None

    def delete_after(self, connection: Any, table: str, column: str, n: int) -> int:
        """Delete the rows whose ``column`` is ``n`` or more; how many there were."""
        cursor = connection.execute(f"DELETE FROM {quote(table)} WHERE {quote(column)} >= ?", (n,))
        return int(cursor.rowcount)

    def column_type(self, value: Any) -> str:
        if isinstance(value, bool | int):
            return "INTEGER"
        if isinstance(value, float):
            return "REAL"
        if isinstance(value, bytes | bytearray | memoryview):
            return "BLOB"
        if isinstance(value, str):
            return "TEXT"
        return ""  # SQLite stores anything in a column without a type

    def begin(self, connection: Any) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def try_begin(self, connection: Any) -> bool:
        """Start a transaction if no other writer holds the lock; never waits (the Trio
        thread calls it, saving a thread hop per batch). False: call :meth:`begin`."""
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            raise
        finally:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return True

    def commit(self, connection: Any) -> None:
        connection.execute("COMMIT")

    def insert_row(self, connection: Any, sql: str, values: Sequence[Any]) -> None:
        # SQLite undoes a failed statement alone; the transaction goes on.
        connection.execute(sql, values)

    def insert_many(self, connection: Any, sql: str, values: list[Any]) -> None:
        connection.executemany(sql, values)

    def connect_for_query(self) -> Any:
        return self.connect()

    def cursor(self, connection: Any) -> Any:
        return connection.cursor()

    def end_query(self, connection: Any) -> None:
        """After a query's cursor is closed: end its transaction, so the next poll sees news."""

    def close(self, connection: Any) -> None:
        connection.close()


class _PostgresDialect(_Dialect):
    """PostgreSQL through psycopg 3: a failed statement aborts the transaction, so each
    row goes in under a savepoint."""

    kind = "postgresql"
    inline = False

    def __init__(self, target: str) -> None:
        super().__init__(target)
        # Imported by name: an optional dependency (checked by _import_psycopg).
        psycopg: Any = importlib.import_module("psycopg")
        self._psycopg = psycopg
        self.row_errors = (psycopg.errors.IntegrityError, psycopg.errors.DataError)

    def connect(self) -> Any:
        return _POOLS.checkout(self.target, autocommit=True)

    def connect_for_sink(self) -> Any:
        return self.connect()

    def close(self, connection: Any) -> None:
        _POOLS.give_back(self.target, connection)

    def table_exists(self, connection: Any, table: str) -> bool:
        found = connection.execute("SELECT to_regclass(%s)", (quote(table),)).fetchone()
        return found is not None and found[0] is not None

    def delete_after(self, connection: Any, table: str, column: str, n: int) -> int:
        sql = f"DELETE FROM {quote(table)} WHERE {quote(column)} >= %s"
        return int(connection.execute(sql, (n,)).rowcount)

    def refuses(self, exc: BaseException) -> bool:
        errors = self._psycopg.errors
        if isinstance(exc, errors.UndefinedColumn | self._psycopg.DataError):
            return True
        return isinstance(exc, self.row_errors) or (
            isinstance(exc, errors.ProgrammingError) and "cannot adapt" in str(exc)
        )

    def placeholder(self, name: str) -> str:
        return f"%({name})s"

    def connect_for_query(self) -> Any:
        # A server-side cursor (the server holds the result) lives in a transaction.
        return _POOLS.checkout(self.target, autocommit=False)

    def cursor(self, connection: Any) -> Any:
        return connection.cursor(name="nanostream_query")

    def end_query(self, connection: Any) -> None:
        connection.rollback()

    def column_type(self, value: Any) -> str:
        if isinstance(value, bool):
            return "BOOLEAN"
        if isinstance(value, int):
            return "BIGINT"
        if isinstance(value, float):
            return "DOUBLE PRECISION"
        if isinstance(value, bytes | bytearray | memoryview):
            return "BYTEA"
        return "TEXT"

    def begin(self, connection: Any) -> None:
        connection.execute("BEGIN")

    def try_begin(self, connection: Any) -> bool:
        return False  # a round trip to the server: always in a worker thread

    def commit(self, connection: Any) -> None:
        connection.execute("COMMIT")

    def insert_many(self, connection: Any, sql: str, values: list[Any]) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(sql, values)

    def insert_row(self, connection: Any, sql: str, values: Sequence[Any]) -> None:
        connection.execute("SAVEPOINT nanostream_row")
        try:
            connection.execute(sql, values)
        except BaseException:
            connection.execute("ROLLBACK TO SAVEPOINT nanostream_row")
            raise
        connection.execute("RELEASE SAVEPOINT nanostream_row")


class _Pools:
    """One ``psycopg_pool.ConnectionPool`` per PostgreSQL URL, shared by the nodes using it.

    Each node holds one connection for its run (a sink's open transaction, a
    query's server-side cursor), so a pool has as many connections as nodes
    holding one: :meth:`checkout` grows it, :meth:`give_back` shrinks it and
    closes it with the last connection, joining the pool's threads. Called
    from worker threads, hence the lock.
    """

    #: Seconds to wait for a connection (the server down, or refusing more).
    TIMEOUT = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, tuple[Any, int]] = {}

    def checkout(self, target: str, *, autocommit: bool) -> Any:
        with self._lock:
            pool, users = self._pools.get(target, (None, 0))
            if pool is None:
                # A first connection of our own: an unreachable server or a refused login
                # fails now with the server's message, not after the pool's retries.
                importlib.import_module("psycopg").connect(target).close()
                pool_module: Any = importlib.import_module("psycopg_pool")
                pool = pool_module.ConnectionPool(
                    target, min_size=1, max_size=1, open=False, name="nanostream"
                )
                try:
                    pool.open(wait=True, timeout=self.TIMEOUT)
                except BaseException:
                    pool.close()
                    raise
            else:
                pool.resize(min_size=1, max_size=users + 1)
            self._pools[target] = (pool, users + 1)
        try:
            connection = pool.getconn(timeout=self.TIMEOUT)
            connection.autocommit = autocommit
        except BaseException:
            self._release(target)
            raise
        return connection

    def give_back(self, target: str, connection: Any) -> None:
        """Return ``connection`` (an open transaction is rolled back by the pool)."""
        with self._lock:
            pool, _ = self._pools[target]
        pool.putconn(connection)
        self._release(target)

    def _release(self, target: str) -> None:
        with self._lock:
            pool, users = self._pools[target]
            if users > 1:
                self._pools[target] = (pool, users - 1)
                pool.resize(min_size=1, max_size=users - 1)
                return
            del self._pools[target]
        pool.close()


_POOLS = _Pools()


def _import_psycopg(node: str) -> None:
    try:
        importlib.import_module("psycopg")
        importlib.import_module("psycopg_pool")
    except ImportError:
        msg = (
            f"node {node!r} needs psycopg and psycopg-pool for a postgresql:// database; "
            "install the extra: pip install 'nanostream-trio[postgres]'"
        )
        raise ConfigError(msg, node=node, key="database") from None


def open_dialect(node: str, database: Any) -> _Dialect:
    """The dialect for ``database`` (a path, ``sqlite:///path`` or ``postgresql://...``).

    Raises:
        ConfigError: not a path nor a URL of a supported database, or the
            ``[postgres]`` extra is missing for a postgresql URL.
    """
    if isinstance(database, os.PathLike):
        database = os.fspath(database)
    if not isinstance(database, str) or not database:
        msg = (
            f"node {node!r} got database={database!r}; expected a file path, "
            "'sqlite:///path/to/file.db' or 'postgresql://user@host/dbname'"
        )
        raise ConfigError(msg, node=node, key="database")
    scheme = _URL_SCHEME.match(database)
    if scheme is None:
        return _Dialect(database)
    name = scheme.group(1).lower()
    if name == "sqlite":
        if not database.startswith("sqlite:///") or len(database) == len("sqlite:///"):
            msg = (
                f"node {node!r} got database={database!r}; a SQLite URL has three "
                "slashes and a path: 'sqlite:///relative.db', 'sqlite:////absolute.db' "
                "or 'sqlite:///:memory:'"
            )
            raise ConfigError(msg, node=node, key="database")
        return _Dialect(database[len("sqlite:///") :])
    if name in ("postgresql", "postgres"):
        _import_psycopg(node)
        return _PostgresDialect(database)
    msg = (
        f"node {node!r} got database={database!r}: unsupported scheme {name!r}; "
        "accepted: a file path, sqlite:///..., postgresql://..."
    )
    raise ConfigError(msg, node=node, key="database")


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier, inner double quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def _check_name(node: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        msg = f"node {node!r} got {key}={value!r}; expected a non-empty name"
        raise ConfigError(msg, node=node, key=key)
    return value


def _check_size(node: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"node {node!r} got {key}={value!r}; expected a whole number, at least 1"
        raise ConfigError(msg, node=node, key=key)
    return value


# -- SQLSink ------------------------------------------------------------------------------


class _Refusal:
    """A row refused before it reached the database (not a dict, no key): its error."""

    __slots__ = ("error", "row")

    def __init__(self, row: Any, error: Exception) -> None:
        self.row = row
        self.error = error


class _SQLRows(NanoNode):
    """Checks each row and gathers rows into lists of ``batch_size`` for the writer.

    A sync stage, so the engine maps it over each batch of items without an
    await per row; the writer then inserts a whole list with ``executemany``.
    At a checkpoint barrier the partial list is sealed (``snapshot``) for the
    writer's ``prepare``, which writes it: the checkpoint covers exactly the
    rows before the barrier. At the end of input the partial list goes on.
    """

    def __init__(self, writer: _SQLWriter) -> None:
        super().__init__(on_error="raise")
        self.writer = writer
        self._pending: list[Any] = []

    def setup(self) -> None:
        self._pending = []
        self.writer.sealed.clear()

    def process_item(self, row: Any) -> Any:
        pending = self._pending
        writer = self.writer
        if not (
            type(row) is dict
            and row
            and not writer.key
            and (writer.checkpoint_column is None or writer.checkpoint_column not in row)
        ):  # the fast path above is a plain dict without a key to look for
            problem = writer.check(row)
            # A refusal keeps its place among the rows: dead letters come in input order.
            pending.append(row if problem is None else _Refusal(row, problem))
        else:
            pending.append(row)
        if len(pending) >= self.writer.batch_size:
            self._pending = []
            return pending
        return None

    def snapshot(self) -> None:
        """At a barrier: hand the partial list to the writer's ``prepare`` (no state kept)."""
        self.writer.sealed.append(self._pending)
        self._pending = []

    def finish(self) -> Any:
        pending, self._pending = self._pending, []
        return pending or None

    def teardown(self) -> None:
        self._pending = []


class _SQLWriter(NanoNode):
    """Write each list of rows in a transaction; hand on the rows the database refused."""

    def __init__(
        self,
        dialect: _Dialect,
        table: str,
        key: tuple[str, ...],
        create: bool,
        batch_size: int,
        refused: deque[tuple[Any, Exception]],
        checkpoint_column: str | None = None,
    ) -> None:
        # Its inbox holds lists of batch_size rows: one of them bounds the memory held,
        # and the stages upstream stop sooner while a COMMIT runs in its thread, so the
        # thread gets the GIL back at once when the disk is done (measured: faster than 2).
        super().__init__(capacity=1)
        self.dialect = dialect
        self.table = table
        self.key = key
        self.create = create
        self.batch_size = batch_size
        self.checkpoint_column = checkpoint_column
        #: The number of the last checkpoint before the rows now written (0: none yet).
        self.epoch = 0
        #: The SQLSink this writes for: its events carry the sink's name.
        self.owner: NanoNode = self
        self._refused = refused
        #: Partial lists sealed by the rows stage at barriers, for prepare() to write.
        self.sealed: deque[list[Any]] = deque()
        #: Rows refused while prepare() wrote a sealed list: handed on with the next output.
        self._late: list[tuple[Any, Exception]] = []
        self._connection: Any = None
        self._statements: dict[tuple[str, ...], str] = {}
        self._table_ready = False
        self._in_transaction = False
        self._uncommitted = 0
        self.rows_written = 0
        self.commits = 0

    async def setup(self) -> None:
        """Open the connection (and nothing else: the table is made from the first row)."""
        self._connection = await run_sync_in_thread(self.dialect.connect_for_sink)
        self._statements.clear()
        self._table_ready = not self.create
        self._in_transaction = False
        self._uncommitted = 0
        self._late = []
        self.epoch = 0

    async def process_item(self, work: Any) -> AsyncIterator[Any]:
        """Write a list of rows in one transaction; yield each refused row (its error queued)."""
        for row, _ in self._take_late():
            yield row
        for row, problem in await self._write(work):
            self._refused.append((row, problem))
            yield row

    def _take_late(self) -> list[tuple[Any, Exception]]:
        late, self._late = self._late, []
        self._refused.extend(late)
        return late

    async def _write(self, work: list[Any]) -> list[tuple[Any, Exception]]:
        """Insert the rows of ``work`` in a transaction and commit it; the refused rows
        (those of ``work``'s refusals too) in input order, with their errors."""
        refusals = [each for each in work if isinstance(each, _Refusal)]
        rows = [each for each in work if not isinstance(each, _Refusal)] if refusals else work
        problems: list[tuple[Any, Exception]] = []
        if rows:
            if not self._in_transaction:
                # The first BEGIN of a run goes to a thread (it may create the table, or
                # recover a crashed run's journal); later ones are tried inline first.
                if self.commits and self.dialect.try_begin(self._connection):
                    self._in_transaction = True
                else:
                    await run_sync_in_thread(self._begin, rows[0])
            if self.dialect.inline:
                problems = self._insert_many(rows)
            else:
                problems = await run_sync_in_thread(self._insert_many, rows)
            await self._commit()
        if not refusals:
            return problems
        # The database's refusals are a subsequence of ``rows``: merge the two in order.
        ordered, next_problem = [], 0
        for each in work:
            if isinstance(each, _Refusal):
                ordered.append((each.row, each.error))
            elif next_problem < len(problems) and problems[next_problem][0] is each:
                ordered.append(problems[next_problem])
                next_problem += 1
        return ordered

    def check(self, row: Any) -> Exception | None:
        """Why ``row`` cannot be written (not a dict, no key...), or None."""
        if not isinstance(row, Mapping) or not row:
            kind = "an empty mapping" if isinstance(row, Mapping) else type(row).__name__
            msg = (
                f"node {self.name!r} writes one non-empty dict per row into table "
                f"{self.table!r}; got {kind}: {short_repr(row)}"
            )
            return TypeError(msg)
        missing = [column for column in self.key if column not in row]
        if missing:
            msg = f"row has no value for key column(s) {', '.join(missing)}: {short_repr(row)}"
            return KeyError(msg)
        if self.checkpoint_column is not None and self.checkpoint_column in row:
            msg = (
                f"row has a field {self.checkpoint_column!r}, the sink's checkpoint_column "
                f"(which the sink fills itself): {short_repr(row)}; rename one of them"
            )
            return ValueError(msg)
        return None

    def _begin(self, row: Mapping[str, Any]) -> None:
        """Create the table from ``row`` if needed; start a transaction (in a worker thread:
        it may wait for another writer's lock)."""
        if not self._table_ready:
            self._create_table(row)
        self.dialect.begin(self._connection)
        self._in_transaction = True

    def _insert_many(self, rows: list[Any]) -> list[tuple[Any, Exception]]:
        """Insert ``rows`` (runs of one shape with ``executemany``); the refused rows.

        Each run goes in under a savepoint; if the database refuses any row of
        it, the run is undone and inserted row by row, which finds the
        refused rows exactly (the others are written).
        """
        problems: list[tuple[Any, Exception]] = []
        start, count = 0, len(rows)
        while start < count:
            # A run: rows with the same keys (in any order: values are taken by name).
            keys = rows[start].keys()
            end = start + 1
            while end < count and rows[end].keys() == keys:
                end += 1
            columns = tuple(rows[start])
            run = rows[start:end]
            if len(run) == 1 or not self._insert_run(columns, run):
                for row in run:
                    problem = self._insert(row)
                    if problem is not None:
                        problems.append((row, problem))
            start = end
        return problems

    def _insert_run(self, columns: tuple[str, ...], run: list[Any]) -> bool:
        """``executemany`` of rows of the same ``columns``; False if it failed (undone)."""
        sql = self._statement(columns)
        if self.dialect.kind == "sqlite":
            if len(columns) == 1:
                (column,) = columns
                values: list[Any] = [(row[column],) for row in run]
            else:
                values = list(map(operator.itemgetter(*columns), run))
            if self.checkpoint_column is not None:
                epoch = self.epoch
                values = [(*each, epoch) for each in values]
        else:
            values = [self._values(row, columns) for row in run]
            if self.checkpoint_column is not None:
                for each in values:
                    each["checkpoint"] = self.epoch
        connection = self._connection
        connection.execute("SAVEPOINT nanostream_rows")
        try:
            self.dialect.insert_many(connection, sql, values)
        except Exception:
            connection.execute("ROLLBACK TO SAVEPOINT nanostream_rows")
            connection.execute("RELEASE SAVEPOINT nanostream_rows")
            return False
        connection.execute("RELEASE SAVEPOINT nanostream_rows")
        self._uncommitted += len(run)
        return True

    def _statement(self, columns: tuple[str, ...]) -> str:
        sql = self._statements.get(columns)
        if sql is None:
            if len(self._statements) > 64:  # rows of ever-changing shapes: keep it bounded
                self._statements.clear()
            sql = self._statements[columns] = self._insert_sql(columns)
        return sql

    def _insert(self, row: Mapping[str, Any]) -> Exception | None:
        """Insert ``row`` into the open transaction; the database's error if it refuses it."""
        columns = tuple(row)
        sql = self._statement(columns)
        values = self._values(row, columns)
        if self.checkpoint_column is not None:
            if isinstance(values, dict):
                values["checkpoint"] = self.epoch
            else:
                values = (*values, self.epoch)
        try:
            self.dialect.insert_row(self._connection, sql, values)
        except Exception as exc:
            if self.dialect.refuses(exc):
                return exc
            raise
        self._uncommitted += 1
        return None

    def _values(self, row: Mapping[str, Any], columns: tuple[str, ...]) -> Any:
        if self.dialect.kind == "sqlite":
            return tuple(row.values())
        return {f"c{index}": row[column] for index, column in enumerate(columns)}

    def _insert_sql(self, columns: tuple[str, ...]) -> str:
        names = ", ".join(quote(column) for column in columns)
        if self.dialect.kind == "sqlite":
            marks = ", ".join("?" for _ in columns)
        else:
            marks = ", ".join(self.dialect.placeholder(f"c{i}") for i in range(len(columns)))
        if self.checkpoint_column is not None:
            names += ", " + quote(self.checkpoint_column)
            marks += ", " + ("?" if self.dialect.kind == "sqlite" else "%(checkpoint)s")
            columns = (*columns, self.checkpoint_column)
        sql = f"INSERT INTO {quote(self.table)} ({names}) VALUES ({marks})"
        if self.key:
            target = ", ".join(quote(column) for column in self.key)
            updates = [
                f"{quote(column)} = excluded.{quote(column)}"
                for column in columns
                if column not in self.key
            ]
            action = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
            sql += f" ON CONFLICT ({target}) {action}"
        return sql

    def _create_table(self, row: Mapping[str, Any]) -> None:
        definitions = []
        for column, value in row.items():
            kind = self.dialect.column_type(value)
            definitions.append(f"{quote(column)} {kind}".rstrip())
        if self.checkpoint_column is not None:
            kind = self.dialect.column_type(0)
            definitions.append(f"{quote(self.checkpoint_column)} {kind} NOT NULL")
        if self.key:
            definitions.append("PRIMARY KEY (" + ", ".join(quote(c) for c in self.key) + ")")
        sql = f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({', '.join(definitions)})"
        self._connection.execute(sql)
        self._table_ready = True

    async def _commit(self) -> None:
        if self._in_transaction:
            await run_sync_in_thread(self._commit_now)

    def _commit_now(self) -> None:
        self.dialect.commit(self._connection)
        self._in_transaction = False
        self.rows_written += self._uncommitted
        self._uncommitted = 0
        self.commits += 1

    async def finish(self) -> AsyncIterator[Any]:
        """Commit what is open; hand on the rows refused at the last checkpoint."""
        await self._commit()
        for row, _ in self._take_late():
            yield row

    async def prepare(self, n: int) -> dict[str, int]:
        """Checkpoint ``n``: write and commit every row received before the barrier.

        With ``checkpoint_column``, the rows after the barrier carry ``n``.
        """
        if self.sealed:
            self._late.extend(await self._write(self.sealed.popleft()))
        await self._commit()
        self.epoch = n
        return {"rows_written": self.rows_written}

    async def recover(self, n: int, prepared: dict[str, int]) -> None:
        """Restarted from checkpoint ``n``: with ``checkpoint_column``, delete the rows after it.

        They were written after barrier ``n`` (some committed by a full batch
        or by the commit of a checkpoint that was not completed), and the
        sources replay them now.
        """
        self.epoch = n
        if self.checkpoint_column is None:
            return
        deleted = await run_sync_in_thread(self._delete_after, n)
        self.owner.log_event(
            "sql_rows_recovered",
            table=self.table,
            checkpoint=n,
            rows_deleted=deleted,
        )

    def _delete_after(self, n: int) -> int:
        assert self.checkpoint_column is not None
        if not self.dialect.table_exists(self._connection, self.table):
            return 0  # the crashed run never created it
        return self.dialect.delete_after(self._connection, self.table, self.checkpoint_column, n)

    async def teardown(self) -> None:
        """Close the connection; a transaction still open (a failed run) is rolled back."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._in_transaction = False
            self._uncommitted = 0
            with trio.CancelScope(shield=True):
                await run_sync_in_thread(self.dialect.close, connection)


class _SQLRefusals(NanoNode):
    """Raise, for each refused row, the database's error: the sink's policy applies to it."""

    def __init__(self, refused: deque[tuple[Any, Exception]]) -> None:
        super().__init__()
        self._refused = refused
        self._current: tuple[Any, Exception] | None = None
        self.rows_refused = 0

    def process_item(self, row: Any) -> None:
        """Raise the error the database gave for ``row``."""
        # The writer queued (row, error) before handing the row on, and the edge keeps
        # order; a retried row finds its error in _current.
        if self._refused and self._refused[0][0] is row:
            self._current = self._refused.popleft()
            self.rows_refused += 1
        assert self._current is not None
        assert self._current[0] is row
        raise self._current[1]


class SQLSink(_Staged):
    """A sink inserting each item (a dict: column -> value) as a row of ``table``.

    Rows are inserted in a transaction that is committed every ``batch_size``
    rows, at each checkpoint and at the end of input; what may wait on the
    database (BEGIN, COMMIT, every PostgreSQL call) runs in a worker thread,
    so the node never blocks the pipeline. A run that fails or is cancelled
    rolls back the rows of its last, uncommitted batch: a batch is written
    whole or not at all. Rows of a slow trickle become visible when their
    batch is committed.

    With ``key``, each row is an upsert: ``INSERT ... ON CONFLICT (key) DO
    UPDATE`` its other columns, so writing the same row twice leaves one row.

    With ``create`` (default), the table is created if missing, with the first
    row's keys as columns (types from its values; ``key`` as primary key).

    A row the database refuses (a ``NOT NULL``, ``CHECK`` or unique
    constraint, a value of a type it cannot store, a column the table lacks)
    raises the database's own exception (``sqlite3.IntegrityError``, ...)
    for that row alone, through the node's ``on_error`` policy: with
    ``"skip"`` or ``"dead_letter"`` the other rows of the batch are written
    and the dead letter carries the row and the database's message. An item
    that is not a dict raises ``TypeError``, a row without the key columns
    ``KeyError``, the same way. Errors of the database itself (locked, gone,
    a missing table with ``create=False``) fail the pipeline.

    Delivery: at-least-once. A restart from a checkpoint replays the items
    after it, and rows committed after that checkpoint are written again;
    with ``key=`` the replay overwrites them with the same values
    (effectively-once). With ``checkpoint_column`` it is effectively-once
    without a key: each row gets, in that column, the number of the last
    checkpoint before it (written in the row's own transaction), and a
    restart from checkpoint ``n`` first deletes the rows whose number is
    ``n`` or more, those the sources are about to replay. The table then
    needs that column (``create`` adds it); other writers' rows must leave
    it NULL, or be lost at a recovery.

    Args:
        database: a file path or ``sqlite:///path`` URL (SQLite), or a
            ``postgresql://`` URL (needs the ``[postgres]`` extra).
        table: the table's name.
        key: the column (or columns) identifying a row, for upserts.
        create: create the table from the first row if it does not exist.
        batch_size: rows per transaction.
        checkpoint_column: a column for the checkpoint number of each row,
            for effectively-once delivery without ``key`` (None: not written).
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).

    Raises:
        ConfigError: a bad ``database`` URL, table, key, checkpoint column or batch size.

    Example::

        FakeSource([{"id": 1, "name": "ada"}]) > SQLSink("users.db", "users", key="id")
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        create: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        checkpoint_column: str | None = None,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        label = name or "SQLSink"
        self.dialect = open_dialect(label, database)
        self.table = _check_name(label, "table", table)
        keys = (key,) if isinstance(key, str) else tuple(key or ())
        for column in keys:
            _check_name(label, "key", column)
        self.key = keys
        self.batch_size = _check_size(label, "batch_size", batch_size)
        if checkpoint_column is not None:
            _check_name(label, "checkpoint_column", checkpoint_column)
            if checkpoint_column in keys:
                msg = (
                    f"node {label!r} got checkpoint_column={checkpoint_column!r}, which is "
                    "also a key column; name a column of its own"
                )
                raise ConfigError(msg, node=label, key="checkpoint_column")
        self.checkpoint_column = checkpoint_column
        refused: deque[tuple[Any, Exception]] = deque()
        self.writer = _SQLWriter(
            self.dialect, self.table, keys, create, batch_size, refused, checkpoint_column
        )
        self.writer.owner = self
        self.rows = _SQLRows(self.writer)
        self.refusals = _SQLRefusals(refused)
        self._ns_set_stages(
            [("rows", self.rows), ("write", self.writer), ("refused", self.refusals)],
            self.refusals,
        )
        super().__init__(name, **engine)

    @property
    def rows_written(self) -> int:
        """Rows committed in the last run (refused rows excluded)."""
        return self.writer.rows_written

    @property
    def rows_refused(self) -> int:
        """Rows the database refused in the last run."""
        return self.refusals.rows_refused

    @property
    def commits(self) -> int:
        """Transactions committed in the last run."""
        return self.writer.commits


# -- SQLQuery -----------------------------------------------------------------------------


class SQLQuery(NanoNode):
    """A source running ``query`` and emitting each row as a dict (column -> value).

    The result is read ``fetch_size`` rows at a time from a cursor, each
    chunk handed on as soon as it is read, so a large table streams in
    bounded memory. The blocking calls run in a worker thread.

    Once (default, ``interval=None``), the query runs and the source ends
    after its last row. Incremental (``incremental_column`` given), the
    source remembers the column's value in the last row emitted and asks
    only for later rows: either ``query`` uses the parameter ``:last``
    (``%(last)s`` for PostgreSQL) itself, e.g. ``SELECT * FROM events
    WHERE id > :last ORDER BY id``, or it is wrapped as ``SELECT * FROM
    (query) WHERE col > :last ORDER BY col``. With ``interval``, the
    query is run again every ``interval`` seconds after a run ends, forever
    (until the pipeline stops); without it the source ends after one run.
    The column must grow with every new row (an id, an insertion time).

    Checkpoints: the position is the last value seen (``snapshot()`` /
    ``restore()``); a restart asks for the rows after it. While waiting
    between polls the source yields an empty ``Items()`` every second, so
    barriers pass.

    Args:
        database: a file path or ``sqlite:///path`` URL, or a
            ``postgresql://`` URL (needs the ``[postgres]`` extra).
        query: the SQL query.
        params: its parameters (a mapping for named ones, a sequence for ``?``).
        interval: seconds between the end of a run and the next (incremental mode).
        incremental_column: the column whose last value is the position.
        start: the value before the first row, for ``:last`` on the first run
            (default None: the first run of a wrapped query takes every row).
        fetch_size: rows per fetch.
        name: the node's name.
        **engine: ``capacity`` (see :class:`NanoNode`).

    Raises:
        ConfigError: a bad ``database`` URL, query, interval or fetch size.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        query: str,
        *,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        interval: float | None = None,
        incremental_column: str | None = None,
        start: Any = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        self.dialect = open_dialect(self.name, database)
        self.query = _check_name(self.name, "query", query)
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0
        ):
            msg = f"node {self.name!r} got interval={interval!r}; expected seconds > 0 or None"
            raise ConfigError(msg, node=self.name, key="interval")
        if interval is not None and incremental_column is None:
            msg = (
                f"node {self.name!r} got interval={interval!r} without incremental_column; "
                "polling needs the column that tells new rows from rows already emitted"
            )
            raise ConfigError(msg, node=self.name, key="interval")
        if incremental_column is not None:
            _check_name(self.name, "incremental_column", incremental_column)
            if params is not None and not isinstance(params, Mapping):
                msg = (
                    f"node {self.name!r}: incremental mode passes ':last' as a named "
                    f"parameter, so params must be a mapping; got {short_repr(params)}"
                )
                raise ConfigError(msg, node=self.name, key="params")
        self.params = params
        self.interval = interval
        self.incremental_column = incremental_column
        self.fetch_size = _check_size(self.name, "fetch_size", fetch_size)
        self.last: Any = start
        #: Fetches made in the last run (``fetchmany`` calls), and rows emitted.
        self.fetches = 0
        self.rows_emitted = 0

    def snapshot(self) -> Any:
        """The position: the incremental column's last value emitted (None if not incremental)."""
        if self.incremental_column is None:
            return None
        return {"last": self.last}

    def restore(self, state: Any) -> None:
        """Continue after the position :meth:`snapshot` returned."""
        self.last = state["last"]

    def _statement(self) -> tuple[str, Any]:
        column = self.incremental_column
        if column is None:
            return self.query, self.params
        params = dict(self.params or {})
        mark = self.dialect.placeholder("last")
        if mark in self.query:
            params["last"] = self.last
            return self.query, params
        inner = self.query.strip().rstrip(";")
        where = ""
        if self.last is not None:
            where = f" WHERE {quote(column)} > {mark}"
            params["last"] = self.last
        sql = f"SELECT * FROM ({inner}) AS nanostream_q{where} ORDER BY {quote(column)}"
        return sql, params

    async def generator(self) -> AsyncIterator[Any]:
        """Emit the rows of each run of the query; wait ``interval`` between runs."""
        connection = await run_sync_in_thread(self.dialect.connect_for_query)
        try:
            while True:
                # aclosing: a stop while we are suspended in a yield closes the
                # inner generator (and its cursor) now, not at garbage collection.
                async with aclosing(self._run_once(connection)) as chunks:
                    async for rows in chunks:
                        yield rows
                if self.interval is None:
                    return
                async with aclosing(self._wait(self.interval)) as pauses:
                    async for idle in pauses:
                        yield idle
        finally:
            with trio.CancelScope(shield=True):
                await run_sync_in_thread(self.dialect.close, connection)

    async def _run_once(self, connection: Any) -> AsyncGenerator[Items, None]:
        sql, params = self._statement()
        cursor = await run_sync_in_thread(_execute, self.dialect, connection, sql, params)
        try:
            columns: list[str] | None = None
            while True:
                chunk = await run_sync_in_thread(cursor.fetchmany, self.fetch_size)
                self.fetches += 1
                if not chunk:
                    return
                if columns is None:
                    columns = [description[0] for description in cursor.description]
                rows = Items(dict(zip(columns, values, strict=True)) for values in chunk)
                if self.incremental_column is not None:
                    self.last = self._last_value(rows[-1])
                self.rows_emitted += len(rows)
                yield rows  # the position covers these rows already
        finally:
            with trio.CancelScope(shield=True):
                await run_sync_in_thread(_end_query, self.dialect, connection, cursor)

    def _last_value(self, row: dict[str, Any]) -> Any:
        column = self.incremental_column
        assert column is not None
        try:
            return row[column]
        except KeyError:
            msg = (
                f"node {self.name!r}: incremental_column {column!r} is not a column of "
                f"the query's result; columns: {', '.join(row)}"
            )
            raise ConfigError(msg, node=self.name, key="incremental_column") from None

    async def _wait(self, seconds: float) -> AsyncGenerator[Items, None]:
        """Sleep ``seconds``, yielding an empty Items at least every IDLE_YIELD seconds."""
        deadline = trio.current_time() + seconds
        while (left := deadline - trio.current_time()) > 0:
            await trio.sleep(min(left, IDLE_YIELD))
            yield Items()


def _end_query(dialect: _Dialect, connection: Any, cursor: Any) -> None:
    cursor.close()
    dialect.end_query(connection)


def _execute(dialect: _Dialect, connection: Any, sql: str, params: Any) -> Any:
    cursor = dialect.cursor(connection)
    if params is None:  # no parameters: a literal % or ? in the SQL stays as it is
        cursor.execute(sql)
    else:
        cursor.execute(sql, params)
    return cursor
