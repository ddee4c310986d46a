"""The seed README's two custom nodes, used by the YAML examples in this directory.

``FooEmitter`` is the seed's source (with its ``yield message`` typo fixed and
an optional ``count`` so an example can end); ``MessageLengthTester`` is the
seed's processor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from nanostream_trio import NanoNode


class FooEmitter(NanoNode):
    """Emit ``message`` every ``interval`` seconds, ``count`` times (forever if None)."""

    def __init__(self, message: str = "", interval: float = 1, count: int | None = None) -> None:
        self.message = message
        self.interval = interval
        self.count = count
        super().__init__()

    def generator(self) -> Iterator[str]:
        sent = 0
        while self.count is None or sent < self.count:
            time.sleep(self.interval)  # blocking is fine: a sync source runs in a thread
            yield self.message
            sent += 1


class MessageLengthTester(NanoNode):
    """Emit True for a message with an even number of characters, False otherwise."""

    def __init__(self) -> None:
        super().__init__()

    def process_item(self, message: str) -> Iterator[bool]:
        yield len(message) % 2 == 0
