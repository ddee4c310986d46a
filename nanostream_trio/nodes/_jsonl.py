"""JSON Lines: a parser node (text line -> object) and a writer sink (object -> line in a file)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, BinaryIO, Unpack

from .._exceptions import ConfigError
from .._node import NanoNode
from .._policy import short_repr
from ._errors import JSONLineError, describe_location
from ._stages import EngineOptions

__all__ = ["JSONLinesParser", "JSONLinesWriter"]


class JSONLinesParser(NanoNode):
    """Parse each incoming line (``str`` or ``bytes``) as one JSON value.

    A line that is not valid JSON raises :class:`JSONLineError`, whose message
    gives the file and line number (for a :class:`Line` from LocalFileReader
    or TailFile; otherwise the count of lines this node has received), the
    parser's complaint and the line itself. The node's error policy decides
    what happens to it; the other lines are unaffected.

    A JSON ``null`` is not emitted (a node's ``None`` output means "nothing").

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

    def process_item(self, line: Any) -> Any:
        """Return the JSON value of ``line``."""
        self._received += 1
        if not isinstance(line, str | bytes | bytearray):
            msg = (
                f"node {self.name!r} expects a line of JSON text (str or bytes); "
                f"got {type(line).__name__} {short_repr(line)}"
            )
            raise TypeError(msg)
        if self.skip_blank and not line.strip():
            return None
        try:
            return json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes
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
            raise JSONLineError(
                msg,
                path=path,
                line=number,
                content=bytes(line) if isinstance(line, bytearray) else line,
            ) from exc


class JSONLinesWriter(NanoNode):
    """A sink appending each item as one line of JSON to a file.

    The file is opened (created if needed, appended to otherwise) in
    ``setup``, so the node is ready once the file is open, and closed in
    ``teardown`` after a final flush.

    Flush policy: ``flush_every=1`` (default) hands every line to the
    operating system as it is written, so a reader or ``tail -f`` sees it at
    once; ``flush_every=n`` flushes every ``n`` lines; ``0`` flushes only on
    rotation and at the end. ``fsync=True`` also asks the OS to put each
    flush on disk.

    Rotation (optional): with ``max_bytes``, a line that would make the file
    larger than that starts a new file; the old one becomes ``path.1``, the
    previous ``path.1`` becomes ``path.2``, and so on up to ``backups`` files.

    An item that JSON cannot encode raises ``TypeError`` through the error
    policy, unless ``default`` turns it into something encodable (the default
    writes ``str(value)``).

    Args:
        path: the file to write.
        flush_every: lines between flushes (0: only on rotation and close).
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
        flush_every: int = 1,
        fsync: bool = False,
        max_bytes: int | None = None,
        backups: int = 5,
        default: Callable[[Any], Any] | None = str,
        sort_keys: bool = False,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        if flush_every < 0:
            msg = f"node {self.name!r} got flush_every={flush_every!r}; expected 0 or more lines"
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
        self._size = 0
        self._unflushed = 0
        #: Lines written since the node started (for tests and curiosity).
        self.lines_written = 0

    def setup(self) -> None:
        """Open the file for appending."""
        self._open()

    def _open(self) -> None:
        self._file = open(self.path, "ab")  # closed in teardown
        self._size = self._file.tell()

    def process_item(self, item: Any) -> None:
        """Append ``item`` as one JSON line."""
        data = (
            json.dumps(item, ensure_ascii=False, default=self.default, sort_keys=self.sort_keys)
            + "\n"
        ).encode()
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
        if self.flush_every and self._unflushed >= self.flush_every:
            self._flush()

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
        """Flush and close the file."""
        self._close()
