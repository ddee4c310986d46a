"""TailFile: follow one file, or every file matching a glob, like ``tail -F``.

Each poll (every ``poll_interval`` seconds on the Trio clock while nothing
is new):

1. *Discover*: stat the watched name (or expand the glob). Files are tracked
   by identity (device and inode), not by name, so a file renamed to another
   matching name keeps its position.
2. *Rotation by rename and create*: a tracked file no longer under any
   watched name (renamed away or deleted) stays open and is still read, since
   a writer may keep writing to its old descriptor for a moment; once it has
   not grown for ``rotate_wait`` seconds its unterminated last line (if any)
   is emitted and it is closed. The new file under the name is a new
   identity and is read from its start.
3. *Truncation and copy-truncate*: a tracked file smaller than the position
   read so far, or whose first bytes no longer match what was read there (it
   was truncated and written again between two polls), is read again from
   its start.
4. *Read*: new bytes are split into lines; complete lines are emitted as
   :class:`~nanostream_trio.nodes.Line` objects (path and line number
   attached); a partial last line is held until its line ending arrives.

Offsets are saved to a small JSON checkpoint file (written to a temporary
file, then renamed over the old one). A restart resumes every file whose
identity and first bytes match the checkpoint at the saved offset. The
checkpoint must not get ahead of what the pipeline has delivered (lines may
be read twice after a crash, never lost), as far as a source can tell:

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

import dataclasses
import glob
import hashlib
import json
import os
import stat
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, Unpack

import trio

from .._exceptions import ConfigError
from .._node import EngineSettings, NanoNode
from ._files import Line, strip_line_ending
from ._stages import EngineOptions

__all__ = ["TailFile"]

_Snapshot = list[dict[str, Any]]

StartAt = Literal["beginning", "end"]
#: Bytes at a file's start used to recognise it (truncated and rewritten, or resumed).
FINGERPRINT_BYTES = 256
#: Bytes read per system call.
READ_CHUNK = 1 << 16
#: Bytes read from one file before the other files get a turn.
READ_BUDGET = 1 << 20
CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class _Tracked:
    """One open file being followed."""

    path: str
    fd: int
    identity: tuple[int, int]
    offset: int = 0  # bytes consumed: the start of the first line not yet emitted
    pos: int = 0  # bytes read (offset plus the held partial line, or the skipped long line)
    lineno: int = 0  # lines emitted (or skipped) so far
    partial: bytearray = dataclasses.field(default_factory=bytearray)
    prefix: bytes = b""  # the file's first bytes, as read
    suffix: bytes = b""  # the last bytes read (before pos), this run
    mtime: int | None = None  # modification time when pos reached the end
    skipping: bool = False  # inside a line longer than max_line_bytes
    gone: bool = False  # no longer under a watched name: read until quiet, then close
    quiet_since: float | None = None  # (gone files) Trio time it last grew, or was seen gone
    last_size: int = -1  # (gone files) bytes read when quiet_since was set


@dataclasses.dataclass(frozen=True)
class _Known:
    """Content read from a file: its first and last bytes read, and how far."""

    path: str
    prefix: bytes
    suffix: bytes
    offset: int
    pos: int
    lineno: int


#: Returned by TailFile._copy_of: look at this new file again at the next poll.
_DEFER = object()
#: Contents of truncated files remembered, to recognise their copies.
RETIRED_FINGERPRINTS = 64


def _fingerprint(prefix: bytes) -> str:
    return hashlib.sha256(prefix).hexdigest()


class TailFile(NanoNode):
    """A source following a file, or all files matching a glob, and emitting their lines.

    Emits one :class:`~nanostream_trio.nodes.Line` (a ``str`` with ``path``
    and ``lineno``) per complete line, without its line ending, decoded with
    ``encoding`` (undecodable bytes are replaced by default, so a line of
    binary garbage still arrives and a parser downstream can reject it with
    its line number).

    It follows ``tail -F`` semantics: rotation by rename and create,
    copy-truncate and plain truncation are detected (see the module notes in
    ``docs/nodes.md``; a truncation is reported by a ``file_truncated``
    event); a partial last line is held until it is complete; a file that does
    not exist yet is waited for.

    Where reading starts, for each file found at start-up:

    * at the offset saved in ``checkpoint``, if the file there is the same
      file (same inode and same first bytes);
    * otherwise at ``start_at``: ``"beginning"`` (default, as Vector's file
      source does without a checkpoint) or ``"end"`` (only new lines); but a
      file missing from an existing checkpoint appeared after its last save
      and is read from its beginning.

    Files that appear later (after a rotation, or new matches of the glob)
    are read from their beginning, except a copy of content already read
    (copy-truncate into a name the glob matches), recognised by its first and
    last bytes read and read from the offset already reached.

    The node is ready once the files that exist are open. With
    ``follow=False`` it reads what is there (emitting a last unterminated
    line as well) and ends; otherwise it runs until the pipeline stops.

    Delivery is at least once (after a crash lines may be read again, never
    lost) within these limits. The final save happens only when the node
    ends gracefully (input exhausted without ``follow``, or
    ``pipeline.stop()``) and the whole pipeline then finishes cleanly
    (:meth:`on_success`), never after a failure anywhere (also downstream,
    after the tail itself ended), cancel or interrupt. Linking :attr:`commit`
    at the end of the pipeline (``tail > parse > write > tail.commit``) saves
    as soon as everything before it has drained. Periodic saves (every ``checkpoint_interval``
    while lines flow) record the offsets of lines emitted at least ``lag``
    lines ago, ``lag`` bounding what the inboxes downstream can hold; a node
    that keeps items across calls (``Batch``, ``TumblingWindow``) can hold
    more, so with such nodes rely on the final save (and :attr:`commit`).

    Args:
        path: a file path or a glob such as ``"logs/*.log"``.
        start_at: ``"beginning"`` or ``"end"``, for files without a checkpoint entry.
        checkpoint: path of the checkpoint file (created if missing); ``None``
            keeps no checkpoint.
        follow: keep following (default) or stop at the end of the files.
        poll_interval: seconds (Trio clock) between polls when nothing is new.
        checkpoint_interval: seconds between checkpoint writes while lines flow.
        encoding: text encoding of the files.
        errors: decoding error handler (default ``"replace"``).
        max_line_bytes: longer lines are skipped and reported by a
            ``line_too_long`` event (so memory stays bounded).
        rotate_wait: seconds (Trio clock) a file renamed away or deleted is
            still read after it last grew, for a writer that keeps writing to
            its old descriptor for a moment after a rotation (default 5).
        name: the node's name.
        **engine: engine settings (see :class:`NanoNode`).

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
        self._tracked: dict[tuple[int, int], _Tracked] = {}
        self._saved: list[dict[str, Any]] = []
        self._dirty = False
        self._emitted = 0  # lines emitted in this run
        self._history: deque[tuple[int, _Snapshot]] = deque()  # (emitted, offsets then)
        self._commit: _TailCommit | None = None
        self._pending: _Snapshot | None = None  # the final offsets, awaiting the commit node
        self._resuming = False  # a checkpoint file existed at start-up
        self._retired: deque[_Known] = deque(maxlen=RETIRED_FINGERPRINTS)
        self._deferred: dict[str, float] = {}  # new files that may be copies being written

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
        self._check_checkpoint_directory()
        self._resuming = self.checkpoint is not None and os.path.exists(self.checkpoint)
        self._saved = self._load_checkpoint()
        self._discover(startup=True)

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
                os.close(tracked.fd)
            self._tracked = {}

    async def generator(self) -> AsyncIterator[Line]:
        """Yield lines as they are written, until stopped (or at the end without ``follow``)."""
        next_save = trio.current_time() + self.checkpoint_interval
        while True:
            emitted = False
            self._discover(startup=False)
            for tracked in list(self._tracked.values()):
                for line in self._read(tracked):
                    emitted = True
                    self._emitted += 1
                    yield line
                if not self.follow or (tracked.gone and self._quiet_long_enough(tracked)):
                    for line in self._finish(tracked):
                        self._emitted += 1
                        yield line
            if self._dirty and trio.current_time() >= next_save:
                self._periodic_save()
                next_save = trio.current_time() + self.checkpoint_interval
            if not self.follow and not emitted:
                return
            if emitted:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(self.poll_interval)

    # -- discovery ---------------------------------------------------------------

    def _names(self) -> list[str]:
        if self.is_glob:
            return sorted(glob.glob(self.path))
        return [self.path]

    def _discover(self, *, startup: bool) -> None:
        present: set[tuple[int, int]] = set()
        for name in self._names():
            try:
                info = os.stat(name)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            identity = (info.st_dev, info.st_ino)
            present.add(identity)
            tracked = self._tracked.get(identity)
            if tracked is not None:
                tracked.path = name
                tracked.gone = False
                tracked.quiet_since = None
                continue
            opened = self._open(name, startup)
            if opened is not None:
                self._tracked[opened.identity] = opened
                present.add(opened.identity)
        for identity, tracked in self._tracked.items():
            if identity not in present:
                tracked.gone = True

    def _open(self, name: str, startup: bool) -> _Tracked | None:
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            return None  # vanished between stat and open; the next poll sees what is there
        info = os.fstat(fd)
        tracked = _Tracked(name, fd, (info.st_dev, info.st_ino))
        if not startup and self.is_glob:
            known = self._copy_of(tracked, info.st_size)
            if known is _DEFER:
                os.close(fd)
                return None
            if isinstance(known, _Known):
                tracked.offset = tracked.pos = known.offset
                tracked.lineno = known.lineno
                tracked.prefix = known.prefix
                self.log_event(
                    "file_copy_resumed",
                    path=name,
                    copy_of=known.path,
                    offset=known.offset,
                    line=known.lineno,
                )
        if startup:
            resumed = self._resume(tracked, info.st_size)
            # A file missing from an existing checkpoint appeared after that save
            # (the checkpoint lags behind): read it whole, start_at is for first runs.
            if not resumed and self.start_at == "end" and not self._resuming:
                self._seek_to_last_line_end(tracked, info.st_size)
        self._dirty = True
        return tracked

    def _known_contents(self) -> Iterator[_Known]:
        for other in self._tracked.values():
            yield _Known(
                other.path, other.prefix, other.suffix, other.offset, other.pos, other.lineno
            )
        yield from self._retired

    def _copy_of(self, tracked: _Tracked, size: int) -> _Known | object | None:
        """The content a new file is a copy of (copy-truncate into a name the glob matches),
        :data:`_DEFER` while a copy may still be being written, or ``None``."""
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

    def _resume(self, tracked: _Tracked, size: int) -> bool:
        for entry in self._saved:
            if tuple(entry["identity"]) != tracked.identity:
                continue
            prefix = os.pread(tracked.fd, int(entry["prefix_len"]), 0)
            if _fingerprint(prefix) != entry["prefix_sha256"] or size < entry["offset"]:
                return False  # the same inode holds other content now: not a resume
            tracked.offset = tracked.pos = int(entry["offset"])
            tracked.lineno = int(entry["lineno"])
            tracked.prefix = prefix
            return True
        return False

    def _seek_to_last_line_end(self, tracked: _Tracked, size: int) -> None:
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

    def _rewritten(self, tracked: _Tracked, info: os.stat_result) -> bool:
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

    def _read(self, tracked: _Tracked) -> Iterator[Line]:
        info = os.fstat(tracked.fd)
        size = info.st_size
        if self._rewritten(tracked, info):
            self.log_event("file_truncated", path=tracked.path, offset=tracked.pos, size=size)
            if len(tracked.prefix) >= FINGERPRINT_BYTES and tracked.suffix:
                # Its old content may reappear as a copy (copy-truncate): remember it.
                self._retired.append(
                    _Known(
                        tracked.path,
                        tracked.prefix,
                        tracked.suffix,
                        tracked.offset,
                        tracked.pos,
                        tracked.lineno,
                    )
                )
            yield from self._flush_partial(tracked)
            tracked.offset = tracked.pos = tracked.lineno = 0
            tracked.prefix = tracked.suffix = b""
            tracked.mtime = None
            tracked.skipping = False
            self._dirty = True
        budget = READ_BUDGET
        while budget > 0:
            chunk = os.pread(tracked.fd, READ_CHUNK, tracked.pos)
            if not chunk:
                end = os.fstat(tracked.fd)
                tracked.mtime = end.st_mtime_ns if end.st_size == tracked.pos else None
                return
            tracked.mtime = None
            tracked.suffix = (tracked.suffix + chunk)[-FINGERPRINT_BYTES:]
            budget -= len(chunk)
            if len(tracked.prefix) < FINGERPRINT_BYTES and tracked.pos < FINGERPRINT_BYTES:
                tracked.prefix += chunk[: FINGERPRINT_BYTES - tracked.pos]
            yield from self._split(tracked, chunk)

    def _split(self, tracked: _Tracked, chunk: bytes) -> Iterator[Line]:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            piece = chunk[start : newline + 1]
            tracked.pos += len(piece)
            start = newline + 1
            if tracked.skipping:
                tracked.skipping = False
                tracked.offset = tracked.pos
                continue
            if tracked.partial:
                tracked.partial += piece
                raw = bytes(tracked.partial)
                tracked.partial.clear()
            else:
                raw = piece
            line = self._emit(tracked, raw)
            if line is not None:
                yield line
        rest = chunk[start:]
        tracked.pos += len(rest)
        if tracked.skipping:
            return
        tracked.partial += rest
        if len(tracked.partial) > self.max_line_bytes:
            tracked.lineno += 1
            self.log_event(
                "line_too_long",
                "warning",
                path=tracked.path,
                line=tracked.lineno,
                max_line_bytes=self.max_line_bytes,
            )
            tracked.partial.clear()
            tracked.skipping = True

    def _emit(self, tracked: _Tracked, raw: bytes) -> Line | None:
        tracked.lineno += 1
        tracked.offset = tracked.pos
        self._dirty = True
        if len(raw) > self.max_line_bytes + 2:  # a long line that arrived in one chunk
            self.log_event(
                "line_too_long",
                "warning",
                path=tracked.path,
                line=tracked.lineno,
                max_line_bytes=self.max_line_bytes,
            )
            return None
        text = strip_line_ending(raw).decode(self.encoding, self.errors)
        return Line(text, tracked.path, tracked.lineno)

    def _flush_partial(self, tracked: _Tracked) -> Iterator[Line]:
        if tracked.partial:
            raw = bytes(tracked.partial)
            tracked.partial.clear()
            tracked.pos = tracked.offset + len(raw)
            line = self._emit(tracked, raw)
            if line is not None:
                yield line

    def _quiet_long_enough(self, tracked: _Tracked) -> bool:
        """Whether a gone file has not grown for ``rotate_wait`` seconds (it was just read)."""
        now = trio.current_time()
        if tracked.quiet_since is None or tracked.pos != tracked.last_size:
            tracked.quiet_since = now
            tracked.last_size = tracked.pos
        return now - tracked.quiet_since >= self.rotate_wait

    def _finish(self, tracked: _Tracked) -> Iterator[Line]:
        """Read a file to its end, emit a last unterminated line, close it if it is gone."""
        yield from self._read(tracked)
        if os.pread(tracked.fd, 1, tracked.pos):
            return  # more to read than one budget: finish on the next poll
        yield from self._flush_partial(tracked)
        if tracked.gone:
            os.close(tracked.fd)
            del self._tracked[tracked.identity]
            self._dirty = True

    # -- checkpoint ----------------------------------------------------------------

    def _load_checkpoint(self) -> list[dict[str, Any]]:
        if self.checkpoint is None:
            return []
        try:
            with open(self.checkpoint, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except ValueError as exc:
            msg = (
                f"node {self.name!r}: checkpoint file {self.checkpoint} is not valid JSON "
                f"({exc}); delete it to start over"
            )
            raise ConfigError(msg, node=self.name, key="checkpoint") from exc
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            msg = (
                f"node {self.name!r}: checkpoint file {self.checkpoint} is not a TailFile "
                f"checkpoint of version {CHECKPOINT_VERSION}; delete it to start over"
            )
            raise ConfigError(msg, node=self.name, key="checkpoint")
        files: list[dict[str, Any]] = data.get("files", [])
        return files

    def _check_checkpoint_directory(self) -> None:
        if self.checkpoint is None:
            return
        directory = os.path.dirname(os.path.abspath(self.checkpoint))
        if not os.path.isdir(directory):
            msg = (
                f"node {self.name!r}: the directory of checkpoint file {self.checkpoint} "
                f"({directory}) does not exist; create it or choose another path"
            )
            raise ConfigError(msg, node=self.name, key="checkpoint")
        if not os.access(directory, os.W_OK | os.X_OK):
            msg = (
                f"node {self.name!r}: cannot write checkpoint file {self.checkpoint}: "
                f"directory {directory} is not writable"
            )
            raise ConfigError(msg, node=self.name, key="checkpoint")

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
            self._save_checkpoint(chosen)
        if self._history:
            self._dirty = True  # saves behind what was emitted: try again next interval

    def on_success(self) -> None:
        """The pipeline finished cleanly: every line emitted was delivered; save the offsets."""
        self._commit_pending()

    def _commit_pending(self) -> None:
        """Write the final offsets held since a graceful end (on success, or the commit node)."""
        if self._pending is not None:
            self._save_checkpoint(self._pending)
            self._pending = None

    def _snapshot(self) -> _Snapshot:
        return [
            {
                "path": tracked.path,
                "identity": list(tracked.identity),
                "offset": tracked.offset,
                "lineno": tracked.lineno,
                "prefix_len": min(len(tracked.prefix), tracked.offset) if tracked.offset else 0,
                "prefix_sha256": _fingerprint(
                    tracked.prefix[: min(len(tracked.prefix), tracked.offset)]
                ),
            }
            for tracked in self._tracked.values()
        ]

    def _save_checkpoint(self, files: _Snapshot) -> None:
        if self.checkpoint is None:
            return
        data = {"version": CHECKPOINT_VERSION, "source": self.path, "files": files}
        temporary = f"{self.checkpoint}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.checkpoint)


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
