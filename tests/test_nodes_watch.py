"""Tests of LocalDirectoryWatchdog with real files and real watchdog observer threads.

Nothing here sleeps to synchronise: each test waits for what the pipeline emits
(or for the watcher's counters to move) under a ``trio.fail_after`` limit.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from nanostream_trio import ConfigError, NanoNode, Pipeline
from nanostream_trio.nodes import CSVReader, LocalDirectoryWatchdog, LocalFileReader

LIMIT = 10.0  # seconds; generous for a loaded machine, never reached when things work
STOP_CYCLES = 100  # watcher starts and stops per teardown test (about 0.5 s in all)


class Collector(NanoNode):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.items: list[Any] = []
        self._changed = trio.Event()

    def process_item(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[list[Any]], bool]) -> None:
        with trio.fail_after(LIMIT):
            while not condition(self.items):
                await self._changed.wait()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait for a counter of the watcher to move (it has no event of its own)."""
    with trio.fail_after(LIMIT):
        while not condition():  # noqa: ASYNC110 - a counter, not an event
            await trio.sleep(0.005)


@asynccontextmanager
async def running(*nodes: NanoNode, name: str = "pipeline") -> AsyncIterator[Pipeline]:
    """Run the pipeline in the background; stop it gracefully at the end."""
    pipeline = Pipeline(*nodes, name=name, stats_interval=None, stall_timeout=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        try:
            yield pipeline
        finally:
            pipeline.stop()


def write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def append_file(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def threads_now() -> set[threading.Thread]:
    """Running threads, except Trio's idle worker threads (kept a while for reuse, by design)."""
    return {t for t in threading.enumerate() if not t.name.startswith("Trio thread")}


@contextmanager
def busy_directory(directory: Path) -> Iterator[None]:
    """A thread writing and re-reading files in ``directory`` until the block ends."""
    done = threading.Event()

    def churn() -> None:
        index = 0
        while not done.is_set():
            path = directory / f"busy{index % 20}.csv"
            write_file(path, "x\n")
            path.read_text()  # opens and closes without writing: events that are ignored
            index += 1

    thread = threading.Thread(target=churn, name="busy-directory")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def start_and_stop_repeatedly(directory: Path, overflow: str) -> list[str]:
    """Start a watcher pipeline and stop it at once, STOP_CYCLES times, in a Trio run of its own.

    The run happens in a daemon thread joined with a time limit, so a teardown
    that deadlocks fails the test (its statuses are missing) instead of hanging it.
    """
    statuses: list[str] = []

    async def cycles() -> None:
        for _ in range(STOP_CYCLES):
            watchdog = LocalDirectoryWatchdog(
                directory=directory,
                settle=0.0,
                buffer=1,
                overflow=overflow,  # type: ignore[arg-type]
            )
            watchdog > Collector()
            pipeline = Pipeline(watchdog, stats_interval=None, stall_timeout=None)
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.lowlevel.checkpoint()  # let the watcher take an event or two
                pipeline.stop()
            statuses.append(pipeline.status)

    runner = threading.Thread(target=trio.run, args=(cycles,), name="stop-cycles", daemon=True)
    runner.start()
    runner.join(3 * LIMIT)
    return statuses


async def emitted_after_sentinel(watch_dir: Path, paths: Collector) -> list[str]:
    """Write one more file and wait for it: anything due before it has been emitted too."""
    sentinel = watch_dir / "zz-sentinel.csv"
    write_file(sentinel, "s\n1\n")
    await paths.wait_for(lambda items: str(sentinel) in items)
    return [p for p in paths.items if p != str(sentinel)]


class TestHeadlinePipeline:
    async def test_rows_of_a_new_csv_arrive(self, tmp_path: Path) -> None:
        """The seed's pipeline: a CSV written into the directory has its rows delivered."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05)
        rows = Collector()
        watchdog > LocalFileReader() > CSVReader() > rows
        async with running(watchdog):
            write_file(tmp_path / "people.csv", "name,age\nann,31\nbob,42\n")
            await rows.wait_for(lambda items: len(items) == 2)
        assert rows.items == [{"name": "ann", "age": "31"}, {"name": "bob", "age": "42"}]

    async def test_reader_opening_the_file_does_not_retrigger(self, tmp_path: Path) -> None:
        """Reading an emitted file (open, close without writing) does not emit it again."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05)
        paths, texts = Collector("paths"), Collector("texts")
        watchdog > [paths, LocalFileReader()]
        watchdog.downstream[1] > texts
        async with running(watchdog):
            target = tmp_path / "a.csv"
            write_file(target, "x\n1\n")
            await texts.wait_for(lambda items: len(items) == 1)
            for _ in range(3):
                target.read_text()  # more opens and closes without writing
            os.chmod(target, 0o600)  # and an attribute change
            others = await emitted_after_sentinel(tmp_path, paths)
        assert others == [str(target)]


class TestSettling:
    async def test_file_written_in_steps_is_emitted_once_complete(self, tmp_path: Path) -> None:
        """Three separate writes within the settle time give one emission of the whole file."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=1.0, pattern="*.csv")
        paths, texts = Collector("paths"), Collector("texts")
        reader = LocalFileReader()
        watchdog > [paths, reader]
        reader > texts
        target = tmp_path / "steps.csv"
        async with running(watchdog):
            for part in ("a,b\n", "1,2\n", "3,4\n"):
                seen = watchdog.statistics().events_received
                append_file(target, part)
                await wait_until(lambda seen=seen: watchdog.statistics().events_received > seen)
            others = await emitted_after_sentinel(tmp_path, paths)
            await texts.wait_for(lambda items: len(items) == 2)
        assert others == [str(target)]
        assert texts.items[0] == "a,b\n1,2\n3,4\n"

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify close events")
    async def test_writer_pausing_longer_than_settle_is_not_emitted_half_written(
        self, tmp_path: Path
    ) -> None:
        """A writer that keeps the file open and pauses far longer than settle between two
        writes gets the file emitted once, whole, after it closes it (inotify)."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05, pattern="*.csv")
        paths, texts = Collector("paths"), Collector("texts")
        reader = LocalFileReader()
        watchdog > [paths, reader]
        reader > texts
        target = tmp_path / "slow.csv"
        async with running(watchdog):
            with open(target, "w", encoding="utf-8") as handle:  # noqa: ASYNC230
                handle.write("name,age\nann,1\n")
                handle.flush()
                seen = watchdog.statistics().events_received
                await wait_until(lambda: watchdog.statistics().events_received > seen)
                # The sentinel is written, closed and settled after this pause began.
                assert await emitted_after_sentinel(tmp_path, paths) == []
                handle.write("bob,2\n")
            await paths.wait_for(lambda items: str(target) in items)
            others = await emitted_after_sentinel(tmp_path, paths)
            await texts.wait_for(lambda items: len(items) == 2)
        assert others == [str(target)]
        assert texts.items[1] == "name,age\nann,1\nbob,2\n"

    async def test_changed_content_is_emitted_again(self, tmp_path: Path) -> None:
        """A file whose content changes after it was emitted is emitted again."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05)
        paths = Collector()
        watchdog > paths
        target = tmp_path / "again.csv"
        async with running(watchdog):
            write_file(target, "v\n1\n")
            await paths.wait_for(lambda items: len(items) == 1)
            append_file(target, "2\n")
            await paths.wait_for(lambda items: len(items) == 2)
        assert paths.items == [str(target), str(target)]

    async def test_file_deleted_before_settling_is_not_emitted(self, tmp_path: Path) -> None:
        """A file created and removed within the settle time is never emitted."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.5)
        paths = Collector()
        watchdog > paths
        async with running(watchdog):
            fleeting = tmp_path / "fleeting.csv"
            write_file(fleeting, "x\n")
            fleeting.unlink()
            others = await emitted_after_sentinel(tmp_path, paths)
        assert others == []


class TestSettleOnFakeClock:
    async def test_emitted_settle_seconds_after_the_last_event(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Changes at 0, 0.3 and 0.6 s with settle=0.5 give one emission at exactly 1.1 s."""
        watched, files = tmp_path / "watched", tmp_path / "files"
        watched.mkdir()
        files.mkdir()
        target = files / "a.csv"
        write_file(target, "x\n")
        watchdog = LocalDirectoryWatchdog(directory=watched, settle=0.5)
        times: list[float] = []

        class Times(NanoNode):
            def process_item(self, item: Any) -> None:
                times.append(trio.current_time())

        watchdog > Times()
        async with running(watchdog):
            start = trio.current_time()
            assert watchdog._send is not None
            for _ in range(3):  # what the observer thread hands over, fed directly
                await watchdog._send.send((str(target), "closed"))
                await trio.sleep(0.3)
            await trio.sleep(5)
        assert [round(t - start, 9) for t in times] == [1.1]

    async def test_written_but_not_closed_waits_for_close_wait(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """Where closes are reported, a write arms close_wait; the close after writing
        brings the emission forward to settle seconds after it."""
        target = tmp_path / "files" / "a.csv"
        target.parent.mkdir()
        write_file(target, "x\n")
        watched = tmp_path / "watched"
        watched.mkdir()
        watchdog = LocalDirectoryWatchdog(directory=watched, settle=0.5, close_wait=30.0)
        times: list[tuple[float, str]] = []

        class Times(NanoNode):
            def process_item(self, item: Any) -> None:
                times.append((trio.current_time(), item))

        watchdog > Times()
        async with running(watchdog):
            watchdog.close_events = True  # as inotify reports; fed directly below
            start = trio.current_time()
            assert watchdog._send is not None
            await watchdog._send.send((str(target), "written"))
            await trio.sleep(10)  # a writer pausing far longer than settle
            assert times == []
            await watchdog._send.send((str(target), "closed"))
            await trio.sleep(5)
            other = tmp_path / "files" / "b.csv"
            write_file(other, "y\n")
            await watchdog._send.send((str(other), "written"))  # never closed
            await trio.sleep(60)
        assert [(round(t - start, 9), p) for t, p in times] == [
            (10.5, str(target)),
            (45.0, str(other)),
        ]

    async def test_without_close_events_a_write_settles(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """On a back-end without close events, settle seconds after the last write suffice."""
        target = tmp_path / "a.csv"
        write_file(target, "x\n")
        watched = tmp_path / "watched"
        watched.mkdir()
        watchdog = LocalDirectoryWatchdog(directory=watched, settle=0.5)
        times: list[float] = []

        class Times(NanoNode):
            def process_item(self, item: Any) -> None:
                times.append(trio.current_time())

        watchdog > Times()
        async with running(watchdog):
            watchdog.close_events = False
            start = trio.current_time()
            assert watchdog._send is not None
            await watchdog._send.send((str(target), "written"))
            await trio.sleep(5)
        assert [round(t - start, 9) for t in times] == [0.5]


class TestWhatCounts:
    async def test_moved_in_files_count(self, tmp_path: Path) -> None:
        """A file moved in from outside, and a temp file renamed to a match, are emitted."""
        watched, outside = tmp_path / "in", tmp_path / "out"
        watched.mkdir()
        outside.mkdir()
        watchdog = LocalDirectoryWatchdog(directory=watched, settle=0.05, pattern="*.csv")
        paths = Collector()
        watchdog > paths
        async with running(watchdog):
            write_file(outside / "moved.csv", "m\n")
            os.rename(outside / "moved.csv", watched / "moved.csv")
            write_file(watched / "upload.tmp", "u\n")
            os.rename(watched / "upload.tmp", watched / "upload.csv")
            await paths.wait_for(lambda items: len(items) >= 2)
            others = await emitted_after_sentinel(watched, paths)
        assert sorted(others) == [str(watched / "moved.csv"), str(watched / "upload.csv")]

    async def test_pattern_filters_file_names(self, tmp_path: Path) -> None:
        """Only names matching the glob are emitted."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05, pattern="*.csv")
        paths = Collector()
        watchdog > paths
        async with running(watchdog):
            write_file(tmp_path / "notes.txt", "no")
            write_file(tmp_path / "data.csv", "yes")
            others = await emitted_after_sentinel(tmp_path, paths)
        assert others == [str(tmp_path / "data.csv")]

    @pytest.mark.parametrize("recursive", [True, False])
    async def test_recursion(self, tmp_path: Path, recursive: bool) -> None:
        """Files in subdirectories are emitted only with recursive=True."""
        (tmp_path / "sub").mkdir()
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05, recursive=recursive)
        paths = Collector()
        watchdog > paths
        async with running(watchdog):
            write_file(tmp_path / "sub" / "deep.csv", "d\n")
            others = await emitted_after_sentinel(tmp_path, paths)
        assert others == ([str(tmp_path / "sub" / "deep.csv")] if recursive else [])

    @pytest.mark.parametrize("initial_scan", [True, False])
    async def test_initial_scan(self, tmp_path: Path, initial_scan: bool) -> None:
        """Existing files are emitted oldest first with initial_scan, and not without."""
        for name, mtime in (("new.csv", 2_000_000_000), ("old.csv", 1_000_000_000)):
            write_file(tmp_path / name, name)
            os.utime(tmp_path / name, (mtime, mtime))  # an old mtime must not hide a file
        watchdog = LocalDirectoryWatchdog(
            directory=tmp_path, settle=0.05, initial_scan=initial_scan
        )
        paths = Collector()
        watchdog > paths
        async with running(watchdog):
            others = await emitted_after_sentinel(tmp_path, paths)
        expected = [str(tmp_path / "old.csv"), str(tmp_path / "new.csv")]
        assert others == (expected if initial_scan else [])


class TestBoundedHandOff:
    async def test_block_policy_loses_nothing(self, tmp_path: Path) -> None:
        """With a one-event buffer and overflow='block', every file still arrives."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path, settle=0.05, buffer=1)
        paths = Collector()
        watchdog > paths
        names = [tmp_path / f"f{i}.csv" for i in range(8)]
        async with running(watchdog):
            for path in names:
                write_file(path, "x\n")
            await paths.wait_for(lambda items: len(set(items)) == len(names))
        assert sorted(set(paths.items)) == sorted(map(str, names))
        assert watchdog.statistics().events_dropped == 0

    async def test_drop_policy_counts_and_reports_drops(self, tmp_path: Path) -> None:
        """With overflow='drop' a full hand-off drops events, counts them and logs an event."""
        watchdog = LocalDirectoryWatchdog(
            directory=tmp_path, settle=0.3, buffer=1, overflow="drop", name="watch"
        )
        paths = Collector()
        watchdog > paths
        with capture_logs() as logs:
            async with running(watchdog, name="drops"):
                for i in range(8):
                    write_file(tmp_path / f"f{i}.csv", "x\n")
                await wait_until(lambda: watchdog.statistics().events_dropped > 0)
                await paths.wait_for(lambda items: len(items) >= 1)
                await wait_until(lambda: any(e["event"] == "watch_events_dropped" for e in logs))
        stats = watchdog.statistics()
        events = [e for e in logs if e["event"] == "watch_events_dropped"]
        reported = sum(e["dropped"] for e in events)
        assert 0 < reported <= stats.events_dropped
        assert events[-1]["total_dropped"] == reported
        assert {(e["log_level"], e["pipeline"], e["node"], e["directory"]) for e in events} == {
            ("warning", "drops", "watch", str(tmp_path))
        }
        assert stats.files_pending <= 1


class TestLifecycle:
    async def test_observer_threads_joined_on_stop_and_cancel(self, tmp_path: Path) -> None:
        """After a stop or a cancel, the observer and its threads have ended."""
        before = threads_now()
        for end in ("stop", "cancel"):
            watchdog = LocalDirectoryWatchdog(directory=tmp_path)
            watchdog > Collector()
            pipeline = Pipeline(watchdog, stats_interval=None, stall_timeout=None)
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                observer = watchdog._observer
                assert observer is not None
                assert observer.is_alive()
                pipeline.stop() if end == "stop" else pipeline.cancel()
            assert not observer.is_alive()
            assert pipeline.status == ("finished" if end == "stop" else "cancelled")
        assert threads_now() - before == set()

    @pytest.mark.parametrize("overflow", ["block", "drop"])
    def test_stop_while_the_observer_hands_over_events(self, tmp_path: Path, overflow: str) -> None:
        """Stopping while the observer thread is handing events to Trio never deadlocks."""
        before = threads_now()
        with busy_directory(tmp_path):
            statuses = start_and_stop_repeatedly(tmp_path, overflow)
        assert statuses == ["finished"] * STOP_CYCLES, "a stop did not finish: deadlocked?"
        assert threads_now() - before == set()

    def test_stop_logs_no_watchdog_error(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Stopping a watcher many times while files change logs no error record from watchdog."""
        with caplog.at_level(logging.DEBUG, logger="watchdog"), busy_directory(tmp_path):
            statuses = start_and_stop_repeatedly(tmp_path, "block")
        assert statuses == ["finished"] * STOP_CYCLES
        watchdog_records = [r for r in caplog.records if r.name.startswith("watchdog")]
        assert watchdog_records, "watchdog's debug records reach the handler"
        errors = [r.getMessage() for r in watchdog_records if r.levelno >= logging.WARNING]
        assert errors == []

    @pytest.mark.skipif(sys.platform != "linux", reason="inotify")
    async def test_refused_watch_fails_setup_and_joins_threads(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A watch the OS refuses (inotify limit) fails the run, and no watchdog thread is left."""
        from watchdog.observers import inotify

        def refuse(emitter: object) -> None:  # what inotify_add_watch says at the limit
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        monkeypatch.setattr(inotify.InotifyEmitter, "on_thread_start", refuse)
        before = threads_now()
        watchdog = LocalDirectoryWatchdog(directory=tmp_path)
        watchdog > Collector()
        with pytest.raises(OSError, match="inotify watch limit reached"):
            await Pipeline(watchdog, stats_interval=None).run()
        assert threads_now() - before == set()

    async def test_missing_directory_fails_at_setup(self, tmp_path: Path) -> None:
        """A directory that does not exist fails the pipeline with its path named."""
        watchdog = LocalDirectoryWatchdog(directory=tmp_path / "absent")
        watchdog > Collector()
        with pytest.raises(NotADirectoryError, match="absent"):
            await Pipeline(watchdog).run()

    def test_bad_overflow_policy(self) -> None:
        """An unknown overflow policy is a ConfigError listing the accepted ones."""
        with pytest.raises(ConfigError, match="'block', 'drop'"):
            LocalDirectoryWatchdog(overflow="queue")  # type: ignore[arg-type]

    def test_close_wait_defaults_to_at_least_settle(self) -> None:
        """close_wait defaults to 60 s, or to settle when that is longer; shorter is refused."""
        assert LocalDirectoryWatchdog(settle=0.5).close_wait == 60.0
        assert LocalDirectoryWatchdog(settle=120.0).close_wait == 120.0
        with pytest.raises(ConfigError, match=r"close_wait >= settle"):
            LocalDirectoryWatchdog(settle=5.0, close_wait=1.0)
