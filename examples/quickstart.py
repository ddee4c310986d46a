"""The seed README's first pipeline, finite: FooEmitter > MessageLengthTester > printer.

Run it with ``python examples/quickstart.py``. ``FooEmitter`` is a sync
generator that calls ``time.sleep``, exactly as in the original nanostream
README; the engine runs it in a worker thread so it blocks nothing else.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

import structlog

from nanostream_trio import NanoNode


class FooEmitter(NanoNode):
    """Emits ``message`` every ``interval`` seconds, ``count`` times."""

    def __init__(self, message: str = "", interval: float = 1, count: int = 5) -> None:
        self.message = message
        self.interval = interval
        self.count = count
        super().__init__()

    def generator(self) -> Iterator[str]:
        for _ in range(self.count):
            time.sleep(self.interval)
            yield self.message


class MessageLengthTester(NanoNode):
    """True when the message has an even number of characters."""

    def process_item(self, message: str) -> Iterator[bool]:
        yield len(message) % 2 == 0


class Printer(NanoNode):
    """Prints each item it receives."""

    def process_item(self, item: object) -> None:
        print(f"even length: {item}", flush=True)


def main() -> None:
    # The library never configures logging; this script is the application, so
    # it sends the engine's events to stderr and keeps only warnings and up.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    message_node = FooEmitter(message="foobar", interval=0.2, count=5)
    length_tester_node = MessageLengthTester()
    message_node > length_tester_node > Printer()
    summary = message_node.global_start()
    print(f"done: {summary[length_tester_node.name].items_out} messages tested")


if __name__ == "__main__":
    main()
