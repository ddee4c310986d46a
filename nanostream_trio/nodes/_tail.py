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
   chunk's complete lines are handed to the engine as one ``Lines`` batch
   (plain ``str``, one location for the chunk; with ``locate=True`` an
   ``Items`` list of ``Line`` objects); a partial last line is held until its
   line ending arrives.

At most ``max_open_files`` files are open: idle ones (read to their end) are
closed and reopened when they grow, by name and identity.

Positions live in the pipeline's checkpoint store (``Pipeline(...,
checkpoint="state.db")``), through the engine's checkpoint hooks:

* :meth:`TailFile.snapshot`, called while the generator is suspended at a
  ``yield`` (offsets are advanced before the ``yield`` that hands lines out),
  returns per file its identity, offset, line number and the hashes that
  recognise it again: exactly what has been yielded, nothing more. An idle
  poll yields an empty ``Items()`` so a checkpoint barrier can pass.
* :meth:`TailFile.restore`, called after ``setup`` and before ``generator``,
  places the files opened by ``setup`` again: a file whose identity and first
  bytes match the state resumes at its offset; a file of the state no longer
  under the watched name is looked for by identity in its directory, and a
  copy of it (copytruncate while stopped) by its first and last bytes.
"""

from __future__ import annotations

import errno
import glob
import os
import resource
import stat
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, Unpack

import trio

from .._exceptions import ConfigError
from .._items import Items, Lines
from .._node import NanoNode
from ._stages import EngineOptions
from ._tail_read import FINGERPRINT_BYTES, ChunkSplitter, Known, Tracked
from ._tail_store import (
    NO_FILE,
    candidates,
    end_hash,
    entries,
    entry,
    find_identity,
    look_for,
    matches,
    saved_state,
    still_there,
    truncated_entry,
)

__all__ = ["TailFile"]

#: Arguments of earlier versions, refused with the fix (see TailFile.__init__).
_REMOVED = frozenset({"checkpoint", "checkpoint_interval"})
StartAt = Literal["beginning", "end"]
#: Bytes read per system call.
READ_CHUNK = 1 << 16
#: Bytes read from one file before the other files get a turn.
READ_BUDGET = 1 << 20
#: Upper bound of the default ``max_open_files``.
MAX_OPEN_FILES = 256
# The process (or the system) is out of file descriptors.
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
#: Open errors retried at every poll even with ``follow=False``: they pass.
_TRANSIENT = _OUT_OF_DESCRIPTORS | {errno.EAGAIN, errno.EINTR}

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


def _handed_over(lines: list[Any]) -> Items:
    """A chunk's lines as the engine takes them: a located batch as it is, else Items."""
    return lines if lines.__class__ is Lines else Items(lines)


#: Polls a rotated file may go unfound (names moving) before it counts as lost.
_MISSES = 5


class TailFile(NanoNode):
    """A source following a file, or all files matching a glob, and emitting their lines.

    Emits one ``str`` per complete line, without its line ending, decoded
    with ``encoding`` (undecodable bytes are replaced by default, so a line of
    binary garbage still arrives and a parser downstream can reject it with
    its line number). Lines are read, decoded and handed over a chunk (64 KiB)
    at a time, with one location (file, first line number) for the chunk
    rather than one per line: an error raised for a line by the node linked
    right after this one names the file and line (JSONLinesParser puts them in
    its message; for other nodes they are a note on the exception), and its
    dead letter's ``item`` is a :class:`~nanostream_trio.nodes.Line`. With
    ``locate=True`` every line is a :class:`~nanostream_trio.nodes.Line` (a
    ``str`` with ``path`` and ``lineno``), for nodes that read those; it costs
    about three times as much per line.

    It follows ``tail -F`` semantics: rotation by rename and create,
    copy-truncate and plain truncation are detected (see the module notes in
    ``docs/nodes.md``; a truncation is reported by a ``file_truncated``
    event); a partial last line is held until it is complete; a file that does
    not exist yet is waited for (reported once by a ``file_missing`` event).

    Where reading starts, for each file found at start-up:

    * on a start from a checkpoint (:meth:`restore`), at the position saved
      for the file, if the file there is the same file (same inode and same
      first bytes), also when it was renamed away within its directory or
      copied by copytruncate while the pipeline was down; a file not in the
      checkpoint appeared after it was taken and is read from its beginning;
    * otherwise at ``start_at``: ``"beginning"`` (default, as Vector's file
      source does without a checkpoint) or ``"end"`` (only new lines).

    Files that appear later (after a rotation, or new matches of the glob)
    are read from their beginning, except a copy of content already read
    (copy-truncate), recognised by its first and last bytes read and read
    from the offset already reached.

    The node is ready once the files that exist are open (up to
    ``max_open_files``). With ``follow=False`` it reads what is there
    (emitting a last unterminated line as well) and ends; otherwise it runs
    until the pipeline stops.

    Positions are kept by the pipeline's checkpoints (``Pipeline(...,
    checkpoint="state.db")``, see :meth:`snapshot`): a restart continues
    after the last line of the last checkpoint. The ``checkpoint=`` and
    ``checkpoint_interval=`` arguments of earlier versions (a JSON file of
    its own) are refused with a :class:`~nanostream_trio.ConfigError`.

    Args:
        path: a file path or a glob such as ``"logs/*.log"``.
        start_at: ``"beginning"`` or ``"end"``, on a start without a checkpoint.
        follow: keep following (default) or stop at the end of the files.
        poll_interval: seconds (Trio clock) between polls when nothing is new.
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
        locate: emit :class:`Line` objects, or plain ``str`` located per chunk
            (default; see above).
        name: the node's name.
        **engine: engine settings (see :class:`NanoNode`).

    Raises:
        ConfigError: a bad argument, or ``checkpoint=`` / ``checkpoint_interval=``
            (removed: give them to the :class:`~nanostream_trio.Pipeline`).
        FileNotFoundError: at setup, with ``follow=False``, if a single
            ``path`` (not a glob) does not exist (the message names the node).

    Example::

        tail = TailFile("/var/log/app/*.log", name="app_logs")
        tail > JSONLinesParser() > sink
        Pipeline(tail, checkpoint="state.db", checkpoint_interval=5.0).start()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start_at: StartAt = "beginning",
        follow: bool = True,
        poll_interval: float = 0.25,
        encoding: str = "utf-8",
        errors: str = "replace",
        max_line_bytes: int = 1 << 20,
        rotate_wait: float = 5.0,
        max_open_files: int | None = None,
        locate: bool = False,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        options: dict[str, Any] = dict(engine)
        removed = sorted(options.keys() & _REMOVED)
        for key in removed:
            del options[key]
        super().__init__(name, **options)
        if removed:
            given = ", ".join(f"{key}=" for key in removed)
            msg = (
                f"node {self.name!r}: TailFile no longer takes {given}; read positions are "
                "kept in the pipeline's checkpoint store now: give "
                'Pipeline(..., checkpoint="state.db", checkpoint_interval=5.0) instead '
                "(and unlink tail.commit); an old TailFile checkpoint file is not read"
            )
            raise ConfigError(msg, node=self.name, key=removed[0])
        if start_at not in ("beginning", "end"):
            msg = f"node {self.name!r} got start_at={start_at!r}; accepted: 'beginning', 'end'"
            raise ConfigError(msg, node=self.name, key="start_at")
        if not poll_interval > 0 or max_line_bytes < 1 or not rotate_wait >= 0:
            msg = (
                f"node {self.name!r} needs poll_interval > 0, max_line_bytes >= 1 and "
                f"rotate_wait >= 0; got {poll_interval!r}, {max_line_bytes!r}, {rotate_wait!r}"
            )
            raise ConfigError(msg, node=self.name, key="poll_interval")
        if max_open_files is not None and max_open_files < 1:
            msg = f"node {self.name!r} needs max_open_files >= 1; got {max_open_files!r}"
            raise ConfigError(msg, node=self.name, key="max_open_files")
        self.path = os.fspath(path)
        self.is_glob = glob.has_magic(self.path)
        self.start_at: StartAt = start_at
        self.follow = follow
        self.poll_interval = poll_interval
        self.encoding = encoding
        self.errors = errors
        self.max_line_bytes = max_line_bytes
        self.rotate_wait = rotate_wait
        self.max_open_files = max_open_files
        self.locate = locate
        self._tracked: dict[tuple[int, int], Tracked] = {}
        self._saved: dict[tuple[int, int], dict[str, Any]] = {}  # restored entries
        self._resuming = False  # restore() was called: start_at does not apply
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
        #: What the node waits for while idle (in its ``statistics()`` entry), or None.
        self.waiting_for: str | None = None
        self._unreadable: dict[str, int] = {}  # path -> errno reported by file_unreadable
        self._retry = False  # an open failed for a passing reason: look again

    # -- lifecycle -------------------------------------------------------------

    def setup(self) -> None:
        """Open the files that exist now."""
        self._tracked = {}
        self._saved = {}
        self._resuming = False
        self._retired.clear()
        self._deferred = {}
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
        if not self.follow and not self.is_glob and not os.path.exists(self.path):
            msg = (
                f"node {self.name!r}: file {self.path} does not exist (follow=False reads "
                "the file as it is now; use follow=True to wait for it)"
            )
            raise FileNotFoundError(errno.ENOENT, msg, self.path)
        self._discover(startup=True)
        if not self.is_glob:
            self._dir_known = {info_id for _, info_id in self._rotated_files()}

    def teardown(self) -> None:
        """Close every file (what was read of them is kept, for a last :meth:`snapshot`)."""
        for tracked in self._tracked.values():
            self._close(tracked)

    async def generator(self) -> AsyncIterator[Any]:
        """Yield lines as they are written, until stopped (or at the end without ``follow``)."""
        while True:
            emitted = False
            self._discover(startup=False)
            for tracked in list(self._tracked.values()):
                if tracked.done or (tracked.fd is None and not self._reopen(tracked)):
                    continue
                # The reads advance the offsets before each yield: a snapshot()
                # taken while suspended there covers exactly the lines handed out.
                for lines in self._read(tracked):
                    emitted = True
                    yield _handed_over(lines)
                if not self.follow or (tracked.gone and self._quiet_long_enough(tracked)):
                    for lines in self._finish(tracked):
                        emitted = True
                        yield _handed_over(lines)
                if self._splitter.failure is not None:
                    raise self._splitter.failure
            if not self.follow and not emitted and not self._work_left():
                return
            if emitted:
                await trio.lowlevel.checkpoint()
            else:
                yield Items()  # nothing new: a checkpoint barrier can pass here
                # For statistics(): what an idle TailFile waits for.
                self.waiting_for = (
                    f"{self.path} to appear" if self._missing else f"new lines in {self.path}"
                )
                await trio.sleep(self.poll_interval)
                self.waiting_for = None

    # -- checkpoint hooks (called by the engine) ------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The position after every line yielded so far, for the pipeline's checkpoint.

        Called by the engine while :meth:`generator` is suspended at a ``yield``
        (the lines yielded are handed on). Per file: its path, identity (device
        and inode), offset and line number, and SHA-256 hashes of its first bytes
        and of the bytes before the offset (to recognise it, or a copy of it,
        on restore); with a single path, also such an entry for content truncated
        since the last poll whose copy is still looked for (copytruncate), so a
        restart finds that copy. A file's entry is built again only when its
        position moved, so a snapshot of hundreds of idle files costs a list of
        them (about 0.04 ms for 300 files).

        Returns:
            Plain data (dicts, lists, str, int), for :meth:`restore`.
        """
        files = []
        for tracked in self._tracked.values():
            saved = self._entry(tracked)
            if saved is not None:
                files.append(saved)
        # (single path) Truncated, and its copy not found yet: a restart looks for it.
        truncated = [e for known in self._truncations if (e := truncated_entry(known))]
        return saved_state(self.path, files, truncated)

    def restore(self, state: Any) -> None:
        """Resume from what :meth:`snapshot` returned (after ``setup``, before ``generator``).

        A file opened by ``setup`` continues at its saved position if it is the
        same file (same identity, same first bytes); otherwise (replaced,
        truncated or shrunk while stopped) it is read from its start, and so is
        a file not in ``state`` (it appeared after the checkpoint, whatever
        ``start_at``). A saved file no longer under the watched name is looked
        for in its directory by identity (renamed while stopped) or as a copy
        holding its first bytes and the bytes before its offset (copytruncate
        while stopped), read from the saved offset to its end, then closed, with
        a ``file_resumed_elsewhere`` event.

        Raises:
            ConfigError: ``state`` is not a TailFile state (another node's, or
                another version's).
        """
        self._saved = entries(state, self.name)
        self._resuming = True
        resumed: set[tuple[int, int]] = set()
        for tracked in list(self._tracked.values()):
            if tracked.fd is None:
                continue  # not opened yet: placed with the state when it is
            self._rewind(tracked)  # setup placed it by start_at
            tracked.skip_nuls = False
            if self._resume(tracked, os.fstat(tracked.fd).st_size):
                resumed.add(tracked.identity)
        for identity, saved in list(self._saved.items()):
            unopened = self._tracked.get(identity)
            if identity in resumed or (
                unopened is not None and unopened.fd is None and still_there(saved, identity)
            ):
                continue
            self._find_elsewhere(saved, identity)
        found_elsewhere = [t for t in self._tracked.values() if t.gone and t.fd is not None]
        for saved in state.get("truncated", []):
            if not self._find_elsewhere(saved, NO_FILE):
                self.log_event(
                    "data_possibly_lost",
                    "warning",
                    path=saved["path"],
                    start=saved["offset"],
                    end=None,
                    reason="truncated; no copy of it found in its directory",
                )
        if not self.is_glob:
            self._read_rotated_since(found_elsewhere)
        # Only files not opened yet still need their entry: a stale one must not
        # resume a new file that reuses a deleted file's inode later in the run.
        self._saved = {
            identity: saved
            for identity, saved in self._saved.items()
            if (waiting := self._tracked.get(identity)) is not None and waiting.fresh
        }

    def _read_rotated_since(self, found: list[Tracked]) -> None:
        """Read whole the rotated files newer than the restored ones found elsewhere.

        Two rotations while stopped (or since the last checkpoint) leave a file
        the checkpoint never saw between the one it names and the live one:
        each rotated file modified after the oldest file found again is read
        from its start, oldest first, after those and before the live file.
        """
        found = [t for t in found if t.fd is not None]
        if not found:
            return
        since = min(os.fstat(t.fd).st_mtime_ns for t in found if t.fd is not None)
        newer: list[tuple[int, str, os.stat_result]] = []
        for path, identity in self._rotated_files():
            if identity in self._tracked:
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            if info.st_mtime_ns > since:
                newer.append((info.st_mtime_ns, path, info))
        if not newer:
            return
        opened: dict[tuple[int, int], Tracked] = {}
        for _, path, info in sorted(newer):
            fd = self._open_fd(path)
            if fd is None:
                continue
            here = (info.st_dev, info.st_ino)
            opened[here] = Tracked(path, fd, here, size=info.st_size, gone=True)
            self._dir_known.add(here)
            self.log_event("rotated_file_found", path=path, rotated_from=self.path)
        ahead = {key: t for key, t in self._tracked.items() if t in found}
        rest = {key: t for key, t in self._tracked.items() if t not in found}
        self._tracked = {**ahead, **opened, **rest}

    def _find_elsewhere(self, saved: dict[str, Any], identity: tuple[int, int]) -> bool:
        """Track a restored file found again in its directory under another name (by
        identity), or its copy (by first and last bytes), at the saved position; whether
        it was found."""
        found = look_for(saved, identity)
        if found is None:
            return False
        path, info = found
        here = (info.st_dev, info.st_ino)
        # The copy is resumed like the file it copies (also when opened later).
        self._saved[here] = {**saved, "path": path, "identity": list(here)}
        tracked = self._tracked.get(here)
        if tracked is None:
            fd = self._open_fd(path)
            if fd is None:
                return False
            tracked = Tracked(path, fd, here, size=info.st_size, gone=True)
            # Read first: its lines were written before those of the file now under the name.
            self._tracked = {here: tracked, **self._tracked}
        if tracked.fd is not None:
            self._rewind(tracked)
            tracked.skip_nuls = False
            if not self._resume(tracked, os.fstat(tracked.fd).st_size):
                return False
        self.log_event(
            "file_resumed_elsewhere", path=path, was=saved["path"], offset=saved["offset"]
        )
        return True

    def _entry(self, tracked: Tracked) -> dict[str, Any] | None:
        """The saved position of ``tracked``, from its cache while it has not moved."""
        if tracked.fresh:
            return self._saved.get(tracked.identity)  # not opened yet: as restored
        # Inside a skipped overlong line, its number is counted but its bytes are not.
        lineno = tracked.lineno - 1 if tracked.skipping else tracked.lineno
        key = (tracked.path, tracked.offset, lineno)
        cached = tracked.saved
        if cached is not None and cached[0] == key:
            return cached[1]
        saved = entry(tracked, lineno)
        tracked.saved = (key, saved)
        return saved

    def _rewind(self, tracked: Tracked) -> None:
        """Forget what was read of ``tracked``: it is read again from its start."""
        tracked.offset = tracked.pos = tracked.lineno = 0
        tracked.prefix = tracked.suffix = b""
        tracked.partial.clear()
        tracked.mtime = None
        tracked.skipping = False
        tracked.nuls = 0
        tracked.end_hash = tracked.saved = None

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
        try:
            os.close(self._os_open(top, os.O_RDONLY | os.O_DIRECTORY))
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._report_unreadable(top, exc)
            self._retry = True
            return None
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

    def _os_open(self, path: str, flags: int) -> int:
        """``os.open``, tried once more after closing an idle file if the process is out of
        descriptors (the other errors, and a second failure, are raised)."""
        try:
            return os.open(path, flags)
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS or not self._close_idle():
                raise
        return os.open(path, flags)

    def _open_fd(self, path: str) -> int | None:
        """A descriptor of ``path``, or None (vanished, or reported by ``file_unreadable``)."""
        try:
            fd = self._os_open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                # Still out of descriptors with no idle file to close: hold no more than now.
                self._limit = max(1, min(self._limit, self._open_count))
            self._report_unreadable(path, exc)
            return None
        self._unreadable.pop(path, None)
        self._open_count += 1
        return fd

    def _close(self, tracked: Tracked, *, keep_hash: bool = True) -> None:
        if tracked.fd is not None:
            if keep_hash:
                end_hash(tracked)  # snapshot() needs it while the file is closed
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
        fd, info = self._open_tracked(tracked)
        if fd is None:
            if tracked.gone and tracked.misses < _MISSES:
                # Rotations may be shifting every name right now (a listing
                # can miss a file in mid-rename): look again at the next polls.
                tracked.misses += 1
                self._retry = True
                return False
            # Neither under its name nor anywhere else in its directory.
            self._lost_before_open(tracked, replaced=info is not None)
            return False
        assert info is not None
        tracked.fd = fd
        if tracked.fresh:
            if not self._place(tracked, info.st_size, startup=tracked.at_start):
                self._close(tracked)  # a copy still being written, maybe: look again
                self._retry = True
                return False
            tracked.fresh = False
            self._saved.pop(tracked.identity, None)  # placed: its position is in tracked now
        return True

    def _open_tracked(self, tracked: Tracked) -> tuple[int | None, os.stat_result | None]:
        """Open the file ``tracked`` stands for: under its name, or, renamed again since
        it was seen (rotations going on), found by identity in its directory.

        Returns the descriptor and its stat, or ``(None, stat of what the name holds
        now)`` when it is not to be found (``(None, None)``: nothing under the name).
        """
        other: os.stat_result | None = None
        for attempt in range(2):
            fd = self._open_fd(tracked.path)
            if fd is not None:
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) == tracked.identity:
                    return fd, info
                os.close(fd)  # the name holds another file now: the next poll tracks it
                self._open_count -= 1
                other = info
            if attempt or tracked.path in self._unreadable:
                break
            found = find_identity(os.path.dirname(tracked.path), tracked.identity)
            if found is None:
                break
            tracked.path = found[0]
        return None, other

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
        # A file missing from the restored state appeared after that checkpoint:
        # read it whole (lines written to it since are not lost); start_at is for
        # a start without a checkpoint.
        if startup and not resumed and self.start_at == "end" and not self._resuming:
            self._seek_to_last_line_end(tracked, size)
        return True

    # -- rotated files (single path) ----------------------------------------------

    def _rotated_files(self) -> Iterator[tuple[str, tuple[int, int]]]:
        """Files in the watched file's directory under rotated names (``app.log.1``)."""
        directory, base = os.path.split(self.path)

        def accept(entry: str) -> bool:
            return entry != base and entry.startswith(base)

        for path, info in candidates(directory, accept):
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
        """Place ``tracked`` at its restored position if it holds what was read there."""
        assert tracked.fd is not None
        entry = self._saved.get(tracked.identity)
        if entry is None:
            return False
        if not matches(tracked.fd, entry, size, suffix=False):
            tracked.skip_nuls = True  # truncated while stopped: maybe a writer's old offset
            return False  # the same inode holds other content now: not a resume
        tracked.offset = tracked.pos = int(entry["offset"])
        tracked.lineno = int(entry["lineno"])
        tracked.prefix = os.pread(tracked.fd, int(entry["prefix_len"]), 0)
        return True

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
        self._rewind(tracked)
        tracked.skip_nuls = True

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
        if tracked.gone and self.follow:
            self._close(tracked, keep_hash=False)  # read to its end: no longer saved
            del self._tracked[tracked.identity]
        elif not self.follow:
            self._close(tracked)
            tracked.done = True
