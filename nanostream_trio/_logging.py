"""Where the library's events go when the application has not said.

The library never calls ``structlog.configure``: that belongs to the
application. Until the application configures structlog, the default logger
of a :class:`Pipeline` (and of :meth:`NanoNode.log_event` outside a run) is a
library-local one, like the standard library's "last resort" handler:

* warnings and errors go to **stderr**, one line each; info and debug events
  are dropped; nothing ever reaches stdout;
* tracebacks are left out (the error's type and message stay in ``error``),
  unless ``NANOSTREAM_DEBUG=1`` is set in the environment, which also shows
  info and debug events.

Once the application has called ``structlog.configure`` (directly, or through
a tool that does, like the ``nanostream`` command or
``structlog.testing.capture_logs``), events go through the application's
configuration instead, with every field. The decision is taken each time a
logger is bound (at the start of each run), so configuring structlog after a
``Pipeline`` was created still counts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

__all__ = ["DEBUG_ENVIRONMENT_VARIABLE", "LibraryLogger", "library_logger"]

#: Environment variable that turns on info/debug events and tracebacks in the
#: library's own stderr logger (values: ``1``, ``true``, ``yes``).
DEBUG_ENVIRONMENT_VARIABLE: Final = "NANOSTREAM_DEBUG"

_LOGGER_NAME: Final = "nanostream_trio"
# Fields that carry multi-line text meant for someone debugging the library.
_DEBUG_ONLY_FIELDS: Final = ("traceback", "exc_info", "stack")


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if not text or any(char.isspace() or char in "='\"" for char in text):
        return repr(text)
    return text


def _render(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    """``HH:MM:SS warning event key=value ...`` on one line, whatever the values hold."""
    if not _debugging():
        for field in _DEBUG_ONLY_FIELDS:
            event_dict.pop(field, None)
    event = event_dict.pop("event", "")
    level = "warning" if method_name == "warn" else method_name
    stamp = time.strftime("%H:%M:%S")
    fields = " ".join(f"{key}={_one_line(value)}" for key, value in event_dict.items())
    return f"{stamp} nanostream {level:<7} {event} {fields}".rstrip()


def _stderr_logger(**context: Any) -> Any:
    level = logging.DEBUG if _debugging() else logging.WARNING
    # sys.stderr is looked up now, not at import, so redirections (pytest's
    # capture, contextlib.redirect_stderr) made before a run are honoured.
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[_render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    ).bind(**context)


class LibraryLogger:
    """The default logger: the application's structlog setup if any, else quiet stderr.

    Only :meth:`bind` is offered, since the engine always binds the pipeline
    and node names first; it returns an ordinary structlog bound logger.
    """

    def bind(self, **context: Any) -> Any:
        """A bound logger for ``context``, chosen by whether structlog is configured now."""
        if structlog.is_configured():
            return structlog.get_logger(_LOGGER_NAME).bind(**context)
        return _stderr_logger(**context)

    def __repr__(self) -> str:
        return "<nanostream_trio default logger>"


def library_logger() -> LibraryLogger:
    """The library's default logger (see the module docstring)."""
    return LibraryLogger()
