"""Scale-out: three ``nanostream run`` worker processes share one Redis stream (real processes)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from _redis import RedisServer, redis_server, skip_reason

#: Entries in the shared stream.
ENTRIES = 100_000
#: Seconds an entry stays with a dead consumer before another takes it over.
CLAIM_IDLE = 2.0
CLAIM_INTERVAL = 0.25
#: Real seconds the whole run may take on a loaded machine.
DEADLINE = 180.0

WORK = """
import os
import time

WORKER = os.environ["WORKER"]


def tag(entry):
    time.sleep(0.0002)  # some work per entry, so the run lasts while workers die
    return {"n": entry["n"], "worker": WORKER, "id": entry.id}
"""

PIPELINE = """
name: worker
modules: [work.py]
stats_interval: null
nodes:
  - name: jobs
    class: RedisStreamSource
    args:
      url: "{url}"
      stream: jobs
      group: workers
      consumer: "${{WORKER}}"
      batch_size: 200
      claim_idle: {claim_idle}
      claim_interval: {claim_interval}
      ack_interval: 0.2
      backoff: 0.05
  - name: work
    class: Map
    args: {{func: "work:tag"}}
  - name: done
    class: RedisStreamSink
    args:
      url: "{url}"
      stream: done
links:
  - [jobs, work, done]
"""


# coredis 6.9 leaves the anyio streams of a cut connection unclosed (its internals).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _collect_coredis_leftovers() -> Iterator[None]:
    """Collect garbage after each test, so coredis' unclosed streams warn under the marks above.

    Otherwise their ResourceWarnings could surface in whatever test runs next.
    """
    yield
    gc.collect()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A throwaway redis-server (skipped without one)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with redis_server() as running:
        yield running


class Workers:
    """``nanostream run`` worker processes of one pipeline file, by consumer name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        env = dict(os.environ, WORKER=name, PYTHONPATH=str(Path(__file__).parents[1]))
        log = open(self.directory / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "nanostream_trio", "run", "--traceback", "pipeline.yaml"],
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def signal(self, name: str, number: int) -> int:
        """Send ``number`` to worker ``name`` by its pid and wait for it; its exit status."""
        process = self.processes[name]
        process.send_signal(number)
        return process.wait(60)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


async def poll(condition: Any, what: str, within: float = DEADLINE) -> None:
    """Poll the async ``condition`` with a deadline (real processes are the subject)."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await trio.sleep(0.05)


class TestThreeWorkers:
    """Three processes running the same file share the stream, at least once per entry."""

    async def test_kill_and_restart_workers(
        self, server: RedisServer, tmp_path: Path, record_property: Any
    ) -> None:
        """One worker SIGKILLed, one restarted: every entry reaches the sink, duplicates counted.

        The killed worker's pending entries are claimed by the others within
        ``claim_idle`` (plus one claim sweep and some slack for a loaded machine).
        """
        from nanostream_trio.nodes._redis import _open_client

        (tmp_path / "work.py").write_text(WORK)
        (tmp_path / "pipeline.yaml").write_text(
            PIPELINE.format(url=server.url, claim_idle=CLAIM_IDLE, claim_interval=CLAIM_INTERVAL)
        )
        workers = Workers(tmp_path)
        async with _open_client(server.url) as client:
            for first in range(0, ENTRIES, 1000):
                async with client.pipeline(transaction=False) as pipe:
                    for n in range(first, first + 1000):
                        pipe.xadd("jobs", {"n": str(n)})

            async def done_count() -> int:
                return int(await client.xlen("done"))

            async def pending_of(consumer: str) -> int:
                summary = await client.xpending("jobs", "workers")
                return int(summary.consumers.get(consumer, 0)) if summary.consumers else 0

            try:
                for name in ("w1", "w2", "w3"):
                    workers.start(name)

                async def w1_busy() -> bool:
                    return await done_count() >= ENTRIES // 5 and await pending_of("w1") > 0

                await poll(w1_busy, "a fifth of the entries done and w1 holding some")
                killed_pending = await pending_of("w1")
                killed_at = time.monotonic()
                assert workers.signal("w1", signal.SIGKILL) == -signal.SIGKILL

                # w2 restarts gracefully under the same consumer name.
                assert workers.signal("w2", signal.SIGTERM) == 0, workers.log("w2")
                workers.start("w2")

                async def w1_claimed() -> bool:
                    return await pending_of("w1") == 0

                await poll(w1_claimed, "the killed worker's entries claimed")
                claimed_after = time.monotonic() - killed_at

                async def all_done() -> bool:
                    if await done_count() < ENTRIES:
                        return False
                    entries = await client.xrange("done", "-", "+")
                    return {int(e.field_values["n"]) for e in entries} == set(range(ENTRIES))

                await poll(all_done, "every entry in the sink stream")
                for name in ("w2", "w3"):
                    assert workers.signal(name, signal.SIGTERM) == 0, workers.log(name)
            finally:
                workers.stop_all()

            entries = await client.xrange("done", "-", "+")
            duplicates = len(entries) - ENTRIES
            by_worker: dict[str, int] = {}
            for entry in entries:
                worker = entry.field_values["worker"]
                by_worker[worker] = by_worker.get(worker, 0) + 1
            group = await client.xpending("jobs", "workers")
        record_property("duplicates", duplicates)
        print(
            f"\n{ENTRIES} entries, {duplicates} duplicates; per worker {by_worker}; "
            f"w1 held {killed_pending} when killed, claimed {claimed_after:.2f} s later"
        )
        assert duplicates >= 0
        assert int(group.pending) == 0  # the graceful stops acked everything
        assert claimed_after <= CLAIM_IDLE + CLAIM_INTERVAL + 5.0
        assert {"w1", "w2", "w3"} <= by_worker.keys()
