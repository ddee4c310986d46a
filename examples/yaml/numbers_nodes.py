"""Small nodes for examples/yaml/dead_letters.yaml: a counting source and a flaky step."""

from __future__ import annotations

from collections.abc import Iterator

from nanostream_trio import DeadLetter, NanoNode


class CountTo(NanoNode):
    """Emit the whole numbers 1..limit."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def generator(self) -> Iterator[int]:
        yield from range(1, self.limit + 1)


class Reciprocal(NanoNode):
    """Emit ``1 / (item % modulus)``; fails (ZeroDivisionError) on multiples of ``modulus``."""

    def __init__(self, modulus: int = 5) -> None:
        super().__init__()
        self.modulus = modulus

    def process_item(self, item: int) -> float:
        return 1 / (item % self.modulus)


class ReportRejects(NanoNode):
    """Print one line per dead letter: the item and why it was given up on."""

    def process_item(self, dead_letter: DeadLetter) -> None:
        print(f"gave up on {dead_letter.item!r}: {dead_letter.exc_type}: {dead_letter.message}")
