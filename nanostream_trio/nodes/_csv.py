"""CSVReader: CSV text in, one dict per row out, each bad row through the error policy.

One input (a whole file's text) yields many rows, and the engine's error
policy applies per *input item*. So CSVReader is two inner nodes (see
``_composite.py``):

* ``<name>.split`` cuts the text into :class:`CSVRecord` items, one per row,
  each with its line number and raw text. It never fails: a row the ``csv``
  module rejects becomes a record that carries the parser's complaint.
* ``<name>`` (the policy stage) turns each record into a dict, or raises
  :class:`CSVRowError` naming the file, line and row.

So with ``on_error="skip"`` or ``"dead_letter"``, each bad row is skipped or
dead-lettered on its own (the dead letter's item is its :class:`CSVRecord`),
the ``skipped`` / ``dead_lettered`` counts are per bad row, and every good row
of the same file still flows, in order.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import Any

from .._node import NanoNode
from .._policy import short_repr
from ._errors import CSVRowError, describe_location
from ._stages import _Staged

__all__ = ["CSVReader", "CSVRecord"]


@dataclasses.dataclass(frozen=True, slots=True)
class CSVRecord:
    """One row of CSV text on its way from the splitter to the row parser.

    It is what a dead letter of CSVReader holds as its ``item``.

    Attributes:
        line: 1-based line number where the row starts.
        raw: the row's text as it appeared (a quoted field may span lines).
        fields: the parsed fields, or ``None`` if the row did not parse.
        fieldnames: the header the row belongs to (``None`` for the header itself
            or text that was not a string).
        path: the file the text came from, if the text knew it.
        error: why the row did not parse, if it did not.
    """

    line: int
    raw: str
    fields: list[str] | None
    fieldnames: tuple[str, ...] | None
    path: str | None = None
    error: str | None = None


class _LineRecorder:
    """Iterates lines for ``csv.reader`` and remembers those of the current row.

    Lines end only at ``\\n``, ``\\r\\n`` or ``\\r`` (as the ``csv`` module
    expects; ``str.splitlines`` would also cut at U+2028, ``\\x0c``, ... which
    are ordinary characters inside a CSV field).
    """

    def __init__(self, text: str) -> None:
        self.lines = list(io.StringIO(text, newline=""))
        self.pos = 0  # index of the next line to hand out
        self.taken: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        line = self.lines[self.pos]
        self.pos += 1
        self.taken.append(line)
        return line


class _CSVSplit(NanoNode):
    """Text in, one CSVRecord per row out; never raises for bad input."""

    def __init__(self, fieldnames: Sequence[str] | None, fmt: dict[str, Any]) -> None:
        super().__init__()
        self.fieldnames = tuple(fieldnames) if fieldnames is not None else None
        self.fmt = fmt

    def process_item(self, item: Any) -> Iterator[CSVRecord]:
        path = getattr(item, "path", None)
        if not isinstance(item, str):
            kind = type(item).__name__
            error_text = f"expected CSV text (str); got {kind}"
            if isinstance(item, bytes | bytearray):
                error_text += "; read files as text (LocalFileReader without binary=True)"
            yield CSVRecord(0, short_repr(item), None, None, path, error_text)
            return
        lines = _LineRecorder(item.removeprefix("\ufeff"))  # a UTF-8 byte order mark
        reader = csv.reader(lines, **self.fmt)
        quote = reader.dialect.quotechar if reader.dialect.quoting != csv.QUOTE_NONE else None
        fieldnames = self.fieldnames
        while True:
            start = lines.pos + 1
            lines.taken.clear()
            fields: list[str] | None = None
            error: str | None = None
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                error = str(exc)
            raw = "".join(lines.taken)
            if len(lines.taken) > 1 and (
                error is not None
                or (lines.pos == len(lines.lines) and quote and raw.count(quote) % 2)
            ):
                # A quote opened here and never closed swallowed every line after it:
                # report this row's first line alone and parse again from the next.
                first = lines.taken[0]
                problem = error or "unterminated quoted field: its quote is never closed"
                problem += (
                    f" (the row starting on line {start} took {len(lines.taken)} lines; "
                    f"parsing resumes at line {start + 1})"
                )
                yield CSVRecord(start, first, None, fieldnames, path, problem)
                lines.pos = start  # the index of the line after the row's first
                reader = csv.reader(lines, **self.fmt)
                continue
            if error is not None:
                yield CSVRecord(start, raw, None, fieldnames, path, error)
                continue
            assert fields is not None
            if not fields:  # a blank line, skipped as csv.DictReader does
                continue
            if fieldnames is None:
                fieldnames = tuple(fields)
                continue
            yield CSVRecord(start, raw, fields, fieldnames, path)


class _CSVRows(NanoNode):
    """CSVRecord in, a dict out, or CSVRowError for a bad row."""

    def __init__(self, strict_fields: bool, restkey: str | None, restval: Any) -> None:
        super().__init__()
        self.strict_fields = strict_fields
        self.restkey = restkey
        self.restval = restval

    def process_item(self, record: CSVRecord) -> dict[str, Any]:
        fields, names = record.fields, record.fieldnames
        if record.error is not None or fields is None or names is None:
            self._fail(record, record.error or "not a CSV row")
        assert fields is not None
        assert names is not None
        if len(fields) != len(names):
            if self.strict_fields:
                self._fail(
                    record,
                    f"expected {len(names)} fields ({', '.join(names)}), got {len(fields)}",
                )
            row: dict[str, Any] = dict(zip(names, fields, strict=False))
            if len(fields) > len(names):
                row[self.restkey] = fields[len(names) :]  # type: ignore[index]
            else:
                for key in names[len(fields) :]:
                    row[key] = self.restval
            return row
        return dict(zip(names, fields, strict=True))

    @staticmethod
    def _fail(record: CSVRecord, problem: str) -> None:
        where = describe_location(record.path, record.line or None)
        msg = f"{where}: malformed CSV row: {problem}: {short_repr(record.raw.rstrip())}"
        raise CSVRowError(msg, path=record.path, line=record.line, content=record.raw)


class CSVReader(_Staged):
    """CSV text in, one ``dict`` per row out, keyed by the header row.

    Each input item is the text of one CSV document (as ``LocalFileReader``
    emits it); its first non-blank row is the header unless ``fieldnames`` is
    given. Blank lines are skipped. A malformed row (one the ``csv`` module
    rejects, or with more or fewer fields than the header when
    ``strict_fields`` is on) raises :class:`CSVRowError` naming the file, the
    line and the row, which goes through the node's error policy *for that row
    alone*: with ``on_error="skip"`` or ``"dead_letter"`` every other row still
    flows, in order.

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
        name: the node's name.
        **options: ``csv`` format parameters (``delimiter``, ``quotechar``,
            ``skipinitialspace``, ``strict``, ...) and the engine settings
            ``on_error``, ``retry``, ``capacity``.

    Example::

        LocalFileReader() > CSVReader(delimiter=";", on_error="skip") > PrinterOfThings()
    """

    def __init__(
        self,
        *,
        fieldnames: Sequence[str] | None = None,
        dialect: str | type[csv.Dialect] = "excel",
        strict_fields: bool = True,
        restkey: str | None = None,
        restval: Any = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        engine = {
            k: options.pop(k) for k in ("on_error", "retry", "capacity", "blocking") if k in options
        }
        fmt: dict[str, Any] = {"dialect": dialect, **options}
        csv.reader([], **fmt)  # bad format options fail here, with csv's own message
        self.fieldnames = fieldnames
        self.split = _CSVSplit(fieldnames, fmt)
        self.rows = _CSVRows(strict_fields, restkey, restval)
        self._ns_set_stages([("split", self.split), ("rows", self.rows)], self.rows)
        super().__init__(name, **engine)
