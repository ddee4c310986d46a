"""Composite nodes: several linked nodes packaged as one node class.

The seed's ``class_factory(config)`` takes a definition such as::

    name: FooMessageTester
    nodes:
      - name: foo_generator
        class: FooEmitter
        frozen_arguments: {message: foobar}
        arg_mapping: {interval: foo_interval}
      - name: length_tester
        class: MessageLengthTester

and returns a new :class:`NanoNode` subclass, registered under its name so a
later definition or pipeline file can use it. The definition is checked in
full when the class is made (node types, argument names, links), but no node
is instantiated until the class is.

An instance builds its inner nodes and links them. It never runs itself: the
engine's linking hooks send links into it to its first inner node
(``_ns_entry``) and links out of it from its last (``_ns_exit``), and a
pipeline collects the inner nodes. Inner nodes are named
``<composite name>.<inner name>`` in events and statistics.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from . import composites
from ._exceptions import ConfigError
from ._node import DeadLetterPort, EngineSettings, NanoNode, Port
from ._node_spec import (
    ENGINE_OPTIONS,
    check_argument_types,
    check_arguments,
    class_parameters,
    engine_options,
    import_modules,
    parse_links,
    resolve_class,
    resolve_functions,
)
from ._policy import ErrorPolicy, Retry
from ._yaml_document import (
    ConfigFileError,
    Document,
    KeyPath,
    did_you_mean,
    format_key_path,
    parse_yaml,
    read_text,
)

__all__ = [
    "COMPOSITE_MODULE",
    "class_factory",
    "load_composite",
    "load_composite_from",
    "load_composite_text",
]

#: The ``__module__`` of every composite class (``module:Class`` names use it): the
#: real module :mod:`nanostream_trio.composites`, where each class is an attribute.
COMPOSITE_MODULE = composites.__name__

_COMPOSITE_KEYS = ("name", "description", "modules", "nodes", "edges")
_INNER_KEYS = (
    "name",
    "class",
    "frozen_arguments",
    "arg_mapping",
    "on_error",
    "retry",
    "capacity",
    "blocking",
)


class _InnerDefault:
    """Stands in a signature for an argument whose default the inner node decides."""

    def __repr__(self) -> str:
        return "<inner default>"


_INNER_DEFAULT = _InnerDefault()


@dataclasses.dataclass(frozen=True)
class _Inner:
    name: str
    cls: type[NanoNode]
    frozen: Mapping[str, Any]
    mapping: Mapping[str, str]  # inner argument -> composite argument
    options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class _Argument:
    name: str
    targets: tuple[tuple[str, str], ...]  # (inner node, inner argument)
    required: bool
    default: Any


@dataclasses.dataclass(frozen=True)
class CompositeSpec:
    """A checked composite definition (what a composite class is made from)."""

    name: str
    inner: tuple[_Inner, ...]
    edges: tuple[tuple[str, str, str], ...]  # (upstream, port, downstream)
    arguments: Mapping[str, _Argument]
    frozen: Mapping[str, tuple[str, Any]]  # inner argument -> (inner node, value)
    entry: str
    exit: str


class _CompositeDeadLetters(DeadLetterPort):
    """``composite.dead_letters``: linking it links every inner node's ``dead_letters``."""

    node: _CompositeNode

    def __gt__(self, other: object) -> Any:
        for inner in self.node._ns_inner.values():
            inner.dead_letters > other
        if isinstance(other, NanoNode):
            self.downstream.append(other._ns_entry())
        return other


class _CompositeNode(NanoNode):
    """Base class of the classes :func:`class_factory` makes; not used directly.

    Engine options given to a composite apply to its inner nodes: ``name``
    renames them all (``name.inner``), ``on_error``, ``retry`` and
    ``blocking`` go to each of them, ``capacity`` to the first one's inbox.
    ``composite.dead_letters > sink`` links every inner node's dead letters.
    """

    _ns_allow_abstract = True
    _ns_composite: ClassVar[CompositeSpec]
    _ns_inner: dict[str, NanoNode]

    def __init__(
        self,
        name: str | None = None,
        *,
        on_error: ErrorPolicy | None = None,
        retry: Retry | None = None,
        capacity: int | None = None,
        blocking: bool | None = None,
        **arguments: Any,
    ) -> None:
        spec = type(self)._ns_composite
        self._check_call(spec, arguments)
        self._ns_inner = {}
        for inner in spec.inner:
            kwargs = copy.deepcopy(dict(inner.frozen))
            for argument, outer in inner.mapping.items():
                if outer in arguments:
                    kwargs[argument] = arguments[outer]
            try:
                node = inner.cls(**kwargs)
            except Exception as exc:
                exc.add_note(f"while building node {inner.name!r} of composite {spec.name}")
                raise
            node.configure(name=f"{self._ns_name}.{inner.name}", **inner.options)
            self._ns_inner[inner.name] = node
        for upstream, port, downstream in spec.edges:
            source: NanoNode | Port = self._ns_inner[upstream]
            if port == "dead_letters":
                source = self._ns_inner[upstream].dead_letters
            source > self._ns_inner[downstream]
        self._ns_dead_letters = _CompositeDeadLetters(self)
        super().__init__(name, on_error=on_error, retry=retry, capacity=capacity, blocking=blocking)

    @staticmethod
    def _check_call(spec: CompositeSpec, arguments: Mapping[str, Any]) -> None:
        accepted = list(spec.arguments)
        for key in arguments:
            if key in spec.arguments:
                continue
            if key in spec.frozen:
                inner, value = spec.frozen[key]
                msg = (
                    f"{spec.name}() argument {key!r} is frozen to {value!r} by the composite "
                    f"definition (node {inner!r}); it cannot be overridden"
                )
                raise ConfigError(msg, node=spec.name, key=key)
            listed = ", ".join(accepted) if accepted else "none"
            msg = (
                f"{spec.name}() got unexpected argument {key!r}; accepted: {listed} "
                f"(and the engine options {', '.join(ENGINE_OPTIONS)})"
                f"{did_you_mean(key, accepted)}"
            )
            raise ConfigError(msg, node=spec.name, key=key)
        for argument in spec.arguments.values():
            if argument.required and argument.name not in arguments:
                inner, as_name = argument.targets[0]
                msg = (
                    f"{spec.name}() missing required argument {argument.name!r} "
                    f"(node {inner!r} needs it as {as_name!r})"
                )
                raise ConfigError(msg, node=spec.name, key=argument.name)

    def _ns_configured(self, changes: EngineSettings) -> None:
        """Settings apply to the inner nodes (see the class docstring)."""
        inner_nodes = getattr(self, "_ns_inner", None)
        if inner_nodes is None:  # NanoNode.__init__ runs before the inner nodes exist
            return
        for inner_name, node in inner_nodes.items():
            node.configure(
                name=f"{self._ns_name}.{inner_name}" if "name" in changes else None,
                on_error=changes.get("on_error"),
                retry=changes.get("retry"),
                blocking=changes.get("blocking"),
            )
        if "capacity" in changes:
            inner_nodes[type(self)._ns_composite.entry].configure(capacity=changes["capacity"])

    def log_event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Emit a monitoring event about this node (see :meth:`NanoNode.log_event`).

        The composite never runs, its inner nodes do: while any of them runs,
        the event goes to the pipeline's logger bound to ``pipeline`` and to the
        composite's own name (not an inner node's ``<name>.<inner>``).
        """
        running = next((leaf._ns_log for leaf in _leaves(self) if leaf._ns_log is not None), None)
        if running is None or level not in ("debug", "info", "warning", "error"):
            super().log_event(event, level, **fields)  # not running, or a bad level to reject
            return
        getattr(running.bind(node=self._ns_name), level)(event, **fields)

    @property
    def inner_nodes(self) -> dict[str, NanoNode]:
        """The inner nodes by their name in the definition."""
        return dict(self._ns_inner)

    @property
    def downstream(self) -> tuple[NanoNode, ...]:
        """Nodes the composite's last inner node is linked to."""
        return self._ns_exit().downstream

    @property
    def upstream(self) -> tuple[NanoNode | Port, ...]:
        """Nodes linked into the composite's first inner node."""
        return self._ns_entry().upstream

    def _ns_entry(self) -> NanoNode:
        return self._ns_inner[type(self)._ns_composite.entry]._ns_entry()

    def _ns_exit(self) -> NanoNode:
        return self._ns_inner[type(self)._ns_composite.exit]._ns_exit()

    def __repr__(self) -> str:
        inner = ", ".join(self._ns_inner) if hasattr(self, "_ns_inner") else ""
        return f"<{type(self).__name__} {self._ns_name!r} composite of {inner}>"


def _leaves(node: NanoNode) -> list[NanoNode]:
    """The nodes that really run for ``node``: through composites and staged built-ins."""
    if isinstance(node, _CompositeNode):
        return [leaf for inner in node._ns_inner.values() for leaf in _leaves(inner)]
    stages: tuple[tuple[str, NanoNode], ...] | None = getattr(node, "_ns_stages", None)
    if stages is not None:  # a staged built-in node (nodes/_stages.py)
        return [leaf for _, stage in stages for leaf in _leaves(stage)]
    return [node]


# -- public factories --------------------------------------------------------------------


def class_factory(config: Mapping[str, Any]) -> type[NanoNode]:
    """Make a composite node class from a definition mapping (the seed's API).

    Args:
        config: ``name`` (the new class's name), ``nodes`` (a list of
            ``name``, ``class``, ``frozen_arguments``, ``arg_mapping``, and
            optionally ``on_error``, ``retry``, ``capacity``, ``blocking``),
            and optionally ``edges`` (``{from: a, to: b}`` links; by default
            the nodes link in list order), ``description`` (the docstring)
            and ``modules`` (modules to import first).

    Returns:
        The new class, registered under its name and importable from
        :mod:`nanostream_trio.composites`. Calling it builds the inner nodes;
        its keyword arguments are the ``arg_mapping`` targets. Unlike the
        original nanostream, nothing is put into the caller's namespace:
        assign the result (``FooMessageTester = class_factory(config)``), or
        ``from nanostream_trio.composites import FooMessageTester``;
        ``class_factory(config)`` alone followed by ``FooMessageTester(...)``
        raises ``NameError``.

    Raises:
        ConfigFileError: the definition is invalid (unknown node type or
            argument, a required argument neither frozen nor mapped, bad
            edges); the message names the key path.

    Example::

        FooMessageTester = class_factory(yaml.safe_load(text))
        foo_node = FooMessageTester(foo_interval=1)
        foo_node > PrinterOfThings()
    """
    return build_composite(Document(data=config), ())


def load_composite(path: str | os.PathLike[str]) -> type[NanoNode]:
    """Read a composite definition from a YAML file and make its class.

    Raises:
        ConfigFileError: the file cannot be read, is not valid YAML, or the
            definition is invalid; the message names file, line, column and
            key path.
    """
    text, file = read_text(path, "composite")
    return build_composite(parse_yaml(text, file=str(path), base_dir=file.parent), ())


def load_composite_text(
    text: str, *, source: str = "<string>", base_dir: str | os.PathLike[str] | None = None
) -> type[NanoNode]:
    """Make a composite class from YAML text (see :func:`load_composite`).

    Args:
        text: the YAML definition.
        source: the name used for the text in error messages.
        base_dir: where relative ``modules:`` paths start (default: the
            current directory).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return build_composite(parse_yaml(text, file=source, base_dir=base), ())


def load_composite_from(document: Document, path: KeyPath, entry: Any) -> type[NanoNode]:
    """A pipeline file's ``composites:`` entry: a file path or an inline definition."""
    if isinstance(entry, str):
        file = Path(entry)
        if not file.is_absolute() and document.base_dir is not None:
            file = document.base_dir / file
        if not file.is_file():
            document.fail(path, f"composite file {str(file)!r} not found")
        try:
            return load_composite(file)
        except ConfigFileError as exc:
            exc.add_note(f"named at {document.error(path, 'this composites: entry')}")
            raise
    if isinstance(entry, dict):
        return build_composite(document, path)
    document.fail(path, "expected a composite file path or an inline composite definition")


# -- building ----------------------------------------------------------------------------


def build_composite(document: Document, path: KeyPath) -> type[NanoNode]:
    """Check the definition at ``path`` of ``document`` and make its class."""
    data = document.data
    for part in path:
        data = data[part]
    if data is None:
        document.fail(path, "the composite definition is empty; it needs 'name' and 'nodes'")
    config = document.mapping(path, data, "a composite definition (name, nodes, ...)")
    document.check_keys(
        path, config, _COMPOSITE_KEYS, required=("name", "nodes"), what="a composite definition"
    )
    import_modules(document, (*path, "modules"), config.get("modules"))
    name = document.string((*path, "name"), config["name"], "the composite's class name")
    if not name.isidentifier() or name.startswith("_"):
        document.fail(
            (*path, "name"),
            f"composite name {name!r} must be a Python identifier not starting with '_', "
            "such as 'FooMessageTester'",
        )
    description = config.get("description")
    if description is not None and not isinstance(description, str):
        document.fail((*path, "description"), "expected text")
    entries = document.sequence((*path, "nodes"), config["nodes"], "the inner nodes")
    if not entries:
        document.fail((*path, "nodes"), "a composite needs at least one node")
    inner = [_read_inner(document, (*path, "nodes", i), entry) for i, entry in enumerate(entries)]
    names = [node.name for node in inner]
    for index, node in enumerate(inner):
        if names.index(node.name) != index:
            document.fail(
                (*path, "nodes", index, "name"),
                f"inner node name {node.name!r} is already used by "
                f"{format_key_path((*path, 'nodes', names.index(node.name)))}",
            )
    if "edges" in config:
        links = parse_links(document, (*path, "edges"), config["edges"], names, "edges")
    else:
        links = [
            (up, "main", down, (*path, "nodes", i + 1))
            for i, (up, down) in enumerate(itertools.pairwise(names))
        ]
    entry, exit_ = _check_shape(document, path, inner, links)
    arguments, frozen = _arguments(inner)
    spec = CompositeSpec(
        name=name,
        inner=tuple(inner),
        edges=tuple((up, port, down) for up, port, down, _ in links),
        arguments=arguments,
        frozen=frozen,
        entry=entry,
        exit=exit_,
    )
    return _make_class(spec, description)


def _read_inner(document: Document, path: KeyPath, entry: Any) -> _Inner:
    spec = document.mapping(path, entry, "an inner node (name, class, ...)")
    document.check_keys(path, spec, _INNER_KEYS, required=("class",), what="an inner node")
    cls = resolve_class(spec["class"], document, (*path, "class"))
    name = document.string((*path, "name"), spec.get("name", cls.__name__), "the node's name")
    frozen = document.mapping(
        (*path, "frozen_arguments"), spec.get("frozen_arguments"), "frozen arguments"
    )
    mapping = document.mapping((*path, "arg_mapping"), spec.get("arg_mapping"), "an arg_mapping")
    for argument, outer in mapping.items():
        where = (*path, "arg_mapping", argument)
        if not isinstance(outer, str) or not outer.isidentifier() or outer.startswith("_"):
            document.fail(
                where,
                f"expected the composite's argument name for {argument!r} (an identifier); "
                f"got {outer!r}",
            )
        if outer in ENGINE_OPTIONS:
            document.fail(
                where, f"{outer!r} is an engine option of every node; choose another name"
            )
        if argument in frozen:
            document.fail(
                where,
                f"argument {argument!r} is both frozen and mapped; "
                "a frozen argument cannot be set by the composite's caller",
            )
    check_arguments(cls, frozen, document, (*path, "frozen_arguments"), name, check_required=False)
    frozen = check_argument_types(cls, frozen, document, (*path, "frozen_arguments"), name)
    frozen = resolve_functions(cls, frozen, document, (*path, "frozen_arguments"), name)
    check_arguments(cls, mapping, document, (*path, "arg_mapping"), name, check_required=False)
    params, _ = class_parameters(cls)
    for param in params:
        if param.required and param.name not in ENGINE_OPTIONS:
            if param.name not in frozen and param.name not in mapping:
                document.fail(
                    path,
                    f"node {name!r} ({cls.__name__}) needs argument {param.name!r}; "
                    "give it under frozen_arguments or arg_mapping",
                    node=name,
                )
    options = engine_options(document, path, spec, name)
    return _Inner(name=name, cls=cls, frozen=frozen, mapping=mapping, options=options)


def _check_shape(
    document: Document,
    path: KeyPath,
    inner: list[_Inner],
    links: list[tuple[str, str, str, KeyPath]],
) -> tuple[str, str]:
    """The composite's entry and exit node, after checking the links form one flow."""
    by_name = {node.name: node for node in inner}
    incoming: dict[str, int] = {node.name: 0 for node in inner}
    outgoing: dict[str, list[str]] = {node.name: [] for node in inner}
    main_out: dict[str, int] = {node.name: 0 for node in inner}
    dead_letter_only: set[str] = set()
    fed_by_main: set[str] = set()
    seen: set[tuple[str, str, str]] = set()
    for up, port, down, where in links:
        if (up, port, down) in seen:
            document.fail(where, f"{up!r} is already linked to {down!r}")
        seen.add((up, port, down))
        if by_name[down].cls._ns_kind == "source":
            document.fail(
                where, f"node {down!r} is a source ({by_name[down].cls.__name__}); nothing can "
                "link into it"
            )  # fmt: skip
        incoming[down] += 1
        outgoing[up].append(down)
        if port == "main":
            main_out[up] += 1
            fed_by_main.add(down)
        else:
            dead_letter_only.add(down)
    dead_letter_only -= fed_by_main
    # Kahn's algorithm: whatever is left over sits on a cycle.
    remaining = dict(incoming)
    ready = [name for name, count in remaining.items() if count == 0]
    visited = 0
    while ready:
        name = ready.pop()
        visited += 1
        for down in outgoing[name]:
            remaining[down] -= 1
            if remaining[down] == 0:
                ready.append(down)
    if visited < len(inner):
        cycle = ", ".join(name for name, count in remaining.items() if count > 0)
        document.fail((*path, "edges"), f"the edges form a cycle through: {cycle}")
    entries = [name for name, count in incoming.items() if count == 0]
    if len(entries) != 1:
        document.fail(
            (*path, "edges") if links else (*path, "nodes"),
            f"a composite needs exactly one first node (links into it go there); "
            f"these have no upstream: {', '.join(entries)}",
        )
    exits = [
        name for name, count in main_out.items() if count == 0 and name not in dead_letter_only
    ]
    if len(exits) != 1:
        document.fail(
            (*path, "edges"),
            f"a composite needs exactly one last node (links out of it leave from there); "
            f"these have no downstream: {', '.join(exits) or 'none'}",
        )
    return entries[0], exits[0]


def _arguments(
    inner: list[_Inner],
) -> tuple[dict[str, _Argument], dict[str, tuple[str, Any]]]:
    arguments: dict[str, _Argument] = {}
    frozen: dict[str, tuple[str, Any]] = {}
    for node in inner:
        params = {p.name: p for p in class_parameters(node.cls)[0]}
        for argument, value in node.frozen.items():
            frozen.setdefault(argument, (node.name, value))
        for argument, outer in node.mapping.items():
            param = params.get(argument)
            required = param is not None and param.required
            default = param.default if param is not None and not required else _INNER_DEFAULT
            previous = arguments.get(outer)
            if previous is not None:
                required = required or previous.required
                default = previous.default
                targets = (*previous.targets, (node.name, argument))
            else:
                targets = ((node.name, argument),)
            arguments[outer] = _Argument(outer, targets, required, default)
    return arguments, frozen


def _annotation_of(argument: _Argument, classes: Mapping[str, type[NanoNode]]) -> Any:
    """The inner parameters' annotation, when all agree (pipeline files check simple ones)."""
    found: set[Any] = set()
    for inner_name, inner_argument in argument.targets:
        try:
            parameter = inspect.signature(classes[inner_name].__init__).parameters.get(
                inner_argument
            )
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            return inspect.Parameter.empty
        annotation = inspect.Parameter.empty if parameter is None else parameter.annotation
        try:
            found.add(annotation)
        except TypeError:  # an unhashable annotation object: not a simple one anyway
            return inspect.Parameter.empty
    return found.pop() if len(found) == 1 else inspect.Parameter.empty


def _make_class(spec: CompositeSpec, description: str | None) -> type[NanoNode]:
    def __init__(self: _CompositeNode, name: str | None = None, **kwargs: Any) -> None:
        _CompositeNode.__init__(self, name, **kwargs)

    parameters = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    inner_classes = {inner.name: inner.cls for inner in spec.inner}
    for argument in spec.arguments.values():
        parameters.append(
            inspect.Parameter(
                argument.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if argument.required else argument.default,
                annotation=_annotation_of(argument, inner_classes),
            )
        )
    for option in ENGINE_OPTIONS[1:]:
        parameters.append(inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=None))
    __init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{spec.name}.__init__"
    inner = ", ".join(f"{n.name} ({n.cls.__name__})" for n in spec.inner)
    doc = description or f"Composite node of {inner}."
    namespace = {
        "__doc__": doc,
        "__module__": COMPOSITE_MODULE,
        "__qualname__": spec.name,
        "__init__": __init__,
        "_ns_composite": spec,
    }
    cls = type(spec.name, (_CompositeNode,), namespace)
    # A real attribute of its module: importable, and picklable by reference.
    setattr(composites, spec.name, cls)
    if spec.name not in composites.__all__:
        composites.__all__.append(spec.name)
        composites.__all__.sort()
    return cls
