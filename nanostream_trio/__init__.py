"""nanostream-trio: small-scale streaming pipelines on Trio's structured concurrency.

Write nodes by subclassing :class:`NanoNode`, link them with ``>``, and run
them with ``trio.run(Pipeline(node).run)`` or ``node.global_start()``.
"""

from __future__ import annotations

from ._composite import class_factory as class_factory
from ._composite import load_composite as load_composite
from ._composite import load_composite_text as load_composite_text
from ._config import ConfigFileError as ConfigFileError
from ._config import load_pipeline as load_pipeline
from ._config import load_pipeline_text as load_pipeline_text
from ._edges import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._exceptions import ConfigError as ConfigError
from ._exceptions import GraphError as GraphError
from ._exceptions import LinkError as LinkError
from ._exceptions import NanostreamError as NanostreamError
from ._exceptions import NodeDefinitionError as NodeDefinitionError
from ._exceptions import PipelineStateError as PipelineStateError
from ._items import Items as Items
from ._node import DeadLetterPort as DeadLetterPort
from ._node import NanoNode as NanoNode
from ._node import registered_nodes as registered_nodes
from ._node import resolve_node_class as resolve_node_class
from ._pipeline import Pipeline as Pipeline
from ._policy import DeadLetter as DeadLetter
from ._policy import Retry as Retry
from ._publish import publish
from ._stats import NodeStatistics as NodeStatistics
from ._stats import PipelineStatistics as PipelineStatistics

# The seed README's built-in nodes, importable from the top level as in the
# original; they live in (and report) the public topic module nanostream_trio.nodes.
from .nodes import CSVReader as CSVReader
from .nodes import LocalDirectoryWatchdog as LocalDirectoryWatchdog
from .nodes import LocalFileReader as LocalFileReader
from .nodes import PrinterOfThings as PrinterOfThings

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_CAPACITY",
    "CSVReader",
    "ConfigError",
    "ConfigFileError",
    "DeadLetter",
    "DeadLetterPort",
    "GraphError",
    "Items",
    "LinkError",
    "LocalDirectoryWatchdog",
    "LocalFileReader",
    "NanoNode",
    "NanostreamError",
    "NodeDefinitionError",
    "NodeStatistics",
    "Pipeline",
    "PipelineStateError",
    "PipelineStatistics",
    "PrinterOfThings",
    "Retry",
    "class_factory",
    "load_composite",
    "load_composite_text",
    "load_pipeline",
    "load_pipeline_text",
    "registered_nodes",
    "resolve_node_class",
]


publish(globals(), __all__, __name__)
del publish
