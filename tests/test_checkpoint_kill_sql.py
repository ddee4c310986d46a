"""SQLSink(checkpoint_column=...) survives kill -9: a real process killed, restarted, drained.

The pipeline (``tests/checkpoint_scripts/sql_pipeline.py``) writes numbered rows
into two SQLite tables, one effectively-once (``checkpoint_column``), one
at-least-once; it is killed with SIGKILL at seeded random moments, restarted
each time, and finally runs to the end of its input. The effectively-once table
must then hold every number exactly once; the other table's duplicates are
reported, not asserted.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from test_checkpoint_kill import KILLS, SEED, Runner, report, running, tally

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Rows the source emits in all (at 5,000 a second: 1 s of input per kill, so the kills
#: land mid-stream, and the last run has some left to drain).
TOTAL = 5_000 * KILLS


def numbers(database: Path, table: str) -> list[int]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute(f"SELECT n FROM {table}")]


class TestSQLSinkKill:
    def test_kill9_leaves_every_row_once_with_checkpoint_column(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """Killed with SIGKILL mid-stream, restarted from its checkpoints, then run to the end:
        the checkpoint_column table holds 1..TOTAL once each, without a key."""
        rng = random.Random(SEED)
        database, state = tmp_path / "out.db", tmp_path / "state.db"
        logs = tmp_path / "logs"
        logs.mkdir()
        runner = Runner("sql_pipeline.py", [database, state, Path(str(TOTAL))], logs)
        with running(runner) as pipeline:
            for _ in range(KILLS):
                pipeline.start()
                # Each run gets going (recovered, a checkpoint taken) before its kill, so
                # every kill lands mid-stream; nothing is promised before a first checkpoint.
                pipeline.wait_for_checkpoint()
                time.sleep(rng.uniform(0.0, 0.8))  # the moment of the kill, not a wait
                pipeline.kill()
            pipeline.start()
            assert pipeline.wait() == 0, pipeline.log()
        expected = range(1, TOTAL + 1)
        effectively_once = tally(numbers(database, "once"), expected)
        report(request, f"SQLSink ({TOTAL} rows)", tally(numbers(database, "plain"), expected))
        assert (effectively_once.lost, effectively_once.duplicates) == ([], 0), (
            f"{effectively_once}\n{pipeline.log()}"
        )
        assert not effectively_once.unexpected
        # Every restart recovered from a checkpoint (the rows after it deleted, if any).
        restarts = [(logs / f"run{run}.log").read_text() for run in range(2, KILLS + 2)]
        assert all("sql_rows_recovered" in log for log in restarts)
