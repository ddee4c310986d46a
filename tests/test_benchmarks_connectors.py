"""benchmarks/connectors.py --quick runs end to end, so issue 12's benchmark never rots."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class TestConnectorsBenchmark:
    def test_quick_mode_prints_both_rows_with_ratios(self) -> None:
        """`connectors.py --quick` exits 0 and prints the HTTP and SQLite rows of its table."""
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / "connectors.py"), "--quick"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "## Connectors (issue 12)"
        rows = [line for line in lines if line.startswith("| `")]
        assert len(rows) == 2
        assert rows[0].startswith("| `HttpRequest(concurrency=16)` vs 16 Trio workers")
        assert rows[1].startswith('| `SQLSink(path, "t")` vs `executemany`')
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert re.fullmatch(r"[\d,]+ (requests|rows)/s", cells[1])
            assert re.fullmatch(r"[\d,]+ (requests|rows)/s", cells[2])
            assert float(cells[3]) > 0
            assert cells[4] == ">= 0.8"
            assert cells[5] in ("met", "**missed**")
