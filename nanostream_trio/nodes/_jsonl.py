"""JSON Lines: a parser node (text line -> object) and a writer sink (object -> line in a file).

The writer takes part in checkpoints (issue 10) as a sink: ``prepare`` makes the
lines written so far durable and records the file's size and inode,
``recover`` cuts the file back to that size after a restart (first undoing
rotations made since, found by the inode), so the lines the sources replay
are written once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, BinaryIO, Unpack

import trio

from .._exceptions import ConfigError, PipelineStateError
from .._items import Line
from .._node import NanoNode
from .._policy import short_repr
from ._errors import JSONLineError, describe_location
from ._stages import EngineOptions

__all__ = ["JSONLinesParser", "JSONLinesWriter"]

_loads = json.loads


class JSONLinesParser(NanoNode):
    """Parse each incoming line (``str`` or ``bytes``) as one JSON value.

    A line that is not valid JSON raises :class:`JSONLineError`, whose message
    gives the file and line number (for a line from TailFile or
    LocalFileReader, linked directly, or for a :class:`Line`; otherwise the
    count of lines this node has received), the parser's complaint and the
    line itself. The node's error policy decides what happens to it; the
    other lines are unaffected.

    Two kinds of line give no output, by design, and are counted (never lost
    silently): a JSON ``null`` (a node's ``None`` output means "nothing"),
    counted in :attr:`nulls`, and a blank line (with ``skip_blank``), counted
    in :attr:`blank_lines`. Both count as *filtered* in the node's statistics
    where the engine keeps that count, and the node's teardown reports them in
    one ``json_lines_dropped`` event (fields ``nulls`` and ``blank_lines``).

    Args:
        skip_blank: ignore lines that are empty or only whitespace (default);
            otherwise they are errors.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        *,
        skip_blank: bool = True,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        self.skip_blank = skip_blank
        self._received = 0
        #: JSON ``null`` lines received (they give no output).
        self.nulls = 0
        #: Blank lines skipped (with ``skip_blank``).
        self.blank_lines = 0

    def process_item(self, line: Any) -> Any:
        """Return the JSON value of ``line``."""
        self._received += 1
        try:
            value = _loads(line)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes
            if self.skip_blank and not line.strip():
                self.blank_lines += 1
                return None
            raise self._error(line, exc) from exc
        except TypeError:
            msg = (
                f"node {self.name!r} expects a line of JSON text (str or bytes); "
                f"got {type(line).__name__} {short_repr(line)}"
            )
            raise TypeError(msg) from None
        if value is None:
            self.nulls += 1
        return value

    def _ns_located_error(self, exc: Exception, line: Line) -> Exception | None:
        """The error for ``line``, now that the engine has singled it out with its file
        and line (TailFile and LocalFileReader hand over plain ``str`` lines, located
        per batch); ``None`` keeps ``exc`` as it is."""
        cause = exc.__cause__
        if type(exc) is not JSONLineError or exc.path is not None:
            return None
        if not isinstance(cause, ValueError):
            return None
        located = self._error(line, cause)
        located.__cause__ = cause
        return located

    def _error(self, line: Any, exc: ValueError) -> JSONLineError:
        path = getattr(line, "path", None)
        number = getattr(line, "lineno", None) or self._received
        where = describe_location(path, number)
        if path is None:
            where = f"input {where}"
        if isinstance(exc, json.JSONDecodeError):
            problem = f"{exc.msg}: column {exc.colno}"
        else:
            problem = str(exc)
        msg = f"{where}: invalid JSON ({problem}): {short_repr(line)}"
        return JSONLineError(
            msg,
            path=path,
            line=number,
            content=bytes(line) if isinstance(line, bytearray) else line,
        )

    def teardown(self) -> None:
        """Report the lines that gave no output by design (nulls, blank lines), if any."""
        if self.nulls or self.blank_lines:
            self.log_event("json_lines_dropped", nulls=self.nulls, blank_lines=self.blank_lines)


class JSONLinesWriter(NanoNode):
    """A sink appending each item as one line of JSON to a file.

    The file is opened (created if needed, appended to otherwise) in
    ``setup``, so the node is ready once the file is open, and closed in
    ``teardown`` after a final flush.

    Flush policy: by default (``flush_every=None``) the lines of a burst
    are handed to the operating system together: the first line after a
    pause at once (so a reader or ``tail -f`` sees a lone item immediately),
    the rest of the burst before the pipeline next gets a scheduling turn
    (one write for a whole batch, not one per line). ``flush_every=1``
    flushes every line as it is written, ``flush_every=n`` every ``n``
    lines, ``0`` only on rotation and at the end. ``fsync=True`` also asks
    the OS to put each flush on disk (with the default, once per burst).

    Rotation (optional): with ``max_bytes``, a line that would make the file
    larger than that starts a new file; the old one becomes ``path.1``, the
    previous ``path.1`` becomes ``path.2``, and so on up to ``backups`` files.

    An item that JSON cannot encode raises ``TypeError`` through the error
    policy, unless ``default`` turns it into something encodable (the default
    writes ``str(value)``).

    Checkpoints (effectively-once output): at each checkpoint :meth:`prepare`
    flushes and fsyncs the file and records its size and inode; after a
    restart :meth:`recover` cuts the file back to that size, so the lines
    written after the checkpoint, which the sources replay, are in the file
    once. Rotations made after the checkpoint are undone first (the files
    rotated since hold only lines from after it and are removed). A file
    shorter than recorded, or not found at all, is an error: the lines the
    checkpoint counts as written are gone, and going on would lose them
    silently.

    Args:
        path: the file to write.
        flush_every: ``None`` (default): flush each burst of lines; ``n``:
            flush every ``n`` lines; ``0``: only on rotation and close.
        fsync: ``os.fsync`` after each flush.
        max_bytes: rotate before the file would grow past this size.
        backups: rotated files to keep (``path.1`` ... ``path.<backups>``).
        default: called for objects JSON cannot encode (as in :func:`json.dumps`);
            ``None`` makes them errors.
        sort_keys: write object keys sorted.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_every: int | None = None,
        fsync: bool = False,
        max_bytes: int | None = None,
        backups: int = 5,
        default: Callable[[Any], Any] | None = str,
        sort_keys: bool = False,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if flush_every is not None and (not isinstance(flush_every, int) or flush_every < 0):
            msg = (
                f"node {self.name!r} got flush_every={flush_every!r}; "
                "expected None (each burst) or 0 or more lines"
            )
            raise ConfigError(msg, node=self.name, key="flush_every")
        if max_bytes is not None and max_bytes < 1:
            msg = f"node {self.name!r} got max_bytes={max_bytes!r}; expected a positive size"
            raise ConfigError(msg, node=self.name, key="max_bytes")
        if backups < 1:
            msg = f"node {self.name!r} got backups={backups!r}; expected at least 1"
            raise ConfigError(msg, node=self.name, key="backups")
        self.path = os.fspath(path)
        self.flush_every = flush_every
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.backups = backups
        self.default = default
        self.sort_keys = sort_keys
        self._file: BinaryIO | None = None
        self._encode = self._encoder()
        self._size = 0
        self._unflushed = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._flush_due = False  # a flush at the next scheduling turn is arranged
        self._flush_error: OSError | None = None
        #: Lines written since the node started (for tests and curiosity).
        self.lines_written = 0

    def setup(self) -> None:
        """Open the file for appending."""
        self._encode = self._encoder()
        self._open()
        try:
            self._token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # outside Trio: flush each line
            self._token = None

    def _encoder(self) -> Callable[[Any], str]:
        # One encoder for every line: json.dumps with options builds one per call.
        encoder = json.JSONEncoder(
            ensure_ascii=False, default=self.default, sort_keys=self.sort_keys
        )
        return encoder.encode

    def _open(self) -> None:
        self._file = open(self.path, "ab")  # closed in teardown
        self._size = self._file.tell()

    def process_item(self, item: Any) -> None:
        """Append ``item`` as one JSON line."""
        data = (self._encode(item) + "\n").encode()
        if self.max_bytes is not None and self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        handle = self._file
        if handle is None:
            msg = f"node {self.name!r} wrote before setup() opened {self.path}"
            raise RuntimeError(msg)
        handle.write(data)
        self._size += len(data)
        self.lines_written += 1
        self._unflushed += 1
        every = self.flush_every
        if every is None:
            if not self._flush_due:
                self._burst_started()
        elif every and self._unflushed >= every:
            self._flush()

    def _burst_started(self) -> None:
        """The first line since the last flush: flush it now, and the lines that follow
        it in this burst at the next scheduling turn."""
        error, self._flush_error = self._flush_error, None
        if error is not None:
            raise error  # the deferred flush of the last burst failed
        self._flush()
        if self._token is not None:
            self._flush_due = True
            self._token.run_sync_soon(self._flush_burst)

    def _flush_burst(self) -> None:
        # Runs from Trio's run loop, where an exception would crash the run: keep it
        # for the next line (or teardown) to raise through the node's error policy.
        self._flush_due = False
        if self._unflushed:
            try:
                self._flush()
            except (OSError, ValueError) as exc:  # ValueError: closed by a rotation
                if isinstance(exc, OSError):
                    self._flush_error = exc

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        self._unflushed = 0

    def _rotate(self) -> None:
        self._close()
        for number in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{number}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{number + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._open()

    def _close(self) -> None:
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None

    def teardown(self) -> None:
        """Flush and close the file.

        Raises:
            OSError: the flush of the last burst failed.
        """
        self._close()
        error, self._flush_error = self._flush_error, None
        if error is not None:
            raise error

    # -- checkpoints ---------------------------------------------------------------

    async def prepare(self, n: int) -> dict[str, Any]:
        """Checkpoint hook: make every line written so far durable (flush, then fsync).

        Args:
            n: the checkpoint's number.

        Returns:
            ``{"size": ..., "inode": ..., "tail": ...}``: the file's size in
            bytes once synced, its inode and its last bytes (hex), by which
            recover finds it again, also once rotated, and tells it from a
            file put in its place.

        Raises:
            OSError: the flush or fsync failed (also a deferred flush of the
                last burst): the checkpoint must not count these lines.
        """
        error, self._flush_error = self._flush_error, None
        if error is not None:
            raise error
        handle = self._file
        if handle is None:
            msg = f"node {self.name!r} got prepare({n}) before setup() opened {self.path}"
            raise RuntimeError(msg)
        handle.flush()  # on the Trio thread, like every other flush of this file
        self._unflushed = 0
        return await trio.to_thread.run_sync(_sync_and_describe, handle.fileno(), self.path)

    def commit(self, n: int) -> None:
        """Checkpoint hook: checkpoint ``n`` is durable; nothing to do, :meth:`prepare` synced."""

    async def recover(self, n: int, prepared: dict[str, Any]) -> None:
        """Checkpoint hook: go back to the file as :meth:`prepare` left it at checkpoint ``n``.

        Runs after ``setup`` (the file is open) and before the first line.
        Files rotated after the checkpoint are removed and the checkpoint's
        file is put back in place; then the file is cut back to the recorded
        size and synced. A ``json_lines_recovered`` event reports what was
        removed, if anything.

        Args:
            n: the checkpoint's number.
            prepared: what :meth:`prepare` returned at checkpoint ``n``.

        Raises:
            PipelineStateError: the checkpoint's file is not there, or is
                shorter than recorded (lines the checkpoint counts are gone).
        """
        self._close()
        try:
            dropped = await trio.to_thread.run_sync(
                self._roll_back,
                n,
                prepared["size"],
                prepared["inode"],
                bytes.fromhex(prepared["tail"]),
            )
        finally:
            self._open()
        bytes_dropped, files_dropped = dropped
        if bytes_dropped or files_dropped:
            self.log_event(
                "json_lines_recovered",
                path=self.path,
                checkpoint=n,
                size=prepared["size"],
                bytes_dropped=bytes_dropped,
                files_dropped=files_dropped,
            )

    def _roll_back(self, n: int, size: int, inode: int, tail: bytes) -> tuple[int, int]:
        """In a worker thread: undo rotations and writes after checkpoint ``n``.

        Returns the bytes cut off the checkpoint's file and the number of
        files removed (each rotated after the checkpoint).
        """
        names = [self.path, *(f"{self.path}.{k}" for k in range(1, self.backups + 1))]
        found = None
        shorter: tuple[str, int] | None = None
        for k, name in enumerate(names):
            try:
                info = os.stat(name)
            except FileNotFoundError:
                continue
            if info.st_ino != inode:
                continue
            if info.st_size < size:
                shorter = (name, info.st_size)
            elif _bytes_before(name, size, len(tail)) == tail:
                found = k
                break
        if found is None and shorter is not None:
            name, actual = shorter
            msg = (
                f"node {self.name!r} cannot recover checkpoint {n}: {name} has {actual} "
                f"bytes, fewer than the {size} the checkpoint counts as written; the file was "
                "cut outside the pipeline. Restore it, or start without the checkpoint to "
                "write afresh"
            )
            raise PipelineStateError(msg)
        if found is None:
            msg = (
                f"node {self.name!r} cannot recover checkpoint {n}: the file it wrote "
                f"({size} bytes) is neither {self.path} nor one of its backups (replaced or "
                "removed outside the pipeline?). Restore it, or start without the checkpoint "
                "to write afresh"
            )
            raise PipelineStateError(msg)
        # Files newer than the checkpoint's hold only lines written after it.
        for name in names[:found]:
            os.remove(name)
        if found:
            for k in range(found, len(names)):
                if os.path.exists(names[k]):
                    os.replace(names[k], names[k - found])
        actual = os.stat(self.path).st_size
        with open(self.path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())
        if found:
            _sync_directory(self.path)
        return actual - size, found


#: Bytes before a checkpoint's size that recover compares, to know the file again.
_TAIL_BYTES = 64


def _sync_and_describe(fileno: int, path: str) -> dict[str, Any]:
    """In a worker thread: fsync the file; what recover needs to find it and cut it back."""
    os.fsync(fileno)
    info = os.fstat(fileno)
    tail = _bytes_before(path, info.st_size, _TAIL_BYTES)
    return {"size": info.st_size, "inode": info.st_ino, "tail": tail.hex()}


def _bytes_before(path: str, size: int, count: int) -> bytes:
    """The ``count`` bytes of ``path`` before offset ``size`` (fewer near the start)."""
    start = max(size - count, 0)
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(size - start)


def _sync_directory(path: str) -> None:
    """Make renames in ``path``'s directory durable (where the OS allows it)."""
    try:
        descriptor = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
