"""Node entries of YAML documents: node types, arguments, engine options, modules, links.

Composites (``_composite``) and pipeline files (``_config``) both describe
nodes as mappings with a ``class`` and arguments, and both link them; the
checks they share live here, on top of the located document of
``_yaml_document``:

* :func:`resolve_class` finds a registered :class:`NanoNode` subclass by name
  and suggests the near name for a typo. Nothing else is ever looked up:
  YAML is data, never code.
* :func:`check_arguments` and :func:`check_argument_types` check a node's
  arguments against its class's signature before the class is called;
  :func:`engine_options` checks ``on_error``, ``retry``, ``capacity`` and
  ``blocking``.
* :func:`resolve_functions` turns ``module:name`` strings given for
  parameters annotated ``Callable`` (``Map``'s ``func``, ``Filter``'s
  ``predicate``, ``Dedupe``'s ``key``, ...) into the functions they name,
  taken only from modules the document lists under ``modules:`` (or that
  ``--module`` gave): the document never imports anything for them.
* :func:`import_modules` imports what ``modules:`` names (the only code a
  document runs); :func:`parse_links` reads ``links:`` and ``edges:``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError
from ._node import NanoNode, node_candidates, registered_nodes
from ._policy import POLICIES, Retry, short_repr
from ._yaml_document import Document, KeyPath, describe, did_you_mean

__all__ = [
    "ENGINE_OPTIONS",
    "Parameter",
    "accepts_name",
    "check_argument_types",
    "check_arguments",
    "class_parameters",
    "engine_options",
    "exception_text",
    "function_parameters",
    "import_module",
    "import_modules",
    "parse_links",
    "resolve_class",
    "resolve_functions",
    "simple_parameter_types",
    "spelled",
]

#: The keyword arguments every node takes from the engine, not from its class.
ENGINE_OPTIONS = ("name", "on_error", "retry", "capacity", "blocking")


# -- node classes -------------------------------------------------------------------------


def resolve_class(name: Any, document: Document, path: KeyPath) -> type[NanoNode]:
    """The registered NanoNode subclass that ``name`` (``Class`` or ``module:Class``) means.

    Classes defined again under the same module and name (a composite loaded
    twice) count once (see :func:`node_candidates`). A bare name that several
    modules define resolves to the one in the document's own ``modules:``, if
    exactly one of them is there.

    Raises:
        ConfigFileError: not a string, no such node type (with the near name
            when one is close), or a bare name several modules define.
    """
    name = document.string(path, name, "a node type name such as 'CSVReader'")
    name = name.strip()
    _import_builtin_nodes()
    registry = registered_nodes()
    module = name.rpartition(":")[0]
    candidates, same_name = node_candidates(name)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        if module:
            known = sorted({f"{c.__module__}:{c.__qualname__}" for c in same_name})
            modules = {c.__module__ for classes in registry.values() for c in classes}
            if module not in sys.modules and module not in modules:
                document.fail(
                    path,
                    f"unknown node type {name!r}: module {module!r} is not imported; "
                    "name it under 'modules:' (or pass --module) so its nodes are registered",
                )
            hint = f"; known: {', '.join(known)}" if known else ""
            document.fail(path, f"unknown node type {name!r}{hint}")
        known = [n for n in registry if not n.startswith("_")]
        near = did_you_mean(name, known)
        typo = bool(difflib.get_close_matches(name, known, n=1, cutoff=0.8))
        if not document.modules and not typo:
            # No module imported and no near spelling: a custom class whose module the
            # file does not list is the likelier mistake than a typo.
            hint = (
                "; is its module listed under 'modules:'? The file lists none, so only the "
                "built-in node types and classes imported already are known (or pass --module)"
            )
            if near:
                hint += f"; or{near.removeprefix(';')}"
        elif near:
            hint = near
        else:
            hint = (
                "; node types are registered NanoNode subclasses: import the module that "
                f"defines it with 'modules:' (or --module); imported: {', '.join(document.modules)}"
            )
        document.fail(path, f"unknown node type {name!r}{hint}")
    # A name the document's own modules define means theirs.
    own = [c for c in candidates if c.__module__ in document.modules]
    if len(own) == 1:
        return own[0]
    options = ", ".join(sorted(f"{c.__module__}:{c.__qualname__}" for c in candidates))
    document.fail(path, f"node type {name!r} is ambiguous; use one of: {options}")


def _import_builtin_nodes() -> None:
    """Register the built-in nodes (CSVReader, ...): files may always name them."""
    from . import nodes  # noqa: F401 - imported for its registrations


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One argument a node class accepts (from its ``__init__`` signature)."""

    name: str
    required: bool
    default: Any


def class_parameters(cls: type[NanoNode]) -> tuple[list[Parameter], bool]:
    """The arguments ``cls(...)`` takes besides the engine's, and whether it takes any others.

    A ``**options`` parameter is followed to what consumes it, so that a
    misspelt argument is still caught before the class is called:

    * ``**engine: Unpack[EngineOptions]`` passes on the engine options only;
    * a class attribute ``accepted_options`` (names) lists what ``**options``
      takes (``CSVReader``'s ``csv`` format parameters);
    * ``**options`` whose only use is ``super().__init__(..., **options)``
      takes what the base class's ``__init__`` takes (for a direct
      ``NanoNode`` subclass: the engine options);
    * anything else (options read as a dict, passed elsewhere, or a class
      whose source cannot be read) accepts any argument: the second value
      returned is then ``True``.
    """
    owner = next((c for c in cls.__mro__ if "__init__" in vars(c)), cls)
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return [], True
    params: list[Parameter] = []
    open_ended = False
    for index, param in enumerate(signature.parameters.values()):
        if index == 0 and param.name == "self":
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            annotation = param.annotation
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if "Unpack[" in text:
                continue
            declared = vars(owner).get("accepted_options")
            if declared is not None:
                params.extend(Parameter(str(name), False, None) for name in declared)
                continue
            base = _super_init_consumer(owner, param.name)
            if base is None:
                open_ended = True
                continue
            inherited, base_open = class_parameters(base)
            known = {p.name for p in params}
            params.extend(
                dataclasses.replace(p, required=False) if p.required else p
                for p in inherited
                if p.name not in known
            )
            open_ended = open_ended or base_open
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            continue
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        params.append(Parameter(param.name, required, default))
    return params, open_ended


def _super_init_consumer(owner: type, options: str) -> type[NanoNode] | None:
    """The base class whose ``__init__`` receives ``**options``, if that is their only use.

    Read from the source of ``owner.__init__`` (never run); ``None`` when the
    source is not available or ``options`` is used in any other way.
    """
    init = vars(owner).get("__init__")
    try:
        source = textwrap.dedent(inspect.getsource(init))  # type: ignore[arg-type]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    function = tree.body[0] if tree.body else None
    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    uses = [n for n in ast.walk(function) if isinstance(n, ast.Name) and n.id == options]
    forwarded: set[int] = set()
    for call in ast.walk(function):
        if not isinstance(call, ast.Call) or not _is_super_init(call.func):
            continue
        for keyword in call.keywords:
            if keyword.arg is None and isinstance(keyword.value, ast.Name):
                if keyword.value.id == options:
                    forwarded.add(id(keyword.value))
    if not uses or any(id(use) not in forwarded for use in uses):
        return None
    bases = owner.__mro__[1:]
    base = next((c for c in bases if "__init__" in vars(c)), None)
    if base is None or not (isinstance(base, type) and issubclass(base, NanoNode)):
        return None
    return base


def _is_super_init(func: ast.expr) -> bool:
    """``super().__init__`` (or ``super(Cls, self).__init__``)."""
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "__init__"
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "super"
    )


#: What each simple annotation expects, for messages.
_EXPECTED: dict[type, str] = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
}
_SIMPLE_NAMES: dict[str, type | None] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": None,
}


def _simple_annotation(annotation: Any) -> tuple[type, bool] | None:
    """``(type, accepts None)`` for ``int``/``float``/``bool``/``str`` and ``X | None``, else None.

    String annotations (``from __future__ import annotations``) are read as
    text, never evaluated.
    """
    if isinstance(annotation, str):
        text = annotation.strip()
        optional = re.fullmatch(r"(?:typing\.)?Optional\[\s*(\w+)\s*\]", text)
        names = [optional[1], "None"] if optional else [part.strip() for part in text.split("|")]
        if any(name not in _SIMPLE_NAMES for name in names):
            return None
        kinds: list[Any] = [_SIMPLE_NAMES[name] for name in names]
    elif annotation in _EXPECTED:
        kinds = [annotation]
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [None if arg is type(None) else arg for arg in typing.get_args(annotation)]
    else:
        return None
    concrete = [kind for kind in kinds if kind is not None]
    if len(concrete) != 1 or concrete[0] not in _EXPECTED or len(kinds) - len(concrete) > 1:
        return None
    return concrete[0], len(kinds) > 1


def simple_parameter_types(cls: type[NanoNode]) -> dict[str, tuple[type, bool]]:
    """The parameters of ``cls(...)`` annotated with a simple type: name -> (type, optional)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return {}
    found: dict[str, tuple[type, bool]] = {}
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        simple = _simple_annotation(param.annotation)
        if simple is not None:
            found[param.name] = simple
    return found


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOL_TEXT = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def spelled(value: Any, kind: type) -> Any:
    """A string that spells a ``kind`` (``int``, ``float``, ``bool``) as that; else ``value``.

    So ``${WORKERS}`` (always a string) can give a whole number, and
    ``${FOLLOW:-true}`` a boolean, where one is expected. Accepted: whole
    numbers ``8``, ``-3``; decimal numbers ``0.5``, ``1e3``; ``true``,
    ``false``, ``yes``, ``no``, ``on``, ``off`` in any case. Surrounding
    spaces are ignored.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind is int and _INT_TEXT.fullmatch(text):
        return int(text)
    if kind is float and _FLOAT_TEXT.fullmatch(text):
        return float(text)
    if kind is bool and text.lower() in _BOOL_TEXT:
        return _BOOL_TEXT[text.lower()]
    return value


def _convert(value: Any, kind: type) -> tuple[bool, Any]:
    """``(True, value as kind)`` when ``value`` fits ``kind``, else ``(False, None)``."""
    value = spelled(value, kind)
    if kind is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if isinstance(value, bool):
        return False, None  # YAML's true is not the number 1
    if kind is int:
        return (True, value) if isinstance(value, int) else (False, None)
    if kind is float:
        return (True, value) if isinstance(value, int | float) else (False, None)
    return (True, value) if isinstance(value, str) else (False, None)


def check_argument_types(
    cls: type[NanoNode], args: Mapping[str, Any], document: Document, path: KeyPath, node: str
) -> dict[str, Any]:
    """Check ``args`` against the simple annotations of ``cls(...)`` before it is called.

    A parameter annotated ``int``, ``float``, ``bool`` or ``str`` (or one of
    them ``| None``) must get a value of that type (``null`` only for the
    optional ones); other annotations are left to the class itself.

    Returns:
        The arguments to call ``cls`` with.
    """
    types_ = simple_parameter_types(cls)
    checked = dict(args)
    for key, value in args.items():
        if key not in types_:
            continue
        kind, optional = types_[key]
        if value is None and optional:
            continue
        fits, converted = (False, None) if value is None else _convert(value, kind)
        if not fits:
            got = _yaml_repr(value)
            expected = _EXPECTED[kind] + (" or null" if optional else "")
            hint = "; quote it to make it a string" if kind is str and value is not None else ""
            document.fail(
                (*path, key),
                f"node {node!r} argument {key!r}: expected {expected}, got {got}{hint}",
                node=node,
            )
        checked[key] = converted
    return checked


def _yaml_repr(value: Any) -> str:
    """A value as a YAML author wrote it: ``null``, ``true``, ``'text'``, ``1.5``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return short_repr(value)


def accepts_name(cls: type[NanoNode]) -> bool:
    """Whether ``cls(...)`` takes the node's ``name`` (itself, or with the engine options)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False
    for param in signature.parameters.values():
        if param.name == "name" and param.kind is not inspect.Parameter.POSITIONAL_ONLY:
            return True
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            annotation = param.annotation
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if "Unpack[" in text:
                return True
    return False


def check_arguments(
    cls: type[NanoNode],
    given: Iterable[str],
    document: Document,
    path: KeyPath,
    node: str,
    *,
    check_required: bool = True,
) -> None:
    """Error on an argument ``cls`` does not accept, or a required one not given."""
    params, open_ended = class_parameters(cls)
    names = [p.name for p in params if p.name not in ENGINE_OPTIONS]
    given = list(given)
    if not open_ended:
        for key in given:
            if key in ENGINE_OPTIONS:
                document.fail(
                    (*path, key),
                    f"{key!r} is an engine option, not an argument of {cls.__name__}; "
                    f"give it as a key of the node itself, next to 'class'",
                    at_key=True,
                    node=node,
                )
            frozen = getattr(getattr(cls, "_ns_composite", None), "frozen", {})
            if key not in names and key in frozen:
                inner, value = frozen[key]
                document.fail(
                    (*path, key),
                    f"node {node!r} ({cls.__name__}) got argument {key!r}, which the composite "
                    f"freezes to {value!r} (node {inner!r}); it cannot be overridden",
                    at_key=True,
                    node=node,
                )
            if key not in names:
                accepted = ", ".join(names) if names else "none"
                document.fail(
                    (*path, key),
                    f"node {node!r} ({cls.__name__}) got unexpected argument {key!r}; "
                    f"accepted: {accepted}{did_you_mean(key, names)}",
                    at_key=True,
                    node=node,
                )
    for param in params if check_required else ():
        if param.required and param.name not in given and param.name not in ENGINE_OPTIONS:
            document.fail(
                path,
                f"node {node!r} ({cls.__name__}) needs argument {param.name!r}",
                node=node,
            )


def engine_options(
    document: Document, path: KeyPath, spec: Mapping[str, Any], node: str
) -> dict[str, Any]:
    """Validate ``on_error``, ``retry``, ``capacity`` and ``blocking`` of a node entry."""
    options: dict[str, Any] = {}
    if spec.get("on_error") is not None:
        policy = spec["on_error"]
        if policy not in POLICIES:
            hint = did_you_mean(str(policy), POLICIES)
            document.fail(
                (*path, "on_error"),
                f"unknown error policy {policy!r}; expected one of: {', '.join(POLICIES)}{hint}",
                node=node,
            )
        options["on_error"] = policy
    if spec.get("retry") is not None:
        retry = document.mapping((*path, "retry"), spec["retry"], "retry settings")
        fields = [f.name for f in dataclasses.fields(Retry)]
        document.check_keys((*path, "retry"), retry, fields, what="retry settings")
        retry = {
            key: spelled(value, int if key == "attempts" else float) for key, value in retry.items()
        }
        for key, value in retry.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                document.fail((*path, "retry", key), f"expected a number; got {describe(value)}")
        try:
            options["retry"] = Retry(**retry)
        except (ConfigError, TypeError, ValueError) as exc:
            document.fail((*path, "retry"), str(exc), node=node)
    if spec.get("capacity") is not None:
        capacity = spelled(spec["capacity"], int)
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            document.fail(
                (*path, "capacity"),
                f"expected the inbox capacity as a whole number of items, at least 1; "
                f"got {describe(capacity)}",
                node=node,
            )
        options["capacity"] = capacity
    if spec.get("blocking") is not None:
        blocking = spelled(spec["blocking"], bool)
        if not isinstance(blocking, bool):
            document.fail(
                (*path, "blocking"),
                f"expected true or false; got {describe(blocking)}",
                node=node,
            )
        options["blocking"] = blocking
    return options


# -- modules --------------------------------------------------------------------------


def import_module(spec: str, base_dir: Path | None = None) -> Any:
    """Import a module by dotted name, or a ``.py`` file by path (relative to ``base_dir``).

    Importing is the only code a configuration runs; it is how custom node
    classes get registered.

    Raises:
        ImportError: the module cannot be found or imported.
        Exception: whatever the module raises while it is imported.
    """
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        path = path.resolve()
        for module in list(sys.modules.values()):
            if getattr(module, "__file__", None) == str(path):
                return module
        name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else (
            "nanostream_module_" + re.sub(r"\W", "_", str(path))
        )  # fmt: skip
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None or not path.is_file():
            msg = f"no Python file at {str(path)!r}"
            raise ImportError(msg)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return importlib.import_module(spec)


def import_modules(document: Document, path: KeyPath, value: Any) -> None:
    """Import the modules a document names under ``modules:``."""
    for index, spec in enumerate(document.sequence(path, value, "module names")):
        name = document.string((*path, index), spec, "a module name or a .py file path")
        try:
            module = import_module(name, document.base_dir)
        except Exception as exc:
            document.fail((*path, index), f"cannot import module {name!r}: {exception_text(exc)}")
        add_module(document, name, module)


def add_module(document: Document, spec: str, module: types.ModuleType) -> None:
    """Record an imported module as the document's own (``modules:`` or ``--module``)."""
    document.modules.append(module.__name__)
    # A .py file is listed by its path and imported under its stem, or under a longer
    # name when another module has that stem already: its path and its stem mean it.
    spec = spec.strip()
    document.module_aliases[spec] = module.__name__
    document.module_aliases[module.__name__] = module.__name__
    if spec.endswith(".py"):
        document.module_aliases[Path(spec).stem] = module.__name__


# -- functions ------------------------------------------------------------------------

_FUNCTION_REFERENCE = re.compile(r"\s*([\w./-]+)\s*:\s*([\w.]+)\s*")


def _is_callable_annotation(annotation: Any) -> bool:
    """Whether an annotation says "a function" (``Callable[...]``, maybe ``| None``).

    String annotations (``from __future__ import annotations``) are read as
    text, never evaluated.
    """
    if isinstance(annotation, str):
        parts = [part.strip() for part in _top_level_union(annotation)]
        parts = [part for part in parts if part not in ("None", "")]
        return bool(parts) and all(
            re.match(r"(?:typing\.|collections\.abc\.|abc\.)?Callable\b", part) for part in parts
        )
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return bool(args) and all(_is_callable_annotation(arg) for arg in args)
    callables = (Callable, typing.Callable)
    return annotation in callables or typing.get_origin(annotation) in callables


def _top_level_union(text: str) -> list[str]:
    """``"Callable[[int], int] | None"`` -> its ``|`` parts outside brackets."""
    optional = re.fullmatch(r"\s*(?:typing\.)?Optional\[(.*)\]\s*", text, flags=re.DOTALL)
    if optional:
        return [*_top_level_union(optional[1]), "None"]
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def function_parameters(cls: type[NanoNode]) -> list[str]:
    """The parameters of ``cls(...)`` annotated ``Callable[...]`` (or ``Callable[...] | None``)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return []
    return [
        param.name
        for param in signature.parameters.values()
        if param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        and _is_callable_annotation(param.annotation)
    ]


def resolve_functions(
    cls: type[NanoNode], args: Mapping[str, Any], document: Document, path: KeyPath, node: str
) -> dict[str, Any]:
    """Replace each ``module:name`` given for a function parameter of ``cls`` by that function.

    ``module`` must be one of the document's own modules (``modules:``, or
    ``--module``), by its import name or as listed; nothing is imported here.
    ``null`` stays ``None`` (the class's default behaviour).

    Returns:
        The arguments to call ``cls`` with.

    Raises:
        ConfigFileError: at the argument's value: not a ``module:name``
            string, a module not listed, no such name in it, a name that
            reaches into another module, or something that is not callable.
    """
    resolved = dict(args)
    for key in function_parameters(cls):
        if key in args and args[key] is not None:
            resolved[key] = _resolve_function(args[key], document, (*path, key), node, key)
    return resolved


def _listed_modules(document: Document) -> list[str]:
    """The document's modules as ``module:name`` references may spell them (shortest each)."""
    spellings: dict[str, str] = {}
    for alias, module in document.module_aliases.items():
        if alias.endswith(".py") or "/" in alias or os.sep in alias:
            continue
        if module not in spellings or len(alias) < len(spellings[module]):
            spellings[module] = alias
    return sorted(spellings.values())


def _resolve_function(value: Any, document: Document, path: KeyPath, node: str, key: str) -> Any:
    where = f"node {node!r} argument {key!r}"
    listed = _listed_modules(document)
    example = f"'{listed[0]}:my_function'" if listed else "'my_rules:is_error'"
    match = _FUNCTION_REFERENCE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        hint = ""
        if isinstance(value, str) and ("lambda" in value or "(" in value):
            hint = "; YAML holds data, not code: define the function in a module and name it"
        document.fail(
            path,
            f"{where}: expected a function as 'module:name' from a module listed under "
            f"'modules:' (such as {example}); got {describe(value)}{hint}",
            node=node,
        )
    module_name, attribute = match[1], match[2]
    if module_name not in document.module_aliases:
        known = f"listed: {', '.join(listed)}" if listed else "the file lists no modules"
        document.fail(
            path,
            f"{where}: module {module_name!r} is not listed under 'modules:' ({known}); "
            f"functions come only from the file's own modules: define {attribute!r} in one "
            "and list it under 'modules:' (or pass --module)",
            node=node,
        )
    target: Any = sys.modules[document.module_aliases[module_name]]
    reached = f"module {module_name!r}"
    for index, part in enumerate(attribute.split(".")):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            names = [n for n in names if callable(getattr(target, n, None))]
            document.fail(
                path,
                f"{where}: {reached} has no attribute {part!r}{did_you_mean(part, names)}",
                node=node,
            )
        target = getattr(target, part)
        reached = repr(f"{module_name}:{'.'.join(attribute.split('.')[: index + 1])}")
        if isinstance(target, types.ModuleType):
            document.fail(
                path,
                f"{where}: {value.strip()!r} reaches into module {target.__name__!r}, "
                "which is not listed under 'modules:'; name a function defined in a listed module",
                node=node,
            )
    if not callable(target):
        document.fail(
            path,
            f"{where}: {value.strip()!r} is {describe(target)}, not a function",
            node=node,
        )
    return target


def exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- links ----------------------------------------------------------------------------

_LINK_KEYS = ("from", "to", "port")
_PORTS = ("main", "dead_letters")


def parse_links(
    document: Document, path: KeyPath, value: Any, names: Sequence[str], key: str
) -> list[tuple[str, str, str, KeyPath]]:
    """Read a ``links:`` / ``edges:`` list: chains ``[a, b, c]`` and ``{from, to, port}`` maps.

    Returns:
        ``(upstream, port, downstream, key path)`` per link, in order.
    """
    links: list[tuple[str, str, str, KeyPath]] = []

    def known(item_path: KeyPath, name: Any) -> str:
        if not isinstance(name, str):
            document.fail(item_path, f"expected a node name; got {describe(name)}")
        if name not in names:
            document.fail(
                item_path,
                f"no node is named {name!r}; nodes: {', '.join(names)}{did_you_mean(name, names)}",
            )
        return name

    for index, entry in enumerate(document.sequence(path, value, f"the {key}")):
        entry_path = (*path, index)
        if isinstance(entry, list):
            if len(entry) < 2:
                document.fail(
                    entry_path, "a chain needs at least two node names, as in [read, parse]"
                )
            chain = [known((*entry_path, i), name) for i, name in enumerate(entry)]
            for i, (upstream, downstream) in enumerate(itertools.pairwise(chain)):
                links.append((upstream, "main", downstream, (*entry_path, i + 1)))
        elif isinstance(entry, dict):
            entry = document.mapping(entry_path, entry, "a link")
            document.check_keys(
                entry_path, entry, _LINK_KEYS, required=("from", "to"), what="a link"
            )
            upstream = known((*entry_path, "from"), entry["from"])
            port = entry.get("port", "main")
            if port not in _PORTS:
                document.fail(
                    (*entry_path, "port"),
                    f"unknown port {port!r}; expected one of: {', '.join(_PORTS)}"
                    f"{did_you_mean(str(port), _PORTS)}",
                )
            targets = entry["to"] if isinstance(entry["to"], list) else [entry["to"]]
            for i, target in enumerate(targets):
                target_path = (*entry_path, "to", i) if isinstance(entry["to"], list) else (
                    *entry_path, "to"
                )  # fmt: skip
                links.append((upstream, port, known(target_path, target), target_path))
        else:
            document.fail(
                entry_path,
                "expected a chain such as [read, parse, print] or a mapping such as "
                f"{{from: read, to: parse}}; got {describe(entry)}",
            )
    return links
