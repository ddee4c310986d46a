"""TailFile's per-file state and its chunk reader: bytes in, a list of lines out.

A read of up to 64 KiB is split, decoded and turned into lines in one go: the
complete lines of the chunk are decoded with one ``bytes.decode`` and split
with one ``str.split``; only the last, unterminated piece is held back as
bytes. By default the lines stay plain ``str``, handed over as one
:class:`~nanostream_trio._items.Lines` batch per chunk (one location record:
path and first line number); with ``locate=True`` each line becomes a
:class:`_TailLine` (a :class:`~nanostream_trio.nodes.Line` made without a
Python ``__new__``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

from .._items import Line, Lines
from ._errors import FileDecodeError

#: Bytes at a file's start used to recognise it (truncated and rewritten, or resumed).
FINGERPRINT_BYTES = 256

EventSink = Callable[..., None]


def fingerprint(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (how a checkpoint stores a file's first and last bytes)."""
    return hashlib.sha256(data).hexdigest()


class _TailLine(Line):
    """A :class:`Line` built at C speed: ``str.__new__`` then two attribute stores.

    Pickles (and copies) as a plain :class:`Line`.
    """

    __slots__ = ()
    __new__ = str.__new__  # type: ignore[assignment]  # Line.__new__ is Python: 3x slower

    def __reduce__(self) -> tuple[Any, ...]:
        return (Line, (str(self), self.path, self.lineno))


@dataclasses.dataclass
class Tracked:
    """One file being followed (open, or closed to respect ``max_open_files``)."""

    path: str
    fd: int | None
    identity: tuple[int, int]
    offset: int = 0  # bytes consumed: the start of the first line not yet emitted
    pos: int = 0  # bytes read (offset plus the held partial line, or the skipped long line)
    lineno: int = 0  # lines emitted (or skipped) so far
    partial: bytearray = dataclasses.field(default_factory=bytearray)
    prefix: bytes = b""  # the file's first bytes, as read
    suffix: bytes = b""  # the last bytes read (before pos), this run
    mtime: int | None = None  # modification time when pos reached the end
    size: int = 0  # the file's size when last looked at
    skipping: bool = False  # inside a line longer than max_line_bytes
    skip_nuls: bool = False  # after a truncation: NULs before the first line are dropped
    nuls: int = 0  # NULs skipped so far (reported when the first line starts)
    gone: bool = False  # no longer under a watched name: read until quiet, then close
    done: bool = False  # follow=False: read to its end (or given up), kept for snapshot()
    fresh: bool = False  # not opened yet: where reading starts is decided at the first open
    at_start: bool = False  # found at start-up (start_at applies)
    end_hash: tuple[int, int, str] | None = None  # (offset, length, sha256) of bytes before offset
    # snapshot()'s entry for it, and the (path, offset, lineno) it was made at
    saved: tuple[tuple[str, int, int], dict[str, Any]] | None = None
    quiet_since: float | None = None  # (gone files) Trio time it last grew, or was seen gone
    last_size: int = -1  # (gone files) bytes read when quiet_since was set
    last_active: int = 0  # poll number it last grew (least recently active is closed first)
    misses: int = 0  # (gone files) opens that found it nowhere while names were moving


@dataclasses.dataclass(frozen=True)
class Known:
    """Content read from a file: its first and last bytes read, and how far."""

    path: str
    prefix: bytes
    suffix: bytes
    offset: int
    pos: int
    lineno: int

    @classmethod
    def of(cls, tracked: Tracked) -> Known:
        """What has been read of ``tracked`` so far."""
        return cls(
            tracked.path,
            tracked.prefix,
            tracked.suffix,
            tracked.offset,
            tracked.pos,
            tracked.lineno,
        )


class ChunkSplitter:
    """Turns the bytes read from a file into lines, a chunk at a time.

    Args:
        encoding: text encoding of the files.
        errors: decoding error handler; with ``"strict"`` an undecodable line
            raises :class:`FileDecodeError` naming the file and line (the
            lines before it in the same chunk are emitted first).
        max_line_bytes: longer lines are skipped with a ``line_too_long`` event.
        locate: make :class:`Line` objects (``path``, ``lineno``), or plain ``str``
            located per chunk (:class:`Lines`).
        log_event: the node's ``log_event``.
    """

    def __init__(
        self,
        encoding: str,
        errors: str,
        max_line_bytes: int,
        locate: bool,
        log_event: EventSink,
    ) -> None:
        self.encoding = encoding
        self.errors = errors
        self.max_line_bytes = max_line_bytes
        self.locate = locate
        self.log_event = log_event
        #: A decoding failure found in the last chunk, raised after its good lines.
        self.failure: FileDecodeError | None = None

    def split(self, tracked: Tracked, chunk: bytes) -> list[Any]:
        """The complete lines in ``chunk`` (read at ``tracked.pos``), updating ``tracked``."""
        tracked.pos += len(chunk)
        if tracked.skip_nuls:
            stripped = chunk.lstrip(b"\0")
            tracked.nuls += len(chunk) - len(stripped)
            tracked.offset += len(chunk) - len(stripped)
            if not stripped:
                return []  # a hole may span many chunks: one event once it ends
            tracked.skip_nuls = False
            if tracked.nuls:
                self.log_event(
                    "leading_nuls_skipped",
                    path=tracked.path,
                    offset=tracked.offset - tracked.nuls,
                    skipped=tracked.nuls,
                )
                tracked.nuls = 0
            chunk = stripped
        if tracked.skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            tracked.skipping = False
            chunk = chunk[newline + 1 :]
            tracked.offset = tracked.pos - len(chunk)
        last = chunk.rfind(b"\n")
        if last < 0:
            tracked.partial += chunk
            self._check_partial(tracked)
            return []
        if tracked.partial:
            data = bytes(tracked.partial) + chunk[: last + 1]
            tracked.partial.clear()
        else:
            data = chunk[: last + 1]
        rest = chunk[last + 1 :]
        first = tracked.lineno + 1
        tracked.offset = tracked.pos - len(rest)
        lines = self.lines(tracked, data, first)
        if rest:
            tracked.partial += rest
            self._check_partial(tracked)
        return lines

    def flush(self, tracked: Tracked) -> list[Any]:
        """The held unterminated last line (at the end of a file), as a list of 0 or 1."""
        if not tracked.partial:
            return []
        raw = bytes(tracked.partial)
        tracked.partial.clear()
        tracked.pos = tracked.offset + len(raw)
        tracked.offset = tracked.pos
        return self.lines(tracked, raw + b"\n", tracked.lineno + 1)

    def lines(self, tracked: Tracked, data: bytes, first: int) -> list[Any]:
        """``data`` (complete lines, each ending with ``\\n``) as lines numbered from ``first``."""
        if len(data) > self.max_line_bytes + 2:
            pieces = data.split(b"\n")
            pieces.pop()
            if max(map(len, pieces)) > self.max_line_bytes + 1:
                tracked.lineno = first + len(pieces) - 1
                return self._without_long_lines(tracked, pieces, first)
        try:
            text = data.decode(self.encoding, self.errors)
        except UnicodeDecodeError as exc:
            return self._until_failure(tracked, data, first, exc)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        parts = text.split("\n")
        parts.pop()
        tracked.lineno = first + len(parts) - 1
        if self.locate:
            return self._located(tracked.path, parts, first)
        return Lines(parts, tracked.path, first)

    def _without_long_lines(self, tracked: Tracked, pieces: list[bytes], first: int) -> list[Any]:
        out: list[Any] = []
        run: list[bytes] = []
        run_first = first
        for number, piece in enumerate(pieces, first):
            if len(piece) > self.max_line_bytes + 1:
                if run:
                    out += self._decode_run(tracked, run, run_first)
                    if self.failure is not None:
                        return out
                    run = []
                self.log_event(
                    "line_too_long",
                    "warning",
                    path=tracked.path,
                    line=number,
                    max_line_bytes=self.max_line_bytes,
                )
                run_first = number + 1
            else:
                run.append(piece)
        if run:
            out += self._decode_run(tracked, run, run_first)
        return out

    def _decode_run(self, tracked: Tracked, run: list[bytes], first: int) -> list[Any]:
        lineno = tracked.lineno
        lines = self.lines(tracked, b"\n".join(run) + b"\n", first)
        tracked.lineno = lineno
        if lines.__class__ is Lines:
            # Runs with gaps between them (the long lines) cannot share one location.
            return self._located(tracked.path, lines, first)
        return lines

    def _until_failure(
        self, tracked: Tracked, data: bytes, first: int, exc: UnicodeDecodeError
    ) -> list[Any]:
        start = data.rfind(b"\n", 0, exc.start) + 1
        number = first + data.count(b"\n", 0, start)
        end = data.find(b"\n", exc.start)
        raw = data[start : end + 1]
        bad = data[exc.start : exc.end + 8]
        msg = (
            f"{tracked.path}, line {number}: cannot decode as {exc.encoding} ({exc.reason} at "
            f"byte {exc.start - start} of the line): {bad!r}; give the right encoding, or "
            "errors='replace' to pass such lines on"
        )
        self.failure = FileDecodeError(msg, path=tracked.path, line=number, content=raw)
        lines = self.lines(tracked, data[:start], first) if start else []
        tracked.lineno = number - 1
        return lines

    def _check_partial(self, tracked: Tracked) -> None:
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

    @staticmethod
    def _located(path: str, parts: list[str], first: int) -> list[Any]:
        lines = list(map(_TailLine, parts))
        for number, line in enumerate(lines, first):
            line.path = path
            line.lineno = number
        return lines
