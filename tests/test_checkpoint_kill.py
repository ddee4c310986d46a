"""Checkpoints survive kill -9: real pipeline processes killed with SIGKILL, restarted, drained.

Each scenario runs a pipeline script from ``tests/checkpoint_scripts/`` in a
child process with ``checkpoint=`` set, kills it with SIGKILL at seeded random
moments (also during its start-up and recovery), restarts it while its input
keeps arriving, and at the end drains it: the tail pipeline runs a last time
with ``follow=False`` (it reads every file it tracks to its end and ends by
itself); the directory pipeline, whose source never ends, is stopped with
SIGTERM once its at-least-once sink has seen every row (a graceful stop: the
source stops, what it emitted drains, open windows are emitted, a final
checkpoint is written). Then the effectively-once
``JSONLinesWriter`` output must hold every input exactly once; the duplicates
the at-least-once sink saw are counted and reported, not asserted.

The default run kills each scenario a few times; ``NANOSTREAM_SLOW=1`` kills
it :data:`SLOW_KILLS` times, and ``NANOSTREAM_KILL_SEED`` picks another seed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCRIPTS = Path(__file__).parent / "checkpoint_scripts"
SLOW = os.environ.get("NANOSTREAM_SLOW") == "1"
#: Kills per scenario in the slow suite (``NANOSTREAM_SLOW=1``) and by default.
SLOW_KILLS = 20
KILLS = SLOW_KILLS if SLOW else 3
SEED = int(os.environ.get("NANOSTREAM_KILL_SEED", "20261203"))
#: Seconds to wait for the last run to catch up with its input: a run that has not by then
#: has lost something (the checks below then say what), or the machine is very slow.
CATCH_UP_TIMEOUT = 20.0
#: Seconds to wait for a process to exit after a signal.
EXIT_TIMEOUT = 30.0
POLL = 0.02


@dataclass
class Tally:
    """What a check found in an output: inputs missing, seen more than once, unexpected."""

    lost: list[int]
    duplicates: int
    unexpected: list[int]

    def __str__(self) -> str:
        return (
            f"lost {len(self.lost)} (first: {self.lost[:10]}), duplicates {self.duplicates}, "
            f"unexpected {self.unexpected[:10]}"
        )


def tally(found: list[int], expected: Collection[int]) -> Tally:
    """Compare the numbers ``found`` in an output with the ``expected`` ones."""
    counts = collections.Counter(found)
    return Tally(
        lost=sorted(number for number in expected if number not in counts),
        duplicates=sum(count - 1 for count in counts.values() if count > 1),
        unexpected=sorted(number for number in counts if number not in expected),
    )


def json_lines(path: Path) -> Iterator[object]:
    """The complete JSON lines of ``path`` (a last line still being written is left out)."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                yield json.loads(line)


def numbers_in(path: Path) -> list[int]:
    """The numbers of a file holding one number per complete line."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [int(line) for line in text.split("\n")[:-1]]


def poll_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


class Runner:
    """Starts a script in child processes, one at a time, and always reaps them."""

    def __init__(self, script: str, args: list[Path], logs: Path) -> None:
        self.script = SCRIPTS / script
        self.args = [str(arg) for arg in args]
        self.logs = logs
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start the script (with ``extra`` arguments after the usual ones)."""
        assert self.process is None
        self.runs += 1
        # The library's events (checkpoints, restores) go to a log per run, for a failure's report.
        env = {**os.environ, "NANOSTREAM_DEBUG": "1", "PYTHONUNBUFFERED": "1"}
        with (self.logs / f"run{self.runs}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(self.script), *self.args, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self.process

    def wait(self) -> int:
        """Wait for the running process to end by itself; return its exit status."""
        process, self.process = self.process, None
        assert process is not None
        try:
            return process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{self.script.name} did not end within {EXIT_TIMEOUT} s")

    def kill(self) -> None:
        """SIGKILL the running process and reap it."""
        process, self.process = self.process, None
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=EXIT_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM the running process (a graceful stop) and return its exit status."""
        process, self.process = self.process, None
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{self.script.name} did not stop within {EXIT_TIMEOUT} s of SIGTERM")

    def wait_for_checkpoint(self) -> None:
        """Wait until the running process has completed a checkpoint (its log says so)."""
        path = self.logs / f"run{self.runs}.log"
        if not poll_until(lambda: b"checkpoint_completed" in path.read_bytes(), CATCH_UP_TIMEOUT):
            pytest.fail(f"no checkpoint completed within {CATCH_UP_TIMEOUT} s\n{self.log()}")

    def log(self, run: int | None = None) -> str:
        path = self.logs / f"run{run or self.runs}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def running(runner: Runner) -> Iterator[Runner]:
    try:
        yield runner
    finally:
        runner.close()


def report(request: pytest.FixtureRequest, scenario: str, at_least_once: Tally) -> None:
    """Show the at-least-once sink's duplicates in the test report (they are allowed)."""
    duplicates = at_least_once.duplicates
    request.node.user_properties.append(("at_least_once_duplicates", duplicates))
    print(f"{scenario}: the at-least-once sink saw {duplicates} duplicates over {KILLS} kills")


class TestTailKill:
    @pytest.mark.parametrize("watched", ["path", "glob"])
    def test_kill9_loses_nothing_and_the_jsonl_output_has_no_duplicates(
        self, tmp_path: Path, request: pytest.FixtureRequest, watched: str
    ) -> None:
        """`TailFile > JSONLinesParser > Batch > JSONLinesWriter`, killed with SIGKILL while a
        writer appends thousands of lines a second and rotates by rename and copytruncate,
        ends with every number exactly once in the writer's output, whether it watches the
        single path or a glob that also matches the rotated names."""
        glob = ("--glob",) if watched == "glob" else ()
        rng = random.Random(SEED)
        log, out, seen, state = (tmp_path / name for name in ("app.log", "out", "seen", "db"))
        logs = tmp_path / "logs"
        logs.mkdir()
        log.touch()
        writer: subprocess.Popen[str] | None = None
        try:
            with running(Runner("tail_pipeline.py", [log, out, seen, state], logs)) as pipeline:
                for _ in range(KILLS):
                    pipeline.start(*glob)
                    if writer is None:
                        # Nothing is promised before the first checkpoint: a restart without
                        # one starts afresh, and a fresh TailFile does not read rotated files.
                        pipeline.wait_for_checkpoint()
                        script = str(SCRIPTS / "log_writer.py")
                        writer = subprocess.Popen(
                            [sys.executable, script, str(log), "3000", "2400", str(SEED)],
                            stdout=subprocess.PIPE,
                            text=True,
                        )
                    time.sleep(rng.uniform(0.2, 2.0))  # the moment of the kill, not a wait
                    pipeline.kill()
                    time.sleep(rng.uniform(0.0, 0.5))  # down while the writer goes on
                assert writer is not None
                writer.send_signal(signal.SIGTERM)
                written, _, rotations = writer.communicate(timeout=EXIT_TIMEOUT)[0].partition(" ")
                expected = range(1, int(written) + 1)
                # The drain: a last run with follow=False reads every file it tracks to its
                # end and ends by itself, with a final checkpoint.
                pipeline.start("--no-follow", *glob)
                assert pipeline.wait() == 0, pipeline.log()
        finally:
            if writer is not None:
                if writer.poll() is None:
                    writer.kill()
                writer.wait()
        output = [record["n"] for batch in json_lines(out) for record in batch]  # type: ignore[attr-defined]
        effectively_once = tally(output, expected)
        at_least_once = tally(numbers_in(seen), expected)
        report(
            request,
            f"tail {watched} ({len(expected)} lines, {rotations.strip()} rotations)",
            at_least_once,
        )
        assert (effectively_once.lost, effectively_once.duplicates) == ([], 0), (
            f"{effectively_once}\n{pipeline.log()}"
        )
        assert not effectively_once.unexpected


def drop_csv(directory: Path, index: int, rows: int) -> range:
    """Write ``file<index>.csv`` the safe way (another name, then a rename); return its ids."""
    ids = range(index * 10_000, index * 10_000 + rows)
    name = f"file{index}.csv"
    part = directory / f"{name}.part"
    part.write_text("id,file\n" + "".join(f"{row},{name}\n" for row in ids), encoding="utf-8")
    part.rename(directory / name)
    return ids


class TestDirectoryKill:
    def test_kill9_counts_every_row_once_with_files_arriving_while_down(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """`LocalDirectoryWatchdog > LocalFileReader > CSVReader > TumblingWindow >
        JSONLinesWriter`, killed with SIGKILL while CSV files arrive (also while it is down),
        counts every row in exactly one window in the writer's output."""
        rng = random.Random(SEED + 1)
        inbox, out, seen, state = (tmp_path / name for name in ("inbox", "out", "seen", "db"))
        logs = tmp_path / "logs"
        inbox.mkdir()
        logs.mkdir()
        ids: list[int] = []
        files = 0

        def drop(count: int) -> None:
            nonlocal files
            for _ in range(count):
                files += 1
                ids.extend(drop_csv(inbox, files, rng.randint(1, 300)))

        drop(3)  # present before the first start (initial scan)
        with running(Runner("watch_pipeline.py", [inbox, out, seen, state], logs)) as pipeline:
            for kill in range(KILLS):
                pipeline.start()
                if kill == 0:
                    pipeline.wait_for_checkpoint()  # nothing is promised before the first one
                kill_at = time.monotonic() + rng.uniform(0.2, 2.0)
                while time.monotonic() < kill_at:  # files arriving while it runs
                    drop(1)
                    time.sleep(rng.uniform(0.0, 0.1))
                pipeline.kill()
                drop(rng.randint(0, 3))  # and while it is down
            pipeline.start()
            expected = set(ids)
            poll_until(lambda: expected <= set(numbers_in(seen)), CATCH_UP_TIMEOUT)
            assert pipeline.stop() == 0, pipeline.log()
        counted = [row for window in json_lines(out) for row in window["value"]]  # type: ignore[index]
        effectively_once = tally(counted, expected)
        at_least_once = tally(numbers_in(seen), expected)
        report(request, f"directory ({files} files, {len(ids)} rows)", at_least_once)
        assert (effectively_once.lost, effectively_once.duplicates) == ([], 0), (
            f"{effectively_once}\n{pipeline.log()}"
        )
        assert not effectively_once.unexpected


def append_numbers(path: Path, numbers: range) -> None:
    """Append the writer's JSON lines for ``numbers`` to ``path``."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(f'{{"n": {number}}}\n' for number in numbers))


def rotate(log: Path, how: str, number: int) -> None:
    """Rotate ``log`` to ``log.<number>`` by rename (a new empty log) or copytruncate."""
    rotated = log.with_name(f"{log.name}.{number}")
    if how == "rename":
        log.rename(rotated)
        log.touch()
    else:
        shutil.copyfile(log, rotated)
        with log.open("r+b") as handle:
            handle.truncate(0)


class TestTailRotatedWhileStopped:
    @pytest.mark.parametrize("how", ["rename", "copytruncate"])
    @pytest.mark.parametrize("rotations", [1, 2])
    def test_lines_written_and_rotated_while_stopped_are_read_once(
        self, tmp_path: Path, how: str, rotations: int
    ) -> None:
        """After a graceful stop, lines written and rotated away (once; or twice, so that
        one rotated file was never under the name while the pipeline ran) before the restart
        are read once: a restart with ``follow=False`` ends with all of them in the output."""
        log, out, seen, state = (tmp_path / name for name in ("app.log", "out", "seen", "db"))
        logs = tmp_path / "logs"
        logs.mkdir()
        append_numbers(log, range(1, 101))
        with running(Runner("tail_pipeline.py", [log, out, seen, state], logs)) as pipeline:
            pipeline.start()
            poll_until(lambda: len(numbers_in(seen)) >= 100, CATCH_UP_TIMEOUT)
            assert pipeline.stop() == 0, pipeline.log()
            for rotation in range(1, rotations + 1):
                rotate(log, how, rotation)
                append_numbers(log, range(rotation * 100 + 1, rotation * 100 + 101))
            expected = range(1, (rotations + 1) * 100 + 1)
            pipeline.start("--no-follow")
            assert pipeline.wait() == 0, pipeline.log()
        output = [record["n"] for batch in json_lines(out) for record in batch]  # type: ignore[attr-defined]
        found = tally(output, expected)
        assert (found.lost, found.duplicates, found.unexpected) == ([], 0, []), (
            f"{found}\n{pipeline.log()}"
        )
