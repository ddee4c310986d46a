"""Pipeline files: YAML that describes a whole runnable pipeline.

This module also holds the pieces every YAML reader of the package shares
(composites use them too):

* :func:`parse_yaml` reads text with ``yaml.SafeLoader`` only and keeps the
  line and column of every key and value, keyed by their *key path*
  (``("nodes", 2, "class")``), so a later check can say where a bad value is.
* :class:`ConfigFileError` is the one error the readers raise. Its message
  reads ``file:line:column: key.path: what is wrong``.
* :func:`resolve_class` finds a registered :class:`NanoNode` subclass by name
  and suggests the near name for a typo. Nothing else is ever looked up:
  YAML is data, never code.

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
import difflib
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ._exceptions import ConfigError, NanostreamError
from ._node import NanoNode, Port, registered_nodes
from ._pipeline import Pipeline
from ._policy import POLICIES, Retry, short_repr

__all__ = [
    "ConfigFileError",
    "Document",
    "KeyPath",
    "PipelineFile",
    "load_pipeline",
    "load_pipeline_text",
    "parse_yaml",
    "read_pipeline",
    "read_pipeline_text",
    "resolve_class",
]

KeyPath = tuple[str | int, ...]

#: The keyword arguments every node takes from the engine, not from its class.
ENGINE_OPTIONS = ("name", "on_error", "retry", "capacity", "blocking")


class ConfigFileError(ConfigError):
    """A composite definition or pipeline file is not valid.

    ``str(error)`` reads ``file:line:column: key.path: problem``, leaving out
    the parts that are not known (a composite built from a ``dict`` has no
    file).

    Attributes:
        problem: what is wrong, without the location.
        file: the file (or ``"<string>"`` for text), if any.
        line: 1-based line of the offending key or value, if known.
        column: 1-based column, if known.
        key: the key path, such as ``"nodes[2].class"`` (``""`` for the
            document as a whole).
        node: the name of the node concerned, if any.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
        node: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.column = column
        where = ""
        if file is not None:
            where = file
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        prefix = f"{key}: " if key else ""
        super().__init__(f"{where}{prefix}{problem}", node=node, key=key or "")


def format_key_path(path: KeyPath) -> str:
    """``("nodes", 2, "class")`` -> ``"nodes[2].class"``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


@dataclasses.dataclass
class Document:
    """Parsed configuration data plus where each part of it came from.

    Attributes:
        data: the plain Python data (dicts, lists, scalars).
        file: the file name for messages, or ``None`` for a Python dict.
        values: key path -> (line, column) of each value, 1-based.
        keys: key path -> (line, column) of each mapping key, 1-based.
        base_dir: the directory relative paths in the document start from.
        modules: names of the modules the document imported (``modules:``);
            a bare class name several modules define resolves to theirs.
    """

    data: Any
    file: str | None = None
    values: dict[KeyPath, tuple[int, int]] = dataclasses.field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = dataclasses.field(default_factory=dict)
    base_dir: Path | None = None
    modules: list[str] = dataclasses.field(default_factory=list)

    def position(self, path: KeyPath, *, at_key: bool = False) -> tuple[int, int] | None:
        """The position of ``path`` or of its nearest known ancestor."""
        if at_key and path in self.keys:
            return self.keys[path]
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]

    def error(
        self, path: KeyPath, problem: str, *, at_key: bool = False, node: str | None = None
    ) -> ConfigFileError:
        """A :class:`ConfigFileError` for ``path`` (raise it)."""
        position = self.position(path, at_key=at_key)
        line, column = position if position is not None else (None, None)
        return ConfigFileError(
            problem,
            file=self.file,
            line=line,
            column=column,
            key=format_key_path(path),
            node=node,
        )

    def fail(
        self, path: KeyPath, problem: str, *, at_key: bool = False, node: str | None = None
    ) -> NoReturn:
        """Raise :meth:`error`."""
        raise self.error(path, problem, at_key=at_key, node=node)

    # -- typed access with errors ---------------------------------------------------

    def mapping(self, path: KeyPath, value: Any, what: str) -> dict[str, Any]:
        """``value`` as a mapping with string keys, or an error saying what was expected."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"expected {what} (a mapping of key: value); got {describe(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys of {what} must be strings; got {describe(key)}")
        return value

    def check_keys(
        self,
        path: KeyPath,
        mapping: Mapping[str, Any],
        allowed: Sequence[str],
        required: Sequence[str] = (),
        what: str = "this mapping",
    ) -> None:
        """Error on a key not in ``allowed`` (with a suggestion) or a missing required key."""
        for key in mapping:
            if key not in allowed:
                hint = did_you_mean(key, allowed)
                self.fail(
                    (*path, key),
                    f"unknown key {key!r} in {what}; expected one of: {', '.join(allowed)}{hint}",
                    at_key=True,
                )
        for key in required:
            if key not in mapping:
                self.fail(path, f"{what} needs the key {key!r}")

    def string(self, path: KeyPath, value: Any, what: str) -> str:
        """``value`` as a non-empty string, or an error."""
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected {what} (a non-empty string); got {describe(value)}")
        return value

    def sequence(self, path: KeyPath, value: Any, what: str) -> list[Any]:
        """``value`` as a list (``None`` is an empty list), or an error."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"expected {what} (a list); got {describe(value)}")
        return value


def describe(value: Any) -> str:
    """A short description of a value for an error message: type and repr."""
    if value is None:
        return "nothing (null)"
    # reprlib bounds the work too: an aliased YAML structure can be huge once expanded.
    text = short_repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when one of ``options`` is close to ``word``, else ``""``."""
    options = list(options)
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f"; did you mean {lowered[word.lower()]!r}?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.75)
    if not close:
        close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- reading YAML ----------------------------------------------------------------------


_ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_yaml(
    text: str,
    *,
    file: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Document:
    """Parse one YAML document with ``yaml.SafeLoader``, keeping positions.

    Args:
        text: the YAML text.
        file: the name to use in error messages.
        base_dir: the directory relative paths in the document start from.
        env: when given, ``${NAME}`` and ``${NAME:-default}`` in string values
            are replaced from it (``$$`` is a literal ``$``).

    Returns:
        A :class:`Document`.

    Raises:
        ConfigFileError: the text is not valid YAML, holds more than one
            document, repeats a key, or names a variable ``env`` lacks.
    """
    document = Document(data=None, file=file, base_dir=base_dir)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        # Control characters are refused before parsing starts.
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        problem = f"not valid YAML: character #x{exc.character:04x} is not allowed"
        raise ConfigFileError(problem, file=file, line=line, column=column) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, text, file) from None
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"not valid YAML: {exc}", file=file) from None
        except RecursionError:
            raise ConfigFileError("not valid YAML: nested too deeply", file=file) from None
        if node is None:
            return document
        _walk(node, (), document, set())
        if env is not None:
            _substitute(node, (), document, env, set())
        try:
            document.data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, text, file) from None
        # The constructors also raise plain errors for bad values, such as a
        # timestamp 2024-02-30 (ValueError) or an alias nested too deeply.
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise ConfigFileError(f"cannot read the YAML value: {exc}", file=file) from None
    finally:
        loader.dispose()
    return document


def _position(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _walk(node: yaml.Node, path: KeyPath, document: Document, seen: set[int]) -> None:
    """Record the position of every key and value, and refuse duplicate keys."""
    document.values.setdefault(path, _position(node.start_mark))
    if id(node) in seen:  # an alias: already walked (and possibly recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), document, seen)
    elif isinstance(node, yaml.MappingNode):
        first_seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key in first_seen:
                line, _ = _position(first_seen[key].start_mark)
                document.values.setdefault((*path, key), _position(key_node.start_mark))
                document.keys[(*path, key)] = _position(key_node.start_mark)
                document.fail(
                    (*path, key), f"duplicate key {key!r} (first given on line {line})", at_key=True
                )
            first_seen[key] = key_node
            document.keys[(*path, key)] = _position(key_node.start_mark)
            _walk(value_node, (*path, key), document, seen)


def _substitute(
    node: yaml.Node,
    path: KeyPath,
    document: Document,
    env: Mapping[str, str],
    seen: set[int],
) -> None:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in string values, before construction."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if "$" not in node.value or node.tag != "tag:yaml.org,2002:str":
            return

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            document.fail(
                path,
                f"environment variable {name!r} is not set; set it, or give a default "
                f"as ${{{name}:-default}}",
            )

        # The result stays a string whatever it spells (DATA_DIR=on is not true, 2024-05-17
        # not a date): where a number or true/false is expected, a string spelling one is
        # accepted (see _spelled), so ${PORT} still works there.
        node.value = _ENV_PATTERN.sub(replace, node.value)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _substitute(item, (*path, index), document, env, seen)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: str | int = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            _substitute(value_node, (*path, key), document, env, seen)


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> ConfigFileError:
    """Turn PyYAML's error into ours: position, key path, and a plain explanation."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "not valid YAML"
    # "while scanning a simple key ... could not find expected ':'": a line
    # that was meant as 'key: value' lacks its colon. Point at that line.
    missing_colon = exc.context == "while scanning a simple key" and exc.context_mark is not None
    if missing_colon:
        assert exc.context_mark is not None
        mark = exc.context_mark
    path = _path_at(text, mark)
    if missing_colon and mark is not None:
        line_text = _line_at(mark)
        word, _, rest = line_text.partition(" ")
        suggestion = f"{word}: {rest.strip()}" if rest.strip() else f"{word}:"
        problem = (
            f"expected 'key: value' but found {line_text!r} with no ':'; "
            f"did you mean {suggestion!r}?"
        )
    elif "'\\t'" in problem:
        problem = "not valid YAML: a tab cannot indent YAML; indent with spaces"
    elif exc.context:
        problem = f"not valid YAML: {exc.context}: {problem}"
    else:
        problem = f"not valid YAML: {problem}"
    line, column = _position(mark) if mark is not None else (None, None)
    return ConfigFileError(
        problem, file=file, line=line, column=column, key=format_key_path(path) or None
    )


def _line_at(mark: yaml.Mark) -> str:
    """The rest of the line at ``mark``, stripped (YAML's idea of a line, not splitlines')."""
    buffer = mark.buffer if isinstance(mark.buffer, str) else ""
    end = mark.pointer
    while end < len(buffer) and buffer[end] not in "\0\r\n\x85\u2028\u2029":
        end += 1
    return buffer[mark.pointer : end].strip()


def _path_at(text: str, mark: yaml.Mark | None) -> KeyPath:
    """The key path of the container that is open at ``mark``, from the event stream."""
    if mark is None:
        return ()
    # Each open container: [is_mapping, expecting_key, current key or index].
    stack: list[list[Any]] = []
    path: KeyPath = ()

    def current() -> KeyPath:
        parts: list[str | int] = []
        for is_mapping, expecting_key, part in stack:
            if is_mapping and expecting_key:
                break  # between entries: the next key is not known yet
            if part is not None:
                parts.append(part)
        return tuple(parts)

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if event.start_mark is not None and event.start_mark.index >= mark.index:
                break
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                _advance(stack, None)
                stack.append([isinstance(event, yaml.MappingStartEvent), True, None])
                if not stack[-1][0]:
                    stack[-1][2] = -1
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                _finish(stack)
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                value = event.value if isinstance(event, yaml.ScalarEvent) else "*"
                _advance(stack, value)
                _finish(stack)
            path = current()
    except yaml.YAMLError:
        pass
    except RecursionError:  # pragma: no cover - the composer fails first
        return ()
    return path


def _advance(stack: list[list[Any]], scalar: str | None) -> None:
    """A value or a container begins inside the innermost open container."""
    if not stack:
        return
    top = stack[-1]
    if top[0]:
        if top[1]:  # this is a key
            top[2] = scalar if scalar is not None else "?"
    else:
        top[2] += 1


def _finish(stack: list[list[Any]]) -> None:
    """A key or value has ended: a mapping flips between expecting key and value."""
    if stack and stack[-1][0]:
        stack[-1][1] = not stack[-1][1]


def read_text(path: str | os.PathLike[str], what: str) -> tuple[str, Path]:
    """Read a configuration file, or raise ConfigFileError naming it."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8"), file
    except FileNotFoundError:
        msg = f"{what} file not found"
    except IsADirectoryError:
        msg = f"{what} path is a directory, not a file"
    except UnicodeDecodeError as exc:
        msg = f"{what} file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        msg = f"cannot read {what} file: {exc.strerror or exc}"
    raise ConfigFileError(msg, file=str(path))


# -- node classes -------------------------------------------------------------------------


def resolve_class(name: Any, document: Document, path: KeyPath) -> type[NanoNode]:
    """The registered NanoNode subclass that ``name`` (``Class`` or ``module:Class``) means.

    Classes defined again under the same module and name (a composite loaded
    twice) count once: the latest definition wins. A bare name that several
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
    module, _, qualname = name.rpartition(":")
    bare = qualname.rsplit(".", 1)[-1]
    latest: dict[tuple[str, str], type[NanoNode]] = {}
    for cls in registry.get(bare, []):
        latest[(cls.__module__, cls.__qualname__)] = cls
    candidates = list(latest.values())
    if module:
        candidates = [
            c for c in candidates if c.__module__ == module and c.__qualname__ == qualname
        ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        if module:
            known = sorted({f"{c.__module__}:{c.__qualname__}" for c in latest.values()})
            modules = {c.__module__ for classes in registry.values() for c in classes}
            if module not in sys.modules and module not in modules:
                document.fail(
                    path,
                    f"unknown node type {name!r}: module {module!r} is not imported; "
                    "name it under 'modules:' (or pass --module) so its nodes are registered",
                )
            hint = f"; known: {', '.join(known)}" if known else ""
            document.fail(path, f"unknown node type {name!r}{hint}")
        hint = did_you_mean(name, [n for n in registry if not n.startswith("_")])
        if not hint:
            hint = (
                "; node types are registered NanoNode subclasses: import the module that "
                "defines it with 'modules:' (or --module)"
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
    """The arguments ``cls(...)`` takes besides the engine's, and whether it takes ``**kwargs``."""
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
            # ``**engine: Unpack[EngineOptions]`` passes on the engine options
            # only; a bare ``**kwargs`` accepts anything.
            annotation = param.annotation
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if "Unpack[" not in text:
                open_ended = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            continue
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        params.append(Parameter(param.name, required, default))
    return params, open_ended


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


def _spelled(value: Any, kind: type) -> Any:
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
    value = _spelled(value, kind)
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
            key: _spelled(value, int if key == "attempts" else float)
            for key, value in retry.items()
        }
        for key, value in retry.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                document.fail((*path, "retry", key), f"expected a number; got {describe(value)}")
        try:
            options["retry"] = Retry(**retry)
        except (ConfigError, TypeError, ValueError) as exc:
            document.fail((*path, "retry"), str(exc), node=node)
    if spec.get("capacity") is not None:
        capacity = _spelled(spec["capacity"], int)
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            document.fail(
                (*path, "capacity"),
                f"expected the inbox capacity as a whole number of items, at least 1; "
                f"got {describe(capacity)}",
                node=node,
            )
        options["capacity"] = capacity
    if spec.get("blocking") is not None:
        blocking = _spelled(spec["blocking"], bool)
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
            document.fail((*path, index), f"cannot import module {name!r}: {_exc_text(exc)}")
        document.modules.append(module.__name__)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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
)
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
class PipelineFile:
    """A loaded pipeline file: the pipeline and its top-level nodes by name."""

    pipeline: Pipeline
    nodes: dict[str, NanoNode]


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
            msg = f"cannot import module {name!r}: {_exc_text(exc)}"
            raise ConfigFileError(msg, file=source) from exc
        document.modules.append(module.__name__)
    return _build_pipeline(document)


def _build_pipeline(document: Document) -> PipelineFile:
    from ._composite import load_composite_from

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
            value = _spelled(spec[key], float)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or not value > 0
            ):
                document.fail(
                    (key,), f"expected a positive number of seconds, or null; got {describe(value)}"
                )
            settings[key] = value
    nodes = _build_nodes(document, spec.get("nodes"))
    _link_nodes(document, spec, nodes)
    try:
        pipeline = Pipeline(*(node for node, _ in nodes.values()), name=name, **settings)
    except NanostreamError as exc:
        blamed = getattr(exc, "node", None) or getattr(exc, "downstream", None)
        blamed = blamed or getattr(exc, "upstream", None)
        path: KeyPath = ("nodes",)
        for node, node_path in nodes.values():
            if blamed in (node.name, repr(node.name)) or _inner_name_of(node, blamed):
                path = node_path
        document.fail(path, str(exc))
    return PipelineFile(pipeline, {name: node for name, (node, _) in nodes.items()})


def _inner_name_of(node: NanoNode, name: Any) -> bool:
    inner = getattr(node, "_ns_inner", None)
    if not isinstance(inner, dict) or not isinstance(name, str):
        return False
    return any(name in (n.name, repr(n.name)) or _inner_name_of(n, name) for n in inner.values())


def _build_nodes(document: Document, value: Any) -> dict[str, tuple[NanoNode, KeyPath]]:
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
        options = engine_options(document, path, spec, name)
        node = _instantiate(cls, args, document, path, name)
        try:
            node.configure(name=name, **options)
        except ConfigError as exc:
            document.fail(path, str(exc), node=name)
        nodes[name] = (node, path)
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
        raise document.error(
            (*path, "args") if args else path,
            f"node {name!r} ({cls.__name__}) rejected its arguments: {_exc_text(exc)}",
            node=name,
        ) from exc


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


def _link(
    document: Document, path: KeyPath, upstream: NanoNode, port: str, downstream: NanoNode
) -> None:
    source: NanoNode | Port = upstream.dead_letters if port == "dead_letters" else upstream
    try:
        source > downstream
    except NanostreamError as exc:
        document.fail(path, str(exc))
