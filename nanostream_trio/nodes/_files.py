"""LocalFileReader, and the text types that remember which file and line they came from.

:class:`FileText` and :class:`Line` are ``str`` subclasses: code downstream
treats them as plain strings, while nodes such as CSVReader and
JSONLinesParser read their ``path`` and ``lineno`` to name the file and line
in an error message.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, Unpack

from .._node import EngineSettings, NanoNode, Port
from .._threads import run_sync_in_thread
from ._errors import FileDecodeError
from ._stages import EngineOptions

__all__ = ["FileText", "Line", "LocalFileReader"]

#: Bytes of lines read per trip to a worker thread when reading line by line.
READ_CHUNK = 1 << 16


class FileText(str):
    """The whole text of a file, as a ``str`` that also knows its ``path``.

    Attributes:
        path: the file it was read from (``None`` if unknown).
    """

    path: str | None

    def __new__(cls, text: str = "", path: str | None = None) -> FileText:
        self = super().__new__(cls, text)
        self.path = path
        return self


class Line(str):
    """One line of text (without its line ending) that knows its ``path`` and ``lineno``.

    Attributes:
        path: the file it was read from (``None`` if unknown).
        lineno: its 1-based line number in that file.
    """

    path: str | None
    lineno: int

    def __new__(cls, text: str = "", path: str | None = None, lineno: int = 0) -> Line:
        self = super().__new__(cls, text)
        self.path = path
        self.lineno = lineno
        return self


def strip_line_ending(raw: bytes) -> bytes:
    """``raw`` without a trailing ``\\n`` or ``\\r\\n``."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    return raw


def decode_error(path: str, data: bytes, exc: UnicodeDecodeError, line: int) -> FileDecodeError:
    """A FileDecodeError naming the path, line and bad bytes of a failed decode."""
    bad = data[exc.start : exc.end + 8]
    msg = (
        f"{path}, line {line}: cannot decode as {exc.encoding} ({exc.reason} at byte "
        f"{exc.start} of the line): {bad!r}; is it a binary file? "
        "Read it with binary=True or give the right encoding"
    )
    return FileDecodeError(msg, path=path, line=line, content=data)


def as_path(item: Any, node: str) -> str:
    """``item`` as a filesystem path string, or a TypeError that names the node."""
    if isinstance(item, str | os.PathLike):
        return os.fsdecode(item)
    kind = type(item).__name__
    msg = f"node {node!r} expects a file path (str or os.PathLike); got {kind} {item!r}"
    raise TypeError(msg)


@dataclasses.dataclass(frozen=True, slots=True)
class _RawLine:
    """One undecoded line of a file, from the read stage to the decode stage."""

    path: str
    lineno: int
    raw: bytes


class _Unread(str):
    """A file the read stage could not open: the path (as ``str``) and what was given."""

    original: Any

    def __new__(cls, original: Any) -> _Unread:
        text = os.fsdecode(original) if isinstance(original, str | os.PathLike) else repr(original)
        self = super().__new__(cls, text)
        self.original = original
        return self


class _ReadLines(NanoNode):
    """Path in, one _RawLine per line out (a chunk of lines per trip to a thread).

    It never raises for a file it cannot open: it passes an :class:`_Unread` on,
    and the decode stage (the reader itself, which carries the error policy)
    tries again and raises the error there.
    """

    async def process_item(self, item: Any) -> AsyncIterator[_RawLine | _Unread]:
        try:
            path = as_path(item, self.name)
            handle = await run_sync_in_thread(_open_binary, path)
        except (OSError, TypeError):
            yield _Unread(item)
            return
        try:
            lineno = 0
            while True:
                chunk = await run_sync_in_thread(handle.readlines, READ_CHUNK)
                if not chunk:
                    return
                for raw in chunk:
                    lineno += 1
                    yield _RawLine(path, lineno, raw)
        finally:
            handle.close()


class LocalFileReader(NanoNode):
    """Read the file at each incoming path: its whole text, or one item per line.

    A missing, unreadable or vanished file raises the usual ``OSError``
    (``FileNotFoundError``, ``IsADirectoryError``, ...), whose message names
    the path; bytes that do not decode raise :class:`FileDecodeError` with the
    path and line. Either goes through the node's error policy: per file for
    a whole text, per *line* with ``serialize=True`` (a line that does not
    decode is skipped or dead-lettered alone, the other lines of the file
    still flow). A UTF-8 byte order mark at the start of a file is dropped.

    Reading happens in worker threads, so a slow disk stalls nothing. Per line,
    the file is read a chunk at a time, so a large file never sits in memory
    whole. With ``serialize=True`` the node runs as two inner nodes:
    ``<name>.read`` (paths in, raw lines out) and ``<name>`` (decodes each
    line; carries the error policy, the dead letters and the statistics of
    failed files and lines).

    Args:
        serialize: ``False`` (the seed's default): emit the file's whole
            text as one :class:`FileText`. ``True``: emit one :class:`Line` per
            line, line ending removed.
        binary: emit ``bytes`` instead of text (whole, or per line split on ``\\n``).
        encoding: text encoding (per line, an ASCII-compatible one such as UTF-8).
        errors: decoding error handler, as for :meth:`bytes.decode`;
            ``"strict"`` (default) makes undecodable bytes an error.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity`` (see :class:`NanoNode`).
    """

    def __init__(
        self,
        serialize: bool = False,
        *,
        binary: bool = False,
        encoding: str = "utf-8",
        errors: str = "strict",
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        self._ns_reader: _ReadLines | None = None
        super().__init__(name, **engine)
        if serialize:
            reader = _ReadLines(capacity=self._ns_capacity)
            _ = reader > self  # linked while this node is still its own entry
            self._ns_reader = reader
            reader.configure(name=f"{self.name}.read")
        self.serialize = serialize
        self.binary = binary
        self.encoding = encoding
        self.errors = errors
        self._utf8 = codecs.lookup(encoding).name == "utf-8"

    def _ns_configured(self, changes: EngineSettings) -> None:
        """With ``serialize=True`` the name and capacity also apply to ``<name>.read``."""
        reader = getattr(self, "_ns_reader", None)
        if reader is not None:
            reader.configure(
                name=f"{changes['name']}.read" if "name" in changes else None,
                capacity=changes.get("capacity"),
            )

    def _ns_entry(self) -> NanoNode:
        reader = getattr(self, "_ns_reader", None)
        return reader if reader is not None else self

    @property
    def upstream(self) -> tuple[NanoNode | Port, ...]:
        """Nodes linked into this node (into its read stage with ``serialize=True``)."""
        entry = self._ns_entry()
        return tuple(entry._ns_upstream) if entry is not self else super().upstream

    async def process_item(self, item: Any) -> AsyncIterator[Any]:
        """Read the file at path ``item`` and yield its text or its lines (with
        ``serialize=True``: decode one line the read stage passed on)."""
        if isinstance(item, _RawLine):
            yield self._line(item.path, item.raw, item.lineno)
            return
        if isinstance(item, _Unread):
            item = item.original  # the read stage failed to open it: try again, raise here
        path = as_path(item, self.name)
        if not self.serialize:
            data = await run_sync_in_thread(_read_bytes, path)
            yield data if self.binary else self._decode_whole(path, data)
            return
        handle = await run_sync_in_thread(_open_binary, path)
        try:
            lineno = 0
            while True:
                chunk = await run_sync_in_thread(handle.readlines, READ_CHUNK)
                if not chunk:
                    return
                for raw in chunk:
                    lineno += 1
                    yield self._line(path, raw, lineno)
        finally:
            handle.close()

    def _decode_whole(self, path: str, data: bytes) -> FileText:
        if self._utf8:
            data = data.removeprefix(codecs.BOM_UTF8)
        try:
            return FileText(data.decode(self.encoding, self.errors), path)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            line_start = data.rfind(b"\n", 0, exc.start) + 1
            line_end = data.find(b"\n", exc.start)
            line_bytes = data[line_start : line_end if line_end >= 0 else len(data)]
            shifted = UnicodeDecodeError(
                exc.encoding, line_bytes, exc.start - line_start, exc.end - line_start, exc.reason
            )
            raise decode_error(path, line_bytes, shifted, line) from exc

    def _line(self, path: str, raw: bytes, lineno: int) -> Any:
        raw = strip_line_ending(raw)
        if self.binary:
            return raw
        if lineno == 1 and self._utf8:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            return Line(raw.decode(self.encoding, self.errors), path, lineno)
        except UnicodeDecodeError as exc:
            raise decode_error(path, raw, exc, lineno) from exc


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")  # closed by the caller's finally
