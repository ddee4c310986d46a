"""The pipeline of the kill -9 directory scenario.

argv: DIRECTORY OUT SEEN STATE

``LocalDirectoryWatchdog(DIRECTORY, "*.csv") > LocalFileReader() > CSVReader()
> TumblingWindow(0.5, key=file) > JSONLinesWriter(OUT)`` with checkpoints in
STATE every 0.25 s. The window's reducer collects the ``id`` column of the rows
it counts, so each line of OUT (a :class:`WindowResult` as a dict) says which
rows it counted; flattened, they must be every row of every file, once each.

The rows also go to an at-least-once sink (a user node appending each row's id
to SEEN, flushed, without prepare/recover): the test counts its duplicates and
waits on it to know that every file has been read before it stops the run.

SIGTERM stops gracefully (open windows are emitted, a final checkpoint written).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from nanostream_trio import NanoNode, Pipeline
from nanostream_trio.nodes import (
    CSVReader,
    JSONLinesWriter,
    LocalDirectoryWatchdog,
    LocalFileReader,
    TumblingWindow,
    WindowResult,
)

directory, out, seen, state = sys.argv[1:5]


class AppendIds(NanoNode):
    """An at-least-once sink: appends each row's id to a file, flushed per row."""

    def __init__(self, path: str) -> None:
        super().__init__("seen")
        self.path = path
        self._file: TextIO | None = None

    def setup(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")  # closed in teardown

    def process_item(self, row: dict[str, str]) -> None:
        assert self._file is not None
        self._file.write(f"{row['id']}\n")
        self._file.flush()

    def teardown(self) -> None:
        if self._file is not None:
            self._file.close()


def collect(ids: list[int], row: dict[str, str]) -> list[int]:
    ids.append(int(row["id"]))
    return ids


def file_of(row: dict[str, Any]) -> str:
    return str(row["file"])


watch = LocalDirectoryWatchdog(
    directory, pattern="*.csv", initial_scan=True, settle=0.05, name="watch"
)
rows = watch > LocalFileReader(name="read") > CSVReader(name="csv")
window = TumblingWindow(0.5, key=file_of, reducer=collect, initial=list, name="window")
rows > window > JSONLinesWriter(out, default=WindowResult.as_dict, name="out")
rows > AppendIds(seen)
Pipeline(watch, name="watch-kill", checkpoint=state, checkpoint_interval=0.25).start()
