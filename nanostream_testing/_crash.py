"""Crash points: make a pipeline die at a chosen moment, to test its recovery.

A crash here is an exception, :class:`SimulatedCrash`, raised where a real
crash (``kill -9``, a power cut) could hit: the pipeline fails, so it writes
no final checkpoint, and a new run on the same checkpoint store recovers from
the last complete one, as a restarted process would. On the fake clock such
a test takes milliseconds; the slow suite does the same with real processes
killed by SIGKILL.

* :class:`Crash` in a :class:`~nanostream_testing.FakeSource` script crashes
  the source at that point of its items;
* :func:`crash_at` crashes at a moment of a checkpoint: after a sink's
  ``prepare``, before the store write, or after it (before the acks).
"""

from __future__ import annotations

from typing import Final, Literal

from nanostream_trio import Pipeline

__all__ = ["MOMENTS", "Crash", "SimulatedCrash", "crash_at"]

Moment = Literal["after_prepare", "before_write", "after_write"]

#: The moments of a checkpoint :func:`crash_at` can crash at, in order.
MOMENTS: Final = ("after_prepare", "before_write", "after_write")


class SimulatedCrash(Exception):
    """The crash a test asked for (:class:`Crash`, :func:`crash_at`).

    Attributes:
        moment: where it happened (``"script"`` for a :class:`Crash` marker).
        checkpoint: the checkpoint's number, for a checkpoint moment.
        node: the node it happened in, if any.
    """

    def __init__(
        self, message: str, *, moment: str, checkpoint: int | None = None, node: str | None = None
    ) -> None:
        super().__init__(message)
        self.moment = moment
        self.checkpoint = checkpoint
        self.node = node


class Crash:
    """Script marker: the source crashes here with :class:`SimulatedCrash`, once.

    A marker fires the first time a script reaches it and never again, so a
    second :class:`~nanostream_testing.FakeSource` built from the same script
    (the restarted process) replays past it after recovering.
    """

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False

    def __repr__(self) -> str:
        return "Crash(fired)" if self.fired else "Crash()"


def crash_at(
    pipeline: Pipeline,
    moment: Moment,
    *,
    checkpoint: int | None = None,
    node: str | None = None,
) -> None:
    """Make ``pipeline``'s next run crash at ``moment`` of a checkpoint, once.

    Args:
        pipeline: a pipeline built with ``checkpoint=``.
        moment: ``"after_prepare"`` (a sink has made its output durable for
            the checkpoint, the store does not have it yet), ``"before_write"``
            (every node has reported) or ``"after_write"`` (the checkpoint is
            in the store; sinks have not been told ``commit`` nor sources ``ack``).
        checkpoint: the checkpoint's number; default the first one to reach
            ``moment``.
        node: for ``"after_prepare"``, the sink's name; default any sink.

    Raises:
        ValueError: an unknown moment, or ``node`` with a moment other than ``"after_prepare"``.
    """
    if moment not in MOMENTS:
        msg = f"crash_at() moment must be one of {', '.join(MOMENTS)}; got {moment!r}"
        raise ValueError(msg)
    if node is not None and moment != "after_prepare":
        msg = f"crash_at() node= applies to moment 'after_prepare' only; got moment {moment!r}"
        raise ValueError(msg)
    fired = False

    def fault(at: str, n: int, at_node: str | None) -> None:
        nonlocal fired
        if fired or at != moment:
            return
        if checkpoint is not None and n != checkpoint:
            return
        if node is not None and at_node != node:
            return
        fired = True
        where = f" in node {at_node!r}" if at_node else ""
        msg = f"simulated crash {moment.replace('_', ' ')} of checkpoint {n}{where}"
        raise SimulatedCrash(msg, moment=moment, checkpoint=n, node=at_node)

    pipeline._ns_checkpoint_fault = fault
