"""SIGINT and SIGTERM around a run and after it, until the process exits.

While a pipeline runs, ``trio.open_signal_receiver`` owns the two signals
(the first stops, the second cancels). Once it closes, Python's defaults
would be back: a signal that arrives then (or that the receiver had queued
but nobody read, which it re-raises as it closes) kills the process with
``-SIGTERM`` or a ``KeyboardInterrupt``, although the run may have completed.

:class:`AfterRun` is installed *before* the receiver opens, so the receiver
restores it (and re-raises its queued signals into it) when it closes. It
stays installed afterwards; at interpreter exit the signals are ignored, as
the process is ending anyway. What a late signal does is the caller's choice
(:attr:`AfterRun.exit_at_once`): the command line records it (the process is
about to exit with the run's status; a further one exits at once), while
``Pipeline.start()`` ends the process with the run's status through
``SystemExit`` once ``start()`` has returned.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["SIGNALS", "AfterRun"]

#: The signals a run handles.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AfterRun:
    """The SIGINT/SIGTERM handler outside a run's own signal handling.

    Before :meth:`arm` (the run's receiver is not open yet) a signal has the
    effect it had before :meth:`install`. Once armed, every signal is "late":
    it is recorded in :attr:`received`, logged as ``signal_received`` with
    ``action="exit"`` (from a short thread: a signal handler must not take
    the logger's locks), and then

    * with ``exit_at_once`` and a known :attr:`status`, ``SystemExit(status)``
      is raised in the main thread (``finally`` blocks and ``atexit`` run);
    * otherwise it is only recorded, unless it is the second late signal and
      the status is known: then the process exits at once with that status.

    Attributes:
        status: the exit status the run ended with, once known.
        exit_at_once: raise ``SystemExit(status)`` on a late signal.
        received: the late signals so far, in order.
    """

    def __init__(self, log: Any) -> None:
        self.status: int | None = None
        self.exit_at_once = False
        self.received: list[int] = []
        self._log = log
        self._armed = False
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Take SIGINT and SIGTERM; ``False`` (and nothing done) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            owner = getattr(current, "__self__", None)
            # A handler left by an earlier run is replaced, not chained to.
            if isinstance(owner, AfterRun):
                current = owner._previous.get(signum, signal.SIG_DFL)
            self._previous[signum] = current
            signal.signal(signum, self._handle)
        _ignore_at_exit()
        return True

    def arm(self) -> None:
        """From now on a signal reaching this handler came after the run's own handling."""
        self._armed = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:
            self._forward(signum, frame)
            return
        self.received.append(signum)
        self._log_soon(signum)
        if self.status is None:
            return
        if self.exit_at_once:
            raise SystemExit(self.status)
        if len(self.received) > 1:
            _exit_now(self.status)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            # The default action (terminate): let it happen as it would have.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _log_soon(self, signum: int) -> None:
        fields: dict[str, Any] = {"signal": signal.Signals(signum).name, "action": "exit"}
        if self.status is not None:  # not known while the run is still returning
            fields["status"] = self.status
        # Not a daemon: the event is written before the interpreter exits.
        thread = threading.Thread(
            target=self._log.warning, args=("signal_received",), kwargs=fields, daemon=False
        )
        with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
            thread.start()


def _exit_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


_ignoring_at_exit = False


def _ignore_at_exit() -> None:
    """At interpreter exit, ignore the signals while an :class:`AfterRun` holds them.

    Python resets its own handlers to the default action as it finalizes; a
    signal in those last moments would still kill the process by the signal.
    """
    global _ignoring_at_exit
    if _ignoring_at_exit:
        return
    _ignoring_at_exit = True

    def ignore() -> None:
        for signum in SIGNALS:
            if isinstance(getattr(signal.getsignal(signum), "__self__", None), AfterRun):
                signal.signal(signum, signal.SIG_IGN)

    atexit.register(ignore)
