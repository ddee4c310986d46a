"""NanoNode: the user-facing unit of a pipeline, its linking and its registry.

A node is a plain object holding configuration and links; it does no work
until a :class:`~nanostream_trio.Pipeline` runs it. All of the base class's
own state lives in attributes starting with ``_ns_`` so that a subclass's
``self.count`` or ``self.items`` can never clash with it. That state is set
up in ``__new__``, so a subclass that forgets ``super().__init__()`` still
works (it just keeps the defaults).

Linking follows the original nanostream: ``a > b`` links ``a`` into ``b`` and
returns ``b``, so ``a > b > c`` builds both links. ``a > [b, c]`` fans out.
"""

from __future__ import annotations

import dis
import inspect
import itertools
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Literal, NoReturn, TypedDict

from ._edges import DEFAULT_CAPACITY
from ._exceptions import ConfigError, GraphError, LinkError, NodeDefinitionError
from ._logging import library_logger
from ._policy import ErrorPolicy, Retry, check_policy

__all__ = ["DeadLetterPort", "NanoNode", "Port", "registered_nodes", "resolve_node_class"]

Kind = Literal["source", "processor", "abstract"]


class EngineSettings(TypedDict, total=False):
    """The engine settings of a node, as keyword arguments (see :meth:`NanoNode.configure`)."""

    name: str
    on_error: ErrorPolicy
    retry: Retry
    capacity: int
    blocking: bool


# name -> classes with that __name__, in definition order. Equal names in
# different modules are normal (test modules define ``Source`` again and
# again); YAML resolves an ambiguous bare name by asking for ``module:Class``.
_REGISTRY: defaultdict[str, list[type[NanoNode]]] = defaultdict(list)


def _function_style(func: Any) -> str:
    if inspect.isasyncgenfunction(func):
        return "async_generator"
    if inspect.iscoroutinefunction(func):
        return "async_function"
    if inspect.isgeneratorfunction(func):
        return "generator"
    return "function"


def _node_name(obj: object) -> str:
    if isinstance(obj, NanoNode):
        return repr(obj.name)
    if isinstance(obj, Port):
        return f"{obj.node.name!r}.{obj.port}"
    return f"a {type(obj).__name__} object"


class Port:
    """An output of a node other than its main one; link it with ``>``."""

    port: ClassVar[str] = "port"

    def __init__(self, node: NanoNode) -> None:
        self.node = node
        self.downstream: list[NanoNode] = []

    def __gt__(self, other: object) -> Any:
        return _gt(self, other, _operator_written())

    def __lt__(self, other: object) -> Any:
        return _lt(self, other, _operator_written())

    def __repr__(self) -> str:
        return f"<{self.port} of node {self.node.name!r}>"


class DeadLetterPort(Port):
    """``node.dead_letters``: emits a :class:`DeadLetter` for each item given up on."""

    port = "dead_letters"


class NanoNode:
    """Base class of every pipeline node.

    Subclass it and define exactly one of:

    * ``generator(self)``: a *source*. It may be a generator (run in a worker
      thread, so ``time.sleep`` in it stalls nothing), an async generator, or
      a plain or async function returning an iterable.
    * ``process_item(self, item)``: a *processor* or sink, called once per
      input item. A generator or async generator may yield zero, one or many
      outputs; a plain or async function's return value is emitted unless it
      is ``None``.

    Args:
        name: the node's name in events and errors. Defaults to the class
            name, with ``-2``, ``-3``... for further instances.
        on_error: error policy, one of ``"raise"`` (default), ``"skip"``,
            ``"retry"``, ``"dead_letter"``; see :mod:`nanostream_trio` docs.
        retry: attempts and backoff for ``on_error="retry"``.
        capacity: how many items this node's inbox holds before upstream
            nodes wait (default :data:`DEFAULT_CAPACITY`).
        blocking: run a sync ``process_item`` in a worker thread (for code
            that blocks on I/O). A sync ``generator`` always runs in a thread
            unless ``blocking=False`` is given explicitly.

    Example::

        class Double(NanoNode):
            def process_item(self, item):
                return item * 2
    """

    _ns_kind: ClassVar[Kind] = "abstract"
    _ns_style: ClassVar[str] = ""
    _ns_finish_style: ClassVar[str] = ""
    _ns_counters: ClassVar[dict[type, Iterator[int]]] = {}

    # Instance state, all set in __new__ (so a forgotten super().__init__() is harmless).
    _ns_name: str
    _ns_downstream: list[NanoNode]
    _ns_upstream: list[NanoNode | Port]
    _ns_dead_letters: DeadLetterPort
    _ns_on_error: ErrorPolicy | None
    _ns_retry: Retry
    _ns_capacity: int
    _ns_blocking: bool | None
    # The logger of the run in progress (bound to pipeline and node), if any.
    _ns_log: Any
    #: The checkpoint a ``snapshot()`` being called belongs to (set just before
    #: the call), for a source that acks per checkpoint (RedisStreamSource).
    _ns_checkpoint_n: int | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        has_process = "process_item" in _defined_in_hierarchy(cls)
        has_generator = "generator" in _defined_in_hierarchy(cls)
        if has_process and has_generator:
            msg = (
                f"node class {cls.__module__}.{cls.__qualname__} defines both process_item "
                "and generator; a node is either a source (generator) or a processor "
                "(process_item), not both"
            )
            raise NodeDefinitionError(msg, node_class=cls)
        finish = _defined_in_hierarchy(cls, ("finish",))
        if finish and has_generator:
            msg = (
                f"node class {cls.__module__}.{cls.__qualname__} defines finish and generator; "
                "finish() is for nodes with process_item: a source yields its last items at "
                "the end of its generator"
            )
            raise NodeDefinitionError(msg, node_class=cls)
        cls._ns_finish_style = _function_style(cls.finish) if finish else ""
        if has_generator:
            cls._ns_kind = "source"
            cls._ns_style = _function_style(cls.generator)  # type: ignore[attr-defined]
        elif has_process:
            cls._ns_kind = "processor"
            cls._ns_style = _function_style(cls.process_item)  # type: ignore[attr-defined]
        else:
            cls._ns_kind = "abstract"
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__].append(cls)

    def __new__(cls, *args: Any, **kwargs: Any) -> NanoNode:
        if cls._ns_kind == "abstract" and not getattr(cls, "_ns_allow_abstract", False):
            msg = (
                f"{cls.__qualname__} cannot be instantiated: define process_item(self, item) "
                "for a node that receives items, or generator(self) for a source"
            )
            raise NodeDefinitionError(msg, node_class=cls)
        self = super().__new__(cls)
        counter = NanoNode._ns_counters.setdefault(cls, itertools.count(1))
        number = next(counter)
        self._ns_name = cls.__name__ if number == 1 else f"{cls.__name__}-{number}"
        self._ns_downstream = []
        self._ns_upstream = []
        self._ns_dead_letters = DeadLetterPort(self)
        self._ns_on_error = None
        self._ns_retry = Retry()
        self._ns_capacity = DEFAULT_CAPACITY
        self._ns_blocking = None
        self._ns_log = None
        self._ns_checkpoint_n = None
        return self

    def __init__(
        self,
        name: str | None = None,
        *,
        on_error: ErrorPolicy | None = None,
        retry: Retry | None = None,
        capacity: int | None = None,
        blocking: bool | None = None,
    ) -> None:
        self.configure(
            name=name, on_error=on_error, retry=retry, capacity=capacity, blocking=blocking
        )

    def configure(
        self,
        *,
        name: str | None = None,
        on_error: ErrorPolicy | None = None,
        retry: Retry | None = None,
        capacity: int | None = None,
        blocking: bool | None = None,
    ) -> NanoNode:
        """Change the engine settings of this node; ``None`` leaves one as it is.

        Returns the node, so it can be used inline: ``src > Parse().configure(on_error="skip")``.

        Raises:
            ConfigError: a value is out of range or not a known policy.
        """
        if name is not None:
            if not isinstance(name, str) or not name:
                msg = f"node name must be a non-empty string; got {name!r}"
                raise ConfigError(msg, node=self._ns_name, key="name")
            self._ns_name = name
        if on_error is not None:
            self._ns_on_error = check_policy(self._ns_name, on_error)
        if retry is not None:
            if not isinstance(retry, Retry):
                msg = f"node {self._ns_name!r} got retry={retry!r}; expected a Retry(...)"
                raise ConfigError(msg, node=self._ns_name, key="retry")
            self._ns_retry = retry
        if capacity is not None:
            if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
                msg = (
                    f"node {self._ns_name!r} got capacity={capacity!r}; "
                    "expected a whole number of items, at least 1"
                )
                raise ConfigError(msg, node=self._ns_name, key="capacity")
            self._ns_capacity = capacity
        if blocking is not None:
            self._ns_blocking = bool(blocking)
        changes = EngineSettings()
        for key, value in (
            ("name", name),
            ("on_error", on_error),
            ("retry", retry),
            ("capacity", capacity),
            ("blocking", blocking),
        ):
            if value is not None:
                changes[key] = value  # type: ignore[literal-required]
        self._ns_configured(changes)
        return self

    def _ns_configured(self, changes: EngineSettings) -> None:
        """Hook: the settings in ``changes`` were just applied to this node.

        Nodes made of inner nodes (composites, staged built-ins) override it
        to pass the settings on; ``changes`` holds only the settings given.
        """

    # -- public read-only views ---------------------------------------------

    @property
    def name(self) -> str:
        """The node's name, used in events, errors and statistics (settable)."""
        return self._ns_name

    @name.setter
    def name(self, name: str) -> None:
        self.configure(name=name)

    @property
    def dead_letters(self) -> DeadLetterPort:
        """The port that emits a :class:`DeadLetter` per item given up on."""
        return self._ns_dead_letters

    @property
    def on_error(self) -> ErrorPolicy:
        """The effective error policy (``"dead_letter"`` once that port is linked)."""
        if self._ns_on_error is not None:
            return self._ns_on_error
        return "dead_letter" if self._ns_dead_letters.downstream else "raise"

    @on_error.setter
    def on_error(self, on_error: ErrorPolicy) -> None:
        self.configure(on_error=on_error)

    @property
    def downstream(self) -> tuple[NanoNode, ...]:
        """Nodes this node's main output is linked to."""
        return tuple(self._ns_downstream)

    @property
    def upstream(self) -> tuple[NanoNode | Port, ...]:
        """Nodes (or ports) linked into this node."""
        return tuple(self._ns_upstream)

    @property
    def is_source(self) -> bool:
        """Whether the node produces items with ``generator`` rather than receiving them."""
        return self._ns_entry()._ns_kind == "source"

    # -- hooks ----------------------------------------------------------------

    def setup(self) -> Any:
        """Open what the node needs before its first item (sync or async).

        The pipeline counts a node as ready once ``setup`` has returned, so a
        source should open its file or start its watcher here.
        """
        return None

    def finish(self) -> Any:
        """Emit the last outputs once the input has ended (processors only).

        Override it in a node that holds state across items (a running total,
        a partial batch) to flush that state: it is called once, after the last
        item and before downstream nodes see the end of the stream. Like
        ``process_item`` it may be a generator (every value yielded is
        emitted), a plain function (its return value is emitted unless it is
        ``None``), an async function or an async generator. It is not called
        when the run fails or is cancelled. An exception raised here fails the
        pipeline, whatever the node's error policy, since there is no item to
        skip or dead-letter.

        Example::

            class Total(NanoNode):
                def __init__(self):
                    self.total = 0
                    super().__init__()

                def process_item(self, item):
                    self.total += item

                def finish(self):
                    return self.total
        """
        return None

    def on_success(self) -> Any:
        """Called once the whole pipeline has finished cleanly (sync or async).

        Every node has ended normally and every item has reached the end of
        the pipeline (a graceful ``stop()`` included); not called after a
        failure or a cancellation. The place to commit what must only be
        committed once everything downstream is done: a source's read
        offsets, acknowledgements to a broker. Hooks run in pipeline order,
        upstream first; an exception fails the run.
        """
        return None

    def teardown(self) -> Any:
        """Release what ``setup`` opened (sync or async); runs however the node ends."""
        return None

    def log_event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Emit a monitoring event about this node through structlog.

        While the node runs, the event goes to its pipeline's logger, bound to
        ``pipeline`` and ``node`` like the engine's own events; otherwise to
        the library's default logger bound to ``node``. Built-in
        nodes report their own events (``file_truncated``, ...) this way.

        Args:
            event: the event name, lower_snake_case.
            level: ``"debug"``, ``"info"``, ``"warning"`` or ``"error"``.
            **fields: the event's fields.

        Raises:
            ConfigError: ``level`` is not one of the four.
        """
        if level not in ("debug", "info", "warning", "error"):
            msg = f"log_event level must be debug, info, warning or error; got {level!r}"
            raise ConfigError(msg, node=self._ns_name, key="level")
        log = self._ns_log
        if log is None:
            log = library_logger().bind(node=self._ns_name)
        getattr(log, level)(event, **fields)

    # Composite nodes (YAML) stand for a group of inner nodes: links to them
    # go to their first inner node and links from them leave their last one.
    def _ns_entry(self) -> NanoNode:
        return self

    def _ns_exit(self) -> NanoNode:
        return self

    # -- linking ----------------------------------------------------------------

    def __gt__(self, other: object) -> Any:
        return _gt(self, other, _operator_written())

    def __lt__(self, other: object) -> Any:
        return _lt(self, other, _operator_written())

    def global_start(self) -> Any:
        """Run the whole pipeline this node belongs to, blocking until it ends.

        The seed's one-liner. The first SIGINT or SIGTERM stops the sources
        and lets everything already emitted drain; a second cancels at once.

        Returns:
            The pipeline's final :class:`PipelineStatistics`.

        Raises:
            Exception: the first failure of a node with ``on_error="raise"``.
        """
        if _start_pipeline is None:  # pragma: no cover - set when the package is imported
            msg = "import nanostream_trio (not only nanostream_trio._node) to run a pipeline"
            raise RuntimeError(msg)
        return _start_pipeline(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._ns_name!r}>"


#: How :meth:`NanoNode.global_start` runs a pipeline: ``_pipeline`` sets it when
#: it is imported, so that this module never imports the pipeline (which
#: imports nodes): the dependency runs one way, ``_pipeline -> _node``.
_start_pipeline: Callable[[NanoNode], Any] | None = None


def _defined_in_hierarchy(
    cls: type, methods: tuple[str, ...] = ("process_item", "generator")
) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is NanoNode or klass is object:
            continue
        names.update(n for n in methods if n in vars(klass))
    return names


def _link(upstream: NanoNode | Port, other: object) -> Any:
    if isinstance(other, list | tuple):
        for target in other:
            _link(upstream, target)
        return other
    if not isinstance(other, NanoNode):
        msg = (
            f"cannot link node {_node_name(upstream)} to {_node_name(other)}: "
            "only NanoNode instances (or a list of them) can follow '>'"
        )
        raise LinkError(msg, upstream=_node_name(upstream), downstream=type(other).__name__)
    source: NanoNode | Port = upstream._ns_exit() if isinstance(upstream, NanoNode) else upstream
    target = other._ns_entry()
    downstream = source._ns_downstream if isinstance(source, NanoNode) else source.downstream
    if target in downstream:
        msg = f"node {_node_name(source)} is already linked to node {_node_name(target)}"
        raise GraphError(msg, upstream=_node_name(source), downstream=_node_name(target))
    owner = source if isinstance(source, NanoNode) else source.node
    if owner is target or _reaches(target, owner):
        msg = (
            f"linking node {_node_name(source)} to node {_node_name(target)} would make a "
            "cycle; a pipeline must be acyclic"
        )
        raise GraphError(msg, upstream=_node_name(source), downstream=_node_name(target))
    downstream.append(target)
    target._ns_upstream.append(source)
    return other


def _reaches(start: NanoNode, goal: NanoNode) -> bool:
    seen: set[int] = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node is goal:
            return True
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node._ns_downstream)
        stack.extend(node._ns_dead_letters.downstream)
    return False


def _operator_written() -> str | None:
    """The comparison operator (``">"``, ``"<"``...) that the user's code is executing.

    Call it directly from a comparison dunder. ``a > b`` where b's class is a
    subclass of a's makes Python try the reflected ``b.__lt__(a)`` first, and
    ``a < b`` tries ``b.__gt__(a)``; reading the comparison being executed
    tells a reflected call apart from the operator the user wrote. None when
    the caller is not comparing (a call through ``operator.gt``, say).
    """
    frame = sys._getframe(2)  # 0: here, 1: the dunder, 2: the user's code
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset == frame.f_lasti:
            if instruction.opname != "COMPARE_OP":
                return None
            # 3.13 shows e.g. "bool(>)": keep the operator itself.
            return str(instruction.argval).removeprefix("bool(").removesuffix(")")
    return None


def _gt(node: NanoNode | Port, other: object, written: str | None) -> Any:
    """``node > other``, or the reflected half of ``other < node``."""
    if written == "<":
        _reject_lt(other, node)
    return _link(node, other)


def _lt(node: NanoNode | Port, other: object, written: str | None) -> Any:
    """``node < other`` (refused), or the reflected half of ``other > node``."""
    if written == ">" and isinstance(other, NanoNode | Port | list | tuple):
        if isinstance(other, list | tuple):
            return _link_many(other, node)
        return _link(other, node)
    _reject_lt(node, other)


def _reject_lt(left: object, right: object) -> NoReturn:
    msg = (
        f"'<' is not a link: write the upstream node first, as in "
        f"'upstream > downstream' (got {_node_name(left)} < {_node_name(right)})"
    )
    raise LinkError(msg, upstream=_node_name(right), downstream=_node_name(left))


def _link_many(sources: Iterable[object], target: NanoNode | Port) -> Any:
    for source in sources:
        if not isinstance(source, NanoNode | Port):
            msg = f"cannot link {_node_name(source)} to {_node_name(target)}: not a NanoNode"
            raise LinkError(msg, upstream=_node_name(source), downstream=_node_name(target))
        _link(source, target)
    return target


def registered_nodes() -> dict[str, list[type[NanoNode]]]:
    """All registered node classes, by class name (copies; safe to change)."""
    return {name: list(classes) for name, classes in _REGISTRY.items()}


def node_candidates(name: str) -> tuple[list[type[NanoNode]], list[type[NanoNode]]]:
    """The registered classes ``name`` (``Class`` or ``module:Class``) may mean.

    Returns ``(matching, same_name)``: the classes ``name`` matches, and every
    class with its bare class name (for error messages). A class defined again
    under the same module and qualified name (a module or composite loaded
    twice) counts once: the latest definition wins.
    """
    module, _, qualname = name.rpartition(":")
    latest: dict[tuple[str, str], type[NanoNode]] = {}
    for cls in _REGISTRY.get(qualname.rsplit(".", 1)[-1], []):
        latest[(cls.__module__, cls.__qualname__)] = cls
    same_name = list(latest.values())
    if not module:
        return same_name, same_name
    matching = [c for c in same_name if c.__module__ == module and c.__qualname__ == qualname]
    return matching, same_name


def resolve_node_class(name: str) -> type[NanoNode]:
    """Find a registered node class by ``Class`` or ``module:Class``.

    Raises:
        ConfigError: no such class, or a bare name several modules define.
    """
    candidates, _ = node_candidates(name)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        msg = f"unknown node type {name!r}"
        raise ConfigError(msg, key="class")
    options = ", ".join(f"{c.__module__}:{c.__qualname__}" for c in candidates)
    msg = f"node type {name!r} is ambiguous; use one of: {options}"
    raise ConfigError(msg, key="class")
