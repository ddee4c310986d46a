"""PrinterOfThings: the seed's debugging sink."""

from __future__ import annotations

import pprint
import sys
from typing import Any, TextIO, Unpack

from .._node import NanoNode
from ._stages import EngineOptions

__all__ = ["PrinterOfThings"]


class PrinterOfThings(NanoNode):
    """Print each item and pass it on unchanged (so it works as a sink or in the middle).

    Args:
        prepend: text printed before each item.
        pretty: format with :func:`pprint.pformat` (multi-line for nested data).
        stream: where to print; default ``sys.stdout`` as it is when printing.
        name: the node's name.
        **engine: ``on_error``, ``retry``, ``capacity``, ``blocking`` (see :class:`NanoNode`).

    Example::

        watchdog > LocalFileReader() > CSVReader() > PrinterOfThings(prepend="row: ")
    """

    def __init__(
        self,
        prepend: str = "",
        *,
        pretty: bool = False,
        stream: TextIO | None = None,
        name: str | None = None,
        **engine: Unpack[EngineOptions],
    ) -> None:
        super().__init__(name, **engine)
        self.prepend = prepend
        self.pretty = pretty
        self.stream = stream

    def process_item(self, item: Any) -> Any:
        """Print ``item`` and return it."""
        text = pprint.pformat(item) if self.pretty else str(item)
        print(self.prepend + text, file=self.stream or sys.stdout, flush=True)
        return item
