"""Exceptions the built-in nodes raise for bad input, one per item.

Each is raised from a node's per-item call, so the node's error policy
(``on_error``) decides what happens: fail the pipeline, skip with an event, or
dead-letter. The message names the input (file path and line number when
known) and shows the offending content, because a dead letter's ``message`` is
``str(exc)`` and must stand on its own::

    NanostreamError
    └── MalformedInputError  (also ValueError)   path, line, content
        ├── CSVRowError                          a row that does not parse or fit
        ├── JSONLineError                        a line that is not JSON
        ├── FileDecodeError                      bytes that do not decode
        └── LateItemError                        an item for a window already closed
"""

from __future__ import annotations

from .._exceptions import NanostreamError

__all__ = [
    "CSVRowError",
    "FileDecodeError",
    "JSONLineError",
    "LateItemError",
    "MalformedInputError",
    "describe_location",
]


def describe_location(path: str | None, line: int | None) -> str:
    """``'data.csv, line 3'``, ``'line 3'`` or ``'the input'``: where a bad item came from."""
    if path is not None and line is not None:
        return f"{path}, line {line}"
    if path is not None:
        return path
    if line is not None:
        return f"line {line}"
    return "the input"


class MalformedInputError(NanostreamError, ValueError):
    """An input item a node cannot turn into output.

    Attributes:
        path: the file the item came from, if known.
        line: its 1-based line number in that file (or in the node's input), if known.
        content: the offending text (shortened in the message, whole here).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        content: str | bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.content = content


class CSVRowError(MalformedInputError):
    """A CSV row that does not parse, or whose field count does not fit the header."""


class JSONLineError(MalformedInputError):
    """A line of a JSON Lines stream that is not valid JSON."""


class FileDecodeError(MalformedInputError):
    """A file's bytes that do not decode with the configured encoding."""


class LateItemError(MalformedInputError):
    """An item whose event time falls in a window that has already been emitted."""
