"""nanostream-trio: small-scale streaming pipelines on Trio's structured concurrency.

Write nodes by subclassing :class:`NanoNode`, link them with ``>``, and run
them with ``trio.run(Pipeline(node).run)`` or ``node.global_start()``.
"""

from __future__ import annotations

from ._edges import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._exceptions import ConfigError as ConfigError
from ._exceptions import GraphError as GraphError
from ._exceptions import LinkError as LinkError
from ._exceptions import NanostreamError as NanostreamError
from ._exceptions import NodeDefinitionError as NodeDefinitionError
from ._exceptions import PipelineStateError as PipelineStateError
from ._node import DeadLetterPort as DeadLetterPort
from ._node import NanoNode as NanoNode
from ._node import registered_nodes as registered_nodes
from ._node import resolve_node_class as resolve_node_class
from ._pipeline import Pipeline as Pipeline
from ._policy import DeadLetter as DeadLetter
from ._policy import Retry as Retry
from ._stats import NodeStatistics as NodeStatistics
from ._stats import PipelineStatistics as PipelineStatistics

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_CAPACITY",
    "ConfigError",
    "DeadLetter",
    "DeadLetterPort",
    "GraphError",
    "LinkError",
    "NanoNode",
    "NanostreamError",
    "NodeDefinitionError",
    "NodeStatistics",
    "Pipeline",
    "PipelineStateError",
    "PipelineStatistics",
    "Retry",
    "registered_nodes",
    "resolve_node_class",
]

# The seed README's built-in nodes, importable from the top level as in the
# original; they live in nanostream_trio.nodes (imported on first use, since
# that module pulls in watchdog).
_SEED_NODES = frozenset(
    {"CSVReader", "LocalDirectoryWatchdog", "LocalFileReader", "PrinterOfThings"}
)


def __getattr__(name: str) -> object:
    if name in _SEED_NODES:
        from . import nodes

        return getattr(nodes, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _fix_module_names() -> None:
    # Tracebacks and reprs should show nanostream_trio.NanoNode, not the private module.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("nanostream_trio._"):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):  # pragma: no cover - constants
                pass


_fix_module_names()
del _fix_module_names
