"""Error policies: what a node does when processing one item fails.

A node's ``on_error`` is one of:

* ``"raise"`` (default): the pipeline is cancelled and ``run()`` raises the
  original exception, with a note naming the node and the item.
* ``"skip"``: the item is dropped and an ``item_skipped`` event records the
  node, the item and the traceback; the summary counts it.
* ``"retry"``: the item is tried again after an exponential backoff on the
  Trio clock (see :class:`Retry`); when attempts run out it is dead-lettered
  if the node's ``dead_letters`` port is linked, and raised otherwise.
* ``"dead_letter"``: a :class:`DeadLetter` record goes out of the node's
  ``dead_letters`` port (``node.dead_letters > sink``), which must be linked.
  Linking that port makes this the default.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Final, Literal

from ._exceptions import ConfigError

__all__ = ["POLICIES", "DeadLetter", "ErrorPolicy", "Retry", "short_repr"]

ErrorPolicy = Literal["raise", "skip", "retry", "dead_letter"]
POLICIES: Final = ("raise", "skip", "retry", "dead_letter")

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = 6
_repr.maxdict = 6


def short_repr(item: Any) -> str:
    """A repr of ``item`` short enough for an error message or an event."""
    return _repr.repr(item)


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a node with ``on_error="retry"`` tries an item again.

    The wait before attempt ``n + 1`` is ``min(backoff * factor ** (n - 1), max_backoff)``
    seconds of Trio time, so with the defaults: 0.1 s, 0.2 s, then give up.

    Args:
        attempts: total attempts, the first included (at least 1).
        backoff: seconds to wait after the first failure.
        factor: multiplier applied to the wait after each further failure.
        max_backoff: upper bound of any single wait.
    """

    attempts: int = 3
    backoff: float = 0.1
    factor: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            msg = f"Retry.attempts must be at least 1; got {self.attempts}"
            raise ConfigError(msg, key="attempts")
        if self.backoff < 0 or self.factor < 1 or self.max_backoff < 0:
            msg = (
                "Retry needs backoff >= 0, factor >= 1 and max_backoff >= 0; got "
                f"backoff={self.backoff}, factor={self.factor}, max_backoff={self.max_backoff}"
            )
            raise ConfigError(msg)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures (1 or more)."""
        return min(self.backoff * self.factor ** (failed_attempts - 1), self.max_backoff)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """The record a node's ``dead_letters`` port emits for an item it gave up on.

    Attributes:
        item: the input item that failed, unchanged.
        node: name of the node that failed on it.
        exc_type: qualified name of the exception's type, e.g. ``"ValueError"``.
        message: ``str()`` of the exception.
        traceback: the formatted traceback of the last attempt.
        attempts: how many times the item was tried.
        time: Trio clock time (``trio.current_time()``) of the last failure.
    """

    item: Any
    node: str
    exc_type: str
    message: str
    traceback: str
    attempts: int
    time: float


def check_policy(node: str, on_error: str) -> ErrorPolicy:
    """Return ``on_error`` if it names a policy, else raise a ConfigError."""
    if on_error not in POLICIES:
        msg = f"node {node!r} got on_error={on_error!r}; accepted: " + ", ".join(
            repr(p) for p in POLICIES
        )
        raise ConfigError(msg, node=node, key="on_error")
    return on_error  # type: ignore[return-value]
