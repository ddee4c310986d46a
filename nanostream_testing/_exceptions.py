"""The failures nanostream_testing reports, all of them ``AssertionError``\\s.

pytest shows an ``AssertionError`` as a test failure (``F``) rather than an
error in the test's own code, which is what these are: the pipeline under
test did not do what the test said it would::

    PipelineAssertionError           (also AssertionError)
    ├── TimeLimitExceeded            the run did not finish within its virtual-time limit
    ├── SinkAssertionError           an assertion sink saw the wrong items, or none at all
    ├── FakeUsageError               a fake was set up so that it cannot test anything
    └── ContractViolation            a node broke the node contract

Each carries the names a reader needs to find the problem (pipeline, node,
virtual time) as attributes as well as in its message.
"""

from __future__ import annotations

__all__ = [
    "ContractViolation",
    "FakeUsageError",
    "PipelineAssertionError",
    "SinkAssertionError",
    "TimeLimitExceeded",
]


class PipelineAssertionError(AssertionError):
    """Base class of every failure nanostream_testing reports."""


class TimeLimitExceeded(PipelineAssertionError):
    """A pipeline run did not finish within its virtual-time limit.

    Attributes:
        pipeline: the pipeline's name.
        time_limit: the limit, in seconds of (virtual) Trio time.
        unfinished: names of the nodes that were still running when the limit hit.
    """

    def __init__(self, message: str, *, pipeline: str, time_limit: float, unfinished: list[str]):
        super().__init__(message)
        self.pipeline = pipeline
        self.time_limit = time_limit
        self.unfinished = unfinished


class SinkAssertionError(PipelineAssertionError):
    """A :class:`CollectingSink` or :class:`AssertionSink` did not get what it expected.

    Attributes:
        node: the sink's name.
        missing: expected items that never arrived.
        unexpected: items that arrived but were not expected.
        out_of_order: items that arrived, but not in the expected order.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str,
        missing: list[object] | None = None,
        unexpected: list[object] | None = None,
        out_of_order: list[object] | None = None,
    ):
        super().__init__(message)
        self.node = node
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.out_of_order = out_of_order or []


class FakeUsageError(PipelineAssertionError):
    """A fake is used in a way that cannot test anything, e.g. a FakeSource linked to nothing.

    Attributes:
        node: the fake's name.
    """

    def __init__(self, message: str, *, node: str):
        super().__init__(message)
        self.node = node


class ContractViolation(PipelineAssertionError):
    """A node broke the node contract checked by :func:`check_node_contract`.

    Attributes:
        node: the node's name.
        clause: which part of the contract, e.g. ``"ends when its input ends"``.
    """

    def __init__(self, message: str, *, node: str, clause: str):
        super().__init__(message)
        self.node = node
        self.clause = clause
