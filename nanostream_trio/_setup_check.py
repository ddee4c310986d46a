"""Setup-time checks of a loaded pipeline file, without side effects (``nanostream check``).

Loading a file already checks everything about the file itself; what it
cannot know is whether the paths its nodes will use are there. This module
looks at the arguments of each node entry and checks, with ``os.stat`` and
``os.access`` only (nothing is created, opened or written), that:

* a file a node reads exists, is a file and is readable (``read_file``);
* a directory a node reads exists, is a directory and can be listed
  (``read_dir``);
* a file a node writes can be written: an existing one is a writable file,
  a new one can be created in its directory (``write_file``);
* a file a node replaces (through a temporary file renamed over it, or by
  rotation) and the pipeline's checkpoint store have a writable directory
  (``replace_file``);
* a directory a node writes into exists and is writable (``write_dir``);
* a file a node waits for (``wait_file``, TailFile with ``follow: true``):
  if it exists it is readable; if not, a warning says the node will wait.

Each finding is a :class:`ConfigFileError` at the argument's value in the
file (or at the node entry, for a default value).

How a node class says which arguments are paths: a class attribute
``path_arguments``, either a mapping ``{"argument": "read_dir", ...}`` or a
callable (static or class method) taking the entry's arguments and returning
such a mapping, for uses that depend on other arguments::

    class Archive(NanoNode):
        path_arguments = {"source": "read_dir", "target": "write_file"}

The built-in nodes are declared in :data:`BUILTIN_PATH_ARGUMENTS` here,
keyed by class, rather than on the classes themselves (their modules are
owned by the engine work); a class's own ``path_arguments`` wins.
"""

from __future__ import annotations

import dataclasses
import glob
import inspect
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ._config import NodeEntry, PipelineFile
from ._node import NanoNode
from ._yaml_document import ConfigFileError, Document, KeyPath
from .nodes import JSONLinesWriter, LocalDirectoryWatchdog, TailFile

__all__ = [
    "BUILTIN_PATH_ARGUMENTS",
    "PathUse",
    "SetupFinding",
    "check_setup",
    "path_arguments_of",
]

PathUse = Literal["read_file", "read_dir", "write_file", "replace_file", "write_dir", "wait_file"]
_USES = ("read_file", "read_dir", "write_file", "replace_file", "write_dir", "wait_file")

PathDeclaration = Mapping[str, PathUse] | Callable[[Mapping[str, Any]], Mapping[str, PathUse]]


def _tail_file_paths(arguments: Mapping[str, Any]) -> Mapping[str, PathUse]:
    # follow=False reads what is there and fails at setup on a missing file; following
    # waits for it (a file_missing event), so a missing file is only worth a warning.
    follow = arguments.get("follow", True)
    return {"path": "read_file" if follow is False else "wait_file"}


def _jsonl_writer_paths(arguments: Mapping[str, Any]) -> Mapping[str, PathUse]:
    # With max_bytes the file is rotated: renamed to .1 and created again.
    rotated = arguments.get("max_bytes") is not None
    return {"path": "replace_file" if rotated else "write_file"}


#: What the built-in nodes read and write, by class.
BUILTIN_PATH_ARGUMENTS: dict[type[NanoNode], PathDeclaration] = {
    LocalDirectoryWatchdog: {"directory": "read_dir"},
    TailFile: _tail_file_paths,
    JSONLinesWriter: _jsonl_writer_paths,
}


@dataclasses.dataclass(frozen=True)
class SetupFinding:
    """One problem (or warning) found by :func:`check_setup`.

    Attributes:
        error: the located error (``str(error)`` is ``file:line:column: key: problem``).
        warning: ``True`` for something that will not fail the run (a file
            a node waits for), ``False`` for a run that would fail.
    """

    error: ConfigFileError
    warning: bool = False


def path_arguments_of(cls: type[NanoNode], arguments: Mapping[str, Any]) -> dict[str, PathUse]:
    """Which arguments of ``cls`` are paths, and how the node uses each.

    Raises:
        TypeError: the class's ``path_arguments`` is neither a mapping nor a
            callable giving one, or names an unknown use.
    """
    declared: Any = getattr(cls, "path_arguments", None)
    if declared is None:
        declared = BUILTIN_PATH_ARGUMENTS.get(cls)
    if declared is None:
        return {}
    if callable(declared):
        declared = declared(arguments)
    if not isinstance(declared, Mapping):
        msg = f"{cls.__name__}.path_arguments must be a mapping of argument -> use"
        raise TypeError(msg)
    for argument, use in declared.items():
        if use not in _USES:
            msg = (
                f"{cls.__name__}.path_arguments[{argument!r}] is {use!r}; "
                f"expected one of: {', '.join(_USES)}"
            )
            raise TypeError(msg)
    return dict(declared)


def check_setup(loaded: PipelineFile) -> list[SetupFinding]:
    """Check the paths the file's nodes will read and write; nothing is changed.

    Returns:
        The findings, in file order (empty when all is well).
    """
    document = loaded.document
    if document is None:
        return []
    findings: list[SetupFinding] = []
    for entry in loaded.entries:
        for argument, use in path_arguments_of(entry.cls, entry.args).items():
            given = argument in entry.args
            value = entry.args[argument] if given else _default(entry.cls, argument)
            if not isinstance(value, str | os.PathLike) or not os.fspath(value):
                continue  # not set (None), or not a path: the class checks its own types
            where: KeyPath = (*entry.path, "args", argument) if given else entry.path
            for problem, warning in _check_path(os.fspath(value), use):
                findings.append(_finding(document, where, entry, argument, problem, warning))
    store = loaded.pipeline.checkpoint
    if store:
        # The pipeline's checkpoint store (the file's checkpoint:, or --checkpoint).
        spec = document.data if isinstance(document.data, dict) else {}
        key: KeyPath = ()
        if "checkpoint" in spec:
            nested = isinstance(spec["checkpoint"], dict)
            key = ("checkpoint", "path") if nested else ("checkpoint",)
        for problem, warning in _check_path(store, "replace_file"):
            text = f"the checkpoint store: {problem}"
            findings.append(SetupFinding(document.error(key, text), warning=warning))
    return findings


def _default(cls: type[NanoNode], argument: str) -> Any:
    try:
        parameter = inspect.signature(cls.__init__).parameters.get(argument)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _finding(
    document: Document,
    where: KeyPath,
    entry: NodeEntry,
    argument: str,
    problem: str,
    warning: bool,
) -> SetupFinding:
    text = f"node {entry.name!r} ({entry.cls.__name__}) argument {argument!r}: {problem}"
    return SetupFinding(document.error(where, text, node=entry.name), warning=warning)


def _shown(path: str) -> str:
    """The path as given, with where a relative one starts (nodes open it from the cwd)."""
    if os.path.isabs(path):
        return repr(path)
    return f"{path!r} (relative to the current directory {os.getcwd()})"


def _check_path(path: str, use: PathUse) -> list[tuple[str, bool]]:
    """``(problem, is_warning)`` for ``path`` used as ``use``."""
    if use in ("read_file", "wait_file") and glob.has_magic(path):
        return _check_glob(path, use)
    if use == "read_dir":
        return _check_directory(path, os.R_OK | os.X_OK, "read", "listed")
    if use == "write_dir":
        return _check_directory(path, os.W_OK | os.X_OK, "write into", "written into")
    if use in ("write_file", "replace_file"):
        return _check_output_file(path, replaced=use == "replace_file")
    return _check_input_file(path, waits=use == "wait_file")


def _mode(path: str) -> str:
    try:
        return f"mode {stat.filemode(os.stat(path).st_mode)}"
    except OSError:  # pragma: no cover - it was just seen
        return "mode unknown"


def _check_directory(path: str, access: int, verb: str, done: str) -> list[tuple[str, bool]]:
    if not os.path.exists(path):
        return [(f"directory {_shown(path)} does not exist; create it or fix the path", False)]
    if not os.path.isdir(path):
        return [(f"{_shown(path)} is not a directory", False)]
    if not os.access(path, access):
        return [
            (
                f"directory {_shown(path)} cannot be {done} by this user ({_mode(path)}); "
                f"the node needs to {verb} it: fix its permissions",
                False,
            )
        ]
    return []


def _check_input_file(path: str, *, waits: bool) -> list[tuple[str, bool]]:
    if not os.path.exists(path):
        if waits:
            parent = os.path.dirname(os.path.abspath(path))
            where = "" if os.path.isdir(parent) else f", nor does its directory {parent!r}"
            return [
                (
                    f"file {_shown(path)} does not exist yet{where}; the node will wait for it "
                    "(reported by a file_missing event)",
                    True,
                )
            ]
        return [(f"file {_shown(path)} does not exist; create it or fix the path", False)]
    if os.path.isdir(path):
        return [(f"{_shown(path)} is a directory, not a file", False)]
    if not os.access(path, os.R_OK):
        return [
            (
                f"file {_shown(path)} is not readable by this user ({_mode(path)}); "
                "fix its permissions",
                False,
            )
        ]
    return []


def _check_glob(path: str, use: PathUse) -> list[tuple[str, bool]]:
    matches = glob.glob(path)
    problems: list[tuple[str, bool]] = []
    for match in matches:
        if os.path.isfile(match) and not os.access(match, os.R_OK):
            problems.append(
                (
                    f"file {match!r} (matching {path!r}) is not readable by this user "
                    f"({_mode(match)}); fix its permissions",
                    False,
                )
            )
    if not matches:
        waits = use == "wait_file"
        then = "the node will wait for one" if waits else "the node will read nothing"
        problems.append((f"no file matches {_shown(path)} yet; {then}", True))
    return problems


def _check_output_file(path: str, *, replaced: bool) -> list[tuple[str, bool]]:
    directory = Path(os.path.abspath(path)).parent
    if os.path.isdir(path):
        return [(f"{_shown(path)} is a directory, not a file", False)]
    if not directory.is_dir():
        return [
            (
                f"the directory {str(directory)!r} of file {path!r} does not exist; "
                "create it or fix the path",
                False,
            )
        ]
    exists = os.path.exists(path)
    if exists and not replaced and not os.access(path, os.W_OK):
        return [
            (
                f"file {_shown(path)} is not writable by this user ({_mode(path)}); "
                "fix its permissions",
                False,
            )
        ]
    if (replaced or not exists) and not os.access(directory, os.W_OK | os.X_OK):
        why = "the file is replaced through a new file there" if replaced else "to create it"
        return [
            (
                f"the directory {str(directory)!r} of file {path!r} is not writable by this "
                f"user ({_mode(str(directory))}), {why}; fix its permissions",
                False,
            )
        ]
    return []
