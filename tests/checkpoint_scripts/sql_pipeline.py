"""The pipeline of the kill -9 SQLSink scenario.

argv: DATABASE STATE TOTAL

A source of the rows ``{"n": 1} .. {"n": TOTAL}`` (50 every 10 ms; its position,
the next number, is its checkpoint state) into two tables of DATABASE, with
checkpoints in STATE every 0.25 s:

* ``once``: ``SQLSink(checkpoint_column="ckpt", batch_size=100)``, no key:
  effectively-once, so it must end with every number exactly once;
* ``plain``: ``SQLSink(batch_size=100)``, no key: at-least-once (its
  duplicates are counted, not asserted).

The source ends after TOTAL, so the last run ends by itself (exit 0).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import trio

from nanostream_trio import Items, NanoNode, Pipeline
from nanostream_trio.nodes import SQLSink

database, state, total = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Numbers(NanoNode):
    """Rows ``{"n": 1}`` to ``{"n": total}``, 50 at a time; the position is the next one."""

    def __init__(self) -> None:
        super().__init__("numbers")
        self.next = 1

    def snapshot(self) -> int:
        return self.next

    def restore(self, state: int) -> None:
        self.next = state

    async def generator(self) -> AsyncIterator[Items]:
        while self.next <= total:
            start = self.next
            self.next = min(start + 50, total + 1)  # before the yield: it covers these rows
            yield Items({"n": n} for n in range(start, self.next))
            await trio.sleep(0.01)


numbers = Numbers()
numbers > SQLSink(database, "once", checkpoint_column="ckpt", batch_size=100, name="once")
numbers > SQLSink(database, "plain", batch_size=100, name="plain")
Pipeline(numbers, name="sql-kill", checkpoint=state, checkpoint_interval=0.25).start()
