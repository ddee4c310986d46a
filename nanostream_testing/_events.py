"""Capturing the structlog events a run emits, and asserting on them.

:func:`capture_events` is built on :func:`structlog.testing.capture_logs`:
while the ``with`` block is open, structlog's processors are replaced by a
capturing one and every event (the engine's ``pipeline_started``,
``item_retried``, ``node_stalled``...) is kept as a dict in an
:class:`EventLog`. The engine asks structlog for its logger when a run
starts, so a pipeline started inside the block is captured.

To record one pipeline's events without touching structlog's global
configuration, pass ``EventLog().logger()`` as ``Pipeline(logger=...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, overload

import structlog
import structlog.testing

__all__ = ["EventLog", "capture_events"]


class EventLog(Sequence[dict[str, Any]]):
    """The structlog events captured during a test, oldest first.

    Each event is a dict: ``"event"`` holds its name, ``"log_level"`` its
    level, and the other keys its fields (``pipeline``, ``node``, ``item``...).
    The log is live: events appended while it is open show up at once.

    Example::

        with capture_events() as events:
            run_pipeline(FakeSource(["x"]) > Parse(on_error="skip") > CollectingSink(
                allow_empty=True
            ))
        events.assert_emitted("item_skipped", node="Parse", item="'x'")
    """

    def __init__(self, entries: list[MutableMapping[str, Any]] | None = None) -> None:
        self._entries: list[MutableMapping[str, Any]] = entries if entries is not None else []

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [dict(entry) for entry in self._entries[index]]
        return dict(self._entries[index])

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<EventLog of {len(self)} events: {', '.join(self.names()[:8])}...>"

    def names(self) -> list[str]:
        """The name of every event, in order."""
        return [str(entry.get("event")) for entry in self._entries]

    def of(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The events named ``event`` whose fields include ``fields`` (compared by ``==``)."""
        return [
            dict(entry)
            for entry in self._entries
            if entry.get("event") == event
            and all(key in entry and entry[key] == value for key, value in fields.items())
        ]

    def assert_emitted(
        self, event: str, *, count: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Check that an event with these fields was emitted (``count`` times, if given).

        Returns:
            The first matching event.

        Raises:
            AssertionError: no such event (or not ``count`` of them); the message
                lists the events of that name that were seen, and all names.
        """
        found = self.of(event, **fields)
        if found and (count is None or len(found) == count):
            return found[0]
        wanted = f"{event!r}" + (f" with {fields}" if fields else "")
        problem = (
            f"expected {count} {wanted} events, found {len(found)}"
            if found or count is not None
            else f"no {wanted} event was emitted"
        )
        raise AssertionError(problem + self._context(event))

    def assert_not_emitted(self, event: str, **fields: Any) -> None:
        """Check that no event named ``event`` with these fields was emitted.

        Raises:
            AssertionError: one was; the message shows it.
        """
        found = self.of(event, **fields)
        if found:
            wanted = f"{event!r}" + (f" with {fields}" if fields else "")
            msg = f"expected no {wanted} event, found {len(found)}: {found[0]}"
            raise AssertionError(msg)

    def _context(self, event: str) -> str:
        same = self.of(event)
        lines = [f"; {len(same)} {event!r} events seen" + (":" if same else "")]
        lines.extend(f"    {entry}" for entry in same[:5])
        counts: dict[str, int] = {}
        for name in self.names():
            counts[name] = counts.get(name, 0) + 1
        summary = ", ".join(f"{name} x{n}" for name, n in counts.items()) or "none at all"
        lines.append(f"  events captured: {summary}")
        return "\n".join(lines)

    def logger(self) -> Any:
        """A structlog logger recording into this log, for ``Pipeline(logger=...)``.

        It leaves structlog's global configuration alone, so it records one
        pipeline's events even while other code logs elsewhere.
        """
        capture = structlog.testing.LogCapture()
        capture.entries = self._entries
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[capture],
            wrapper_class=structlog.make_filtering_bound_logger(0),
        )


@contextlib.contextmanager
def capture_events() -> Iterator[EventLog]:
    """Capture every structlog event emitted inside the ``with`` block.

    Built on :func:`structlog.testing.capture_logs`, which swaps structlog's
    processors for the duration of the block (and restores them after).
    Start the pipeline inside the block: the engine binds its logger when a
    run starts.

    Yields:
        The :class:`EventLog`, filled as events are emitted.
    """
    with structlog.testing.capture_logs() as entries:
        yield EventLog(entries)
