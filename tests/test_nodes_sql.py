"""Tests of SQLSink (batches, transactions, upserts, refused rows, checkpoints) and SQLQuery
(streaming, incremental polling, positions) against real SQLite files."""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from _postgres import postgres_server, skip_reason

from nanostream_testing import (
    CollectingSink,
    Crash,
    FakeSource,
    Raise,
    capture_events,
    crash_at,
    run_pipeline_async,
)
from nanostream_trio import ConfigError, DeadLetter, NanoNode, Pipeline, load_pipeline_text
from nanostream_trio.nodes import SQLQuery, SQLSink


def rows_of(path: Path, sql: str = "SELECT * FROM t ORDER BY rowid") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def make_table(path: Path, ddl: str, rows: list[tuple[Any, ...]] = ()) -> None:  # type: ignore[assignment]
    with sqlite3.connect(path) as connection:
        connection.execute(ddl)
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            connection.executemany(f"INSERT INTO t VALUES ({marks})", rows)


def people(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"p{i}"} for i in range(start, start + count)]


class Recorder(CollectingSink):
    """Keeps what arrives; nothing arriving is a legitimate outcome in these tests."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, allow_empty=True)


class TestConfiguration:
    """Bad arguments are refused at construction, naming the node and the argument."""

    @pytest.mark.parametrize("database", ["mysql://db/x", "sqlite://x.db", "sqlite:///", "", 42])
    def test_bad_database_is_a_config_error(self, database: Any) -> None:
        """An unsupported scheme, a SQLite URL without three slashes, or no path at all."""
        with pytest.raises(ConfigError) as caught:
            SQLSink(database, "t", name="store")
        assert caught.value.node == "store"
        assert caught.value.key == "database"
        assert "store" in str(caught.value)
        assert repr(database) in str(caught.value)

    def test_query_bad_database_is_a_config_error(self) -> None:
        """SQLQuery checks its database the same way."""
        with pytest.raises(ConfigError, match="unsupported scheme 'mongodb'") as caught:
            SQLQuery("mongodb://x", "SELECT 1", name="read")
        assert (caught.value.node, caught.value.key) == ("read", "database")

    def test_postgres_without_the_extra_names_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A postgresql URL without psycopg installed says which extra to install."""
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(ConfigError, match=r"nanostream-trio\[postgres\]") as caught:
            SQLSink("postgresql://localhost/db", "t", name="pg")
        assert (caught.value.node, caught.value.key) == ("pg", "database")

    @pytest.mark.parametrize(
        ("kwargs", "key"),
        [({"batch_size": 0}, "batch_size"), ({"key": ""}, "key"), ({"table": ""}, "table")],
    )
    def test_bad_sink_arguments(self, tmp_path: Path, kwargs: dict[str, Any], key: str) -> None:
        """A batch size below 1, an empty key or table name."""
        arguments: dict[str, Any] = {"table": "t", **kwargs}
        with pytest.raises(ConfigError) as caught:
            SQLSink(tmp_path / "x.db", name="s", **arguments)
        assert caught.value.key == key

    def test_interval_needs_an_incremental_column(self, tmp_path: Path) -> None:
        """Polling without a column to tell new rows from old ones would repeat every row."""
        with pytest.raises(ConfigError, match="incremental_column") as caught:
            SQLQuery(tmp_path / "x.db", "SELECT 1", interval=5)
        assert caught.value.key == "interval"


class TestSinkBatches:
    """Rows are written in transactions of batch_size rows; a failed run keeps no partial batch."""

    async def test_rows_are_committed_per_batch(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Seven rows in batches of three: three commits (the last partial at the end)."""
        database = tmp_path / "out.db"
        sink = SQLSink(database, "t", batch_size=3)
        await run_pipeline_async(FakeSource(people(7)) > sink)
        assert rows_of(database) == [(i, f"p{i}") for i in range(1, 8)]
        assert (sink.rows_written, sink.commits, sink.rows_refused) == (7, 3, 0)

    async def test_sqlite_url(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """A sqlite:/// URL names the same file as its path."""
        database = tmp_path / "out.db"
        await run_pipeline_async(FakeSource(people(2)) > SQLSink(f"sqlite:///{database}", "t"))
        assert rows_of(database) == [(1, "p1"), (2, "p2")]

    async def test_a_crash_mid_batch_leaves_no_partial_batch(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Five rows in batches of three, then the source fails: only the first batch is there."""
        database = tmp_path / "out.db"
        script: list[Any] = [*people(5), Raise(OSError("feed gone"))]
        sink = SQLSink(database, "t", batch_size=3)
        with pytest.raises(OSError, match="feed gone"):
            await run_pipeline_async(FakeSource(script, interval=1) > sink)
        assert rows_of(database) == [(1, "p1"), (2, "p2"), (3, "p3")]

    async def test_uncommitted_rows_are_invisible_to_readers(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """While a batch is open, another connection sees only the committed rows."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT)")
        seen: list[int] = []

        class Peek(NanoNode):
            def process_item(self, item: Any) -> Any:
                seen.append(rows_of(database, "SELECT count(*) FROM t")[0][0])
                return item

        source = FakeSource(people(4), interval=1)
        source > SQLSink(database, "t", batch_size=2)
        source > Peek() > Recorder()
        await run_pipeline_async(source)
        # Peek looks half a step behind the sink at most: counts are whole batches.
        assert len(seen) == 4
        assert all(count % 2 == 0 for count in seen)
        assert rows_of(database, "SELECT count(*) FROM t") == [(4,)]


class TestUpsert:
    """With key=, a row whose key exists replaces that row's other columns."""

    async def test_last_row_per_key_wins(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """Three rows for two ids leave two rows, with the later values."""
        database = tmp_path / "out.db"
        rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1, "name": "c"}]
        await run_pipeline_async(FakeSource(rows) > SQLSink(database, "t", key="id"))
        assert rows_of(database, "SELECT * FROM t ORDER BY id") == [(1, "c"), (2, "b")]

    async def test_composite_key_and_rerun(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """A two-column key; running the same input twice leaves the same table."""
        database = tmp_path / "out.db"
        rows = [{"day": d, "city": c, "n": d * 10} for d in (1, 2) for c in ("x", "y")]
        for _ in range(2):
            sink = SQLSink(database, "t", key=("day", "city"), batch_size=3)
            await run_pipeline_async(FakeSource(rows) > sink)
        assert rows_of(database, "SELECT * FROM t ORDER BY day, city") == [
            (1, "x", 10),
            (1, "y", 10),
            (2, "x", 20),
            (2, "y", 20),
        ]

    async def test_rows_of_only_key_columns_are_kept_once(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A row with nothing but its key is inserted once (DO NOTHING on conflict)."""
        database = tmp_path / "out.db"
        await run_pipeline_async(
            FakeSource([{"id": 1}, {"id": 1}]) > SQLSink(database, "t", key="id")
        )
        assert rows_of(database) == [(1,)]


class TestCreateTable:
    """The table is made from the first row, or must exist with create=False."""

    async def test_columns_and_types_from_the_first_row(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Each key of the first row is a column typed after its value; key= is the primary key."""
        database = tmp_path / "out.db"
        row = {"id": 1, "name": "ada", "score": 1.5, "blob": b"\x00", "note": None}
        await run_pipeline_async(FakeSource([row]) > SQLSink(database, "t", key="id"))
        columns = rows_of(database, "SELECT name, type, pk FROM pragma_table_info('t')")
        assert columns == [
            ("id", "INTEGER", 1),
            ("name", "TEXT", 0),
            ("score", "REAL", 0),
            ("blob", "BLOB", 0),
            ("note", "", 0),
        ]

    async def test_an_existing_table_is_used_as_it_is(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Rows go into an existing table whose columns come in another order."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (name TEXT, id INTEGER)", [("old", 0)])
        await run_pipeline_async(FakeSource(people(1)) > SQLSink(database, "t"))
        assert rows_of(database) == [("old", 0), ("p1", 1)]

    async def test_a_missing_table_without_create_fails_the_run(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """create=False and no table: the database's error, not a refused row."""
        database = tmp_path / "out.db"
        sink = SQLSink(database, "t", create=False, on_error="skip")
        with pytest.raises(sqlite3.OperationalError, match="no such table: t"):
            await run_pipeline_async(FakeSource(people(1)) > sink)

    async def test_odd_names_are_quoted(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """Table and column names with spaces and quotes are identifiers, not SQL."""
        database = tmp_path / "out.db"
        row = {'my "col"': 1, "select": 2}
        await run_pipeline_async(FakeSource([row]) > SQLSink(database, "my table"))
        assert rows_of(database, 'SELECT "my ""col""", "select" FROM "my table"') == [(1, 2)]


class TestRefusedRows:
    """A row the database refuses goes through the sink's policy; the other rows are written."""

    async def test_not_null_row_is_dead_lettered_with_the_database_message(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """The dead letter carries the row and sqlite's message; its batch's other rows land."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT NOT NULL)")
        bad = {"id": 2, "name": None}
        rows = [{"id": 1, "name": "a"}, bad, {"id": 3, "name": "c"}]
        sink, letters = SQLSink(database, "t", batch_size=10, name="store"), Recorder()
        sink.dead_letters > letters
        await run_pipeline_async(FakeSource(rows) > sink)
        assert rows_of(database) == [(1, "a"), (3, "c")]
        (letter,) = letters.items
        assert isinstance(letter, DeadLetter)
        assert letter.item is bad
        assert letter.node == "store"
        assert letter.exc_type == "IntegrityError"
        assert letter.message == "NOT NULL constraint failed: t.name"
        assert (sink.rows_written, sink.rows_refused) == (2, 1)

    async def test_check_constraint_row_is_skipped(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """With skip, an item_skipped event names the row and the constraint."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER, n INTEGER CHECK (n >= 0))")
        rows = [{"id": 1, "n": 5}, {"id": 2, "n": -1}, {"id": 3, "n": 0}]
        sink = SQLSink(database, "t", batch_size=2, on_error="skip")
        with capture_events() as events:
            await run_pipeline_async(Pipeline(FakeSource(rows) > sink, logger=events.logger()))
        assert rows_of(database) == [(1, 5), (3, 0)]
        (skipped,) = events.of("item_skipped")
        assert skipped["item"] == repr({"id": 2, "n": -1})
        assert "CHECK constraint failed" in skipped["error"]

    async def test_rows_of_other_shapes_and_types(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """An unknown column, an unstorable value, a non-dict item, a missing key: each refused."""
        database = tmp_path / "out.db"
        rows: list[Any] = [
            {"id": 1, "name": "a"},
            {"id": 2, "name": "b", "extra": 1},
            {"id": 3, "name": {"nested": True}},
            "not a row",
            {"name": "keyless"},
            {"id": 4, "name": "d"},
        ]
        sink, letters = SQLSink(database, "t", key="id"), Recorder()
        sink.dead_letters > letters
        await run_pipeline_async(FakeSource(rows) > sink)
        assert rows_of(database) == [(1, "a"), (4, "d")]
        found = [(letter.item, letter.exc_type) for letter in letters.items]
        assert found == [
            (rows[1], "OperationalError"),
            (rows[2], "ProgrammingError"),
            (rows[3], "TypeError"),
            (rows[4], "KeyError"),
        ]
        assert "has no column named extra" in letters.items[0].message

    async def test_a_refused_row_written_at_a_checkpoint_is_dead_lettered(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Batches never fill, so rows are written at the barriers: a refusal there still
        reaches the policy, and every other row is written."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT NOT NULL)")
        rows: list[Any] = people(30)
        rows[12] = {"id": 13, "name": None}
        sink = SQLSink(database, "t", create=False, batch_size=1000, on_error="dead_letter")
        letters = Recorder()
        _ = sink.dead_letters > letters
        await run_pipeline_async(
            Pipeline(
                FakeSource(rows, interval=0.1) > sink,
                checkpoint=tmp_path / "state.db",
                checkpoint_interval=1.0,
            )
        )
        ids = [row[0] for row in rows_of(database, "SELECT id FROM t ORDER BY rowid")]
        assert ids == [i for i in range(1, 31) if i != 13]
        [letter] = letters.items
        assert letter.item == {"id": 13, "name": None}
        assert "NOT NULL" in letter.message
        assert sink.commits >= 3  # at the barriers, not one commit at the end

    async def test_rows_with_the_same_keys_in_another_order_keep_their_values(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """One executemany takes values by column name, whatever each dict's key order."""
        database = tmp_path / "out.db"
        rows = [{"id": 1, "name": "a"}, {"name": "b", "id": 2}, {"id": 3, "name": "c"}]
        await run_pipeline_async(FakeSource(rows) > SQLSink(database, "t"))
        assert rows_of(database, "SELECT id, name FROM t ORDER BY rowid") == [
            (1, "a"),
            (2, "b"),
            (3, "c"),
        ]

    async def test_a_refused_row_fails_the_run_by_default(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Under the default policy the run fails with the database's exception, noted."""
        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT NOT NULL)")
        with pytest.raises(sqlite3.IntegrityError) as caught:
            await run_pipeline_async(
                FakeSource([{"id": 1, "name": None}]) > SQLSink(database, "t", name="store")
            )
        assert any("'store'" in note for note in caught.value.__notes__)


class TestSinkCheckpoints:
    """At a checkpoint the sink commits what it has; replays are effectively-once with key=."""

    async def test_a_checkpoint_commits_a_partial_batch(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A crash after checkpoints: rows before the last one are committed, the rest not."""
        database = tmp_path / "out.db"
        script: list[Any] = [*people(30), Crash()]
        pipeline = Pipeline(
            FakeSource(script, interval=0.1, name="source")
            > SQLSink(database, "t", batch_size=1000, name="store"),
            checkpoint=tmp_path / "state.db",
            checkpoint_interval=1.0,
        )
        with pytest.raises(Exception, match="crash"):
            await run_pipeline_async(pipeline)
        count = rows_of(database, "SELECT count(*) FROM t")[0][0]
        assert 0 < count < 30

    async def test_replay_with_key_writes_each_row_once(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A crash after the sink prepared: the restart replays rows, the upsert absorbs them."""
        database = tmp_path / "out.db"
        script: list[Any] = people(40)

        def build(key: str | None) -> Pipeline:
            return Pipeline(
                FakeSource(script, interval=0.1, name="source")
                > SQLSink(database, "t", key=key, batch_size=1000, name="store"),
                checkpoint=tmp_path / f"state-{key}.db",
                checkpoint_interval=1.0,
            )

        first = build("id")
        crash_at(first, "after_prepare", checkpoint=2)
        with pytest.raises(Exception, match="simulated crash"):
            await run_pipeline_async(first)
        await run_pipeline_async(build("id"))
        assert rows_of(database, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(1, 41)]

    async def test_replay_without_key_is_at_least_once(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """The same crash without a key: every row is there, some twice."""
        database = tmp_path / "out.db"

        def build() -> Pipeline:
            return Pipeline(
                FakeSource(people(40), interval=0.1, name="source")
                > SQLSink(database, "t", batch_size=1000, name="store"),
                checkpoint=tmp_path / "state.db",
                checkpoint_interval=1.0,
            )

        first = build()
        crash_at(first, "after_prepare", checkpoint=2)
        with pytest.raises(Exception, match="simulated crash"):
            await run_pipeline_async(first)
        await run_pipeline_async(build())
        ids = [row[0] for row in rows_of(database, "SELECT id FROM t")]
        assert set(ids) == set(range(1, 41))
        assert len(ids) > 40


class TestCheckpointColumn:
    """With checkpoint_column, a replay without key= writes each row exactly once."""

    @pytest.mark.parametrize("moment", ["after_prepare", "before_write", "after_write"])
    async def test_a_crash_at_any_moment_of_a_checkpoint_leaves_each_row_once(
        self, nanostream_clock: Any, tmp_path: Path, moment: Any
    ) -> None:
        """The rows committed at a checkpoint the store never got are deleted, then replayed."""
        database = tmp_path / "out.db"

        def build() -> Pipeline:
            return Pipeline(
                FakeSource(people(40), interval=0.1, name="source")
                > SQLSink(database, "t", batch_size=1000, checkpoint_column="ckpt", name="store"),
                checkpoint=tmp_path / "state.db",
                checkpoint_interval=1.0,
            )

        first = build()
        crash_at(first, moment, checkpoint=2)
        with pytest.raises(Exception, match="simulated crash"):
            await run_pipeline_async(first)
        restored = 2 if moment == "after_write" else 1
        past = rows_of(database, f"SELECT count(*) FROM t WHERE ckpt >= {restored}")[0][0]
        assert past > 0 or moment == "after_write"
        with capture_events() as events:
            await run_pipeline_async(build())
        assert rows_of(database, "SELECT id FROM t ORDER BY rowid") == [(i,) for i in range(1, 41)]
        [recovered] = [e for e in events if e["event"] == "sql_rows_recovered"]
        assert recovered["node"] == "store"
        assert (recovered["checkpoint"], recovered["rows_deleted"]) == (restored, past)

    async def test_rows_committed_by_full_batches_after_the_checkpoint_are_deleted(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Full batches commit rows past the last checkpoint; a restart deletes and replays them."""
        database = tmp_path / "out.db"
        script: list[Any] = [*people(27), Crash(), *people(13, start=28)]

        def build() -> Pipeline:
            return Pipeline(
                FakeSource(script, interval=0.1, name="source")
                > SQLSink(database, "t", batch_size=3, checkpoint_column="ckpt", name="store"),
                checkpoint=tmp_path / "state.db",
                checkpoint_interval=1.0,
            )

        with capture_events() as events, pytest.raises(Exception, match="crash"):
            await run_pipeline_async(build())
        last = max(e["checkpoint"] for e in events if e["event"] == "checkpoint_completed")
        past = rows_of(database, f"SELECT count(*) FROM t WHERE ckpt >= {last}")[0][0]
        assert past >= 3  # rows after the last checkpoint, committed by a full batch
        await run_pipeline_async(build())
        assert rows_of(database, "SELECT id FROM t ORDER BY rowid") == [(i,) for i in range(1, 41)]
        marks = [row[0] for row in rows_of(database, "SELECT ckpt FROM t ORDER BY rowid")]
        assert marks == sorted(marks)

    async def test_the_column_is_created_and_filled_without_checkpoints(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Without a checkpoint store every row carries 0, and nothing is ever deleted."""
        database = tmp_path / "out.db"
        for _ in range(2):
            await run_pipeline_async(
                FakeSource(people(3)) > SQLSink(database, "t", checkpoint_column="ckpt")
            )
        assert rows_of(database, "SELECT id, ckpt FROM t ORDER BY rowid") == [
            (1, 0),
            (2, 0),
            (3, 0),
            (1, 0),
            (2, 0),
            (3, 0),
        ]

    async def test_a_row_with_the_columns_name_is_refused(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A row that has a field named like the column goes to the sink's policy."""
        letters = Recorder()
        sink = SQLSink(tmp_path / "out.db", "t", checkpoint_column="ckpt", on_error="dead_letter")
        _ = sink.dead_letters > letters
        await run_pipeline_async(FakeSource([{"id": 1, "ckpt": 5}, {"id": 2}]) > sink)
        assert rows_of(tmp_path / "out.db", "SELECT id FROM t") == [(2,)]
        [letter] = letters.items
        assert isinstance(letter, DeadLetter)
        assert "checkpoint_column" in letter.message

    def test_bad_checkpoint_column_is_a_config_error(self) -> None:
        """An empty name, or a key column, is refused naming checkpoint_column."""
        for bad in ("", "id"):
            with pytest.raises(ConfigError) as caught:
                SQLSink("x.db", "t", key="id", checkpoint_column=bad, name="store")
            assert caught.value.key == "checkpoint_column"

    async def test_from_a_pipeline_file(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """checkpoint_column is an argument like the others in a pipeline file."""
        text = f"""
name: to-sql
nodes:
  - name: source
    class: FakeSource
    args: {{items: [{{id: 1}}, {{id: 2}}]}}
  - name: store
    class: SQLSink
    args: {{database: "{tmp_path / "out.db"}", table: t, checkpoint_column: ckpt}}
links:
  - [source, store]
"""
        await run_pipeline_async(load_pipeline_text(text))
        assert rows_of(tmp_path / "out.db", "SELECT id, ckpt FROM t") == [(1, 0), (2, 0)]


class FetchWatcher(NanoNode):
    """Records, per row, how many fetches its source had made when the row arrived."""

    def __init__(self, query: SQLQuery) -> None:
        super().__init__()
        self.query = query
        self.fetches_seen: list[int] = []

    def process_item(self, item: Any) -> None:
        self.fetches_seen.append(self.query.fetches)


class TestQueryStreaming:
    """A query's rows stream from a cursor, fetch_size at a time."""

    async def test_large_table_streams_in_bounded_chunks(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """20 000 rows at 100 per fetch: 201 fetches, the first rows out before the 10th fetch."""
        database = tmp_path / "big.db"
        make_table(
            database, "CREATE TABLE t (id INTEGER, v TEXT)", [(i, "x") for i in range(20_000)]
        )
        query = SQLQuery(database, "SELECT id, v FROM t ORDER BY id", fetch_size=100)
        watcher = FetchWatcher(query)
        await run_pipeline_async(query > watcher)
        assert len(watcher.fetches_seen) == 20_000
        assert query.fetches == 201  # the last one finds the end
        assert watcher.fetches_seen[0] < 10
        assert query.rows_emitted == 20_000

    async def test_rows_are_dicts_and_params_bind(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Named parameters bind; each row is a dict of column to value."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT)", [(1, "a"), (2, "b")])
        sink = Recorder()
        query = SQLQuery(database, "SELECT * FROM t WHERE id = :id", params={"id": 2})
        await run_pipeline_async(query > sink)
        assert sink.items == [{"id": 2, "name": "b"}]

    async def test_a_stop_mid_stream_closes_the_cursor(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Stopped after its first rows, the source ends and leaves the database unlocked."""
        database = tmp_path / "big.db"
        make_table(database, "CREATE TABLE t (id INTEGER)", [(i,) for i in range(50_000)])
        query = SQLQuery(database, "SELECT id FROM t", fetch_size=10)
        sink = Recorder()

        class StopAtFirst(NanoNode):
            def process_item(self, item: Any) -> None:
                pipeline.stop()

        query > [sink, StopAtFirst()]
        pipeline = Pipeline(query)
        await run_pipeline_async(pipeline)
        assert 0 < len(sink.items) < 50_000
        with sqlite3.connect(database, timeout=0) as connection:
            connection.execute("DELETE FROM t")  # no reader holds it any more

    async def test_a_bad_query_fails_the_run(self, nanostream_clock: Any, tmp_path: Path) -> None:
        """SQL the database rejects fails the run with the database's exception."""
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await run_pipeline_async(
                SQLQuery(tmp_path / "db.db", "SELECT * FROM nope") > Recorder()
            )


class TestQueryIncremental:
    """Incremental mode asks only for rows past the last value seen, every interval."""

    async def test_polls_pick_up_rows_inserted_between_polls(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Rows inserted at t=15 arrive with the poll at t=20; idle waits yield every second."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER, name TEXT)", [(1, "a"), (2, "b")])
        query = SQLQuery(
            database, "SELECT * FROM t", interval=10, incremental_column="id", fetch_size=1
        )
        sink = Recorder()
        pipeline = Pipeline(query > sink)

        async def insert_then_stop() -> None:
            await trio.sleep(15)
            make_table_rows(database, [(3, "c"), (4, "d")])
            await trio.sleep(20)
            pipeline.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(insert_then_stop)
            await run_pipeline_async(pipeline)
        assert [row["id"] for row in sink.items] == [1, 2, 3, 4]
        assert sink.arrivals == [0.0, 0.0, 20.0, 20.0]
        assert query.snapshot() == {"last": 4}

    async def test_query_with_its_own_last_parameter(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A query using :last itself gets the start value, then the last id seen."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER)", [(i,) for i in range(1, 6)])
        sink = Recorder()
        query = SQLQuery(
            database,
            "SELECT id FROM t WHERE id > :last ORDER BY id",
            incremental_column="id",
            start=2,
        )
        await run_pipeline_async(query > sink)
        assert sink.items == [{"id": 3}, {"id": 4}, {"id": 5}]

    async def test_restore_continues_after_the_position(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """restore() with a snapshot makes the next run start after that row."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER)", [(i,) for i in range(1, 6)])
        first = SQLQuery(database, "SELECT id FROM t", incremental_column="id")
        await run_pipeline_async(first > Recorder())
        position = first.snapshot()
        assert position == {"last": 5}
        make_table_rows(database, [(6,), (7,)])
        second, sink = SQLQuery(database, "SELECT id FROM t", incremental_column="id"), Recorder()
        second.restore(position)
        await run_pipeline_async(second > sink)
        assert sink.items == [{"id": 6}, {"id": 7}]

    async def test_checkpoint_store_keeps_the_position_across_runs(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """With a checkpoint store, a second run emits only the rows added since the first."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER)", [(1,), (2,)])

        async def run() -> list[Any]:
            sink = Recorder(name="sink")
            query = SQLQuery(database, "SELECT id FROM t", incremental_column="id", name="q")
            await run_pipeline_async(
                Pipeline(query > sink, checkpoint=tmp_path / "state.db", checkpoint_interval=1.0)
            )
            return sink.items

        assert await run() == [{"id": 1}, {"id": 2}]
        make_table_rows(database, [(3,)])
        assert await run() == [{"id": 3}]

    async def test_idle_polling_lets_checkpoints_pass(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """Between polls a minute apart, checkpoints every 2 s still complete."""
        database = tmp_path / "db.db"
        make_table(database, "CREATE TABLE t (id INTEGER)", [(1,)])
        query = SQLQuery(database, "SELECT id FROM t", interval=60, incremental_column="id")
        pipeline = Pipeline(
            query > Recorder(), checkpoint=tmp_path / "state.db", checkpoint_interval=2.0
        )

        async def stop_later() -> None:
            await trio.sleep(30)
            pipeline.stop()

        with capture_events() as events:
            pipeline._logger = events.logger()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_later)
                await run_pipeline_async(pipeline)
        assert len(events.of("checkpoint_completed")) >= 10
        assert not events.of("checkpoint_delayed")


def make_table_rows(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(path) as connection:
        marks = ", ".join("?" for _ in rows[0])
        connection.executemany(f"INSERT INTO t VALUES ({marks})", rows)


class TestPipelineFiles:
    """Both nodes are usable from pipeline files, with located errors."""

    async def test_copy_between_databases_from_yaml(
        self, nanostream_clock: Any, tmp_path: Path
    ) -> None:
        """A query in one SQLite file upserted into another, configured in YAML."""
        source_db, target_db = tmp_path / "in.db", tmp_path / "out.db"
        make_table(source_db, "CREATE TABLE t (id INTEGER, name TEXT)", [(1, "a"), (2, "b")])
        pipeline = load_pipeline_text(
            f"""\
nodes:
  - {{name: read, class: SQLQuery, args: {{database: "{source_db}", query: "SELECT * FROM t"}}}}
  - {{name: store, class: SQLSink, args: {{database: "sqlite:///{target_db}", table: t, key: id}}}}
""",
            env={},
        )
        await run_pipeline_async(pipeline)
        assert rows_of(target_db) == [(1, "a"), (2, "b")]

    def test_bad_url_in_yaml_is_located(self) -> None:
        """The error names the file position, the node and the argument."""
        text = """\
nodes:
  - {name: read, class: SQLQuery, args: {database: "a.db", query: "SELECT 1"}}
  - {name: store, class: SQLSink, args: {database: "mysql://x/y", table: t}}
"""
        with pytest.raises(ConfigError) as caught:
            load_pipeline_text(text, env={})
        message = str(caught.value)
        assert message.startswith("<string>:3:")
        assert "nodes[1].args.database" in message
        assert "node 'store'" in message
        assert "unsupported scheme 'mysql'" in message


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for this module's Postgres tests (skipped without one)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


def pg_execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


class TestPostgres:
    """The same nodes against a real PostgreSQL server started by the test."""

    async def test_sink_upserts_in_batches_and_dead_letters_refused_rows(
        self, nanostream_clock: Any, postgres_url: str
    ) -> None:
        """Upserts by key, a NOT NULL row dead-lettered with the server's message, the rest land."""
        pg_execute(
            postgres_url,
            "DROP TABLE IF EXISTS pg_people",
            "CREATE TABLE pg_people (id INT PRIMARY KEY, name TEXT NOT NULL)",
        )
        bad = {"id": 3, "name": None}
        rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, bad, {"id": 1, "name": "c"}]
        sink, letters = SQLSink(postgres_url, "pg_people", key="id", batch_size=2), Recorder()
        sink.dead_letters > letters
        await run_pipeline_async(FakeSource(rows) > sink)
        assert pg_rows(postgres_url, "SELECT * FROM pg_people ORDER BY id") == [
            (1, "c"),
            (2, "b"),
        ]
        (letter,) = letters.items
        assert letter.item is bad
        assert letter.exc_type == "NotNullViolation"
        assert 'null value in column "name"' in letter.message
        assert (sink.rows_written, sink.rows_refused) == (3, 1)

    async def test_sink_creates_the_table_and_rolls_back_a_partial_batch(
        self, nanostream_clock: Any, postgres_url: str
    ) -> None:
        """A created table gets the first row's columns; a crash keeps whole batches only."""
        pg_execute(postgres_url, "DROP TABLE IF EXISTS pg_created")
        script: list[Any] = [*people(5), Raise(OSError("feed gone"))]
        sink = SQLSink(postgres_url, "pg_created", batch_size=3)
        with pytest.raises(OSError, match="feed gone"):
            await run_pipeline_async(FakeSource(script, interval=1) > sink)
        assert pg_rows(postgres_url, "SELECT * FROM pg_created ORDER BY id") == [
            (1, "p1"),
            (2, "p2"),
            (3, "p3"),
        ]

    async def test_query_streams_and_polls_incrementally(
        self, nanostream_clock: Any, postgres_url: str
    ) -> None:
        """A server-side cursor fetch_size rows at a time; a later poll gets only new rows."""
        pg_execute(
            postgres_url,
            "DROP TABLE IF EXISTS pg_events",
            "CREATE TABLE pg_events (id INT, v TEXT)",
            "INSERT INTO pg_events SELECT i, 'x' FROM generate_series(1, 1000) AS i",
        )
        query = SQLQuery(
            postgres_url,
            "SELECT * FROM pg_events",
            interval=10,
            incremental_column="id",
            fetch_size=100,
        )
        sink = Recorder()
        pipeline = Pipeline(query > sink)

        async def insert_then_stop() -> None:
            await trio.sleep(15)
            pg_execute(postgres_url, "INSERT INTO pg_events VALUES (1001, 'y'), (1002, 'z')")
            await trio.sleep(20)
            pipeline.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(insert_then_stop)
            await run_pipeline_async(pipeline)
        assert [row["id"] for row in sink.items] == list(range(1, 1003))
        assert sink.items[-1] == {"id": 1002, "v": "z"}
        assert query.snapshot() == {"last": 1002}
        assert query.fetches >= 11

    async def test_checkpoint_column_makes_a_replay_write_each_row_once(
        self, nanostream_clock: Any, postgres_url: str, tmp_path: Path
    ) -> None:
        """A crash after the sink committed checkpoint 2: the restart deletes and replays."""
        pg_execute(postgres_url, "DROP TABLE IF EXISTS pg_once")

        def build() -> Pipeline:
            return Pipeline(
                FakeSource(people(40), interval=0.1, name="source")
                > SQLSink(postgres_url, "pg_once", checkpoint_column="ckpt", name="store"),
                checkpoint=tmp_path / "state.db",
                checkpoint_interval=1.0,
            )

        first = build()
        crash_at(first, "after_prepare", checkpoint=2)
        with pytest.raises(Exception, match="simulated crash"):
            await run_pipeline_async(first)
        assert pg_rows(postgres_url, "SELECT count(*) FROM pg_once WHERE ckpt >= 1")[0][0] > 0
        await run_pipeline_async(build())
        ids = pg_rows(postgres_url, "SELECT id FROM pg_once ORDER BY id")
        assert ids == [(i,) for i in range(1, 41)]

    async def test_nodes_on_one_url_share_a_pool_closed_at_the_end(
        self, nanostream_clock: Any, postgres_url: str
    ) -> None:
        """A query and a sink on the same server hold two connections of one pool, then none."""
        from nanostream_trio.nodes._sql import _POOLS

        pg_execute(
            postgres_url,
            "DROP TABLE IF EXISTS pg_src",
            "DROP TABLE IF EXISTS pg_dst",
            "CREATE TABLE pg_src (id INT, name TEXT)",
            "INSERT INTO pg_src SELECT i, 'n' || i FROM generate_series(1, 2000) AS i",
        )
        seen: list[tuple[int, int]] = []

        class PoolWatcher(NanoNode):
            def process_item(self, item: Any) -> Any:
                # At the first row the query (2000 rows, bounded edges) is still reading.
                if not seen:
                    pool, users = _POOLS._pools[postgres_url]
                    seen.append((users, pool.get_stats()["pool_max"]))
                return item

        query = SQLQuery(postgres_url, "SELECT * FROM pg_src ORDER BY id", fetch_size=10)
        sink = SQLSink(postgres_url, "pg_dst", batch_size=7)
        await run_pipeline_async(query > PoolWatcher() > sink)
        assert seen == [(2, 2)]
        assert pg_rows(postgres_url, "SELECT count(*) FROM pg_dst") == [(2000,)]
        assert postgres_url not in _POOLS._pools
        pool_threads = ("nanostream-worker-", "nanostream-scheduler")
        assert not [t for t in threading.enumerate() if t.name.startswith(pool_threads)]


class TestSQLiteLocking:
    """The inline BEGIN never waits for another writer: it says so, and a thread waits."""

    def test_try_begin_gives_way_to_a_writer_holding_the_lock(self, tmp_path: Path) -> None:
        """With another connection's write lock held, try_begin returns False at once."""
        from nanostream_trio.nodes._sql import BUSY_TIMEOUT_MS, open_dialect

        database = tmp_path / "out.db"
        make_table(database, "CREATE TABLE t (id INTEGER)")
        dialect = open_dialect("store", str(database))
        ours, other = dialect.connect_for_sink(), sqlite3.connect(database, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            assert dialect.try_begin(ours) is False
            assert ours.execute("PRAGMA busy_timeout").fetchone() == (BUSY_TIMEOUT_MS,)
            other.execute("COMMIT")
            assert dialect.try_begin(ours) is True
            assert ours.in_transaction
            ours.execute("COMMIT")
        finally:
            ours.close()
            other.close()


class TestPostgresUnreachable:
    async def test_an_unreachable_server_fails_the_run_at_once(self, nanostream_clock: Any) -> None:
        """Nothing listening: the run fails with psycopg's own error, not a pool timeout."""
        psycopg = pytest.importorskip("psycopg")
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=5"
        started = time.monotonic()  # real time: the connection attempt is a real one
        with pytest.raises(psycopg.OperationalError, match="refused"):
            await run_pipeline_async(FakeSource(people(1)) > SQLSink(url, "t"))
        assert time.monotonic() - started < 5
        from nanostream_trio.nodes._sql import _POOLS

        assert url not in _POOLS._pools
