"""TailFile: follow one file, or every file matching a glob, like ``tail -F``.

Each poll (every ``poll_interval`` seconds on the Trio clock while nothing
is new):

1. *Discover*: stat the watched name (or expand the glob). Files are tracked
   by identity (device and inode), not by name, so a file renamed to another
   matching name keeps its position. With a single path, whenever the file
   under the name changes (or was truncated), the same directory is scanned
   for rotated names (``app.log.1``, ``app.log-20240101``): a file there that
   was not in the directory before is a file the name held between two polls
   (read whole) or a copytruncate copy (read from the offset already reached).
2. *Rotation by rename and create*: a tracked file no longer under any
   watched name (renamed away or deleted) stays open and is still read, since
   a writer may keep writing to its old descriptor for a moment; once it has
   not grown for ``rotate_wait`` seconds its unterminated last line (if any)
   is emitted and it is closed. The new file under the name is a new
   identity and is read from its start.
3. *Truncation and copy-truncate*: a tracked file smaller than the position
   read so far, or whose first bytes no longer match what was read there (it
   was truncated and written again between two polls), is read again from
   its start, NUL bytes before its first line skipped.
4. *Read*: up to 64 KiB at a time is split and decoded in one go, and the
   chunk's complete lines are handed to the engine as one ``Items`` list; a
   partial last line is held until its line ending arrives.

At most ``max_open_files`` files are open: idle ones (read to their end) are
closed and reopened when they grow, by name and identity.

Offsets are saved to a small JSON checkpoint file (written to a temporary
file, then renamed over the old one). A restart resumes every file whose
identity and first bytes match the checkpoint at the saved offset; a file of
the checkpoint no longer under the watched name is looked for by identity in
its directory, and a copy of it (copytruncate while stopped) by its first and
last bytes. The checkpoint must not get ahead of what the pipeline has
delivered (lines may be read twice after a crash, never lost), as far as a
source can tell:

* The final save happens only when the node ended gracefully (its input was
  exhausted with ``follow=False``, or ``pipeline.stop()``) and the whole
  pipeline then finished cleanly (``on_success``), never after a failure
  anywhere, a cancel or an interrupt. With :attr:`TailFile.commit` linked at
  the end of the pipeline it happens as soon as everything before that node
  has drained (the commit node's ``finish``).
* A source cannot see what the nodes downstream have finished, so periodic
  saves are conservative: they record the offsets as they were when the node
  had emitted ``lag`` fewer lines than now, where ``lag`` bounds the lines
  that can sit in the inboxes downstream (twice the sum of the capacities of
  every node reachable downstream, plus one per node).
"""

from __future__ import annotations

import errno
import glob
import os
import resource
import stat
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, Unpack

import trio

from .._exceptions import ConfigError
from .._items import Items
from .._node import EngineSettings, NanoNode
from ._stages import EngineOptions
from ._tail_read import FINGERPRINT_BYTES, ChunkSplitter, Known, Tracked, fingerprint
from ._tail_store import (
    candidates,
    check_checkpoint_directory,
    end_hash,
    find_identity,
    load_checkpoint,
    look_for,
    matches,
    save_checkpoint,
    still_there,
)

__all__ = ["TailFile"]

_Snapshot = list[dict[str, Any]]

StartAt = Literal["beginning", "end"]
#: Bytes read per system call.
READ_CHUNK = 1 << 16
#: Bytes read from one file before the other files get a turn.
READ_BUDGET = 1 << 20
#: Upper bound of the default ``max_open_files``.
MAX_OPEN_FILES = 256
#: Open errors retried at every poll even with ``follow=False``: they pass.
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.EINTR})

#: Returned by TailFile._copy_of: look at this new file again at the next poll.
_DEFER = object()
#: Contents of truncated files remembered, to recognise their copies.
RETIRED_FINGERPRINTS = 64


def default_max_open_files() -> int:
    """256, or a quarter of the process's soft ``RLIMIT_NOFILE`` if that is smaller."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return MAX_OPEN_FILES
    return max(1, min(MAX_OPEN_FILES, soft // 4))


class TailFile(NanoNode):
    """A source following a file, or all files matching a glob, and emitting their lines.

    Emits one :class:`~nanostream_trio.nodes.Line` (a ``str`` with ``path``
    and ``lineno``) per complete line, without its line ending, decoded with
    ``encoding`` (undecodable bytes are replaced by default, so a line of
    binary garbage still arrives and a parser downstream can reject it with
    its line number). Lines are read, decoded and handed over a chunk (64 KiB)
    at a time; ``locate=False`` emits plain ``str`` lines instead of
    :class:`Line`, about twice as fast where nothing needs ``path``/``lineno``.

    It follows ``tail -F`` semantics: rotation by rename and create,
    copy-truncate and plain truncation are detected (see the module notes in
    ``docs/nodes.md``; a truncation is reported by a ``file_truncated``
    event); a partial last line is held until it is complete; a file that does
    not exist yet is waited for (reported once by a ``file_missing`` event).

    Where reading starts, for each file found at start-up:

    * at the offset saved in ``checkpoint``, if the file there is the same
      file (same inode and same first bytes), also when it was renamed away
      within its directory or copied by copytruncate while the node was
      stopped;
    * otherwise at ``start_at``: ``"beginning"`` (default, as Vector's file
      source does without a checkpoint) or ``"end"`` (only new lines); but a
      file missing from an existing checkpoint appeared after its last save
      and is read from its beginning.

    Files that appear later (after a rotation, or new matches of the glob)
    are read from their beginning, except a copy of content already read
    (copy-truncate), recognised by its first and last bytes read and read
    from the offset already reached.

    The node is ready once the files that exist are open (up to
    ``max_open_files``). With ``follow=False`` it reads what is there
    (emitting a last unterminated line as well) and ends; otherwise it runs
    until the pipeline stops.

    Delivery is at least once (after a crash lines may be read again, never
    lost) within these limits. The final save happens only when the node
    ends gracefully (input exhausted without ``follow``, or
    ``pipeline.stop()``) and the whole pipeline then finishes cleanly
    (:meth:`on_success`), never after a failure anywhere (also downstream,
    after the tail itself ended), cancel or interrupt. Linking :attr:`commit`
    at the end of the pipeline (``tail > parse > write > tail.commit``) saves
    as soon as everything before it has drained. Periodic saves (every
    ``checkpoint_interval`` while lines flow) record the offsets of lines
    emitted at least ``lag`` lines ago, ``lag`` bounding what the inboxes
    downstream can hold; a node that keeps items across calls (``Batch``,
    ``TumblingWindow``) can hold more, so with such nodes rely on the final
    save (and :attr:`commit`).

    Args:
        path: a file path or a glob such as ``"logs/*.log"``.
        start_at: ``"beginning"`` or ``"end"``, for files without a checkpoint entry.
        checkpoint: path of the checkpoint file (created if missing); ``None``
            keeps no checkpoint.
        follow: keep following (default) or stop at the end of the files.
        poll_interval: seconds (Trio clock) between polls when nothing is new.
        checkpoint_interval: seconds between checkpoint writes while lines flow.
        encoding: text encoding of the files.
        errors: decoding error handler (default ``"replace"``; with
            ``"strict"`` an undecodable line fails the node with a
            :class:`~nanostream_trio.nodes.FileDecodeError` naming file and line).
        max_line_bytes: longer lines are skipped and reported by a
            ``line_too_long`` event (so memory stays bounded).
        rotate_wait: seconds (Trio clock) a file renamed away or deleted is
            still read after it last grew, for a writer that keeps writing to
            its old descriptor for a moment after a rotation (default 5).
        max_open_files: files held open at most (default: 256, or a quarter of
            the soft ``RLIMIT_NOFILE`` if smaller); idle files beyond it are
            closed and reopened when they grow.
        locate: emit :class:`Line` objects (default) or plain ``str``.
        name: the node's name.
        **engine: engine settings (see :class:`NanoNode`).

    Raises:
        FileNotFoundError: at setup, with ``follow=False``, if a single
            ``path`` (not a glob) does not exist (the message names the node).

    Example::

        TailFile("/var/log/app/*.log", checkpoint="app.checkpoint") > JSONLinesParser() > sink
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start_at: StartAt = "beginning",
        checkpoint: str | os.PathLike[str] | None = None,
        follow: bool = True,
        poll_interval: float = 0.25,
        checkpoint_interval: float = 5.0,
        encoding: str = "utf-8",
        errors: str = "replace",
        max_line_bytes: int = 1 << 20,
        rotate_wait: float = 5.0,
        max_open_files: int | None = None,
        locate: bool = True,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if start_at not in ("beginning", "end"):
            msg = f"node {self.name!r} got start_at={start_at!r}; accepted: 'beginning', 'end'"
            raise ConfigError(msg, node=self.name, key="start_at")
        if (
            not poll_interval > 0
            or not checkpoint_interval > 0
            or max_line_bytes < 1
            or not rotate_wait >= 0
        ):
            msg = (
                f"node {self.name!r} needs poll_interval > 0, checkpoint_interval > 0, "
                f"max_line_bytes >= 1 and rotate_wait >= 0; got {poll_interval!r}, "
                f"{checkpoint_interval!r}, {max_line_bytes!r}, {rotate_wait!r}"
            )
            raise ConfigError(msg, node=self.name, key="poll_interval")
        if max_open_files is not None and max_open_files < 1:
            msg = f"node {self.name!r} needs max_open_files >= 1; got {max_open_files!r}"
            raise ConfigError(msg, node=self.name, key="max_open_files")
        self.path = os.fspath(path)
        self.is_glob = glob.has_magic(self.path)
        self.start_at: StartAt = start_at
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.follow = follow
        self.poll_interval = poll_interval
        self.checkpoint_interval = checkpoint_interval
        self.encoding = encoding
        self.errors = errors
        self.max_line_bytes = max_line_bytes
        self.rotate_wait = rotate_wait
        self.max_open_files = max_open_files
        self.locate = locate
        self._tracked: dict[tuple[int, int], Tracked] = {}
        self._saved: list[dict[str, Any]] = []
        self._dirty = False
        self._emitted = 0  # lines emitted in this run
        self._history: deque[tuple[int, _Snapshot]] = deque()  # (emitted, offsets then)
        self._commit: _TailCommit | None = None
        self._pending: _Snapshot | None = None  # the final offsets, awaiting the commit node
        self._resuming = False  # a checkpoint file existed at start-up
        self._retired: deque[Known] = deque(maxlen=RETIRED_FINGERPRINTS)
        self._deferred: dict[str, float] = {}  # new files that may be copies being written
        self._splitter = ChunkSplitter(encoding, errors, max_line_bytes, locate, self.log_event)
        self._limit = 1
        self._open_count = 0
        self._poll = 0
        self._name_identity: tuple[int, int] | None = None  # (single path) file under the name
        self._dir_known: set[tuple[int, int]] = set()  # (single path) rotated files seen
        self._rescan = False  # (single path) look for rotated files at the next poll
        self._truncations: list[Known] = []  # (single path) truncated; copy not found yet
        self._missing = False  # a file_missing event was emitted and still holds
        self._unreadable: dict[str, int] = {}  # path -> errno reported by file_unreadable
        self._retry = False  # an open failed for a passing reason: look again

    @property
    def commit(self) -> NanoNode:
        """A pass-through node to link at the end of the pipeline; it makes the final
        checkpoint save wait until everything downstream drained without failing.

        Example::

            tail > JSONLinesParser() > JSONLinesWriter("out.jsonl") > tail.commit
        """
        if self._commit is None:
            self._commit = _TailCommit(self)
        return self._commit

    def _ns_configured(self, changes: EngineSettings) -> None:
        """A new name also renames :attr:`commit` to ``<name>.commit``."""
        commit = getattr(self, "_commit", None)
        if "name" in changes and commit is not None:
            commit.configure(name=f"{changes['name']}.commit")

    # -- lifecycle -------------------------------------------------------------

    def setup(self) -> None:
        """Load the checkpoint and open the files that exist now."""
        self._tracked = {}
        self._retired.clear()
        self._deferred = {}
        self._emitted = 0
        self._history.clear()
        self._pending = None
        self._open_count = 0
        self._poll = 0
        self._name_identity = None
        self._dir_known = set()
        self._rescan = False
        self._truncations = []
        self._missing = False
        self._unreadable = {}
        self._splitter.failure = None
        self._limit = self.max_open_files or default_max_open_files()
        check_checkpoint_directory(self.checkpoint, self.name)
        if not self.follow and not self.is_glob and not os.path.exists(self.path):
            msg = (
                f"node {self.name!r}: file {self.path} does not exist (follow=False reads "
                "the file as it is now; use follow=True to wait for it)"
            )
            raise FileNotFoundError(errno.ENOENT, msg, self.path)
        self._resuming = self.checkpoint is not None and os.path.exists(self.checkpoint)
        self._saved = load_checkpoint(self.checkpoint, self.name)
        self._find_checkpointed_elsewhere()
        self._discover(startup=True)
        if not self.is_glob:
            self._dir_known = {info_id for _, info_id in self._rotated_files()}

    async def teardown(self) -> None:
        """Save the offsets if the node ended gracefully, and close every file."""
        # teardown runs in the engine's ``finally``: an exception propagating
        # there (a failure, Cancelled, KeyboardInterrupt) means the lines in
        # flight may never be delivered, so the offsets are not saved.
        graceful = sys.exception() is None
        try:
            if graceful and self._dirty:
                # Written once the lines have been delivered: by on_success when
                # the whole pipeline has finished cleanly, or earlier by the
                # commit node's finish when one is linked.
                self._pending = self._snapshot()
        finally:
            for tracked in self._tracked.values():
                self._close(tracked)
            self._tracked = {}

    async def generator(self) -> AsyncIterator[Any]:
        """Yield lines as they are written, until stopped (or at the end without ``follow``)."""
        next_save = trio.current_time() + self.checkpoint_interval
        while True:
            emitted = False
            self._discover(startup=False)
            for tracked in list(self._tracked.values()):
                if tracked.done or (tracked.fd is None and not self._reopen(tracked)):
                    continue
                for lines in self._read(tracked):
                    emitted = True
                    self._emitted += len(lines)
                    yield Items(lines)
                if not self.follow or (tracked.gone and self._quiet_long_enough(tracked)):
                    for lines in self._finish(tracked):
                        emitted = True
                        self._emitted += len(lines)
                        yield Items(lines)
                if self._splitter.failure is not None:
                    raise self._splitter.failure
            if self._dirty and trio.current_time() >= next_save:
                self._periodic_save()
                next_save = trio.current_time() + self.checkpoint_interval
            if not self.follow and not emitted and not self._work_left():
                return
            if emitted:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(self.poll_interval)

    def _work_left(self) -> bool:
        """(follow=False) Whether a file still waits to be opened or read to its end."""
        return self._retry or self._rescan or any(not t.done for t in self._tracked.values())

    # -- discovery ---------------------------------------------------------------

    def _names(self) -> list[str] | None:
        """The watched names now; None if the glob's directory cannot be listed now (out
        of descriptors: ``glob`` would silently match nothing)."""
        if not self.is_glob:
            return [self.path]
        top = self._glob_root()
        for attempt in range(2):
            try:
                os.close(os.open(top, os.O_RDONLY | os.O_DIRECTORY))
            except FileNotFoundError:
                return []
            except OSError as exc:
                if (
                    attempt == 0
                    and exc.errno in (errno.EMFILE, errno.ENFILE)
                    and self._close_idle()
                ):
                    continue
                self._report_unreadable(top, exc)
                self._retry = True
                return None
            break
        return sorted(glob.glob(self.path))

    def _glob_root(self) -> str:
        """The longest leading directory of the glob without wildcards."""
        head = self.path
        while glob.has_magic(head):
            head = os.path.dirname(head)
        return head or "."

    def _discover(self, *, startup: bool) -> None:
        self._poll += 1
        self._retry = False
        present: set[tuple[int, int]] = set()
        found = False
        names = self._names()
        if names is None:
            return  # nothing is known about the names this poll: change nothing
        for name in names:
            try:
                info = os.stat(name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._report_unreadable(name, exc)
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            found = True
            identity = (info.st_dev, info.st_ino)
            present.add(identity)
            tracked = self._tracked.get(identity)
            if tracked is not None:
                tracked.path = name
                tracked.gone = False
                tracked.quiet_since = None
                tracked.size = info.st_size
                continue
            if not self.is_glob and not startup and identity != self._name_identity:
                self._rescan = True  # the name holds another file: look for rotated ones
            if self._rescan:
                self._scan_rotated()
            self._add(name, info, startup=startup)
        if not self.is_glob:
            current = next(iter(present), None)
            if current is None and self._name_identity is not None and not startup:
                self._rescan = True  # renamed away (or deleted): where did it go?
            self._name_identity = current
        if self._rescan:
            self._scan_rotated()
        self._report_missing(found)
        for identity, tracked in self._tracked.items():
            if identity not in present:
                tracked.gone = True

    def _add(self, name: str, info: os.stat_result, *, startup: bool, gone: bool = False) -> None:
        """Track a newly found file and open it if ``max_open_files`` allows."""
        identity = (info.st_dev, info.st_ino)
        tracked = Tracked(
            name, None, identity, size=info.st_size, gone=gone, fresh=True, at_start=startup
        )
        self._tracked[identity] = tracked
        self._dirty = True
        self._activate(tracked)

    def _report_missing(self, found: bool) -> None:
        if found:
            self._missing = False
        elif not self._missing:
            self._missing = True
            self.log_event("file_missing", "warning", path=self.path, glob=self.is_glob)

    def _report_unreadable(self, path: str, exc: OSError) -> None:
        code = exc.errno or 0
        retry = self.follow or code in _TRANSIENT  # otherwise given up, once reported
        self._retry = self._retry or retry
        if self._unreadable.get(path) == code:
            return
        self._unreadable[path] = code
        self.log_event(
            "file_unreadable",
            "warning",
            path=path,
            error=str(exc),
            errno=errno.errorcode.get(code, str(code)),
            retry=retry,
        )

    # -- opening and closing -------------------------------------------------------

    def _open_fd(self, path: str) -> int | None:
        """A descriptor of ``path``, or None (vanished, or reported by ``file_unreadable``)."""
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if (
                    attempt == 0
                    and exc.errno in (errno.EMFILE, errno.ENFILE)
                    and self._close_idle()
                ):
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    # The process is out of descriptors: hold no more than now.
                    self._limit = max(1, min(self._limit, self._open_count))
                self._report_unreadable(path, exc)
                return None
            self._unreadable.pop(path, None)
            self._open_count += 1
            return fd
        return None  # pragma: no cover - the loop always returns

    def _close(self, tracked: Tracked) -> None:
        if tracked.fd is not None:
            os.close(tracked.fd)
            tracked.fd = None
            self._open_count -= 1

    def _close_idle(self) -> bool:
        """Close the least recently active open file that is read to its end and still
        under a watched name; whether one was closed."""
        if not self.is_glob:
            return False  # a single path holds few files, each needed until it is quiet
        idle = [
            t
            for t in self._tracked.values()
            if t.fd is not None and not t.gone and t.mtime is not None and not t.partial
        ]
        if not idle:
            return False
        self._close(min(idle, key=lambda t: t.last_active))
        return True

    def _activate(self, tracked: Tracked) -> bool:
        """Open ``tracked`` (closing an idle file if at ``max_open_files``); whether it is
        open. A first open decides where reading starts."""
        if self._open_count >= self._limit and not self._close_idle():
            self._retry = True
            return False
        fd = self._open_fd(tracked.path)
        if fd is None:
            self._lost_before_open(tracked)
            return False
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != tracked.identity:
            os.close(fd)  # the name holds another file now: the next poll tracks it
            self._open_count -= 1
            self._lost_before_open(tracked, replaced=True)
            return False
        tracked.fd = fd
        if tracked.fresh:
            if not self._place(tracked, info.st_size, startup=tracked.at_start):
                self._close(tracked)  # a copy still being written, maybe: look again
                self._retry = True
                return False
            tracked.fresh = False
        return True

    def _reopen(self, tracked: Tracked) -> bool:
        """Open a closed file if it may have something to read (a first open, or its size
        changed since it was closed); whether it is open now."""
        if tracked.gone and not tracked.fresh:
            # Closed while idle, then renamed out of the glob: find it by identity.
            found = find_identity(os.path.dirname(tracked.path), tracked.identity)
            if found is None:
                self._lost_before_open(tracked, replaced=True)
                return False
            tracked.path, tracked.size = found[0], found[1].st_size
        if not tracked.fresh and tracked.size == tracked.pos:
            return False
        return self._activate(tracked)

    def _lost_before_open(self, tracked: Tracked, *, replaced: bool = False) -> None:
        """A tracked file that can no longer be opened by its name."""
        if self.follow and not replaced and tracked.path in self._unreadable:
            return  # reported; retried at the next poll
        code = self._unreadable.get(tracked.path)
        if code is not None and code in _TRANSIENT:
            return  # out of descriptors: retried at the next poll
        del self._tracked[tracked.identity]
        if code is not None:
            return  # follow=False: reported by file_unreadable, given up
        if tracked.size > tracked.pos:
            self.log_event(
                "data_possibly_lost",
                "warning",
                path=tracked.path,
                start=tracked.pos,
                end=tracked.size,
                reason="file replaced or deleted before it could be read",
            )

    def _place(self, tracked: Tracked, size: int, *, startup: bool) -> bool:
        """Where a newly opened file is read from; False: look again at the next poll."""
        if not startup and (self.is_glob or tracked.gone):
            known = self._copy_of(tracked, size)
            if known is _DEFER:
                return False
            if isinstance(known, Known):
                tracked.offset = tracked.pos = known.offset
                tracked.lineno = known.lineno
                tracked.prefix = known.prefix
                if known in self._truncations:
                    self._truncations.remove(known)
                self.log_event(
                    "file_copy_resumed",
                    path=tracked.path,
                    copy_of=known.path,
                    offset=known.offset,
                    line=known.lineno,
                )
                return True
        resumed = self._resume(tracked, size)
        # A file missing from an existing checkpoint appeared after that save
        # (the checkpoint lags behind): read it whole, start_at is for first runs.
        if startup and not resumed and self.start_at == "end" and not self._resuming:
            self._seek_to_last_line_end(tracked, size)
        return True

    # -- rotated files (single path) ----------------------------------------------

    def _rotated_files(self) -> Iterator[tuple[str, tuple[int, int]]]:
        """Files in the watched file's directory under rotated names (``app.log.1``)."""
        directory, base = os.path.split(self.path)
        checkpoint = os.path.abspath(self.checkpoint) if self.checkpoint else None

        def accept(entry: str) -> bool:
            return entry != base and entry.startswith(base)

        for path, info in candidates(directory, accept):
            if checkpoint is None or os.path.abspath(path) not in (checkpoint, f"{checkpoint}.tmp"):
                yield path, (info.st_dev, info.st_ino)

    def _scan_rotated(self) -> None:
        """Open files that appeared under rotated names since the last scan: files the
        watched name held between two polls, or copytruncate copies."""
        self._rescan = False
        before, self._dir_known = self._dir_known, set()  # only what is there now is kept
        for path, identity in list(self._rotated_files()):
            if identity in before or identity in self._tracked:
                self._dir_known.add(identity)
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            self._add(path, info, startup=False, gone=True)
            tracked = self._tracked.get(identity)
            if tracked is not None and tracked.fresh and path in self._deferred:
                continue  # maybe a copy still being written: looked at again while tracked
            self._dir_known.add(identity)
            if tracked is not None and tracked.offset == 0 and tracked.fd is not None:
                self.log_event("rotated_file_found", path=path, rotated_from=self.path)
        if len(self._dir_known) > len(before & self._dir_known):
            # Something new turned up: rotations are under way, and one that
            # shifts names while we list them can hide a file from this scan;
            # look again at the next poll, until a scan finds nothing new.
            self._rescan = True
        waiting = any(t.fresh and t.path in self._deferred for t in self._tracked.values())
        if waiting:
            self._rescan = True  # report a loss only once no possible copy is left
        else:
            for known in self._truncations:
                self.log_event(
                    "data_possibly_lost",
                    "warning",
                    path=known.path,
                    start=known.pos,
                    end=None,
                    reason="truncated; no copy of it found in its directory",
                )
            self._truncations.clear()

    def _find_checkpointed_elsewhere(self) -> None:
        """Files of the checkpoint that are no longer under the watched name, found again
        in the same directory by identity, or a copy by their first and last bytes."""
        if not self._saved:
            return
        under_name: set[tuple[int, int]] = set()
        for name in self._names() or []:
            try:
                info = os.stat(name)
            except OSError:
                continue
            under_name.add((info.st_dev, info.st_ino))
        for entry in self._saved:
            identity = (int(entry["identity"][0]), int(entry["identity"][1]))
            if identity in self._tracked:
                continue
            if identity in under_name and still_there(entry, identity):
                continue
            found = look_for(entry, identity)
            if found is None:
                continue
            path, info = found
            tracked = Tracked(path, None, (info.st_dev, info.st_ino), size=info.st_size, gone=True)
            fd = self._open_fd(path)
            if fd is None:
                continue
            tracked.fd = fd
            tracked.offset = tracked.pos = int(entry["offset"])
            tracked.lineno = int(entry["lineno"])
            tracked.prefix = os.pread(fd, int(entry["prefix_len"]), 0)
            self._tracked[tracked.identity] = tracked
            self._dirty = True
            self.log_event(
                "file_resumed_elsewhere", path=path, was=entry["path"], offset=tracked.offset
            )

    # -- where reading starts --------------------------------------------------------

    def _known_contents(self) -> Iterator[Known]:
        for other in self._tracked.values():
            yield Known.of(other)
        yield from self._retired

    def _copy_of(self, tracked: Tracked, size: int) -> Known | object | None:
        """The content a new file is a copy of (copy-truncate), :data:`_DEFER` while a copy
        may still be being written, or ``None``."""
        assert tracked.fd is not None
        head: bytes | None = None
        for known in self._known_contents():
            if len(known.prefix) < FINGERPRINT_BYTES or not known.suffix:
                continue  # too little read to tell a copy from a file that starts alike
            if head is None:
                head = os.pread(tracked.fd, FINGERPRINT_BYTES, 0)
            if head != known.prefix:
                continue
            if size < known.pos:
                first_seen = self._deferred.setdefault(tracked.path, trio.current_time())
                if trio.current_time() - first_seen < self.rotate_wait:
                    return _DEFER  # maybe a copy still being written: look again next poll
                continue
            end = os.pread(tracked.fd, len(known.suffix), known.pos - len(known.suffix))
            if end == known.suffix:
                self._deferred.pop(tracked.path, None)
                return known
        self._deferred.pop(tracked.path, None)
        return None

    def _resume(self, tracked: Tracked, size: int) -> bool:
        assert tracked.fd is not None
        for entry in self._saved:
            if tuple(entry["identity"]) != tracked.identity:
                continue
            if not matches(tracked.fd, entry, size, suffix=False):
                tracked.skip_nuls = True  # truncated while stopped: maybe a writer's old offset
                return False  # the same inode holds other content now: not a resume
            tracked.offset = tracked.pos = int(entry["offset"])
            tracked.lineno = int(entry["lineno"])
            tracked.prefix = os.pread(tracked.fd, int(entry["prefix_len"]), 0)
            return True
        return False

    def _seek_to_last_line_end(self, tracked: Tracked, size: int) -> None:
        assert tracked.fd is not None
        position = size
        while position > 0:
            start = max(0, position - READ_CHUNK)
            chunk = os.pread(tracked.fd, position - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                position = start + newline + 1
                break
            position = start
        tracked.offset = tracked.pos = position
        tracked.prefix = os.pread(tracked.fd, min(FINGERPRINT_BYTES, position), 0)
        # Line numbers count from where we started; the lines before are not read.

    # -- reading -------------------------------------------------------------------

    def _rewritten(self, tracked: Tracked, info: os.stat_result) -> bool:
        assert tracked.fd is not None
        size, pos, prefix = info.st_size, tracked.pos, tracked.prefix
        if size < pos:
            return True
        if size > pos:
            return bool(prefix) and os.pread(tracked.fd, len(prefix), 0) != prefix
        # Same size as read: rewritten to exactly that size? Look only when the
        # modification time moved since the end was reached (a touch changes it
        # too, so the first and last bytes read decide).
        if tracked.mtime is None or info.st_mtime_ns == tracked.mtime:
            return False
        tracked.mtime = info.st_mtime_ns
        if prefix and os.pread(tracked.fd, len(prefix), 0) != prefix:
            return True
        suffix = tracked.suffix
        return bool(suffix) and os.pread(tracked.fd, len(suffix), pos - len(suffix)) != suffix

    def _read(self, tracked: Tracked) -> Iterator[list[Any]]:
        fd = tracked.fd
        assert fd is not None
        info = os.fstat(fd)
        size = tracked.size = info.st_size
        if self._rewritten(tracked, info):
            yield from self._restart_truncated(tracked, size)
        budget = READ_BUDGET
        split = self._splitter.split
        while budget > 0:
            chunk = os.pread(fd, READ_CHUNK, tracked.pos)
            if not chunk:
                end = os.fstat(fd)
                tracked.mtime = end.st_mtime_ns if end.st_size == tracked.pos else None
                return
            tracked.mtime = None
            tracked.last_active = self._poll
            tracked.suffix = (tracked.suffix + chunk)[-FINGERPRINT_BYTES:]
            budget -= len(chunk)
            if len(tracked.prefix) < FINGERPRINT_BYTES and tracked.pos < FINGERPRINT_BYTES:
                tracked.prefix += chunk[: FINGERPRINT_BYTES - tracked.pos]
            self._dirty = True
            lines = split(tracked, chunk)
            if lines:
                yield lines
            if self._splitter.failure is not None:
                return

    def _restart_truncated(self, tracked: Tracked, size: int) -> Iterator[list[Any]]:
        """A truncated (or rewritten) file: emit its held partial line, read it again from
        its start (NULs before the first line skipped)."""
        self.log_event("file_truncated", path=tracked.path, offset=tracked.pos, size=size)
        known = Known.of(tracked)
        if len(tracked.prefix) >= FINGERPRINT_BYTES and tracked.suffix:
            # Its old content may reappear as a copy (copy-truncate): remember it.
            self._retired.append(known)
            if not self.is_glob:
                self._truncations.append(known)
                self._rescan = True
        elif not self.is_glob:
            self.log_event(
                "data_possibly_lost",
                "warning",
                path=tracked.path,
                start=tracked.pos,
                end=None,
                reason="truncated; too little read to recognise a copy",
            )
        lines = self._splitter.flush(tracked)
        if lines:
            yield lines
        tracked.offset = tracked.pos = tracked.lineno = 0
        tracked.prefix = tracked.suffix = b""
        tracked.mtime = None
        tracked.skipping = False
        tracked.skip_nuls, tracked.nuls = True, 0
        self._dirty = True

    def _quiet_long_enough(self, tracked: Tracked) -> bool:
        """Whether a gone file has not grown for ``rotate_wait`` seconds (it was just read)."""
        now = trio.current_time()
        if tracked.quiet_since is None or tracked.pos != tracked.last_size:
            tracked.quiet_since = now
            tracked.last_size = tracked.pos
        return now - tracked.quiet_since >= self.rotate_wait

    def _finish(self, tracked: Tracked) -> Iterator[list[Any]]:
        """Read a file to its end, emit a last unterminated line, close it if it is gone
        (or, without ``follow``, once read)."""
        yield from self._read(tracked)
        if tracked.fd is None or self._splitter.failure is not None:
            return
        if os.pread(tracked.fd, 1, tracked.pos):
            return  # more to read than one budget: finish on the next poll
        lines = self._splitter.flush(tracked)
        if lines:
            yield lines
        self._dirty = True
        if tracked.gone and self.follow:
            self._close(tracked)
            del self._tracked[tracked.identity]
        elif not self.follow:
            self._close(tracked)
            tracked.done = True

    # -- checkpoint ----------------------------------------------------------------

    def _lag(self) -> int:
        """Lines that can sit downstream, unseen by this node: twice each inbox, plus one."""
        seen: set[int] = set()
        lag = 0
        pending: list[NanoNode] = list(self.downstream)
        while pending:
            node = pending.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            lag += 2 * node._ns_capacity + 1
            pending.extend(node.downstream)
        return lag

    def _periodic_save(self) -> None:
        """Save the newest offsets at least ``lag`` lines behind what was emitted."""
        self._dirty = False
        if self._history and self._history[-1][0] == self._emitted:
            self._history.pop()  # nothing emitted since: these offsets replace those
        self._history.append((self._emitted, self._snapshot()))
        safe = self._emitted - self._lag()
        chosen: _Snapshot | None = None
        while self._history and self._history[0][0] <= safe:
            chosen = self._history.popleft()[1]
        if chosen is not None:
            save_checkpoint(self.checkpoint, self.path, chosen)
        if self._history:
            self._dirty = True  # saves behind what was emitted: try again next interval

    def on_success(self) -> None:
        """The pipeline finished cleanly: every line emitted was delivered; save the offsets."""
        self._commit_pending()

    def _commit_pending(self) -> None:
        """Write the final offsets held since a graceful end (on success, or the commit node)."""
        if self._pending is not None:
            save_checkpoint(self.checkpoint, self.path, self._pending)
            self._pending = None

    def _snapshot(self) -> _Snapshot:
        files: _Snapshot = []
        saved = {tuple(entry["identity"]): entry for entry in self._saved}
        for tracked in self._tracked.values():
            if tracked.fresh:
                entry = saved.get(tracked.identity)  # not opened yet: keep what was saved
                if entry is not None:
                    files.append(entry)
                continue
            prefix = tracked.prefix[: min(len(tracked.prefix), tracked.offset)]
            entry = {
                "path": tracked.path,
                "identity": list(tracked.identity),
                "offset": tracked.offset,
                "lineno": tracked.lineno,
                "prefix_len": len(prefix),
                "prefix_sha256": fingerprint(prefix),
            }
            end = end_hash(tracked)
            if end is not None:
                entry["suffix_len"], entry["suffix_sha256"] = end
            files.append(entry)
        return files


class _TailCommit(NanoNode):
    """Passes items on; its ``finish`` (run only after a clean drain) writes the final
    offsets of its TailFile."""

    def __init__(self, tail: TailFile) -> None:
        super().__init__(f"{tail.name}.commit")
        self._tail = tail

    def process_item(self, item: Any) -> Any:
        """Pass ``item`` on unchanged."""
        return item

    def finish(self) -> None:
        """Save the TailFile's final offsets: everything upstream drained without failing."""
        self._tail._commit_pending()
