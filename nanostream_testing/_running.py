"""Running a pipeline on Trio's fake clock, with a virtual-time limit.

:func:`run_pipeline` is for plain (sync) test functions: it calls
``trio.run`` with a fresh :class:`trio.testing.MockClock` whose autojump
threshold is 0, so every ``trio.sleep`` in the pipeline completes as soon as
all tasks are waiting, and an hour of scripted input takes milliseconds.
:func:`run_pipeline_async` is the same for tests already running inside Trio
(pytest-trio), on the clock the test runs on, which must be a ``MockClock``
(request the ``nanostream_clock`` or ``autojump_clock`` fixture).

Both stop the run when it has not finished after ``time_limit`` seconds of
virtual time and raise :class:`TimeLimitExceeded` naming the pipeline, the
limit and the nodes still running.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import trio
import trio.testing

from nanostream_trio import NanoNode, Pipeline, PipelineStatistics
from nanostream_trio._threads import thread_activity

from ._exceptions import TimeLimitExceeded

__all__ = ["DEFAULT_TIME_LIMIT", "run_pipeline", "run_pipeline_async"]

#: Virtual seconds a run may take before it fails: one day of Trio time.
DEFAULT_TIME_LIMIT = 86_400.0

T = TypeVar("T")


def as_pipeline(pipeline: Pipeline | NanoNode, options: dict[str, Any]) -> Pipeline:
    """``pipeline`` itself, or a new Pipeline around a node of the graph."""
    if isinstance(pipeline, Pipeline):
        if options:
            names = ", ".join(sorted(options))
            msg = (
                f"pipeline options ({names}) only apply when a node is given; "
                f"pass them to Pipeline(...) instead for pipeline {pipeline.name!r}"
            )
            raise TypeError(msg)
        return pipeline
    if isinstance(pipeline, NanoNode):
        return Pipeline(pipeline, **options)
    msg = f"expected a Pipeline or a NanoNode of the graph to run; got {type(pipeline).__name__}"
    raise TypeError(msg)


def check_time_limit(time_limit: float | None) -> float:
    """The limit as a number of seconds (``inf`` for ``None``)."""
    if time_limit is None:
        return math.inf
    if isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or time_limit <= 0:
        msg = f"time_limit must be a positive number of virtual seconds or None; got {time_limit!r}"
        raise ValueError(msg)
    return float(time_limit)


def require_fake_clock(helper: str) -> trio.testing.MockClock:
    """The current run's clock, which must be a MockClock."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        msg = (
            f"{helper} needs Trio's fake clock, but this run uses {type(clock).__name__}; "
            "in a pytest-trio test request the 'nanostream_clock' (or 'autojump_clock') "
            "fixture, or pass clock=trio.testing.MockClock(autojump_threshold=0) to trio.run"
        )
        raise RuntimeError(msg)
    return clock


_HOLDING: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("nanostream_testing_hold")


@contextmanager
def hold_clock_for_threads() -> Iterator[None]:
    """Keep an autojumping fake clock still while the run waits on a worker thread.

    An autojump ``MockClock`` jumps to the next deadline as soon as every task
    is blocked, and a task waiting for a worker thread (a sync source calling
    ``time.sleep``, a ``blocking=True`` node) counts as blocked: the clock
    would race ahead, to the time limit in the worst case, while the thread
    works. The engine reports those waits (``thread_activity``); while there
    are any, the clock's autojump is off, so virtual time stands still until
    the thread hands its results over. Does nothing on another clock, and
    nests (only the outermost use acts).
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock) or _HOLDING.get(False):
        yield
        return
    activity = thread_activity()
    normal = clock.autojump_threshold

    def follow(waiting: int) -> None:
        clock.autojump_threshold = math.inf if waiting else normal

    activity.add_listener(follow)
    _HOLDING.set(True)
    follow(activity.waiting)
    try:
        yield
    finally:
        activity.remove_listener(follow)
        _HOLDING.set(False)
        clock.autojump_threshold = normal


async def holding_clock(async_fn: Callable[..., Any], *args: Any) -> Any:
    with hold_clock_for_threads():
        return await async_fn(*args)


def run_sync(helper: str, async_fn: Callable[[], Any], clock: trio.abc.Clock | None) -> Any:
    """``trio.run(async_fn)`` on a fresh autojump clock, refusing to nest in a running Trio."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        pass
    else:
        msg = (
            f"{helper}() starts its own trio.run and cannot be called from inside Trio "
            f"(an async test); use 'await {helper}_async(...)' there"
        )
        raise RuntimeError(msg)
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(holding_clock, async_fn, clock=clock)


async def run_pipeline_async(
    pipeline: Pipeline | NanoNode,
    *,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    **options: Any,
) -> PipelineStatistics:
    """Run a pipeline to its end on the current (fake) clock, within a time limit.

    Args:
        pipeline: a :class:`~nanostream_trio.Pipeline`, or any node of the graph
            (a Pipeline is then built around it with ``options``).
        time_limit: virtual seconds the run may take; ``None`` for no limit.
            Default :data:`DEFAULT_TIME_LIMIT` (one day).
        **options: keyword arguments for ``Pipeline(...)`` (``name``,
            ``stall_timeout``, ...) when a node is given.

    Returns:
        The run's final :class:`~nanostream_trio.PipelineStatistics`.

    Raises:
        TimeLimitExceeded: the run had not finished after ``time_limit``
            virtual seconds; it was cancelled.
        RuntimeError: the current Trio run does not use a ``MockClock``.
        Exception: whatever the pipeline raised (a node's failure).

    Example::

        async def test_double(nanostream_clock):
            sink = CollectingSink()
            await run_pipeline_async(FakeSource([1, 2]) > Double() > sink)
            assert sink.items == [2, 4]
    """
    limit = check_time_limit(time_limit)
    built = as_pipeline(pipeline, options)
    require_fake_clock("run_pipeline_async()")
    started = trio.current_time()
    with hold_clock_for_threads(), trio.move_on_after(limit) as scope:
        summary = await built.run()
    if scope.cancelled_caught:
        raise _time_limit_error(built, limit, started) from None
    return summary


def run_pipeline(
    pipeline: Pipeline | NanoNode,
    *,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    clock: trio.abc.Clock | None = None,
    **options: Any,
) -> PipelineStatistics:
    """Run a pipeline to its end with ``trio.run`` on a fake clock, within a time limit.

    For plain (sync) test functions. Each call is a new ``trio.run`` on a
    new ``MockClock(autojump_threshold=0)`` starting at time 0, so virtual
    times seen by fakes and sinks are exact and repeatable.

    Args:
        pipeline: a :class:`~nanostream_trio.Pipeline`, or any node of the graph.
        time_limit: virtual seconds the run may take; ``None`` for no limit.
            Default :data:`DEFAULT_TIME_LIMIT` (one day).
        clock: the clock for ``trio.run``; default a fresh autojump ``MockClock``.
        **options: keyword arguments for ``Pipeline(...)`` when a node is given.

    Returns:
        The run's final :class:`~nanostream_trio.PipelineStatistics`.

    Raises:
        TimeLimitExceeded: the run had not finished after ``time_limit`` virtual seconds.
        RuntimeError: called from inside a running Trio (use :func:`run_pipeline_async`).
        Exception: whatever the pipeline raised (a node's failure).

    Example::

        def test_double():
            sink = CollectingSink()
            run_pipeline(FakeSource([1, 2], interval=60) > Double() > sink)
            assert sink.items == [2, 4]
            assert sink.arrivals == [0.0, 60.0]
    """
    check_time_limit(time_limit)
    built = as_pipeline(pipeline, options)
    run = partial(run_pipeline_async, built, time_limit=time_limit)
    result: PipelineStatistics = run_sync("run_pipeline", run, clock)
    return result


def _time_limit_error(pipeline: Pipeline, limit: float, started: float) -> TimeLimitExceeded:
    stats = pipeline.statistics()
    unfinished = [name for name, node in stats.items() if node.status != "finished"]
    details = []
    for name in unfinished:
        node = stats[name]
        if node.role == "source":
            details.append(f"{name!r} (source, {node.items_out} items emitted)")
        else:
            details.append(
                f"{name!r} ({node.items_in} items in, {node.items_out} out, "
                f"{node.inbox_queued} waiting in its inbox)"
            )
    now = trio.current_time()
    msg = (
        f"pipeline {pipeline.name!r} did not finish within its time limit of {limit:g} s of "
        f"virtual time (started at t={started:g}, cancelled at t={now:g}); still running: "
        + (", ".join(details) or "none")
        + ". A source that never ends (Pause(math.inf), a watcher) needs pipeline.stop(); "
        "a longer scripted run needs a larger time_limit"
    )
    return TimeLimitExceeded(msg, pipeline=pipeline.name, time_limit=limit, unfinished=unfinished)
