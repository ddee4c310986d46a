"""The Redis Streams benchmark's --quick mode runs end to end (skipped without redis-server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _redis import skip_reason

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "redis_streams.py"


class TestQuickMode:
    """``python benchmarks/redis_streams.py --quick`` prints its table."""

    def test_quick_mode_prints_a_row_per_worker_count(self) -> None:
        """It exits 0 with a markdown row for 1 and 2 workers: positive rates, their ratios."""
        reason = skip_reason()
        if reason is not None:
            pytest.skip(reason)
        env = dict(os.environ, PYTHONPATH=str(BENCHMARK.parents[1]))
        result = subprocess.run(
            [sys.executable, str(BENCHMARK), "--quick"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        row = r"^\| (\d) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \|$"
        rows = re.findall(row, result.stdout, re.M)
        assert [row[0] for row in rows] == ["1", "2"], result.stdout
        for _, ours, plain, ratio, to_stream, stream_ratio in rows:
            rates = [int(rate.replace(",", "")) for rate in (ours, plain, to_stream)]
            assert all(rate > 0 for rate in rates), result.stdout
            assert float(ratio) == pytest.approx(rates[0] / rates[1], abs=0.01)
            assert float(stream_ratio) == pytest.approx(rates[2] / rates[1], abs=0.01)
