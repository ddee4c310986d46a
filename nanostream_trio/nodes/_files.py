"""LocalFileReader, and the text types that remember which file and line they came from.

:class:`FileText` and :class:`Line` are ``str`` subclasses: code downstream
treats them as plain strings, while nodes such as CSVReader and
JSONLinesParser read their ``path`` and ``lineno`` to name the file and line
in an error message.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, Unpack

import trio

from .._node import NanoNode
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


class LocalFileReader(NanoNode):
    """Read the file at each incoming path: its whole text, or one item per line.

    A missing, unreadable or vanished file raises the usual ``OSError``
    (``FileNotFoundError``, ``IsADirectoryError``, ...), whose message names
    the path; bytes that do not decode raise :class:`FileDecodeError` with the
    path and line. Either goes through the node's error policy.

    Reading happens in worker threads, so a slow disk stalls nothing. Per line,
    the file is read a chunk at a time, so a large file never sits in memory
    whole under the default ``on_error="raise"``. (Under the other policies
    the engine collects an item's outputs before emitting any, so that a
    failed file emits nothing; then a file's lines are held until it is read.)

    Args:
        serialize: ``False`` (the seed's default): emit the file's whole
            text as one :class:`FileText`. ``True``: emit one :class:`Line` per
            line, line ending removed.
        binary: emit ``bytes`` instead of text (whole, or per line split on ``\\n``).
        encoding: text encoding (per line, an ASCII-compatible one such as UTF-8).
        errors: decoding error handler, as for :meth:`bytes.decode`;
            ``"strict"`` (default) makes undecodable bytes a per-file error.
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
        super().__init__(name, **engine)
        self.serialize = serialize
        self.binary = binary
        self.encoding = encoding
        self.errors = errors

    async def process_item(self, item: Any) -> AsyncIterator[Any]:
        """Read the file at path ``item`` and yield its text or its lines."""
        path = as_path(item, self.name)
        if not self.serialize:
            data = await trio.to_thread.run_sync(_read_bytes, path)
            yield data if self.binary else self._decode_whole(path, data)
            return
        handle = await trio.to_thread.run_sync(_open_binary, path)
        try:
            lineno = 0
            while True:
                chunk = await trio.to_thread.run_sync(handle.readlines, READ_CHUNK)
                if not chunk:
                    return
                for raw in chunk:
                    lineno += 1
                    yield self._line(path, raw, lineno)
        finally:
            handle.close()

    def _decode_whole(self, path: str, data: bytes) -> FileText:
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
        try:
            return Line(raw.decode(self.encoding, self.errors), path, lineno)
        except UnicodeDecodeError as exc:
            raise decode_error(path, raw, exc, lineno) from exc


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")  # closed by the caller's finally
