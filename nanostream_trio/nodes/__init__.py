"""Built-in nodes: files, directories, CSV, JSON lines, log tailing, SQL and transforms.

Sources:

* :class:`LocalDirectoryWatchdog` emits the paths of files that appear or change.
* :class:`TailFile` follows a file or a glob like ``tail -F`` and emits lines.
* :class:`SQLQuery` streams the rows of a query (once, or polling for new rows).
* :class:`RedisStreamSource` reads a Redis stream as a member of a consumer
  group (several processes share the work); :class:`RedisStreamSink` adds
  items to a stream. They need the ``[redis]`` extra (coredis).

Processors and sinks:

* :class:`LocalFileReader` reads a file's text, whole or per line.
* :class:`CSVReader` turns CSV text into one dict per row.
* :class:`JSONLinesParser` and :class:`JSONLinesWriter` read and write JSON Lines.
* :class:`PrinterOfThings` prints items.
* :class:`SQLSink` inserts or upserts dicts as rows of a table.
* :class:`HttpRequest` calls an HTTP API per item, :class:`HttpPost` sends
  items to one, :class:`HttpPoll` polls one (a source); they need the
  ``[http]`` extra (httpx).
* :class:`Map`, :class:`Filter`, :class:`FlatMap`, :class:`Batch`,
  :class:`TumblingWindow`, :class:`Throttle` and :class:`Dedupe` apply plain
  functions.

The seed's headline pipeline::

    from nanostream_trio.nodes import (
        CSVReader, LocalDirectoryWatchdog, LocalFileReader, PrinterOfThings,
    )

    watchdog = LocalDirectoryWatchdog(directory="./data_directory")
    watchdog > LocalFileReader() > CSVReader() > PrinterOfThings()
    watchdog.global_start()

See ``docs/nodes.md`` for each node's behaviour in detail.
"""

from __future__ import annotations

from .._publish import publish
from ._csv import CSVReader as CSVReader
from ._csv import CSVRecord as CSVRecord
from ._errors import CSVRowError as CSVRowError
from ._errors import FileDecodeError as FileDecodeError
from ._errors import JSONLineError as JSONLineError
from ._errors import LateItemError as LateItemError
from ._errors import MalformedInputError as MalformedInputError
from ._files import FileText as FileText
from ._files import Line as Line
from ._files import LocalFileReader as LocalFileReader
from ._http import HttpPoll as HttpPoll
from ._http import HttpPost as HttpPost
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponse as HttpResponse
from ._http import HttpStatusError as HttpStatusError
from ._http import HttpTemplateError as HttpTemplateError
from ._jsonl import JSONLinesParser as JSONLinesParser
from ._jsonl import JSONLinesWriter as JSONLinesWriter
from ._printer import PrinterOfThings as PrinterOfThings
from ._redis import RedisEntry as RedisEntry
from ._redis import RedisSinkStatistics as RedisSinkStatistics
from ._redis import RedisSourceStatistics as RedisSourceStatistics
from ._redis import RedisStreamSink as RedisStreamSink
from ._redis import RedisStreamSource as RedisStreamSource
from ._sql import SQLQuery as SQLQuery
from ._sql import SQLSink as SQLSink
from ._tail import TailFile as TailFile
from ._transforms import Batch as Batch
from ._transforms import Dedupe as Dedupe
from ._transforms import Filter as Filter
from ._transforms import FlatMap as FlatMap
from ._transforms import Map as Map
from ._transforms import Throttle as Throttle
from ._transforms import TumblingWindow as TumblingWindow
from ._transforms import WindowResult as WindowResult
from ._watch import LocalDirectoryWatchdog as LocalDirectoryWatchdog
from ._watch import WatchStatistics as WatchStatistics

__all__ = [
    "Batch",
    "CSVReader",
    "CSVRecord",
    "CSVRowError",
    "Dedupe",
    "FileDecodeError",
    "FileText",
    "Filter",
    "FlatMap",
    "HttpPoll",
    "HttpPost",
    "HttpRequest",
    "HttpResponse",
    "HttpStatusError",
    "HttpTemplateError",
    "JSONLineError",
    "JSONLinesParser",
    "JSONLinesWriter",
    "LateItemError",
    "Line",
    "LocalDirectoryWatchdog",
    "LocalFileReader",
    "MalformedInputError",
    "Map",
    "PrinterOfThings",
    "RedisEntry",
    "RedisSinkStatistics",
    "RedisSourceStatistics",
    "RedisStreamSink",
    "RedisStreamSource",
    "SQLQuery",
    "SQLSink",
    "TailFile",
    "Throttle",
    "TumblingWindow",
    "WatchStatistics",
    "WindowResult",
]


publish(globals(), __all__, __name__)
del publish
