"""The located YAML document and its errors: what every YAML reader of the package shares.

* :func:`parse_yaml` reads text with ``yaml.SafeLoader`` only (YAML is data,
  never code) and keeps the line and column of every key and value, keyed by
  their *key path* (``("nodes", 2, "class")``), so a later check can say where
  a bad value is. Whatever goes wrong while reading (syntax, a duplicate key,
  a tag PyYAML cannot construct, such as ``!!timestamp abc``) comes out as a
  :class:`ConfigFileError` at the offending place.
* :class:`Document` is the parsed data plus those positions; its typed
  accessors (``mapping``, ``sequence``, ``string``, ``check_keys``) fail with
  a located error.
* :class:`ConfigFileError` is the one error the readers raise. Its message
  reads ``file:line:column: key.path: what is wrong``.
* :func:`did_you_mean` and :func:`describe` word the messages.

Composites (``_composite``) and pipeline files (``_config``) build on this
module; it imports neither, nor any node class.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ._exceptions import ConfigError
from ._policy import short_repr

__all__ = [
    "ConfigFileError",
    "Document",
    "KeyPath",
    "describe",
    "did_you_mean",
    "format_key_path",
    "parse_yaml",
    "read_text",
]

KeyPath = tuple[str | int, ...]


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
            a bare class name several modules define resolves to theirs, and
            ``module:name`` functions come only from them.
        module_aliases: each module as the document spelled it (a ``.py``
            path, say) -> its import name.
    """

    data: Any
    file: str | None = None
    values: dict[KeyPath, tuple[int, int]] = dataclasses.field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = dataclasses.field(default_factory=dict)
    base_dir: Path | None = None
    modules: list[str] = dataclasses.field(default_factory=list)
    module_aliases: dict[str, str] = dataclasses.field(default_factory=dict)

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
            expected = f"expected {what} (a mapping of key: value)"
            if not path and not isinstance(value, list):
                # The whole document is one scalar: most likely not a YAML file at all
                # (a CSV, a script). Its text is not echoed: it may hold anything.
                kind = "text" if isinstance(value, str) else type(value).__name__
                self.fail(path, f"{expected}; the document is a single {kind} value (not YAML?)")
            self.fail(path, f"{expected}; got {describe(value)}")
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
            document, repeats a key, has a value that does not fit its tag
            (``!!int ""``, ``!!timestamp abc``, a date 2024-02-30), or names
            a variable ``env`` lacks.
    """
    document = Document(data=None, file=file, base_dir=base_dir)
    try:
        loader = _LocatedLoader(text)
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
        document.data = _construct(loader, node, document, text)
    finally:
        loader.dispose()
    return document


def _construct(loader: _LocatedLoader, root: yaml.Node, document: Document, text: str) -> Any:
    """The Python data of ``root``; any failure is a :class:`ConfigFileError` where it happened."""
    try:
        return loader.construct_document(root)
    except _BadValue as exc:
        raise _value_error(exc, document, text) from None
    except yaml.MarkedYAMLError as exc:
        # Every node has been walked: its recorded position gives its key path.
        mark = exc.problem_mark or exc.context_mark
        path = _path_of(document, _position(mark)) if mark is not None else ()
        raise _syntax_error(exc, text, document.file or "<string>", path or None) from None
    # Whatever else a constructor raises (an alias nested deeper than Python's
    # recursion limit, say) is still the document's fault: say so at its start.
    except Exception as exc:
        line, column = _position(root.start_mark)
        problem = f"cannot read the YAML value: {type(exc).__name__}: {exc}"
        raise ConfigFileError(problem, file=document.file, line=line, column=column) from None


class _BadValue(yaml.MarkedYAMLError):
    """A node PyYAML's constructor failed on, with the failure it raised."""

    def __init__(self, node: yaml.Node, cause: Exception) -> None:
        super().__init__(problem=str(cause), problem_mark=node.start_mark)
        self.node = node
        self.cause = cause


class _LocatedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose constructors fail with the node they failed on.

    PyYAML's safe constructors raise bare ``IndexError`` (``!!int ""``),
    ``KeyError`` (``!!bool abc``), ``AttributeError`` (``!!timestamp abc``)
    or ``ValueError`` (``2024-13-99``) for a value that does not fit its tag.
    Only construction is wrapped; what is loaded stays exactly what
    ``yaml.safe_load`` loads.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        pending = len(self.state_generators)
        try:
            data = super().construct_object(node, deep=deep)
        except (yaml.MarkedYAMLError, RecursionError):
            raise
        except Exception as exc:
            raise _BadValue(node, exc) from exc
        if len(self.state_generators) == pending + 1:
            # A collection's constructor finishes later, in construct_document.
            finishing = _finishing(self.state_generators[-1], node)
            self.state_generators[-1] = typing.cast("types.GeneratorType[Any, Any, Any]", finishing)
        return data


def _finishing(generator: Iterator[Any], node: yaml.Node) -> Iterator[Any]:
    """``generator`` (the rest of ``node``'s construction), failing with ``node``."""
    try:
        yield from generator
    except (yaml.MarkedYAMLError, RecursionError):
        raise
    except Exception as exc:
        raise _BadValue(node, exc) from exc


#: What a value of each standard tag must look like, for messages.
_TAG_EXPECTS = {
    "bool": "true or false (or yes, no, on, off)",
    "int": "a whole number such as 42, -7, 0x2a or 0o52",
    "float": "a number such as 1.5, -2, 1e3, .inf or .nan",
    "timestamp": "a date or a date and time such as 2024-05-17 or 2024-05-17T12:30:00Z",
    "binary": "base64 text",
}


def _value_error(exc: _BadValue, document: Document, text: str) -> ConfigFileError:
    """A located error for a value PyYAML's constructor could not build."""
    node, cause = exc.node, exc.cause
    line, column = _position(node.start_mark)
    tag = node.tag.removeprefix("tag:yaml.org,2002:")
    shown = f"!!{tag}" if tag != node.tag else node.tag
    if isinstance(node, yaml.ScalarNode):
        value = short_repr(node.value)
    else:
        value = "a mapping" if isinstance(node, yaml.MappingNode) else "a sequence"
    problem = f"cannot read {value} as {shown}"
    expected = _TAG_EXPECTS.get(tag)
    if expected is not None:
        problem += f": expected {expected}"
    # datetime's own words ("month must be in 1..12") say what is wrong with a date.
    if expected is None or (tag == "timestamp" and isinstance(cause, ValueError | OverflowError)):
        problem += f" ({cause})" if expected is not None else f": {type(cause).__name__}: {cause}"
    explicit = text[node.start_mark.index : node.start_mark.index + 1] == "!"
    if not explicit and isinstance(node, yaml.ScalarNode):
        problem += "; quote it to make it a string"
    path = _path_of(document, (line, column))
    return ConfigFileError(
        f"not valid YAML: {problem}",
        file=document.file,
        line=line,
        column=column,
        key=format_key_path(path) or None,
    )


def _path_of(document: Document, position: tuple[int, int]) -> KeyPath:
    """The deepest key path whose value starts at ``position`` (``()`` if none does)."""
    paths = [path for path, where in document.values.items() if where == position]
    return max(paths, key=len, default=())


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
        # accepted (see ``_node_spec.spelled``), so ${PORT} still works there.
        node.value = _ENV_PATTERN.sub(replace, node.value)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _substitute(item, (*path, index), document, env, seen)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: str | int = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            _substitute(value_node, (*path, key), document, env, seen)


def _syntax_error(
    exc: yaml.MarkedYAMLError, text: str, file: str, path: KeyPath | None = None
) -> ConfigFileError:
    """Turn PyYAML's error into ours: position, key path, and a plain explanation.

    ``path`` is the key path when it is known; otherwise it is worked out
    from the events before the error.
    """
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "not valid YAML"
    # "while scanning a simple key ... could not find expected ':'": a line
    # that was meant as 'key: value' lacks its colon. Point at that line.
    missing_colon = exc.context == "while scanning a simple key" and exc.context_mark is not None
    if missing_colon:
        assert exc.context_mark is not None
        mark = exc.context_mark
    if path is None:
        path = _path_at(text, mark)
    plain = None if missing_colon else _plain_syntax_problem(exc)
    if plain is not None and plain[1]:
        mark = exc.context_mark  # the problem is where the construct opened
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
    elif plain is not None:
        # PyYAML's own words stay, on a line of their own, for those who know them.
        raw = f"{exc.context}: {problem}" if exc.context else problem
        problem = f"not valid YAML: {plain[0]}\n    (PyYAML: {raw})"
    elif exc.context:
        problem = f"not valid YAML: {exc.context}: {problem}"
    else:
        problem = f"not valid YAML: {problem}"
    line, column = _position(mark) if mark is not None else (None, None)
    return ConfigFileError(
        problem, file=file, line=line, column=column, key=format_key_path(path) or None
    )


def _plain_syntax_problem(exc: yaml.MarkedYAMLError) -> tuple[str, bool] | None:
    """A plain sentence for a common PyYAML syntax error, and whether it is located where
    the construct opened (``exc.context_mark``) rather than where PyYAML noticed it.

    ``None`` for an error without a plainer wording here.
    """
    context, problem = exc.context or "", exc.problem or ""
    opened = exc.context_mark
    where = f"line {opened.line + 1}, column {opened.column + 1}" if opened else "above"
    if problem == "mapping values are not allowed here":
        return (
            "unexpected ':' here: this line is indented more than the key above it, or a "
            "value holds ': ' and needs quotes",
            False,
        )
    if context.startswith("while parsing a block") and problem.startswith("expected <block end>"):
        return (
            "this line's indentation does not match the lines above it: the keys of one "
            "mapping, and the '-' items of one list, start in the same column",
            False,
        )
    if context == "while scanning a quoted scalar" and "end of stream" in problem:
        return ("a quoted value is never closed: add the closing quote", opened is not None)
    if context == "while scanning a double-quoted scalar" and "escape" in problem:
        return (
            "unknown backslash escape in a double-quoted value (a Windows path?): use single "
            "quotes, or double each backslash",
            False,
        )
    flow = re.fullmatch(r"while parsing a flow (mapping|sequence)", context)
    if flow and problem.startswith("expected ','"):
        opening, closing = ("{", "}") if flow[1] == "mapping" else ("[", "]")
        return (
            f"the '{opening}' opened at {where} is not closed by '{closing}', or two of its "
            "entries lack a ',' between them",
            False,
        )
    token = re.fullmatch(r"found character '(.)' that cannot start any token", problem)
    if token:
        return (
            f"{token[1]!r} cannot start an unquoted value (YAML reserves it); put the value "
            "in quotes",
            False,
        )
    alias = re.fullmatch(r"found undefined alias '(.*)'", problem)
    if alias:
        return (
            f"'*{alias[1]}' refers to an anchor '&{alias[1]}' not defined before it; define it "
            "first, or quote the value if '*' is meant literally",
            False,
        )
    return None


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
                # -1: a sequence whose first item has not begun yet; the error is there.
                parts.append(max(part, 0) if not is_mapping else part)
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
