"""Every exception nanostream-trio raises on its own account.

Failures *inside* a node keep their original type (a ``KeyError`` raised by a
user's ``process_item`` reaches the caller as a ``KeyError``, with a note that
names the node and the item). The classes here describe mistakes in how a
pipeline is built, configured or run::

    NanostreamError
    ├── LinkError            (also TypeError)   bad ``>`` links: non-nodes, ``<``
    │   └── GraphError       (also ValueError)  duplicate links, cycles, orphans
    ├── NodeDefinitionError  (also TypeError)   a NanoNode subclass is malformed
    ├── ConfigError          (also ValueError)  bad arguments or configuration
    └── PipelineStateError   (also RuntimeError) e.g. running a pipeline twice at once

Each subclasses the builtin of its kind as well, so ``except TypeError`` keeps
working for code that does not know about nanostream-trio.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GraphError",
    "LinkError",
    "NanostreamError",
    "NodeDefinitionError",
    "PipelineStateError",
]


class NanostreamError(Exception):
    """Base class of every exception nanostream-trio raises itself."""


class LinkError(NanostreamError, TypeError):
    """A ``>`` link was given something that cannot be linked.

    Attributes:
        upstream: name of the node on the left of the link, if known.
        downstream: name (or type) of the object on the right.
    """

    def __init__(self, message: str, *, upstream: str | None = None, downstream: str | None = None):
        super().__init__(message)
        self.upstream = upstream
        self.downstream = downstream


class GraphError(LinkError, ValueError):
    """The graph the links describe is not a valid pipeline.

    Raised for a pair linked twice, a cycle, a node with nothing to do (a
    ``process_item`` node with no upstream, a source with an upstream), or
    two nodes sharing one explicit name.
    """


class NodeDefinitionError(NanostreamError, TypeError):
    """A ``NanoNode`` subclass cannot be used as defined.

    Attributes:
        node_class: the offending class.
    """

    def __init__(self, message: str, *, node_class: type | None = None):
        super().__init__(message)
        self.node_class = node_class


class ConfigError(NanostreamError, ValueError):
    """A node or pipeline was configured with values it cannot accept.

    Attributes:
        node: name of the node concerned, if any.
        key: the argument or key path concerned, if any.
    """

    def __init__(self, message: str, *, node: str | None = None, key: str | None = None):
        super().__init__(message)
        self.node = node
        self.key = key


class PipelineStateError(NanostreamError, RuntimeError):
    """An operation does not fit the pipeline's current state.

    For example, starting a pipeline that is already running.
    """
