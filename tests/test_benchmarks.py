"""The benchmark suite's --quick mode runs end to end, so the suite never rots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class TestQuickBenchmark:
    def test_quick_mode_completes_with_checks_passing(self, tmp_path: Path) -> None:
        """`run.py --quick` exits 0, every count/sum check passes, and it writes its table."""
        output = tmp_path / "results.md"
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--output", str(output)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "All count/sum checks passed." in done.stdout
        table = output.read_text()
        for row in (
            "fused `for` loop",
            "built-in `Map`/`Filter`",
            "generator `process_item`",
            "worker thread",
            "queue.Queue(256)",
            "asyncio.Queue(256)",
            "bare Trio channels (`send_nowait`/`receive_nowait`)",
            "stalled sink",
        ):
            assert row in table, row
        assert "stand-ins were used" not in table

    def test_checks_catch_a_wrong_result(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The expected count/sum match a brute-force pass, and a wrong total raises."""
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        import workload

        for n in (0, 1, 2, 7, 1000):
            rows = [
                workload.to_tuple(r)
                for r in map(workload.add_v2, workload.records(n))
                if workload.even_id(r)
            ]
            assert workload.expected_pipeline(n) == (len(rows), sum(row[1] for row in rows))
            records = list(workload.records(n))
            assert workload.expected_source(n) == (len(records), sum(r["v"] for r in records))
        totals = workload.Totals()
        totals.add((0, 5, "x0"))
        with pytest.raises(AssertionError, match="wrong result"):
            workload.check("system", totals, (1, 6))
