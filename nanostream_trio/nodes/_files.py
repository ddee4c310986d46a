"""LocalFileReader, and the text types that remember which file and line they came from.

:class:`FileText` and :class:`Line` are ``str`` subclasses: code downstream
treats them as plain strings, while nodes such as CSVReader and
JSONLinesParser read their ``path`` and ``lineno`` to name the file and line
in an error message.

:class:`TextChunk` is how a file is *streamed* to a consumer that declares
(with a class attribute ``_ns_accepts_text_chunks = True``, as CSVReader
does) that it can take a file's text in pieces: when every node linked after
a LocalFileReader accepts them, the reader sends a file as a run of chunks of
whole lines (about :data:`READ_CHUNK` bytes each) instead of one
:class:`FileText`, so memory is bounded by the edge capacities, not by the
size of the file. Nothing changes in the user's pipeline.
"""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from functools import partial
from typing import Any, BinaryIO, Final, Unpack

from .._items import Line, Lines
from .._node import DeadLetterPort, EngineSettings, NanoNode, Port
from .._policy import ErrorPolicy
from .._threads import run_sync_in_thread
from ._errors import FileDecodeError
from ._stages import EngineOptions

__all__ = ["FileText", "Line", "LocalFileReader", "TextChunk"]

#: Bytes read per trip to a worker thread, per line or streamed (then cut at a line end):
#: a trip costs tens of microseconds, parsing this much costs milliseconds.
READ_CHUNK: Final = 1 << 18

#: Inbox of a stage that receives whole texts or chunks: a few of them are plenty,
#: and each may be large, so memory is bounded by this many texts (see TextChunk).
TEXT_CAPACITY: Final = 4

#: Inbox of the per-line policy stage, in blocks of lines (each up to READ_CHUNK bytes):
#: the read stage hands over up to this many per trip to its worker thread.
LINES_CAPACITY: Final = 4

_streams = itertools.count(1)


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


class TextChunk:
    """A piece of a file's text, made of whole lines, on its way to a consumer that
    accepts streamed text (see the module docstring).

    The chunks of one file arrive in order, each with the same ``stream``
    number; the last has ``last=True`` (and may be empty). A line that could
    not be decoded is a chunk of its own, with empty ``text`` and the
    :class:`FileDecodeError` (or, for a read that failed half-way, the
    ``OSError``) in ``error``, so the consumer can raise it through its error
    policy for that line alone.

    Attributes:
        path: the file the text was read from.
        lineno: the 1-based number of the chunk's first line (counting ``\\n``).
        text: whole lines with their line endings (the last line of a file may
            have none).
        last: whether this is the file's last chunk.
        stream: a number shared by the chunks of one reading of one file.
        error: an exception standing for line ``lineno``, or ``None``.
    """

    __slots__ = ("error", "last", "lineno", "path", "stream", "text")

    def __init__(
        self,
        path: str,
        lineno: int,
        text: str,
        *,
        last: bool = False,
        stream: int = 0,
        error: Exception | None = None,
    ) -> None:
        self.path = path
        self.lineno = lineno
        self.text = text
        self.last = last
        self.stream = stream
        self.error = error

    def __repr__(self) -> str:
        size = f"{len(self.text)} chars"
        extra = ", last" if self.last else ""
        extra += f", error={type(self.error).__name__}" if self.error is not None else ""
        return f"<TextChunk {self.path!r} line {self.lineno}, {size}{extra}>"


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


class _Unread(str):
    """A file the read stage could not open: the path (as ``str``) and what was given."""

    original: Any

    def __new__(cls, original: Any) -> _Unread:
        text = os.fsdecode(original) if isinstance(original, str | os.PathLike) else repr(original)
        self = super().__new__(cls, text)
        self.original = original
        return self


class _BadLine:
    """A line the read stage could not decode: the error to raise for it, one line alone."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<undecodable line: {self.error}>"


class _LineBlocks:
    """A binary file read in blocks of whole lines, one block per call (in a worker thread).

    A block ends just after its last ``\\n`` (with ``cr_ends_lines``, after a
    ``\\r`` in a read that has no ``\\n``), so a line, and a ``\\r\\n``, is
    never cut in two.
    """

    def __init__(self, path: str, *, cr_ends_lines: bool = False) -> None:
        self.handle: BinaryIO = open(path, "rb")  # closed by close()
        self.cr_ends_lines = cr_ends_lines
        self.rest = b""

    def next(self) -> bytes:
        """The next block of whole lines; ``b""`` at the end of the file."""
        parts = [self.rest] if self.rest else []
        while True:
            data = self.handle.read(READ_CHUNK)
            if not data:
                self.rest = b""
                return b"".join(parts)
            cut = data.rfind(b"\n") + 1
            if not cut and self.cr_ends_lines:
                # No \n in this read: a \r before its last byte is a line end of its own
                # (one at the very end might be the first half of a \r\n).
                cut = data.rfind(b"\r", 0, len(data) - 1) + 1
            if cut:
                parts.append(data[:cut])
                self.rest = data[cut:]
                return b"".join(parts)
            parts.append(data)  # one line longer than a read: keep reading

    def close(self) -> None:
        self.handle.close()


class _ReadLines(NanoNode):
    """Path in, the file's lines out a block at a time, read and decoded in a worker thread.

    A block is what one read gives (about :data:`READ_CHUNK` bytes of whole
    lines): a :class:`~nanostream_trio._items.Lines` batch of plain ``str``
    (or a list of :class:`Line` with ``locate=True``, of ``bytes`` with
    ``binary=True``). A block with a line that does not decode is handed
    over line by line instead, that line as a :class:`_BadLine`. It never
    raises for bad input: a file it cannot open becomes an :class:`_Unread`
    (the reader itself, which carries the error policy, tries again and
    raises the error there).
    """

    def __init__(self, owner: LocalFileReader, capacity: int) -> None:
        super().__init__(capacity=capacity, blocking=True)
        self.owner = owner

    def process_item(self, item: Any) -> Iterator[Any]:
        try:
            path = as_path(item, self.owner.name)
            blocks = _LineBlocks(path)
        except (OSError, TypeError):
            yield _Unread(item)
            return
        try:
            for lines in self.owner._blocks_of(path, blocks):
                if lines.__class__ is list and not self.owner._whole(lines):
                    yield from lines
                else:
                    yield lines
        finally:
            blocks.close()


class _LinePolicy(NanoNode):
    """Blocks of lines in, each handed on whole (one batch, located); an undecodable line
    raises its error; a file the read stage could not open is opened again here (and, if
    it opens now, read here, in the event loop).

    It carries the reader's error policy, dead letters and name. Its stage
    "expands" each item into batches (see ``item_operation``): no call per line.
    """

    def __init__(self, owner: LocalFileReader) -> None:
        super().__init__(capacity=LINES_CAPACITY)
        self.owner = owner

    def _ns_item_operation(self) -> tuple[str, Any]:
        return "expand", self.process_item

    def process_item(self, item: Any) -> Iterable[list[Any]]:
        """The batches of lines ``item`` stands for."""
        kind = type(item)
        if kind is Lines or kind is list:
            return (item,)
        if kind is _BadLine:
            raise item.error
        if kind is _Unread:
            return self._read_again(item)
        return ([item],)  # one line of a block that did not decode whole

    def _read_again(self, unread: _Unread) -> Iterator[list[Any]]:
        path = as_path(unread.original, self.name)
        blocks = _LineBlocks(path)  # raises the error again, through the policy
        try:
            for lines in self.owner._blocks_of(path, blocks):
                bad = next((line for line in lines if type(line) is _BadLine), None)
                if bad is None:
                    yield lines
                    continue
                good = lines[: lines.index(bad)]
                if good:
                    yield good
                raise bad.error
        finally:
            blocks.close()


class LocalFileReader(NanoNode):
    """Read the file at each incoming path: its whole text, or one item per line.

    A missing, unreadable or vanished file raises the usual ``OSError``
    (``FileNotFoundError``, ``IsADirectoryError``, ...), whose message names
    the path; bytes that do not decode raise :class:`FileDecodeError` with the
    path and line. Either goes through the node's error policy: per file for
    a whole text, per *line* with ``serialize=True`` (a line that does not
    decode is skipped or dead-lettered alone, the other lines of the file
    still flow). A UTF-8 byte order mark at the start of a file is dropped.

    **Streaming.** When every node linked after the reader accepts streamed
    text (CSVReader does), a file is sent as a run of :class:`TextChunk`
    items of about 256 KiB of whole lines instead of one :class:`FileText`, so
    a large file is never in memory whole; the consumer then raises a line
    that does not decode as its own error for that line alone (for CSVReader,
    a bad row). Nothing in the pipeline changes.

    Reading happens in worker threads, so a slow disk stalls nothing. Per line,
    the file is read a chunk at a time, so a large file never sits in memory
    whole. With ``serialize=True`` the node runs as two inner nodes:
    ``<name>.read`` (paths in, lines out, in a worker thread) and ``<name>``
    (carries the error policy, the dead letters and the statistics of failed
    files and lines; a file that could not be opened is opened again there,
    so ``on_error="retry"`` retries it).

    Args:
        serialize: ``False`` (the seed's default): emit the file's whole
            text as one :class:`FileText` (or stream it, see above). ``True``:
            emit one ``str`` per line, line ending removed, handed over a
            block at a time with one location (file, first line number) for
            the block: an error raised for a line by the node linked right
            after this one names the file and line (JSONLinesParser in its
            message, other nodes in a note), and its dead letter's ``item``
            is a :class:`Line`.
        locate: with ``serialize=True``, emit :class:`Line` objects (a
            ``str`` with ``path`` and ``lineno``) instead of plain ``str``,
            for nodes that read those (about three times the cost per line).
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
        locate: bool = False,
        binary: bool = False,
        encoding: str = "utf-8",
        errors: str = "strict",
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        self._ns_reader: _ReadLines | None = None
        self._ns_lines: _LinePolicy | None = None
        super().__init__(name, **engine)
        self.serialize = serialize
        self.locate = locate
        self.binary = binary
        self.encoding = encoding
        self.errors = errors
        codec = codecs.lookup(encoding)
        self._utf8 = codec.name == "utf-8"
        # Chunks are cut at b"\n": only for encodings where that byte is always a line end.
        self._splittable = "a\n".encode(encoding) == b"a\n" and codec.name not in _MULTIBYTE_LF
        if serialize:
            # Two inner nodes stand for this one (it never runs itself): see the class docstring.
            reader = _ReadLines(self, capacity=self._ns_capacity)
            lines = _LinePolicy(self)
            _ = reader > lines
            self._ns_reader, self._ns_lines = reader, lines
            lines.configure(name=self.name, on_error=self._ns_on_error, retry=self._ns_retry)
            reader.configure(name=f"{self.name}.read")

    def _ns_configured(self, changes: EngineSettings) -> None:
        """With ``serialize=True`` the settings go to the inner nodes: the name to both
        (``<name>.read`` and ``<name>``), ``capacity`` to the read stage, ``on_error``
        and ``retry`` to ``<name>``."""
        reader, lines = getattr(self, "_ns_reader", None), getattr(self, "_ns_lines", None)
        if reader is None or lines is None:
            return
        reader.configure(
            name=f"{changes['name']}.read" if "name" in changes else None,
            capacity=changes.get("capacity"),
        )
        lines.configure(
            name=changes.get("name"), on_error=changes.get("on_error"), retry=changes.get("retry")
        )

    def _ns_entry(self) -> NanoNode:
        reader = getattr(self, "_ns_reader", None)
        return reader if reader is not None else self

    def _ns_exit(self) -> NanoNode:
        lines = getattr(self, "_ns_lines", None)
        return lines if lines is not None else self

    @property
    def upstream(self) -> tuple[NanoNode | Port, ...]:
        """Nodes linked into this node (into its read stage with ``serialize=True``)."""
        return tuple(self._ns_entry()._ns_upstream)

    @property
    def downstream(self) -> tuple[NanoNode, ...]:
        """Nodes linked after this node (after ``<name>`` with ``serialize=True``)."""
        return tuple(self._ns_exit()._ns_downstream)

    @property
    def dead_letters(self) -> DeadLetterPort:
        """The ``dead_letters`` port (of ``<name>`` with ``serialize=True``)."""
        exit_node = self._ns_exit()
        return exit_node._ns_dead_letters

    @property
    def on_error(self) -> ErrorPolicy:
        """The effective error policy (of ``<name>`` with ``serialize=True``)."""
        exit_node = self._ns_exit()
        return super().on_error if exit_node is self else exit_node.on_error

    @on_error.setter
    def on_error(self, on_error: ErrorPolicy) -> None:
        self.configure(on_error=on_error)

    @property
    def streams(self) -> bool:
        """Whether files are sent as :class:`TextChunk` runs: not per line, not binary,
        an encoding that can be cut at line ends, and every node linked after this one
        accepts streamed text."""
        downstream = self._ns_downstream
        return (
            not self.serialize
            and not self.binary
            and self._splittable
            and bool(downstream)
            and all(getattr(node, "_ns_accepts_text_chunks", False) for node in downstream)
        )

    async def process_item(self, item: Any) -> AsyncIterator[Any]:
        """Read the file at path ``item`` and yield its text or its chunks."""
        path = as_path(item, self.name)
        if self.streams:
            async for chunk in self._stream(path):
                yield chunk
            return
        data = await run_sync_in_thread(_read_bytes, path)
        yield data if self.binary else self._decode_whole(path, data)

    async def _stream(self, path: str) -> AsyncIterator[TextChunk]:
        blocks = await run_sync_in_thread(partial(_LineBlocks, path, cr_ends_lines=True))
        stream = next(_streams)
        lineno = 1
        try:
            while True:
                try:
                    data = await run_sync_in_thread(blocks.next)
                except OSError as exc:
                    exc.add_note(f"reading {path} failed after line {lineno - 1}")
                    yield TextChunk(path, lineno, "", last=True, stream=stream, error=exc)
                    return
                if not data:
                    yield TextChunk(path, lineno, "", last=True, stream=stream)
                    return
                if lineno == 1 and self._utf8:
                    data = data.removeprefix(codecs.BOM_UTF8)
                for chunk in self._decode_chunk(path, data, lineno, stream):
                    yield chunk
                lineno += data.count(b"\n")
        finally:
            blocks.close()

    def _decode_chunk(
        self, path: str, data: bytes, lineno: int, stream: int
    ) -> Iterator[TextChunk]:
        """``data`` (whole lines) as one chunk, or, if it does not decode, as a chunk per
        run of good lines and an error chunk per undecodable line."""
        try:
            yield TextChunk(path, lineno, data.decode(self.encoding, self.errors), stream=stream)
            return
        except UnicodeDecodeError:
            pass
        raws = data.split(b"\n")
        if not raws[-1]:
            raws.pop()  # what follows the final line end
        final = lineno + len(raws) - 1 if not data.endswith(b"\n") else 0
        good: list[str] = []
        first = lineno
        for number, raw in enumerate(raws, lineno):
            try:
                text = raw.decode(self.encoding, self.errors)
            except UnicodeDecodeError as exc:
                if good:
                    yield TextChunk(path, first, "".join(good), stream=stream)
                    good = []
                error = decode_error(path, raw.removesuffix(b"\r"), exc, number)
                yield TextChunk(path, number, "", stream=stream, error=error)
                first = number + 1
                continue
            good.append(text if number == final else text + "\n")
        if good:
            yield TextChunk(path, first, "".join(good), stream=stream)

    def _blocks_of(self, path: str, blocks: _LineBlocks) -> Iterator[list[Any]]:
        """Every block of lines of ``blocks`` (see :class:`_ReadLines`); a read that fails
        ends them with a :class:`_BadLine` (runs in a worker thread)."""
        lineno = 0
        while True:
            try:
                lines = _take_lines(self, path, blocks, lineno)
            except OSError as exc:
                exc.add_note(f"reading {path} failed after line {lineno}")
                yield [_BadLine(exc)]
                return
            if not lines:
                return
            yield lines
            lineno += len(lines)

    @staticmethod
    def _whole(lines: list[Any]) -> bool:
        """Whether a block in a plain list has no undecodable line (it goes on whole)."""
        return not any(type(line) is _BadLine for line in lines)

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


#: Codecs where the byte 0x0A can be part of a character other than a line feed.
_MULTIBYTE_LF: Final = frozenset(
    {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
)


def _take_lines(reader: LocalFileReader, path: str, blocks: _LineBlocks, before: int) -> list[Any]:
    """The lines of the next block of ``blocks``, numbered from ``before + 1``; ``[]`` at
    the end of the file."""
    data = blocks.next()
    if not data:
        return []
    if reader.binary:
        raws = data.split(b"\n")
        if not raws[-1]:
            raws.pop()
        return [raw.removesuffix(b"\r") for raw in raws]
    if before == 0 and reader._utf8:
        data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode(reader.encoding, reader.errors)
    except UnicodeDecodeError:
        raws = data.split(b"\n")
        if not raws[-1]:
            raws.pop()
        return [_line_or_bad(reader, path, raw, n) for n, raw in enumerate(raws, before + 1)]
    texts = text.split("\n")
    if not texts[-1]:
        texts.pop()
    crlf = "\r" in text
    if not reader.locate:
        if crlf:
            texts = [part[:-1] if part.endswith("\r") else part for part in texts]
        return Lines(texts, path, before + 1)
    new = str.__new__
    lines: list[Any] = []
    append = lines.append
    for number, part in enumerate(texts, before + 1):
        if crlf and part.endswith("\r"):
            part = part[:-1]
        line = new(Line, part)
        line.path = path  # what Line() does, without a Python call per line
        line.lineno = number
        append(line)
    return lines


def _line_or_bad(reader: LocalFileReader, path: str, raw: bytes, number: int) -> Any:
    raw = raw.removesuffix(b"\r")
    try:
        return Line(raw.decode(reader.encoding, reader.errors), path, number)
    except UnicodeDecodeError as exc:
        return _BadLine(decode_error(path, raw, exc, number))


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
