"""The pipeline of the kill -9 tail scenario.

argv: LOG OUT SEEN STATE [--no-follow] [--glob]

With ``--glob`` the pipeline watches ``LOG*`` (the log and its rotated names)
instead of the single path.

``TailFile(LOG) > JSONLinesParser() > Batch(100, interval=0.2) > JSONLinesWriter(OUT)``
with checkpoints in STATE every 0.25 s. Batch emits lists, and JSONLinesWriter
writes each list as one JSON array line, so OUT holds one line per batch; its
numbers, flattened, must be every number the writer wrote, once each.

The batches also go to an at-least-once sink (a user node appending each
batch's numbers to SEEN, one per line, without prepare/recover): after a
crash it sees the replayed items again, and the test counts them.

SIGTERM stops gracefully (the pipeline drains and writes a final checkpoint).
With ``--no-follow`` TailFile reads to the end of its files and the run ends by
itself, with the same final checkpoint (``follow`` is not part of the shape a
checkpoint must match, so the same store serves both).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from nanostream_trio import NanoNode, Pipeline
from nanostream_trio.nodes import Batch, JSONLinesParser, JSONLinesWriter, TailFile

log, out, seen, state = sys.argv[1:5]
flags = set(sys.argv[5:])
follow = "--no-follow" not in flags
watched = f"{log}*" if "--glob" in flags else log


class AppendNumbers(NanoNode):
    """An at-least-once sink: appends the numbers of each batch to a file, flushed."""

    def __init__(self, path: str) -> None:
        super().__init__("seen")
        self.path = path
        self._file: TextIO | None = None

    def setup(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")  # closed in teardown

    def process_item(self, batch: list[dict[str, Any]]) -> None:
        assert self._file is not None
        self._file.write("".join(f"{record['n']}\n" for record in batch))
        self._file.flush()

    def teardown(self) -> None:
        if self._file is not None:
            self._file.close()


tail = TailFile(watched, start_at="beginning", follow=follow, poll_interval=0.05, name="tail")
batch = Batch(100, interval=0.2, name="batch")
tail > JSONLinesParser(name="parse") > batch > JSONLinesWriter(out, name="out")
batch > AppendNumbers(seen)
Pipeline(tail, name="tail-kill", checkpoint=state, checkpoint_interval=0.25).start()
