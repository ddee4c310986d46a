"""pytest plugin for nanostream-trio (registered through the ``pytest11`` entry point).

Installed with the package and loaded automatically; it builds on
pytest-trio. Fixtures:

``nanostream_clock``
    A :class:`trio.testing.MockClock` with ``autojump_threshold=0``. An
    async test that requests it runs on it (pytest-trio uses any ``Clock``
    fixture the test function requests), so its sleeps take no wall time.
``nanostream_runner``
    A :class:`PipelineRunner` bound to that clock and to the test's time
    limit: ``runner.run(...)`` / ``runner.run_node(...)`` in a sync test,
    ``await runner.run_async(...)`` / ``await runner.run_node_async(...)``
    in an async one (which must also request ``nanostream_clock``).
``nanostream_events``
    An :class:`~nanostream_testing.EventLog` capturing every structlog
    event emitted during the test (via ``structlog.testing.capture_logs``).

Trio mode: an ``async def`` test that requests one of these fixtures runs
under pytest-trio without any configuration (the plugin marks it
``@pytest.mark.trio``). Other async tests need pytest-trio's own switch,
``trio_mode = true`` in the pytest configuration, or the marker. pytest-trio
comes with ``pip install 'nanostream-trio[test]'``; without it such a test
fails with a message saying so.

Time limit: ``nanostream_time_limit`` in the pytest ini options sets the
default virtual-time limit of runs made through ``nanostream_runner``
(default one day); ``@pytest.mark.nanostream_time_limit(seconds)`` sets it
for one test.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_trio import NanoNode, Pipeline, PipelineStatistics

from ._events import EventLog, capture_events
from ._harness import NodeResult, run_node, run_node_async
from ._running import DEFAULT_TIME_LIMIT, check_time_limit, run_pipeline, run_pipeline_async

__all__ = [
    "PipelineRunner",
    "nanostream_clock",
    "nanostream_events",
    "nanostream_runner",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_setup",
]

_MARKER = "nanostream_time_limit"

#: The fixtures whose async tests the plugin hands to pytest-trio.
_FIXTURES = ("nanostream_clock", "nanostream_runner", "nanostream_events")

_NEEDS_PYTEST_TRIO = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``nanostream_time_limit`` ini option."""
    parser.addini(
        _MARKER,
        help=(
            "virtual seconds a pipeline run through the nanostream_runner fixture may take "
            f"(default {DEFAULT_TIME_LIMIT:g}, one day)"
        ),
        default=str(DEFAULT_TIME_LIMIT),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``nanostream_time_limit`` marker (for ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(seconds): virtual-time limit of runs made through the nanostream_runner "
        "fixture in this test",
    )


@pytest.hookimpl(trylast=True)  # after pytest-trio's own trio_mode marking
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark async tests that request the plugin's fixtures ``trio`` (pytest-trio runs them)."""
    has_pytest_trio = config.pluginmanager.has_plugin("trio")
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("trio"):
            continue
        if not set(_FIXTURES) & set(item.fixturenames):
            continue
        hypothesis = getattr(item.obj, "hypothesis", None)
        test = getattr(hypothesis, "inner_test", item.obj)
        if not inspect.iscoroutinefunction(test):
            continue
        if has_pytest_trio:
            item.add_marker(pytest.mark.trio)
        else:
            item.stash[_NEEDS_PYTEST_TRIO] = True


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail an async test using the fixtures, when pytest-trio is missing, with the fix."""
    if item.stash.get(_NEEDS_PYTEST_TRIO, False):
        msg = (
            f"{item.nodeid} is an async test using nanostream_testing's fixtures, which runs "
            "under pytest-trio, and pytest-trio is not installed (or disabled with "
            "-p no:trio): pip install 'nanostream-trio[test]' (or pytest-trio)"
        )
        pytest.fail(msg, pytrace=False)


class PipelineRunner:
    """Runs pipelines and single nodes on one fake clock, with one time limit.

    Provided by the ``nanostream_runner`` fixture; the methods take the
    same arguments as :func:`~nanostream_testing.run_pipeline` and
    :func:`~nanostream_testing.run_node` (a ``time_limit=`` given to a call
    wins over the runner's).

    Attributes:
        clock: the test's ``MockClock`` (the ``nanostream_clock`` fixture).
        time_limit: virtual seconds a run may take.
    """

    def __init__(self, clock: trio.testing.MockClock, time_limit: float) -> None:
        self.clock = clock
        self.time_limit = time_limit

    def run(self, pipeline: Pipeline | NanoNode, **options: Any) -> PipelineStatistics:
        """Run a pipeline with ``trio.run`` on the test's clock (sync tests)."""
        options.setdefault("time_limit", self.time_limit)
        return run_pipeline(pipeline, clock=self.clock, **options)

    async def run_async(self, pipeline: Pipeline | NanoNode, **options: Any) -> PipelineStatistics:
        """Run a pipeline inside the test's Trio run (async tests)."""
        options.setdefault("time_limit", self.time_limit)
        return await run_pipeline_async(pipeline, **options)

    def run_node(self, node: NanoNode, items: Iterable[Any] = (), **options: Any) -> NodeResult:
        """Drive one node with ``trio.run`` on the test's clock (sync tests)."""
        options.setdefault("time_limit", self.time_limit)
        return run_node(node, items, clock=self.clock, **options)

    async def run_node_async(
        self, node: NanoNode, items: Sequence[Any] = (), **options: Any
    ) -> NodeResult:
        """Drive one node inside the test's Trio run (async tests)."""
        options.setdefault("time_limit", self.time_limit)
        return await run_node_async(node, items, **options)


@pytest.fixture
def nanostream_clock() -> trio.testing.MockClock:
    """A fake clock that jumps ahead whenever every task is waiting."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def nanostream_runner(
    request: pytest.FixtureRequest, nanostream_clock: trio.testing.MockClock
) -> PipelineRunner:
    """A :class:`PipelineRunner` on the test's fake clock, with the test's time limit."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        if len(marker.args) != 1 or marker.kwargs:
            msg = f"@pytest.mark.{_MARKER} takes one argument, seconds; got {marker}"
            raise pytest.UsageError(msg)
        raw: Any = marker.args[0]
        where = f"@pytest.mark.{_MARKER} on {request.node.nodeid}"
    else:
        raw = request.config.getini(_MARKER)
        where = f"the {_MARKER} ini option"
    try:
        limit = check_time_limit(None if raw in (None, "none", "None") else float(raw))
    except (TypeError, ValueError) as exc:
        msg = f"{where}: {exc}"
        raise pytest.UsageError(msg) from None
    return PipelineRunner(nanostream_clock, limit)


@pytest.fixture
def nanostream_events() -> Iterator[EventLog]:
    """Every structlog event emitted during the test, as an :class:`EventLog`."""
    with capture_events() as events:
        yield events
