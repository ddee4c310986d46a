"""FakeSource: a real source node that emits a script of items on the Trio clock.

A FakeSource is an ordinary :class:`~nanostream_trio.NanoNode` whose
``generator`` is an async generator: it runs in the Trio thread, sleeps with
``trio.sleep_until`` (so a fake clock makes its timing exact), and is subject
to the engine's back-pressure like any source. Its script is a list of items
and in-band markers:

* :class:`Pause` waits a number of virtual seconds before the next item (and
  shifts every later item by as much);
* :class:`Raise` makes the source fail with an exception;
* :class:`End` ends the source there, ignoring the rest of the script;
* :class:`~nanostream_testing.Crash` crashes it there, once (see ``_crash.py``).

A FakeSource has a position for checkpoints (``snapshot``/``restore``): the
number of script entries it has gone through. Restored, it resumes after
them, its next item due at once and the later ones on their schedule from
there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import trio

from nanostream_trio import NanoNode

from ._crash import Crash, SimulatedCrash
from ._exceptions import FakeUsageError

__all__ = ["End", "FakeSource", "Pause", "Raise"]


class Pause:
    """Script marker: wait ``seconds`` of virtual time before going on.

    Every later item is shifted by the pause. ``Pause(math.inf)`` never
    resumes: the source runs until the pipeline is stopped or cancelled.

    Args:
        seconds: how long to wait, at least 0.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            msg = f"Pause needs a number of seconds >= 0 (math.inf for ever); got {seconds!r}"
            raise ValueError(msg)
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"Pause({self.seconds:g})"


class Raise:
    """Script marker: the source fails with ``error`` at this point.

    Args:
        error: an exception instance, raised as is, or an exception class,
            instantiated (without arguments) each time the script runs.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException | type[BaseException]) -> None:
        is_class = isinstance(error, type) and issubclass(error, BaseException)
        if not is_class and not isinstance(error, BaseException):
            msg = f"Raise needs an exception or an exception class; got {error!r}"
            raise TypeError(msg)
        self.error = error

    def exception(self) -> BaseException:
        """The exception to raise now."""
        return self.error() if isinstance(self.error, type) else self.error

    def __repr__(self) -> str:
        return f"Raise({self.error!r})"


class End:
    """Script marker: the source ends here; the rest of the script is not emitted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "End()"


_MARKERS = (Pause, Raise, End, Crash)


class FakeSource(NanoNode):
    """A source node that emits scripted items at scripted virtual times.

    Timing is relative to the moment the source starts (the pipeline's
    start): the **first item comes at** ``start`` **(default 0, i.e. at once)**,
    item ``k`` (counting data items from 0, markers excluded) at
    ``start + k * interval``, or at ``start + at[k]`` when explicit times are
    given. A :class:`Pause` adds its length to every later time. When
    back-pressure holds the source up, a late item is emitted as soon as
    there is room, never dropped; later items keep their schedule.

    Args:
        items: the script: items, and :class:`Pause`, :class:`Raise` or
            :class:`End` markers. It is read once, at construction, so a
            FakeSource replays the same script on every run.
        interval: virtual seconds between consecutive items (default 0).
        at: explicit times for the data items (one per item, non-decreasing);
            excludes ``interval``.
        start: virtual seconds before the first item.
        name: the node's name (default ``FakeSource``, ``FakeSource-2``...).
        **options: further ``NanoNode`` options.

    Attributes:
        emitted: the items yielded in the last run, in order.
        emitted_at: virtual seconds since the run started at which each was
            yielded. Under back-pressure the engine takes an item later than
            it was yielded, and the next item is yielded no earlier than that.

    Raises:
        ValueError: a negative interval or start, or ``at`` of the wrong length or order.
        FakeUsageError: (when run) the source is linked to no node.

    Example::

        source = FakeSource(["a", Pause(30), "b", Raise(OSError("disk gone"))], interval=10)
        # "a" at t=0, "b" at t=40, then the pipeline fails with OSError at t=40
    """

    def __init__(
        self,
        items: Iterable[Any],
        *,
        interval: float = 0.0,
        at: Sequence[float] | None = None,
        start: float = 0.0,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.script: list[Any] = list(items)
        count = sum(1 for entry in self.script if not isinstance(entry, _MARKERS))
        for value, what in ((interval, "interval"), (start, "start")):
            if not value >= 0 or not math.isfinite(value):
                msg = f"FakeSource {self.name!r} got {what}={value!r}; expected seconds >= 0"
                raise ValueError(msg)
        if at is not None:
            if interval:
                msg = f"FakeSource {self.name!r} got both interval= and at=; give one of them"
                raise ValueError(msg)
            times = [float(t) for t in at]
            if len(times) != count:
                msg = (
                    f"FakeSource {self.name!r} got {len(times)} times in at= for "
                    f"{count} items; give exactly one time per item (markers excluded)"
                )
                raise ValueError(msg)
            for index, (before, after) in enumerate(itertools.pairwise(times)):
                if after < before:
                    msg = (
                        f"FakeSource {self.name!r}: at= must not go back in time; "
                        f"item {index + 1} is at {after:g}, before item {index} at {before:g}"
                    )
                    raise ValueError(msg)
            self._offsets = times
        else:
            self._offsets = [k * interval for k in range(count)]
        self._start = float(start)
        self.emitted: list[Any] = []
        self.emitted_at: list[float] = []
        # Script entries gone through (the checkpoint position), and where a
        # restored run resumes.
        self._consumed = 0
        self._resume_at = 0

    def setup(self) -> None:
        """Check the source is linked: a FakeSource feeding nothing tests nothing."""
        if not self.downstream:
            msg = (
                f"FakeSource {self.name!r} is not linked to any node, so its "
                f"{len(self._offsets)} items would go nowhere; link it first: "
                f"'source > node' (a FakeSource is a source: it feeds the pipeline)"
            )
            raise FakeUsageError(msg, node=self.name)
        self.emitted = []
        self.emitted_at = []
        self._consumed = self._resume_at = 0

    def snapshot(self) -> int:
        """The checkpoint position: how many script entries have been gone through."""
        return self._consumed

    def restore(self, state: int) -> None:
        """Resume after the first ``state`` script entries (from :meth:`snapshot`)."""
        self._resume_at = self._consumed = state

    async def generator(self) -> AsyncIterator[Any]:
        """Play the script: sleep until each item's time, then yield it."""
        started = trio.current_time()
        shift = self._start
        resume = self._resume_at
        # Data items before the resume point: their times no longer apply.
        index = sum(1 for entry in self.script[:resume] if not isinstance(entry, _MARKERS))
        if resume and index < len(self._offsets):
            shift -= self._offsets[index]
        for position, entry in enumerate(self.script[resume:], resume + 1):
            # An entry counts as gone through once done (an item: as it is
            # yielded); End and Raise never are: a restored run meets them again.
            if isinstance(entry, Crash):
                self._consumed = position
                if not entry.fired:
                    entry.fired = True
                    msg = f"simulated crash of FakeSource {self.name!r} at script entry {position}"
                    raise SimulatedCrash(msg, moment="script", node=self.name)
            elif isinstance(entry, Pause):
                shift += entry.seconds
                await trio.sleep(entry.seconds)
                self._consumed = position
            elif isinstance(entry, Raise):
                raise entry.exception()
            elif isinstance(entry, End):
                return
            else:
                await trio.sleep_until(started + shift + self._offsets[index])
                index += 1
                self.emitted.append(entry)
                self.emitted_at.append(trio.current_time() - started)
                self._consumed = position
                yield entry
