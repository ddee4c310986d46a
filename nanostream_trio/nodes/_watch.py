"""LocalDirectoryWatchdog: a source emitting the paths of files that appear or change.

How the pieces fit:

* ``setup`` starts a ``watchdog`` observer (its own threads; inotify on Linux)
  and, if asked, lists the files already present. The node is ready once the
  observer watches, so a file written right after ``nursery.start`` is seen.
* The observer thread calls :class:`_Bridge`, which filters events (files
  only, matching the pattern; opened and closed-without-writing events are
  ignored, so a reader downstream opening the file does not re-trigger it)
  and hands each change to the Trio side through a bounded memory channel,
  using the Trio token captured in ``setup`` (``trio.from_thread``). When
  the channel is full the policy decides: ``overflow="block"`` makes the
  observer thread wait; ``overflow="drop"`` drops the event and counts it.
* The async ``generator`` runs on the Trio thread. It keeps one deadline per
  changed path and emits the path when the deadline passes without further
  events: a file written in several steps is emitted once. Where the
  back-end reports a file closed after writing (inotify on Linux: watchdog's
  ``FileClosedEvent``), a write only arms a long fallback deadline
  (``close_wait``) and the close after writing, a creation or a move into the
  directory arms ``settle``: a writer that pauses longer than ``settle``
  between two writes is not caught half-way. (inotify reports a file moved in
  from outside the watch as created, with no close: hence creations settle.)
  Other back-ends have only the ``settle`` time after the latest event. A
  file is emitted only if its size, modification time or inode differ from
  when it was last emitted.
* While nothing is due, the generator yields an empty ``Items()`` about once
  a second (:data:`IDLE_YIELD`): it emits nothing, but a checkpoint barrier
  can only pass a source when it yields.
* Checkpoints: the position is the map of emitted files to their signature
  (inode, size, modification time), updated before each path is yielded,
  plus the wall-clock time the watch first started. ``restore`` takes them
  back and lists the directory: files new or changed since (by that map, or
  by their ctime for files never emitted) become pending, so what changed
  while the pipeline was down is emitted and what was emitted and is
  unchanged is not.
* ``teardown`` closes the channel (so a blocked observer thread wakes up),
  stops the observer and joins its threads, also when the pipeline is
  cancelled. It stops them from a worker thread, never from the Trio thread:
  watchdog's dispatch thread holds the observer's lock while :class:`_Bridge`
  waits for the Trio thread, and ``Observer.stop()`` takes that lock, so
  stopping on the Trio thread could deadlock. See :func:`_stop_observer` for
  the order in which the threads are stopped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import stat
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, Unpack

import trio
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, EventEmitter

from .._exceptions import ConfigError
from .._items import Items
from .._node import NanoNode
from ._stages import EngineOptions

__all__ = ["LocalDirectoryWatchdog", "WatchStatistics"]

Overflow = Literal["block", "drop"]
#: What the observer thread reports about a path: created (or moved in from outside
#: the watch, which inotify reports the same way), written to (maybe still open),
#: closed after writing, moved in from another watched name, or gone.
Change = Literal["created", "written", "closed", "moved_in", "gone"]
#: Signatures of emitted files remembered, to tell a real change from a touch
#: (also the bound of a checkpoint's position: the oldest emitted are forgotten).
MAX_REMEMBERED = 100_000
#: Seconds a watcher with nothing to emit waits before it yields an empty ``Items()``,
#: so that checkpoint barriers pass.
IDLE_YIELD = 1.0
#: How far before the first start a file's ctime counts as "changed since the start"
#: on restore: file times come from a coarser clock than ``time.time_ns()``.
_START_MARGIN_NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class WatchStatistics:
    """Counters of a :class:`LocalDirectoryWatchdog`.

    Attributes:
        events_received: file events taken from the observer thread.
        events_dropped: events dropped because the hand-off was full
            (``overflow="drop"`` only).
        files_emitted: paths emitted.
        files_pending: paths waiting for their settle time to pass.
    """

    events_received: int
    events_dropped: int
    files_emitted: int
    files_pending: int


class _Bridge(FileSystemEventHandler):
    """Runs in the observer thread: filters events and hands them to Trio."""

    def __init__(
        self,
        watcher: LocalDirectoryWatchdog,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[tuple[str, Change]],
    ) -> None:
        self._watcher = watcher
        self._token = token
        self._send = send

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            self._hand_off(src, "gone")
            self._hand_off(os.fsdecode(event.dest_path), "moved_in")
        elif isinstance(event, FileClosedEvent):
            self._hand_off(src, "closed")
        elif isinstance(event, FileCreatedEvent):
            self._hand_off(src, "created")
        elif isinstance(event, FileModifiedEvent):
            self._hand_off(src, "written")
        elif isinstance(event, FileDeletedEvent):
            self._hand_off(src, "gone")
        # FileOpenedEvent, FileClosedNoWriteEvent and attribute changes are not
        # changes of content: a reader opening the file must not re-trigger it.

    def _hand_off(self, path: str, change: Change) -> None:
        if not self._watcher.matches(path):
            return
        try:
            if self._watcher.overflow == "block":
                trio.from_thread.run(self._send.send, (path, change), trio_token=self._token)
            else:
                trio.from_thread.run_sync(self._offer, (path, change), trio_token=self._token)
        except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the node is shutting down; nothing downstream wants this event
        except trio.Cancelled:  # pragma: no cover - Trio run ending while we waited
            pass  # outside Trio, in the observer's thread: nothing to propagate to

    def _offer(self, change: tuple[str, Change]) -> None:
        try:
            self._send.send_nowait(change)
        except trio.WouldBlock:
            self._watcher._dropped += 1


class LocalDirectoryWatchdog(NanoNode):
    """A source emitting the path of each file that appears or changes in ``directory``.

    Files created, modified, closed after writing, or moved in (also renamed
    from a name the pattern does not match, the usual "write a temp file, then
    rename" pattern) are emitted as absolute path strings once complete:

    * where the back-end reports closes (inotify on Linux), ``settle``
      seconds after the file was closed after writing (or moved in) with no
      event since; a file written to but not closed is emitted only after
      ``close_wait`` seconds without events (a writer that keeps it open);
    * elsewhere, ``settle`` seconds after its latest event.

    A file emitted once is emitted again only when its size, modification
    time or inode change (so a writer that closes and reopens the file to
    append, pausing longer than ``settle``, gets it emitted once per pause).
    Writing to a temporary name (or another directory) and renaming it into
    place is always safe. Files deleted or moved out before they are due are
    not emitted.

    The node runs until the pipeline is stopped or cancelled. Paths not yet
    settled at that moment are not emitted.

    Checkpoints: the position (:meth:`snapshot`) is every emitted file with
    its inode, size and modification time (the last :data:`MAX_REMEMBERED`
    emitted; a forgotten one counts as never emitted), and the wall-clock
    time the watch first started. After :meth:`restore`, the files present
    are listed: one emitted before and changed since, or never emitted and
    changed (created, written, moved in: its ctime) since the watch first
    started, is emitted once settled, like a new file; one emitted and
    unchanged is not. With ``initial_scan`` every file present is a
    candidate, as at any start, except those emitted and unchanged. While
    idle the node yields an empty ``Items()`` about once a second so that
    checkpoint barriers pass.

    Args:
        directory: the directory to watch; it must exist.
        pattern: a glob (``fnmatch``) matched against file names, e.g. ``"*.csv"``.
        recursive: watch subdirectories too.
        initial_scan: also emit the matching files already present at start,
            oldest first.
        settle: seconds without events (Trio clock) after a close after
            writing (or, without close events, after the latest event) before a
            file counts as complete.
        close_wait: where closes are reported, seconds without events before
            a file written to but never closed is emitted anyway (default 60,
            or ``settle`` if longer).
        overflow: when ``buffer`` events are waiting: ``"block"`` (default)
            makes the observer thread wait; ``"drop"`` drops events and counts
            them (:meth:`statistics`, ``watch_events_dropped`` event).
        buffer: events that may wait between the observer thread and the
            node, and paths that may wait for their settle time.
        name: the node's name.
        **engine: ``capacity`` and the other engine settings (see :class:`NanoNode`).

    Raises:
        ConfigError: a setting is out of range.
        NotADirectoryError: (at setup) ``directory`` is not a directory.

    Example::

        watchdog = LocalDirectoryWatchdog(directory="./data_directory", pattern="*.csv")
        watchdog > LocalFileReader() > CSVReader() > PrinterOfThings()
        watchdog.global_start()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = ".",
        *,
        pattern: str = "*",
        recursive: bool = False,
        initial_scan: bool = False,
        settle: float = 0.5,
        close_wait: float | None = None,
        overflow: Overflow = "block",
        buffer: int = 1024,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if overflow not in ("block", "drop"):
            msg = f"node {self.name!r} got overflow={overflow!r}; accepted: 'block', 'drop'"
            raise ConfigError(msg, node=self.name, key="overflow")
        if close_wait is None:
            close_wait = max(60.0, settle)
        if settle < 0 or buffer < 1 or close_wait < settle:
            msg = (
                f"node {self.name!r} needs settle >= 0, close_wait >= settle and buffer >= 1; "
                f"got settle={settle!r}, close_wait={close_wait!r}, buffer={buffer!r}"
            )
            raise ConfigError(msg, node=self.name, key="settle")
        self.directory = os.path.abspath(os.fspath(directory))
        #: What the node waits for while idle (in its ``statistics()`` entry), or None.
        self.waiting_for: str | None = None
        self.pattern = pattern
        self.recursive = recursive
        self.initial_scan = initial_scan
        self.settle = settle
        self.close_wait = close_wait
        self.close_events = False  # whether the back-end reports closes (known at setup)
        self.overflow: Overflow = overflow
        self.buffer = buffer
        self._observer: BaseObserver | None = None
        self._receive: trio.MemoryReceiveChannel[tuple[str, Change]] | None = None
        self._send: trio.MemorySendChannel[tuple[str, Change]] | None = None
        self._pending: dict[str, float] = {}
        self._held: tuple[str, Change] | None = None  # a new path's change while buffer is full
        self._emitted: dict[str, tuple[int, int, int]] = {}
        self._received = 0
        self._dropped = 0
        self._reported_dropped = 0
        self._files_emitted = 0
        self._first_started_ns = 0  # wall clock, at the first start (restored)

    def matches(self, path: str) -> bool:
        """Whether ``path`` is a file name this node watches for."""
        return fnmatch.fnmatch(os.path.basename(path), self.pattern)

    def statistics(self) -> WatchStatistics:
        """A snapshot of the node's counters."""
        return WatchStatistics(
            events_received=self._received,
            events_dropped=self._dropped,
            files_emitted=self._files_emitted,
            files_pending=len(self._pending),
        )

    def setup(self) -> None:
        """Start the observer (and list existing files for ``initial_scan``)."""
        if not os.path.isdir(self.directory):
            msg = f"node {self.name!r} cannot watch {self.directory}: not an existing directory"
            raise NotADirectoryError(msg)
        self._pending = {}
        self._held = None
        self._first_started_ns = time.time_ns()
        send, self._receive = trio.open_memory_channel[tuple[str, Change]](self.buffer)
        self._send = send  # kept for tests that feed changes on the fake clock
        bridge = _Bridge(self, trio.lowlevel.current_trio_token(), send)
        observer = Observer()  # on Linux this already starts its inotify reader thread
        try:
            observer.schedule(bridge, self.directory, recursive=self.recursive)
            observer.start()  # returns once the OS watch is in place
        except BaseException:
            # E.g. OSError ENOSPC when the inotify watch limit is reached. The
            # observer thread never ran, but the threads it had started must be
            # stopped and joined (stop() does both; no event is in flight yet).
            observer.stop()
            raise
        self._observer = observer
        self.close_events = _reports_closes(observer)
        if self.initial_scan:
            deadline = trio.current_time() + self.settle
            for path in self._existing_files():
                self._pending[path] = deadline

    def _existing_files(self) -> list[str]:
        return [path for path, _ in self._existing_files_with_stat()]

    def _existing_files_with_stat(self) -> list[tuple[str, os.stat_result]]:
        """The matching files present, oldest (by modification time) first."""
        found: list[tuple[int, str, os.stat_result]] = []
        for root, dirs, files in os.walk(self.directory):
            if not self.recursive:
                dirs.clear()
            for file_name in files:
                path = os.path.join(root, file_name)
                if self.matches(path):
                    try:
                        info = os.stat(path)
                    except FileNotFoundError:
                        continue
                    found.append((info.st_mtime_ns, path, info))
        found.sort(key=lambda entry: entry[:2])
        return [(path, info) for _, path, info in found]

    def snapshot(self) -> dict[str, Any]:
        """Checkpoint hook: the position, covering every path yielded so far.

        Returns:
            ``{"emitted": {path: (inode, size, mtime_ns)}, "first_started_ns": ...}``:
            the emitted files (at most :data:`MAX_REMEMBERED`, oldest first)
            and the wall-clock time of the watch's first start.
        """
        return {"emitted": dict(self._emitted), "first_started_ns": self._first_started_ns}

    def restore(self, state: dict[str, Any]) -> None:
        """Checkpoint hook: take back a :meth:`snapshot` and find what changed meanwhile.

        Called after ``setup`` (the observer already watches) and before the
        generator starts. Each matching file present that was emitted and has
        changed since, or was never emitted and has a ctime after the watch's
        first start (or any, with ``initial_scan``), becomes pending for
        ``settle`` seconds. Emitted files no longer present are forgotten.
        """
        emitted: dict[str, Any] = dict(state["emitted"])
        if len(emitted) > MAX_REMEMBERED:
            emitted = dict(list(emitted.items())[-MAX_REMEMBERED:])
        self._first_started_ns = state["first_started_ns"]
        since = self._first_started_ns - _START_MARGIN_NS
        deadline = trio.current_time() + self.settle
        present: set[str] = set()
        for path, info in self._existing_files_with_stat():
            present.add(path)
            if path in self._pending:  # initial_scan: checked against emitted when due
                continue
            if path in emitted or self.initial_scan or info.st_ctime_ns >= since:
                self._pending[path] = deadline
        # Tuples again (a store using JSON would give lists): signatures are compared with ==.
        self._emitted = {
            path: (sign[0], sign[1], sign[2]) for path, sign in emitted.items() if path in present
        }

    async def generator(self) -> AsyncIterator[str | Items]:
        """Yield each settled, changed file's path, until stopped.

        With nothing to emit for :data:`IDLE_YIELD` seconds it yields an empty
        :class:`~nanostream_trio.Items` (nothing is emitted; a checkpoint
        barrier can pass).
        """
        receive = self._receive
        assert receive is not None, "setup() runs first"
        pending = self._pending
        last_yield = trio.current_time()
        while True:
            self._take_changes(receive)
            now = trio.current_time()
            # Stable sort: paths due at the same time keep their order of arrival.
            due = sorted((item for item in pending.items() if item[1] <= now), key=_deadline_of)
            for path, _ in due:
                del pending[path]
                # Notes the path as emitted before it is yielded: a snapshot
                # while suspended at the yield covers it.
                if self._changed_since_emitted(path):
                    self._files_emitted += 1
                    yield path
                    last_yield = trio.current_time()
            if due:
                continue
            idle_until = last_yield + IDLE_YIELD  # one sum, compared and waited for alike
            if now >= idle_until:
                yield Items()
                last_yield = trio.current_time()
                continue
            wake = min(min(pending.values(), default=float("inf")), idle_until)
            if self._held is not None:
                await trio.sleep_until(wake)  # leave events in the channel: back-pressure
                continue
            self.waiting_for = f"file events in {self.directory}"  # for statistics()
            with trio.move_on_at(wake):
                self._admit(await receive.receive())
            self.waiting_for = None

    def _take_changes(self, receive: trio.MemoryReceiveChannel[tuple[str, Change]]) -> None:
        while True:
            held = self._held
            if held is not None:
                if len(self._pending) >= self.buffer:
                    break
                self._held = None
                self._note(held)
                continue
            try:
                change = receive.receive_nowait()
            except trio.WouldBlock:
                break
            self._admit(change)
        if self._dropped != self._reported_dropped:
            self.log_event(
                "watch_events_dropped",
                "warning",
                dropped=self._dropped - self._reported_dropped,
                total_dropped=self._dropped,
                directory=self.directory,
            )
            self._reported_dropped = self._dropped

    def _admit(self, change: tuple[str, Change]) -> None:
        """Note ``change``, or hold it if it is for a new path and ``buffer`` paths wait.

        Changes to paths already waiting are always taken (a close after
        writing must reach a path whose deadline is ``close_wait`` away).
        """
        path, kind = change
        if kind != "gone" and path not in self._pending and len(self._pending) >= self.buffer:
            self._held = change
        else:
            self._note(change)

    def _note(self, change: tuple[str, Change]) -> None:
        path, kind = change
        self._received += 1
        self._pending.pop(path, None)  # re-insert: settle order follows the last event
        if kind == "gone":
            self._emitted.pop(path, None)
            return
        wait = self.settle
        if kind == "written" and self.close_events:
            # Written to and maybe still open: its close after writing (inotify's
            # IN_CLOSE_WRITE) will bring this forward to ``settle``.
            wait = self.close_wait
        self._pending[path] = trio.current_time() + wait

    def _changed_since_emitted(self, path: str) -> bool:
        try:
            info = os.stat(path)
        except OSError:
            return False  # gone (or unreadable) before it settled
        if not stat.S_ISREG(info.st_mode):
            return False
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._emitted.pop(path, None) == signature:
            self._emitted[path] = signature
            return False
        self._emitted[path] = signature
        if len(self._emitted) > MAX_REMEMBERED:
            del self._emitted[next(iter(self._emitted))]
        return True

    async def teardown(self) -> None:
        """Stop the observer and join its threads."""
        if self._receive is not None:
            self._receive.close()  # a thread blocked handing off an event gets an error
        observer, self._observer = self._observer, None
        if observer is not None:
            # Not on the Trio thread: see the module notes (it could deadlock).
            await trio.to_thread.run_sync(_stop_observer, observer)


def _deadline_of(item: tuple[str, float]) -> float:
    return item[1]


def _reports_closes(observer: BaseObserver) -> bool:
    """Whether ``observer``'s back-end reports files closed after writing.

    watchdog 7's inotify back-end does (``IN_CLOSE_WRITE``); its polling,
    kqueue, FSEvents and Windows back-ends do not.
    """
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # pragma: no cover - not Linux
        return False
    return isinstance(observer, InotifyObserver)


def _stop_observer(observer: BaseObserver) -> None:
    """Stop ``observer`` and join its threads (in a worker thread), without error records.

    ``Observer.stop()`` stops each emitter thread by setting its stop flag and
    then, from the calling thread, dropping the emitter's inotify watch group.
    An emitter thread that had already checked the flag, or had just read an
    event, then finds the group gone and logs the error "InotifyEmitter.
    queue_events() called when the thread is inactive" (watchdog 7: a race in
    its stop protocol, not a fault of ours). Stopping each inotify emitter
    ourselves first avoids that window: set its stop flag, close its watch
    group (which wakes the blocking read) while the emitter still holds it,
    and join it. ``Observer.stop()`` then only finds finished emitters.
    """
    for emitter in list(observer.emitters):
        _stop_emitter(emitter)
    observer.stop()
    observer.join()


def _stop_emitter(emitter: EventEmitter) -> None:
    # ``_inotify`` is InotifyEmitter's private watch group (watchdog 7). Other
    # emitters (polling, other platforms) or another watchdog version: leave
    # them to Observer.stop(), which stops them its own way.
    watch_group = getattr(emitter, "_inotify", None)
    deactivate = getattr(watch_group, "deactivate", None)
    if not callable(deactivate) or not emitter.is_alive():
        return
    emitter.stopped_event.set()  # its loop ends after the current read
    deactivate()  # closes the watch group's queue: a blocked read returns at once
    emitter.join()
