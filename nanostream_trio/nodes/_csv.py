"""CSVReader: CSV text in, one dict per row out, each bad row through the error policy.

One input (a whole file's text, or a :class:`~._files.TextChunk` of a
streamed file) yields many rows, and the engine's error policy applies per
*input item*. So CSVReader is two inner nodes (see ``_stages.py``):

* ``<name>.split`` parses the text with :func:`csv.reader` directly and turns
  each good row into its dict. It never fails: a row that does not parse or
  fit becomes a :class:`CSVRecord` carrying the complaint (its raw text is
  rebuilt only then).
* ``<name>`` (the policy stage) passes the dicts on and raises
  :class:`CSVRowError` (or the reader's :class:`FileDecodeError`) for each
  record, naming the file, line and row.

So with ``on_error="skip"`` or ``"dead_letter"``, each bad row is skipped or
dead-lettered on its own (the dead letter's item is its :class:`CSVRecord`),
the ``skipped`` / ``dead_lettered`` counts are per bad row, and every good row
of the same file still flows, in order.

Rows may span lines (a quoted field may hold line ends), which is where
damaged CSV does harm: an unterminated quote would make the ``csv`` module
read every following line into one field. So a row may span at most
``max_row_lines`` lines; a longer one, one that does not parse, and one still
open at the end of the text are reported on their *first* line alone, and
parsing resumes at the line after it. The splitter parses a text a slice of
lines at a time, carrying the lines of a row still open at the end of a
slice (or of a chunk) over to the next.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final

from .._exceptions import ConfigError
from .._node import NanoNode
from .._policy import short_repr
from ._errors import CSVRowError, describe_location
from ._files import TEXT_CAPACITY, TextChunk
from ._stages import _Staged

__all__ = ["CSVReader", "CSVRecord"]

#: Characters of a whole text parsed per slice (the lines of a slice are held as a list).
SLICE_CHARS: Final = 1 << 14

#: Default for ``max_row_lines``: how many lines one row (a quoted field with line ends) may span.
MAX_ROW_LINES: Final = 10

UNTERMINATED: Final = "unterminated quoted field: its quote is never closed"


@dataclasses.dataclass(frozen=True, slots=True)
class CSVRecord:
    """A CSV row that did not parse or fit, on its way from the splitter to the policy stage.

    It is what a dead letter of CSVReader holds as its ``item``.

    Attributes:
        line: 1-based line number where the row starts.
        raw: the row's text as it appeared (a quoted field may span lines).
        fields: the parsed fields, or ``None`` if the row did not parse.
        fieldnames: the header the row belongs to (``None`` for the header itself
            or text that was not a string).
        path: the file the text came from, if the text knew it.
        error: why the row is bad.
        cause: the exception to raise instead of a :class:`CSVRowError` (a line
            the file reader could not decode: :class:`FileDecodeError`).
    """

    line: int
    raw: str
    fields: list[str] | None
    fieldnames: tuple[str, ...] | None
    path: str | None = None
    error: str | None = None
    cause: Exception | None = None


class _Text:
    """What the splitter knows about one text (a whole one, or a file being streamed)."""

    __slots__ = ("fieldnames", "next_line", "path", "pending", "pending_line")

    def __init__(self, path: str | None, fieldnames: tuple[str, ...] | None) -> None:
        self.path = path
        self.fieldnames = fieldnames
        self.next_line = 1  # the number of the next line to arrive
        self.pending: list[str] = []  # lines of a row still open at the end of the last slice
        self.pending_line = 0  # the number of pending[0]


class _CSVSplit(NanoNode):
    """Text (or TextChunk) in, a dict per good row and a CSVRecord per bad one out."""

    #: LocalFileReader streams a file to this node as TextChunk items (see _files.py).
    _ns_accepts_text_chunks = True

    def __init__(
        self,
        fieldnames: Sequence[str] | None,
        fmt: dict[str, Any],
        *,
        strict_fields: bool,
        restkey: str | None,
        restval: Any,
        max_row_lines: int,
    ) -> None:
        super().__init__(capacity=TEXT_CAPACITY)
        self.fieldnames = tuple(fieldnames) if fieldnames is not None else None
        self.fmt = fmt
        self.strict_fields = strict_fields
        self.restkey = restkey
        self.restval = restval
        self.max_row_lines = max_row_lines
        self._streams: dict[int, _Text] = {}  # the files being streamed, by stream number

    def process_item(self, item: Any) -> Iterator[Any]:
        # The rows of a slice of lines are collected in a list and yielded from here:
        # each level of nested generators would cost every row a resumption.
        rows: list[Any] = []
        if type(item) is TextChunk:
            text = self._stream_of(item, rows)
            body, last = item.text, item.last
        elif isinstance(item, str):
            text = _Text(getattr(item, "path", None), self.fieldnames)
            body, last = item, True
        else:
            kind = type(item).__name__
            error_text = f"expected CSV text (str); got {kind}"
            if isinstance(item, bytes | bytearray):
                error_text += "; read files as text (LocalFileReader without binary=True)"
            path = getattr(item, "path", None)
            yield CSVRecord(0, short_repr(item), None, None, path, error_text)
            return
        if text.next_line == 1:
            body = body.removeprefix("\ufeff")  # a UTF-8 byte order mark
        buffer = io.StringIO(body, newline="")  # lines end at \n, \r\n or \r only
        while lines := buffer.readlines(SLICE_CHARS):
            self._parse(text, lines, rows)
            yield from rows
            rows.clear()
        if last:
            self._parse(text, [], rows, last=True)
        yield from rows

    def _stream_of(self, chunk: TextChunk, rows: list[Any]) -> _Text:
        """The state of the file ``chunk`` belongs to; an error chunk's record goes to
        ``rows``."""
        text = self._streams.get(chunk.stream)
        if text is None:
            text = self._streams[chunk.stream] = _Text(chunk.path, self.fieldnames)
        if chunk.last:
            del self._streams[chunk.stream]
        if chunk.error is not None:
            # The line is missing from the text: a row open before it ends there.
            self._parse(text, [], rows, last=True)
            raw = getattr(chunk.error, "content", None)
            raw_text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            error = f"{type(chunk.error).__name__}: {chunk.error}"
            record = CSVRecord(
                chunk.lineno, raw_text, None, text.fieldnames, chunk.path, error, chunk.error
            )
            rows.append(record)
            text.next_line += 1
        return text

    def _parse(self, text: _Text, lines: list[str], rows: list[Any], *, last: bool = False) -> None:
        """The rows of ``text``'s pending lines followed by ``lines``; a row still open at
        the end is carried over unless this is the ``last`` of the text."""
        if text.pending:
            lines = text.pending + lines
            base = text.pending_line
            text.pending = []
        else:
            base = text.next_line
        count = len(lines)
        text.next_line = base + count
        if not count:
            return
        lines.append("\n")  # a sentinel: a row that takes it in was still open
        start = 0  # index of the line the current csv.reader began at
        while True:
            restart = self._rows(text, lines, count, base, start, last, rows)
            if restart is None:
                return
            start = restart

    def _rows(
        self,
        text: _Text,
        lines: list[str],
        count: int,
        base: int,
        start: int,
        last: bool,
        rows: list[Any],
    ) -> int | None:
        """Rows from ``lines[start:]``; returns where to start a new reader after a row
        reported on its first line alone, or ``None`` at the end."""
        reader = csv.reader(lines if start == 0 else lines[start:], **self.fmt)
        names = text.fieldnames
        width = len(names) if names else -1
        done = 0  # reader.line_num after the previous row
        append = rows.append
        while True:
            try:
                for fields in reader:
                    end = reader.line_num
                    if end - done == 1 and len(fields) == width:  # the fast path
                        append(dict(zip(names, fields, strict=False)))  # type: ignore[arg-type]
                        done = end
                        continue
                    first, done = start + done, end
                    end += start
                    if end > count:  # the row took in the sentinel line
                        if first >= count:
                            return None  # the sentinel alone: every row ended
                        problem = UNTERMINATED
                        return self._open_at_end(text, lines, base, first, last, problem, rows)
                    if end - first > self.max_row_lines:
                        problem = (
                            f"a quoted field spans more than max_row_lines={self.max_row_lines} "
                            "lines"
                        )
                        append(self._cut(text, lines, base, first, end, problem))
                        return first + 1
                    if not fields:
                        continue  # a blank line, skipped as csv.DictReader does
                    if names is None:
                        names = text.fieldnames = tuple(fields)
                        width = len(names)
                        continue
                    append(self._fit(text, lines, base, first, end, fields, names))
                return None
            except csv.Error as exc:
                first, done = start + done, reader.line_num
                end = start + done
                if end > count:  # "unexpected end of data" (strict): a quote still open
                    problem = UNTERMINATED
                    return self._open_at_end(text, lines, base, first, last, problem, rows)
                if end - first > 1:
                    append(self._cut(text, lines, base, first, end, str(exc)))
                    return first + 1
                append(self._record(text, lines, base, first, end, None, str(exc)))

    def _open_at_end(
        self,
        text: _Text,
        lines: list[str],
        base: int,
        first: int,
        last: bool,
        problem: str,
        rows: list[Any],
    ) -> int | None:
        """A row still open after the last line: carried over to the next slice if it may
        still end there, else reported on its first line (returns where to parse again)."""
        count = len(lines) - 1  # without the sentinel
        if not last and count - first < self.max_row_lines:
            text.pending = lines[first:count]
            text.pending_line = base + first
            return None
        rows.append(self._cut(text, lines, base, first, count, problem))
        return first + 1

    def _cut(
        self, text: _Text, lines: list[str], base: int, first: int, end: int, problem: str
    ) -> CSVRecord:
        """The record of the row of ``lines[first:end]``, reported on its first line alone."""
        problem += (
            f" (the row starting on line {base + first} takes {end - first} lines; "
            f"parsing resumes at line {base + first + 1})"
        )
        return self._record(text, lines, base, first, first + 1, None, problem)

    def _record(
        self,
        text: _Text,
        lines: list[str],
        base: int,
        first: int,
        end: int,
        fields: list[str] | None,
        problem: str,
    ) -> CSVRecord:
        raw = "".join(lines[first:end])
        return CSVRecord(base + first, raw, fields, text.fieldnames, text.path, problem)

    def _fit(
        self,
        text: _Text,
        lines: list[str],
        base: int,
        first: int,
        end: int,
        fields: list[str],
        names: tuple[str, ...],
    ) -> Any:
        """The dict of a good row, or the record of one whose field count is wrong."""
        if len(fields) == len(names):
            return dict(zip(names, fields, strict=True))
        if self.strict_fields:
            problem = f"expected {len(names)} fields ({', '.join(names)}), got {len(fields)}"
            return self._record(text, lines, base, first, end, fields, problem)
        row: dict[str, Any] = dict(zip(names, fields, strict=False))
        if len(fields) > len(names):
            row[self.restkey] = fields[len(names) :]  # type: ignore[index]
        else:
            for key in names[len(fields) :]:
                row[key] = self.restval
        return row


class _CSVRows(NanoNode):
    """Dicts pass; a CSVRecord raises CSVRowError (or the decode error it carries)."""

    def process_item(self, item: Any) -> Any:
        if type(item) is dict:
            return item
        record: CSVRecord = item
        if record.cause is not None:
            raise record.cause
        where = describe_location(record.path, record.line or None)
        problem = record.error or "not a CSV row"
        msg = f"{where}: malformed CSV row: {problem}: {short_repr(record.raw.rstrip())}"
        raise CSVRowError(msg, path=record.path, line=record.line, content=record.raw)


class CSVReader(_Staged):
    """CSV text in, one ``dict`` per row out, keyed by the header row.

    Each input item is the text of one CSV document (as ``LocalFileReader``
    emits it, which streams a file to this node in chunks of whole lines);
    its first non-blank row is the header unless ``fieldnames`` is given.
    Blank lines are skipped. A bad row raises :class:`CSVRowError` naming the
    file, the line and the row, which goes through the node's error policy
    *for that row alone*: with ``on_error="skip"`` or ``"dead_letter"`` every
    other row still flows, in order. A row is bad when the ``csv`` module
    rejects it (in the default ``strict=True``: a stray quote, ``"ab"cd``),
    when its field count differs from the header's (with ``strict_fields``),
    when a quoted field in it is never closed or spans more than
    ``max_row_lines`` lines (then only its first line is reported and parsing
    resumes at the next line), or when a line of it could not be decoded
    (the file reader's :class:`FileDecodeError`).

    In statistics and events the node appears as two inner nodes:
    ``<name>.split`` (texts in, rows out) and ``<name>`` (rows in, dicts out,
    carries the error policy and the dead letters).

    Args:
        fieldnames: column names to use instead of reading a header row.
        dialect: a ``csv`` dialect name or class (default ``"excel"``).
        strict_fields: a row whose field count differs from the header's is
            malformed (default). When off, extra fields go under ``restkey``
            and missing ones get ``restval``, as ``csv.DictReader`` does.
        restkey: key for extra fields when ``strict_fields`` is off.
        restval: value for missing fields when ``strict_fields`` is off.
        max_row_lines: how many lines one row may span (a quoted field with
            line ends in it); default 10.
        name: the node's name.
        **options: ``csv`` format parameters (``delimiter``, ``quotechar``,
            ``skipinitialspace``, ``strict`` (default ``True`` here), ...) and
            the engine settings ``on_error``, ``retry``, ``capacity`` (how many
            texts or chunks the inbox holds; default 4).

    Example::

        LocalFileReader() > CSVReader(delimiter=";", on_error="skip") > PrinterOfThings()
    """

    #: What ``**options`` takes: the ``csv`` format parameters and the engine settings
    #: (so a pipeline file's misspelt ``delimeter`` is caught before the class is called).
    accepted_options: ClassVar[tuple[str, ...]] = (
        "delimiter",
        "doublequote",
        "escapechar",
        "lineterminator",
        "quotechar",
        "quoting",
        "skipinitialspace",
        "strict",
        "on_error",
        "retry",
        "capacity",
        "blocking",
    )

    def __init__(
        self,
        *,
        fieldnames: Sequence[str] | None = None,
        dialect: str | type[csv.Dialect] = "excel",
        strict_fields: bool = True,
        restkey: str | None = None,
        restval: Any = None,
        max_row_lines: int = MAX_ROW_LINES,
        name: str | None = None,
        **options: Any,
    ) -> None:
        engine = {
            k: options.pop(k) for k in ("on_error", "retry", "capacity", "blocking") if k in options
        }
        fmt: dict[str, Any] = {"dialect": dialect, "strict": True, **options}
        csv.reader([], **fmt)  # bad format options fail here, with csv's own message
        if (
            not isinstance(max_row_lines, int)
            or isinstance(max_row_lines, bool)
            or max_row_lines < 1
        ):
            msg = (
                f"CSVReader got max_row_lines={max_row_lines!r}; "
                "expected a whole number of lines, at least 1"
            )
            raise ConfigError(msg, node=name, key="max_row_lines")
        self.fieldnames = fieldnames
        self.max_row_lines = max_row_lines
        self.split = _CSVSplit(
            fieldnames,
            fmt,
            strict_fields=strict_fields,
            restkey=restkey,
            restval=restval,
            max_row_lines=max_row_lines,
        )
        self.rows = _CSVRows()
        self._ns_set_stages([("split", self.split), ("rows", self.rows)], self.rows)
        super().__init__(name, **engine)
