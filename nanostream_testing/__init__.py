"""nanostream_testing: deterministic tests for nanostream-trio pipelines and nodes.

A separate import, like ``trio.testing``: ``nanostream_trio`` never imports it.
Everything here runs on Trio's fake clock (:class:`trio.testing.MockClock`),
so a test of an hour of input takes milliseconds and gives the same virtual
times on every run:

* :func:`run_pipeline` / :func:`run_pipeline_async` run a pipeline to its
  end within a virtual-time limit;
* :class:`FakeSource` emits scripted items (and :class:`Pause`,
  :class:`Raise`, :class:`End` markers) at scripted virtual times;
* :class:`CollectingSink` and :class:`AssertionSink` record and check what
  arrives;
* :class:`Crash` (a script marker) and :func:`crash_at` (a moment of a
  checkpoint) crash a run, to test recovery from a checkpoint store;
* :func:`run_node` / :func:`run_node_async` drive a single node;
* :func:`capture_events` and :class:`EventLog` assert on structlog events;
* :func:`check_node_contract` checks that a node class behaves;
* the pytest plugin (``nanostream_testing.pytest_plugin``, loaded
  automatically) provides the ``nanostream_clock``, ``nanostream_runner``
  and ``nanostream_events`` fixtures.
"""

from __future__ import annotations

from nanostream_trio._publish import publish

from ._contract import ContractProbeError as ContractProbeError
from ._contract import check_node_contract as check_node_contract
from ._crash import Crash as Crash
from ._crash import SimulatedCrash as SimulatedCrash
from ._crash import crash_at as crash_at
from ._events import EventLog as EventLog
from ._events import capture_events as capture_events
from ._exceptions import ContractViolation as ContractViolation
from ._exceptions import FakeUsageError as FakeUsageError
from ._exceptions import PipelineAssertionError as PipelineAssertionError
from ._exceptions import SinkAssertionError as SinkAssertionError
from ._exceptions import TimeLimitExceeded as TimeLimitExceeded
from ._harness import NodeResult as NodeResult
from ._harness import run_node as run_node
from ._harness import run_node_async as run_node_async
from ._running import DEFAULT_TIME_LIMIT as DEFAULT_TIME_LIMIT
from ._running import run_pipeline as run_pipeline
from ._running import run_pipeline_async as run_pipeline_async
from ._sinks import AssertionSink as AssertionSink
from ._sinks import CollectingSink as CollectingSink
from ._sources import End as End
from ._sources import FakeSource as FakeSource
from ._sources import Pause as Pause
from ._sources import Raise as Raise

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "AssertionSink",
    "CollectingSink",
    "ContractProbeError",
    "ContractViolation",
    "Crash",
    "End",
    "EventLog",
    "FakeSource",
    "FakeUsageError",
    "NodeResult",
    "Pause",
    "PipelineAssertionError",
    "Raise",
    "SimulatedCrash",
    "SinkAssertionError",
    "TimeLimitExceeded",
    "capture_events",
    "check_node_contract",
    "crash_at",
    "run_node",
    "run_node_async",
    "run_pipeline",
    "run_pipeline_async",
]


publish(globals(), __all__, __name__)
del publish
