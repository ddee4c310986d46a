"""The benchmark suite's --quick mode runs end to end, so the suite never rots."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
            "## Real workloads",
            "`TailFile(path, follow=False)` > counting sink",
            "`LocalFileReader(serialize=True)` > counting sink",
            "floor: bare Trio, reader task",
            'JSONLinesParser(on_error="dead_letter")',
            "`examples/log_ingestion` `build_pipeline`",
            "`LocalFileReader > CSVReader > Filter > JSONLinesWriter`",
            "peer: Bytewax, the same job",
            "peer: Bytewax, `CSVSource",
            "Peak traced heap of the CSV job",
            "## Checkpoints every 1 s, and off (issue 10)",
            "`TailFile(path, follow=False)` > counting sink, text log x3",
            "paths > `LocalFileReader > CSVReader > Filter > JSONLinesWriter`, orders CSV in",
            "(a) async generator source",
            "floor of (a): bare Trio",
            "(b) the same behind a sync `generator()` source",
            "(c) the same with `blocking=False`",
            "none: the ticker alone, bare Trio",
            "threaded source > `Map` > `Filter` > `Map` > sink",
            "async generator source > `Map` > `Filter` > `Map` > sink",
            "the CSV job (`LocalFileReader",
            "100 KB items",
            "bare Trio: thread > `from_thread.run(send)`",
        ):
            assert row in table, row
        assert "stand-ins were used" not in table

    def test_checkpoint_section_runs_alone(self, tmp_path: Path) -> None:
        """`run.py --quick --only checkpoints` runs the checkpoint rows with their durations."""
        output = tmp_path / "checkpoints.md"
        done = subprocess.run(
            [
                sys.executable,
                str(BENCHMARKS / "run.py"),
                "--quick",
                "--only",
                "checkpoints",
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        table = output.read_text()
        rows = [line for line in table.splitlines() if line.startswith("| ") and " ms" in line]
        assert len(rows) == 2, table
        assert all("+ 1 |" in row for row in rows), table  # the final checkpoint is counted
        assert "All count/sum checks passed." in table

    def test_some_real_workloads_run_alone(self, tmp_path: Path) -> None:
        """`run.py --quick --only real --rows tail,file_reader` runs those two rows only."""
        output = tmp_path / "real.md"
        done = subprocess.run(
            [
                sys.executable,
                str(BENCHMARKS / "run.py"),
                "--quick",
                "--only",
                "real",
                "--rows",
                "tail,file_reader",
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        table = output.read_text()
        rows = [line for line in table.splitlines() if line.startswith("| text log lines")]
        assert len(rows) == 2, table
        assert "`TailFile(path, follow=False)` > counting sink" in rows[0]
        assert "`LocalFileReader(serialize=True)` > counting sink" in rows[1]
        assert "All count/sum checks passed." in table

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


def _benchmark_module(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``benchmarks/<name>.py``, imported afresh (``run`` is a common module name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


class TestRealWorkloads:
    def test_generated_json_log_has_the_malformed_lines_it_reports(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The generated JSON log holds exactly as many lines ``json.loads`` rejects as it says."""
        datafiles = _benchmark_module("datafiles", monkeypatch)
        path = tmp_path / "log.jsonl"
        facts = datafiles.json_log(path, 12_000)
        rejected = unstamped = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                rejected += 1
                continue
            unstamped += "timestamp" not in record
        assert facts["malformed"] == rejected > 0
        assert facts["unstamped"] == unstamped > 0

    def test_a_system_that_loses_an_item_fails_its_child(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real-workload child raises when the system's result differs from its limit's."""
        datafiles = _benchmark_module("datafiles", monkeypatch)
        realworld = _benchmark_module("realworld", monkeypatch)
        run = _benchmark_module("run", monkeypatch)
        datafiles.text_log(tmp_path / "text.log", 500)
        files = {"text": str(tmp_path / "text.log"), "scratch": str(tmp_path)}

        def lossy(files: dict[str, str], scratch: Path) -> tuple[float, int]:
            seconds, count = realworld.lines_tail(files, scratch)
            return seconds, count - 1

        entry = realworld.WORKLOADS["tail"]
        monkeypatch.setitem(realworld.WORKLOADS, "tail", (entry[0], entry[1], lossy, *entry[3:]))
        with pytest.raises(AssertionError, match="tail: wrong result: 499; the limit gave 500"):
            run._child_real("tail", files)

    def test_bytewax_rows_say_not_installed_without_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without Bytewax its rows read "not installed" and no Bytewax measurement is started."""
        realworld = _benchmark_module("realworld", monkeypatch)
        run = _benchmark_module("run", monkeypatch)
        spawned: list[dict[str, Any]] = []

        def fake_spawn_all(specs: list[dict[str, Any]], together: bool) -> list[Any]:
            spawned.extend(specs)
            return [
                {"ratio": 0.5}
                if spec["kind"] == "real"
                else {"rss_peak_mib": 40.0, "heap_peak_mib": 1.0}
                for spec in specs
            ]

        monkeypatch.setattr(realworld, "bytewax_version", lambda: None)
        monkeypatch.setattr(run, "_spawn_all", fake_spawn_all)
        data = {
            "files": {"scratch": "/nowhere"},
            "info": {
                "sizes": {"text": 1, "json": 1, "csv": 1},
                "bytes": {"text": 1, "json": 1, "csv": 2**21},
                "malformed": 0,
                "unstamped": 0,
            },
        }
        lines: list[str] = []
        run._real_section(lines.append, False, 3, data)
        peers = [line for line in lines if "peer: Bytewax" in line]
        assert len(peers) == 2
        assert all("| not installed |" in line for line in peers)
        assert "Bytewax: not installed." in "\n".join(lines)
        assert not [spec for spec in spawned if "bytewax" in spec["workload"]]
        assert len([spec for spec in spawned if spec["kind"] == "real"]) == 3 * 6
        assert "Peak traced heap of the CSV job: 1.0 MiB for a 2.0 MiB file" in "\n".join(lines)
