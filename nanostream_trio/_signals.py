"""SIGINT and SIGTERM around a run and after it, until the process exits.

While a pipeline runs, ``trio.open_signal_receiver`` owns the two signals
(the first stops, the second cancels). Once it closes, Python's defaults
would be back: a signal that arrives then (or that the receiver had queued
but nobody read, which it re-raises as it closes) kills the process with
``-SIGTERM`` or a ``KeyboardInterrupt``, although the run may have completed.

:class:`AfterRun` is installed *before* the receiver opens, so the receiver
restores it (and re-raises its queued signals into it) when it closes. It
stays installed afterwards; at interpreter exit the signals are ignored, as
the process is ending anyway. A signal that reaches it once armed is "late":

* while the run is returning, and once the main module has finished (the
  interpreter is waiting for threads), it is recorded and logged; a second
  one ends the process at once with the run's status;
* after ``Pipeline.start()`` has returned, while the caller's code runs,
  SIGTERM raises ``SystemExit`` with the run's status (``finally`` blocks
  run); SIGINT is a ``KeyboardInterrupt`` as usual (the caller may be a test
  runner or a REPL that relies on it).
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
    """The SIGINT/SIGTERM handler outside a run's own signal handling (see the module).

    Late signals are logged as ``signal_received`` with ``action="exit"``
    (and ``status`` once known), from a short thread: a signal handler must
    not take the logger's locks.

    Attributes:
        status: the exit status the run ended with, once known.
        received: the late signals recorded so far, in order.
    """

    def __init__(self, log: Any) -> None:
        self.status: int | None = None
        self.received: list[int] = []
        self._log = log
        self._armed = False
        self._returned = False
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

    def settle(self, status: int) -> None:
        """The run's exit status is known; if two late signals came already, exit now."""
        self.status = status
        if len(self.received) > 1:
            _log_then_exit(self._log, {}, status, log_event=False)

    def returned(self, status: int) -> None:
        """``Pipeline.start()`` returns with ``status``: the caller's code runs from now on."""
        self.settle(status)
        self._returned = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        exiting = not threading.main_thread().is_alive()  # the main module has finished
        if not self._armed or (self._returned and not exiting and signum == signal.SIGINT):
            self._forward(signum, frame)
            return
        if self._returned and not exiting and self.status is not None:
            self._log_soon(signum)
            raise SystemExit(self.status)
        self.received.append(signum)
        repeated = len(self.received) > 1 and self.status is not None
        self._log_soon(signum, exit_after=self.status if repeated else None)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            # The default action (terminate): let it happen as it would have.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _log_soon(self, signum: int, exit_after: int | None = None) -> None:
        """Log the late signal from a thread; then end the process if ``exit_after`` is given."""
        fields: dict[str, Any] = {"signal": signal.Signals(signum).name, "action": "exit"}
        if self.status is not None:  # not known while the run is still returning
            fields["status"] = self.status
        # Not a daemon: the event is written before the interpreter exits.
        thread = threading.Thread(target=_log_then_exit, args=(self._log, fields, exit_after))
        try:
            thread.start()
        except RuntimeError:  # the interpreter is already shutting down: no event
            if exit_after is not None:
                os._exit(exit_after)


def _log_then_exit(
    log: Any, fields: dict[str, Any], exit_after: int | None, *, log_event: bool = True
) -> None:
    if log_event:
        with contextlib.suppress(Exception):
            log.warning("signal_received", **fields)
    if exit_after is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(exit_after)


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
