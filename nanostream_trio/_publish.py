"""One helper shared by the public packages: make re-exported objects report their public module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def publish(namespace: Mapping[str, object], names: Iterable[str], module: str) -> None:
    """Rewrite ``__module__`` of the objects ``names`` in ``namespace`` from a private submodule.

    Tracebacks and reprs then show ``nanostream_trio.NanoNode`` rather than
    ``nanostream_trio._node.NanoNode`` (as trio and httpx do). Objects defined
    outside ``module``'s private submodules, and constants, are left alone.
    """
    for name in names:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(f"{module}._"):
            try:
                obj.__module__ = module
            except (AttributeError, TypeError):  # pragma: no cover - immutable objects
                pass
