"""The benchmark workload: the same plain Python functions for every system.

A source of ``n`` small dict records, a map that copies each record and adds
``v2``, a filter keeping even ids, a map to a tuple, and a sink that counts
and sums ``v2``. Every system calls exactly these functions, so the systems
differ only in how they move items between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Record = dict[str, Any]


def records(n: int) -> Iterator[Record]:
    """The source: ``n`` small dict records."""
    for i in range(n):
        yield {"id": i, "v": i * 3, "s": "x" + str(i % 100)}


def add_v2(record: Record) -> Record:
    """Map 1: a copy of the record with ``v2 = v * 2``."""
    out = dict(record)
    out["v2"] = record["v"] * 2
    return out


def even_id(record: Record) -> bool:
    """Filter: keep records with an even id."""
    return record["id"] % 2 == 0  # type: ignore[no-any-return]


def to_tuple(record: Record) -> tuple[int, int, str]:
    """Map 2: the record as a tuple ``(id, v2, s)``."""
    return (record["id"], record["v2"], record["s"])


def count_row(totals: Any, row: tuple[int, int, str]) -> None:
    """The sink of the full workload: count the row and add its ``v2``.

    Written as a function of the state object so that the nanostream sink
    node can use the very same function as its ``process_item``.
    """
    totals.count += 1
    totals.total += row[1]


def count_record(totals: Any, record: Record) -> None:
    """The sink of the source-only workload: count the record and add its ``v``."""
    totals.count += 1
    totals.total += record["v"]


class Totals:
    """The sink's state: how many items arrived and the sum of their ``v2``."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    add = count_row
    add_record = count_record


def expected_pipeline(n: int) -> tuple[int, int]:
    """Count and sum of ``v2`` that the full workload must produce for ``n`` records."""
    evens = (n + 1) // 2  # ids 0, 2, ..., the largest even id below n
    # sum of v2 = sum of 6 * i over even i = 12 * (0 + 1 + ... + (evens - 1))
    return evens, 12 * (evens - 1) * evens // 2


def expected_source(n: int) -> tuple[int, int]:
    """Count and sum of ``v`` that the source-only workload must produce."""
    return n, 3 * n * (n - 1) // 2


def check(name: str, totals: Any, expected: tuple[int, int]) -> None:
    """Raise if ``totals`` differs from ``expected`` (count, sum)."""
    got = (totals.count, totals.total)
    if got != expected:
        msg = f"{name}: wrong result: count, sum = {got}; expected {expected}"
        raise AssertionError(msg)
