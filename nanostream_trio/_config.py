"""Pipeline files: YAML that describes a whole runnable pipeline.

Reading one goes: the located document (``_yaml_document``), its
``modules:`` imported and ``composites:`` loaded (``_composite``), each node
entry checked against its class (``_node_spec``) and built, the links made,
and finally the :class:`Pipeline`. Every problem is a :class:`ConfigFileError`
naming file, line, column and key path.

A pipeline file looks like this (``docs/yaml.md`` describes every key)::

    name: csv-watch
    modules: [my_nodes]             # imported before classes are resolved
    nodes:
      - name: watch
        class: LocalDirectoryWatchdog
        args: {directory: "${DATA_DIR:-./data}"}
      - name: read
        class: LocalFileReader
      - name: parse
        class: CSVReader
        on_error: skip
        capacity: 500
      - name: print
        class: PrinterOfThings
    links:
      - [watch, read, parse, print]
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._checkpoint import DEFAULT_CHECKPOINT_INTERVAL
from ._composite import load_composite_from
from ._exceptions import ConfigError, NanostreamError
from ._node import NanoNode, Port
from ._node_spec import (
    ENGINE_OPTIONS,
    accepts_name,
    add_module,
    check_argument_types,
    check_arguments,
    class_parameters,
    engine_options,
    exception_text,
    import_module,
    import_modules,
    parse_links,
    resolve_class,
    resolve_functions,
    spelled,
)
from ._pipeline import DEFAULT_STALL_TIMEOUT, DEFAULT_STATS_INTERVAL, Pipeline
from ._yaml_document import (
    ConfigFileError,
    Document,
    KeyPath,
    describe,
    did_you_mean,
    format_key_path,
    parse_yaml,
    read_text,
)

__all__ = [
    "ConfigFileError",  # defined in _yaml_document; the package imports it from here too
    "NodeEntry",
    "PipelineFile",
    "load_pipeline",
    "load_pipeline_text",
    "read_pipeline",
    "read_pipeline_text",
]

# -- pipeline files ----------------------------------------------------------------------

_PIPELINE_KEYS = (
    "name",
    "description",
    "modules",
    "composites",
    "nodes",
    "links",
    "stats_interval",
    "stall_timeout",
    "checkpoint",
)
_CHECKPOINT_KEYS = ("path", "interval")
_NODE_KEYS = ("name", "class", "args", "on_error", "retry", "capacity", "blocking")
_LINK_KEYS = ("from", "to", "port")
_PORTS = ("main", "dead_letters")


def load_pipeline(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
) -> Pipeline:
    """Build a runnable :class:`Pipeline` from a pipeline file.

    Args:
        path: the YAML file.
        env: variables for ``${NAME}`` substitution (default ``os.environ``).
        modules: further modules to import before resolving node types (the
            command line's ``--module``).

    Returns:
        The pipeline, not yet running: ``trio.run(pipeline.run)``.

    Raises:
        ConfigFileError: anything wrong in the file, with its line, column
            and key path.

    Example::

        pipeline = load_pipeline("examples/yaml/pipeline.yaml")
        trio.run(pipeline.run)
    """
    return read_pipeline(path, env=env, modules=modules).pipeline


def load_pipeline_text(
    text: str,
    *,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
) -> Pipeline:
    """Build a :class:`Pipeline` from pipeline YAML text (see :func:`load_pipeline`).

    Args:
        text: the YAML text.
        source: the name used for the text in error messages.
        base_dir: where relative paths (modules, composite files) start
            (default: the current directory).
        env: variables for ``${NAME}`` substitution (default ``os.environ``).
        modules: further modules to import before resolving node types.

    Raises:
        ConfigFileError: anything wrong in the text.
    """
    return read_pipeline_text(
        text, source=source, base_dir=base_dir, env=env, modules=modules
    ).pipeline


@dataclasses.dataclass(frozen=True)
class NodeEntry:
    """One entry of a file's ``nodes:``, as its node was built from it.

    Attributes:
        name: the node's name.
        cls: the node's class.
        args: the arguments the class was called with (functions resolved).
        path: the entry's key path in the document, such as ``("nodes", 2)``.
    """

    name: str
    cls: type[NanoNode]
    args: Mapping[str, Any]
    path: KeyPath


@dataclasses.dataclass(frozen=True)
class PipelineFile:
    """A loaded pipeline file: the pipeline and its top-level nodes by name.

    Attributes:
        pipeline: the pipeline, not yet running.
        nodes: the file's own nodes by name.
        document: the located document (for messages that point into the file).
        entries: how each node was built, in file order.
    """

    pipeline: Pipeline
    nodes: dict[str, NanoNode]
    document: Document | None = None
    entries: tuple[NodeEntry, ...] = ()


def read_pipeline(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
) -> PipelineFile:
    """:func:`load_pipeline`, also returning the file's own nodes (for graphs)."""
    text, file = read_text(path, "pipeline")
    return read_pipeline_text(
        text, source=str(path), base_dir=file.parent, env=env, modules=modules
    )


def read_pipeline_text(
    text: str,
    *,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
) -> PipelineFile:
    """:func:`load_pipeline_text`, also returning the file's own nodes."""
    document = parse_yaml(
        text,
        file=source,
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        env=os.environ if env is None else env,
    )
    for name in modules:
        try:
            module = import_module(name, Path.cwd())
        except Exception as exc:
            msg = f"cannot import module {name!r}: {exception_text(exc)}"
            raise ConfigFileError(msg, file=source) from exc
        add_module(document, name, module)
    return _build_pipeline(document)


def _build_pipeline(document: Document) -> PipelineFile:
    root = document.data
    if root is None:
        document.fail((), "the pipeline file is empty; it needs at least 'nodes:'")
    spec = document.mapping((), root, "a pipeline (name, nodes, links, ...)")
    document.check_keys((), spec, _PIPELINE_KEYS, required=("nodes",), what="the pipeline")
    import_modules(document, ("modules",), spec.get("modules"))
    for index, entry in enumerate(document.sequence(("composites",), spec.get("composites"), "")):
        load_composite_from(document, ("composites", index), entry)
    name = spec.get("name", "pipeline")
    name = document.string(("name",), name, "the pipeline's name")
    settings: dict[str, float | None] = {}
    for key in ("stats_interval", "stall_timeout"):
        if key in spec:
            value = spelled(spec[key], float)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or not value > 0
            ):
                document.fail(
                    (key,), f"expected a positive number of seconds, or null; got {describe(value)}"
                )
            settings[key] = value
    checkpoint, interval = _checkpoint_settings(document, spec.get("checkpoint"))
    entries: list[NodeEntry] = []
    nodes = _build_nodes(document, spec.get("nodes"), entries)
    _link_nodes(document, spec, nodes)
    try:
        pipeline = Pipeline(
            *(node for node, _ in nodes.values()),
            name=name,
            stats_interval=settings.get("stats_interval", DEFAULT_STATS_INTERVAL),
            stall_timeout=settings.get("stall_timeout", DEFAULT_STALL_TIMEOUT),
            checkpoint=checkpoint,
            checkpoint_interval=interval,
        )
    except NanostreamError as exc:
        blamed = getattr(exc, "node", None) or getattr(exc, "downstream", None)
        blamed = blamed or getattr(exc, "upstream", None)
        path: KeyPath = ("nodes",)
        for node, node_path in nodes.values():
            if blamed in (node.name, repr(node.name)) or _inner_name_of(node, blamed):
                path = node_path
        document.fail(path, str(exc))
    return PipelineFile(
        pipeline,
        {name: node for name, (node, _) in nodes.items()},
        document=document,
        entries=tuple(entries),
    )


def _checkpoint_settings(document: Document, value: Any) -> tuple[str | None, float | None]:
    """``checkpoint: state.db`` or ``checkpoint: {path: state.db, interval: 5}``."""
    if value is None:
        return None, DEFAULT_CHECKPOINT_INTERVAL
    if isinstance(value, str):
        value = {"path": value}
    spec = document.mapping(("checkpoint",), value, "checkpoint settings (path, interval)")
    document.check_keys(
        ("checkpoint",), spec, _CHECKPOINT_KEYS, required=("path",), what="checkpoint"
    )
    path = document.string(("checkpoint", "path"), spec["path"], "the checkpoint store's path")
    interval = spelled(spec.get("interval", DEFAULT_CHECKPOINT_INTERVAL), float)
    if interval is not None and (
        not isinstance(interval, int | float) or isinstance(interval, bool) or not interval > 0
    ):
        document.fail(
            ("checkpoint", "interval"),
            f"expected a positive number of seconds, or null; got {describe(interval)}",
        )
    return path, interval


def _inner_name_of(node: NanoNode, name: Any) -> bool:
    inner = getattr(node, "_ns_inner", None)
    if not isinstance(inner, dict) or not isinstance(name, str):
        return False
    return any(name in (n.name, repr(n.name)) or _inner_name_of(n, name) for n in inner.values())


def _build_nodes(
    document: Document, value: Any, built: list[NodeEntry]
) -> dict[str, tuple[NanoNode, KeyPath]]:
    entries = document.sequence(("nodes",), value, "the pipeline's nodes")
    if not entries:
        document.fail(("nodes",), "the pipeline needs at least one node")
    nodes: dict[str, tuple[NanoNode, KeyPath]] = {}
    for index, entry in enumerate(entries):
        path: KeyPath = ("nodes", index)
        spec = document.mapping(path, entry, "a node (name, class, args, ...)")
        document.check_keys(path, spec, _NODE_KEYS, required=("class",), what="a node")
        cls = resolve_class(spec["class"], document, (*path, "class"))
        name = spec.get("name", cls.__name__)
        name = document.string((*path, "name"), name, "the node's name")
        if name in nodes:
            document.fail(
                (*path, "name"),
                f"node name {name!r} is already used by {format_key_path(nodes[name][1])}; "
                "names must be unique",
                node=name,
            )
        args = document.mapping((*path, "args"), spec.get("args"), f"the arguments of {name!r}")
        check_arguments(cls, args, document, (*path, "args"), name)
        args = check_argument_types(cls, args, document, (*path, "args"), name)
        args = resolve_functions(cls, args, document, (*path, "args"), name)
        options = engine_options(document, path, spec, name)
        node = _instantiate(cls, args, document, path, name)
        try:
            node.configure(name=name, **options)
        except ConfigError as exc:
            document.fail(path, str(exc), node=name)
        nodes[name] = (node, path)
        built.append(NodeEntry(name, cls, args, path))
    return nodes


def _instantiate(
    cls: type[NanoNode], args: Mapping[str, Any], document: Document, path: KeyPath, name: str
) -> NanoNode:
    # Built with its name, so that the class's own messages name the node as the file does.
    named = {**args, "name": name} if accepts_name(cls) else args
    try:
        return cls(**named)
    except ConfigFileError:
        raise
    except ConfigError as exc:
        message = str(exc)
        if exc.node and exc.node != name:
            message = message.replace(f"node {exc.node!r}", f"node {name!r}")
        if f"node {name!r}" not in message:
            message = f"node {name!r} ({cls.__name__}): {message}"
        where: KeyPath = (*path, "args") if args else path
        if exc.key is not None and exc.key in args:
            where = (*where, exc.key)
        raise document.error(where, message, node=name) from exc
    except Exception as exc:
        refused = _refused_keyword(exc, args)
        if refused is not None:
            params, open_ended = class_parameters(cls)
            names = [p.name for p in params if p.name not in ENGINE_OPTIONS]
            # A class taking **options cannot list what they accept: its own words say.
            accepted = "" if open_ended else f"; accepted: {', '.join(names) or 'none'}"
            raise document.error(
                (*path, "args", refused),
                f"node {name!r} ({cls.__name__}) got unexpected argument {refused!r}"
                f"{accepted}{did_you_mean(refused, names)} "
                f"(the class refused it: {exception_text(exc)})",
                at_key=True,
                node=name,
            ) from exc
        raise document.error(
            (*path, "args") if args else path,
            f"node {name!r} ({cls.__name__}) rejected its arguments: {exception_text(exc)}",
            node=name,
        ) from exc


_UNEXPECTED_KEYWORD = re.compile(
    r"(?:unexpected keyword argument|'(\w+)' is an invalid keyword argument)(?: '(\w+)')?"
)


def _refused_keyword(exc: Exception, args: Mapping[str, Any]) -> str | None:
    """The argument of ``args`` a ``TypeError`` says was not expected (``**options`` passed on)."""
    if not isinstance(exc, TypeError):
        return None
    match = _UNEXPECTED_KEYWORD.search(str(exc))
    if match is None:
        return None
    key = match[1] or match[2]
    return key if key in args else None


def _link_nodes(
    document: Document, spec: Mapping[str, Any], nodes: Mapping[str, tuple[NanoNode, KeyPath]]
) -> None:
    if "links" not in spec:
        # No links: the nodes form one chain in the order they are listed.
        ordered = [node for node, _ in nodes.values()]
        for upstream, downstream in itertools.pairwise(ordered):
            _link(document, ("nodes",), upstream, "main", downstream)
        return
    for up, port, down, path in parse_links(
        document, ("links",), spec["links"], list(nodes), "links"
    ):
        _link(document, path, nodes[up][0], port, nodes[down][0])


def _link(
    document: Document, path: KeyPath, upstream: NanoNode, port: str, downstream: NanoNode
) -> None:
    source: NanoNode | Port = upstream.dead_letters if port == "dead_letters" else upstream
    try:
        source > downstream
    except NanostreamError as exc:
        document.fail(path, str(exc))
