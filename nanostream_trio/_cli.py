"""The ``nanostream`` command line (also ``python -m nanostream_trio``).

Sub-commands:

* ``run FILE``: run a pipeline file until it ends; the first Ctrl-C (SIGINT
  or SIGTERM) stops it gracefully, a second cancels it, and if the run has not
  ended ``CANCEL_GRACE`` seconds later, or on a third, the process exits at once.
* ``check FILE``: load and check a pipeline file without running it, and
  check the paths its nodes will read and write (``_setup_check``).
* ``graph FILE``: print the pipeline's graph as Mermaid or Graphviz DOT.
* ``nodes``: list the registered node types.
* ``demo``: watch a temporary directory, drop CSV files into it, print rows;
  ``demo api``: poll a local paginated API, enrich, upsert into SQLite (``_demo_api``).

Unlike the library, the command is an application, so it configures
structlog for its own process: events go to stderr, pretty on a terminal and
JSON lines otherwise. On a terminal, ``run`` also keeps a live per-node table
under the events. Exit status: 0 success, 1 pipeline failure, 2 bad usage or
configuration, 130 cancelled by a second Ctrl-C (or interrupted while loading).
A signal that arrives once the run has ended is logged (``signal_received``,
``action="exit"``) and leaves that status as it is; the handlers stay
installed until the process exits.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import csv
import dataclasses
import inspect
import io
import itertools
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import structlog
import trio

from ._composite import _CompositeNode
from ._config import PipelineFile, read_pipeline
from ._exceptions import ConfigError
from ._node import NanoNode, registered_nodes
from ._node_spec import class_parameters, import_module
from ._pipeline import Pipeline
from ._setup_check import check_setup
from ._signals import AfterRun
from ._stats import NodeStatistics, PipelineStatistics
from ._yaml_document import ConfigFileError

__all__ = ["main", "render_table"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130

#: Seconds between redraws of the live table.
TABLE_REFRESH = 0.5

#: Seconds (real time) a run cancelled by a second Ctrl-C may take to end; after them
#: (or on a third Ctrl-C) the process exits with status 130 without waiting any longer.
CANCEL_GRACE = 2.0

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nanostream`` command.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        for module in args.module:
            try:
                import_module(module, Path.cwd())
            except Exception as exc:
                _error(f"cannot import module {module!r}: {type(exc).__name__}: {exc}")
                return EXIT_USAGE
        handler: Any = args.handler
        status: int = handler(args)
        return status
    except ConfigFileError as exc:
        _error(str(exc))
        for note in getattr(exc, "__notes__", ()):
            print(f"nanostream: note: {note}", file=sys.stderr)  # such as the composites: entry
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_CANCELLED


def _error(message: str) -> None:
    print(f"nanostream: error: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-m",
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a dotted name or a .py file) so its node classes are registered; "
        "may be repeated",
    )
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument(
        "--log-format",
        choices=("auto", "pretty", "json"),
        default="auto",
        help="events on stderr: pretty on a terminal and JSON lines otherwise (auto, default)",
    )
    logging_options.add_argument(
        "--log-level", choices=tuple(_LEVELS), default="info", help="lowest event level shown"
    )
    parser = argparse.ArgumentParser(
        prog="nanostream",
        description="Run, check and draw nanostream-trio pipelines described in YAML.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[common, logging_options],
        help="run a pipeline file",
        description="Run a pipeline file. The first Ctrl-C stops it gracefully "
        "(items already read are finished), a second cancels it; if the run has not ended "
        f"{CANCEL_GRACE:g} s later, or on a third, the process exits at once (status 130) "
        "without waiting for worker threads stuck in blocking calls.",
    )
    run.add_argument("file", help="the pipeline YAML file")
    run.add_argument(
        "--table",
        choices=("auto", "always", "never"),
        default="auto",
        help="the live per-node table on stderr (auto: on a terminal)",
    )
    run.add_argument(
        "--traceback", action="store_true", help="print the full traceback of a failure"
    )
    run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /health on this address while running",
    )
    run.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="keep checkpoints in this SQLite file and resume from it (overrides the file's)",
    )
    run.add_argument(
        "--checkpoint-interval",
        metavar="SECONDS",
        type=float,
        help="seconds between checkpoints (default: the file's, else 5)",
    )
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser(
        "check", parents=[common], help="check a pipeline file without running it"
    )
    check.add_argument("file", help="the pipeline YAML file")
    check.set_defaults(handler=_cmd_check)

    graph = commands.add_parser(
        "graph", parents=[common], help="print a pipeline file's graph (Mermaid or DOT)"
    )
    graph.add_argument("file", help="the pipeline YAML file")
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="output format"
    )
    graph.set_defaults(handler=_cmd_graph)

    nodes = commands.add_parser(
        "nodes", parents=[common], help="list the available node types and their arguments"
    )
    nodes.set_defaults(handler=_cmd_nodes)

    demo = commands.add_parser(
        "demo",
        parents=[logging_options],
        help="watch a temporary directory, drop CSV files into it, print their rows",
        description="The seed's headline pipeline, LocalDirectoryWatchdog > LocalFileReader "
        "> CSVReader > PrinterOfThings, on a temporary directory the demo fills itself. "
        "'demo api': HttpPoll > FlatMap > HttpRequest > Map > SQLSink on a local "
        "paginated API the demo serves itself (needs the [http] extra).",
    )
    demo.add_argument(
        "which",
        nargs="?",
        choices=("csv", "api"),
        default="csv",
        help="csv (the default): files into a watched directory; api: a JSON API into SQLite",
    )
    demo.add_argument("--files", type=_positive, default=3, help="CSV files to drop (3)")
    demo.add_argument("--rows", type=_positive, default=3, help="rows per file (3)")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep watching after the demo files (drop your own; Ctrl-C to stop)",
    )
    demo.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the rows (30)"
    )
    demo.add_argument(
        "--products", type=_positive, default=25, help="products the API lists (api; 25)"
    )
    demo.set_defaults(handler=_cmd_demo, module=[])
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"expected a whole number, at least 1; got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _version() -> str:
    from . import __version__

    return __version__


# -- logging ------------------------------------------------------------------------


class _Output:
    """Where event lines go: stderr, or through the live table when there is one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.table: LiveTable | None = None
        #: Events are JSON lines (``--log-format json``, or ``auto`` off a terminal).
        self.json = False

    def write(self, line: str) -> None:
        if self.table is not None:
            self.table.write_above(line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


class _OutputLogger:
    """A structlog logger that hands rendered lines to an :class:`_Output`."""

    def __init__(self, output: _Output) -> None:
        self._output = output

    def msg(self, message: str) -> None:
        self._output.write(message)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StdlibToStructlog(logging.Handler):
    """Sends stdlib ``logging`` records (from libraries such as watchdog) into the event stream.

    So that with ``--log-format json`` every line on stderr is a JSON event.
    Python warnings arrive here too (``logging.captureWarnings``), on the
    logger ``py.warnings``, and become ``python_warning`` events.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            message = record.getMessage()
            warning = _WARNING_TEXT.match(message) if record.name == "py.warnings" else None
            if warning is not None:
                log.log(
                    record.levelno,
                    "python_warning",
                    logger=record.name,
                    category=warning["category"],
                    message=warning["message"],
                    file=warning["file"],
                    line=int(warning["line"]),
                )
            else:
                log.log(record.levelno, message, logger=record.name)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


#: ``warnings.formatwarning``'s text, as ``logging.captureWarnings`` hands it on.
_WARNING_TEXT = re.compile(
    r"(?P<file>.*?):(?P<line>\d+): (?P<category>[\w.]+): (?P<message>.*?)(?:\n|$)", re.DOTALL
)


def _configure_logging(output: _Output, log_format: str, level: str) -> None:
    if log_format == "auto":
        log_format = "pretty" if _isatty(output.stream) else "json"
    output.json = log_format == "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(output.stream)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _OutputLogger(output),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_StdlibToStructlog()]
    root.setLevel(_LEVELS[level])
    # Python warnings (a node's DeprecationWarning, ...) join the event stream as
    # python_warning events instead of plain text on stderr.
    logging.captureWarnings(True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- the live table ----------------------------------------------------------------------

_HEADERS = ("node", "status", "received", "sent", "queued", "rate/s", "errors")


#: Seconds of statistics the live table compares to find the bottleneck.
BOTTLENECK_WINDOW = 2.0


def _bottleneck(
    stats: PipelineStatistics, previous: PipelineStatistics | None = None
) -> str | None:
    """The slow node: its inbox is full(est) while its own outputs have room.

    A node whose inbox fills because it waits for room downstream is a
    victim, not the cause: over the window since ``previous`` it spent at
    least half of the time blocked (``blocked_seconds``, the wait going on
    included), so it is passed over, and the node it waits for is named.
    """
    window = stats.elapsed - previous.elapsed if previous is not None else 0.0
    best: tuple[float, int, str] | None = None
    for name, node in stats.items():
        if not (node.inbox_capacity and node.inbox_queued and node.status == "running"):
            continue
        before = previous.nodes.get(name) if previous is not None else None
        if window > 0 and before is not None:
            if node.blocked_seconds - before.blocked_seconds >= window / 2:
                continue
        key = (node.inbox_queued / node.inbox_capacity, node.inbox_queued, name)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best is not None else None


def render_table(
    stats: PipelineStatistics,
    *,
    color: bool = False,
    previous: PipelineStatistics | None = None,
) -> list[str]:
    """The per-node table ``nanostream run`` shows on a terminal, as lines.

    Columns: received (``items_in``), sent (``items_out``), queued (inbox
    items / capacity), rate (items per second), status, and errors (items
    skipped or dead-lettered). The bottleneck (see :func:`_bottleneck`; over
    the window since ``previous``) is marked, in reverse video with ``color``.
    """
    bottleneck = _bottleneck(stats, previous)
    rows: list[tuple[str, ...]] = [_HEADERS]
    for name, node in stats.items():
        rows.append(_row(name, node))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = [f"pipeline {stats.name!r}: {stats.status}, {stats.elapsed:.1f} s"]
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        line = "  ".join(cells)
        if index > 0 and row[0] == bottleneck:
            line += "  <- bottleneck"
            if color:
                line = f"\x1b[7m{line}\x1b[0m"
        lines.append(line)
    return lines


def _row(name: str, node: NodeStatistics) -> tuple[str, ...]:
    queued = f"{node.inbox_queued}/{node.inbox_capacity}" if node.inbox_capacity else "-"
    received = "-" if node.role == "source" else str(node.items_in)
    return (
        name,
        node.status,
        received,
        str(node.items_out),
        queued,
        f"{node.rate:.1f}",
        str(node.skipped + node.dead_lettered),
    )


class LiveTable:
    """Keeps the table at the bottom of a terminal, with other lines scrolling above it.

    Event lines (stderr) and, when stdout is the same terminal, printed lines
    (through :class:`_TableStdout`) are written *above* the table: erase it,
    write, draw it again. Writes may come from worker threads (a blocking node
    printing), hence the lock; they redraw the last rendered table, and only
    :meth:`refresh`, on the Trio thread, reads fresh statistics.
    """

    def __init__(self, stream: TextIO, pipeline: Pipeline, *, color: bool) -> None:
        self._stream = stream
        self._pipeline = pipeline
        self._color = color
        self._drawn = 0
        self._lines: list[str] = []
        self._lock = threading.Lock()
        # Snapshots of the last BOTTLENECK_WINDOW seconds: the oldest is the
        # window's start when the bottleneck is judged.
        self._history: collections.deque[PipelineStatistics] = collections.deque(maxlen=64)

    def write_above(self, text: str, stream: TextIO | None = None) -> None:
        """Write ``text`` (whole lines, without the last newline) above the table."""
        with self._lock:
            self._erase()
            out = stream or self._stream
            out.write(text + "\n")
            out.flush()
            self._draw()

    def refresh(self) -> None:
        """Draw the table again with the pipeline's current statistics."""
        stats = self._pipeline.statistics()
        history = self._history
        while len(history) > 1 and stats.elapsed - history[1].elapsed >= BOTTLENECK_WINDOW:
            history.popleft()
        previous = history[0] if history else None
        history.append(stats)
        lines = render_table(stats, color=self._color, previous=previous)
        with self._lock:
            self._lines = lines
            self._erase()
            self._draw()

    def _erase(self) -> None:
        if self._drawn:
            # Cursor to the start of the table's first line, then clear below.
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if self._lines:
            self._stream.write("\n".join(self._lines) + "\n")
        self._stream.flush()
        self._drawn = len(self._lines)


class _TableStdout(io.TextIOBase):
    """``sys.stdout`` while the table is shown on the same terminal: lines go above it."""

    def __init__(self, table: LiveTable, real: TextIO) -> None:
        self._table = table
        self._real = real
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._table.write_above(complete, self._real)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def close_pending(self) -> None:
        """Write a last partial line, if any."""
        if self._pending:
            self._table.write_above(self._pending, self._real)
            self._pending = ""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._real.encoding


# -- run ------------------------------------------------------------------------------


class _Ready:
    """A ``task_status`` for :meth:`Pipeline.run` that announces readiness as an event."""

    def __init__(self, pipeline: Pipeline, log: Any) -> None:
        self._pipeline = pipeline
        self._log = log

    def started(self, value: None = None) -> None:
        self._log.info("pipeline_ready", nodes=[node.name for node in self._pipeline.nodes])


def _exit_now(log: Any, reason: str, signal_name: str | None = None) -> NoReturn:
    """End the process with status 130 without waiting for anything (see ``CANCEL_GRACE``).

    Worker threads stuck in a blocking call (a ``blocking`` node in
    ``time.sleep``, a read that never returns) cannot be interrupted, and a
    normal exit would wait for them; so this flushes stdout and stderr and
    calls :func:`os._exit`. ``teardown`` hooks still pending do not run.
    """
    with contextlib.suppress(Exception):
        if signal_name is not None:
            log.warning("signal_received", signal=signal_name, action="exit")
        log.error("exiting_now", reason=reason, status=EXIT_CANCELLED)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(EXIT_CANCELLED)


class _Escalation:
    """Counts SIGINT/SIGTERM in a plain signal handler, so escalation needs no Trio loop.

    Installed on top of Trio's own handler (which it calls on, so the
    ``_watch_signals`` task still sees every signal): the second signal starts
    the ``CANCEL_GRACE`` timer and the third exits, even while a node's sync
    code blocks the Trio thread and no task can run. Python runs the handler
    in the main thread as soon as the current bytecode (or interrupted system
    call, such as ``time.sleep``) returns. The handler itself only starts
    threads: logging from it could wait on a lock the code it interrupted holds.
    """

    def __init__(self, log: Any) -> None:
        self._log = log
        self._received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Escalation:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self._received += 1
        if self._received == 2:
            # A thread, not a Trio timer: it must fire even if the Trio thread is blocked,
            # or the run ended with worker threads still stuck and the interpreter waits.
            timer = threading.Timer(CANCEL_GRACE, _exit_now, args=(self._log, "grace_period_over"))
            timer.daemon = True
            timer.start()
        elif self._received >= 3:
            name = signal.Signals(signum).name
            thread = threading.Thread(
                target=_exit_now, args=(self._log, "third_signal", name), daemon=True
            )
            thread.start()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)


async def _watch_signals(signals: Any, pipeline: Pipeline, log: Any) -> None:
    """First signal: stop; second: cancel (a third is :class:`_Escalation`'s)."""
    received = 0
    async for signum in signals:
        received += 1
        if received > 2:
            continue  # _Escalation is already ending the process
        action = "stop" if received == 1 else "cancel"
        log.warning("signal_received", signal=signal.Signals(signum).name, action=action)
        if received == 1:
            pipeline.stop()
        else:
            pipeline.cancel()


async def _refresh_table(table: LiveTable) -> None:
    while True:
        table.refresh()
        await trio.sleep(TABLE_REFRESH)


async def _supervise(
    pipeline: Pipeline, log: Any, table: LiveTable | None, after_run: AfterRun
) -> PipelineStatistics:
    """Run ``pipeline`` with signal handling (and the table's redraws)."""
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        _Escalation(log),
    ):
        # The receiver hands the signals back to ``after_run`` when it closes.
        after_run.arm()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, pipeline, log)
            if table is not None:
                nursery.start_soon(_refresh_table, table)
            try:
                return await pipeline.run(task_status=_Ready(pipeline, log))
            finally:
                nursery.cancel_scope.cancel(reason="pipeline ended")


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _run_to_status(
    pipeline: Pipeline, output: _Output, table: LiveTable | None, *, full_traceback: bool = False
) -> int:
    log = structlog.get_logger("nanostream_trio.cli").bind(pipeline=pipeline.name)
    output.table = table
    real_stdout = sys.stdout
    table_stdout = None
    if table is not None and _isatty(real_stdout):
        # Printed lines on the same terminal must go above the table, not under it.
        sys.stdout = table_stdout = _TableStdout(table, real_stdout)
    # Installed for the rest of the process: a signal after the run ends is logged
    # and leaves the run's exit status as it is (see _signals).
    after_run = AfterRun(log)
    after_run.install()
    try:
        summary = trio.run(_supervise, pipeline, log, table, after_run)
    except BaseException as raised:
        exc = _single(raised)
        if isinstance(exc, KeyboardInterrupt):
            after_run.settle(EXIT_CANCELLED)
            raise exc from None
        if not isinstance(exc, Exception):
            raise
        after_run.settle(EXIT_FAILED)
        _finish_table(output)
        _report_failure(output, log, f"pipeline {pipeline.name!r}", exc, full_traceback)
        return EXIT_FAILED
    finally:
        if table_stdout is not None:
            table_stdout.close_pending()
            sys.stdout = real_stdout
    _finish_table(output)
    status = _summary_status(summary)
    after_run.settle(status)
    return status


def _summary_status(summary: PipelineStatistics) -> int:
    if summary.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_OK if summary.status == "finished" else EXIT_FAILED


_NOTE_NODE = re.compile(r"in nanostream node ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def _failed_node(exc: BaseException) -> str | None:
    """The node a failure came from, as the engine's note names it (``in nanostream node 'x'``)."""
    for note in getattr(exc, "__notes__", ()):
        match = _NOTE_NODE.search(str(note))
        if match is not None:
            with contextlib.suppress(ValueError, SyntaxError):
                name = ast.literal_eval(match.group(1))
                if isinstance(name, str):
                    return name
    return None


def _report_failure(
    output: _Output, log: Any, what: str, exc: BaseException, full_traceback: bool
) -> None:
    """The last word on a failed run: plain lines, or a ``run_failed`` event in JSON mode."""
    if output.json:
        fields: dict[str, Any] = {
            "error": str(exc),
            "exc_type": type(exc).__name__,
            "node": _failed_node(exc),
            "notes": [str(note) for note in getattr(exc, "__notes__", ())],
        }
        if full_traceback:
            fields["traceback"] = "".join(traceback.format_exception(exc))
        log.error("run_failed", **fields)
        return
    if full_traceback:
        traceback.print_exception(exc, file=sys.stderr)
    lines = traceback.format_exception_only(exc)
    print(f"nanostream: {what} failed: {''.join(lines).rstrip()}", file=sys.stderr)


def _finish_table(output: _Output) -> None:
    table = output.table
    if table is not None:
        table.refresh()  # the final counts stay on screen
        output.table = None


def _cmd_run(args: argparse.Namespace) -> int:
    output = _Output(sys.stderr)
    _configure_logging(output, args.log_format, args.log_level)
    loaded = read_pipeline(args.file, modules=args.module)
    if args.metrics is not None:
        loaded.pipeline.metrics = args.metrics
    try:
        if args.checkpoint is not None:
            loaded.pipeline.checkpoint = args.checkpoint
        if args.checkpoint_interval is not None:
            if loaded.pipeline.checkpoint is None:
                _error("--checkpoint-interval needs a checkpoint store: give --checkpoint PATH")
                return EXIT_USAGE
            loaded.pipeline.checkpoint_interval = args.checkpoint_interval
    except ConfigError as exc:
        _error(f"--{exc.key.replace('_', '-') if exc.key else 'checkpoint'}: {exc}")
        return EXIT_USAGE
    # The same setup checks as `nanostream check`: a missing input directory
    # is reported at its line in the file before anything starts.
    problems = [finding for finding in check_setup(loaded) if not finding.warning]
    for finding in problems:
        print(f"nanostream: error: {finding.error}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    show_table = args.table == "always" or (args.table == "auto" and _isatty(sys.stderr))
    table = (
        LiveTable(sys.stderr, loaded.pipeline, color=_isatty(sys.stderr)) if show_table else None
    )
    return _run_to_status(loaded.pipeline, output, table, full_traceback=args.traceback)


# -- check, graph, nodes ---------------------------------------------------------------


def _links(pipeline: Pipeline) -> list[tuple[NanoNode, NanoNode, str]]:
    links: list[tuple[NanoNode, NanoNode, str]] = []
    for node in pipeline.nodes:
        links.extend((node, target, "main") for target in node.downstream)
        links.extend((node, target, "dead_letters") for target in node.dead_letters.downstream)
    return links


def _cmd_check(args: argparse.Namespace) -> int:
    loaded = read_pipeline(args.file, modules=args.module)
    findings = check_setup(loaded)
    for finding in findings:
        kind = "warning" if finding.warning else "error"
        print(f"nanostream: {kind}: {finding.error}", file=sys.stderr)
    errors = sum(not finding.warning for finding in findings)
    if errors:
        _error(f"{args.file}: {errors} setup problem{'s' if errors > 1 else ''} (see above)")
        return EXIT_USAGE
    pipeline = loaded.pipeline
    sources = [node.name for node in pipeline.nodes if node.is_source]
    warnings = len(findings)
    noted = f" ({warnings} warning{'s' if warnings > 1 else ''})" if warnings else ""
    print(
        f"{args.file}: ok: pipeline {pipeline.name!r} with {len(pipeline.nodes)} nodes, "
        f"{len(_links(pipeline))} links, sources: {', '.join(sources) or 'none'}{noted}"
    )
    return EXIT_OK


@dataclasses.dataclass
class _Group:
    """A node of the file that stands for several running nodes: one subgraph."""

    title: str
    members: list[NanoNode | _Group]


def _graph_parts(node: NanoNode, kinds: dict[int, str]) -> NanoNode | _Group:
    """``node`` itself, or the group of nodes it runs as (composites and staged built-ins).

    Fills ``kinds`` with the second label line of each stage of a staged
    built-in node: its role, since the stage classes are private.
    """
    title = f"{node.name} ({type(node).__name__})"
    if isinstance(node, _CompositeNode):
        inner = node.inner_nodes.values()
        return _Group(title, [_graph_parts(member, kinds) for member in inner])
    stages: tuple[tuple[str, NanoNode], ...] | None = getattr(node, "_ns_stages", None)
    if stages is not None:  # CSVReader, Batch, TumblingWindow: see nodes/_stages.py
        for role, stage in stages:
            kinds[id(stage)] = f"{role} stage"
        return _Group(title, [_graph_parts(stage, kinds) for _, stage in stages])
    return node


def _graph_tree(loaded: PipelineFile) -> tuple[list[NanoNode | _Group], dict[int, str]]:
    """What to draw: the groups (in file order), then the other nodes (upstream first)."""
    kinds: dict[int, str] = {}
    parts = [_graph_parts(node, kinds) for node in loaded.nodes.values()]
    groups: list[NanoNode | _Group] = [part for part in parts if isinstance(part, _Group)]
    grouped = {id(leaf) for group in groups for leaf in _drawn_leaves(group)}
    return [*groups, *(n for n in loaded.pipeline.nodes if id(n) not in grouped)], kinds


def _drawn_leaves(part: NanoNode | _Group) -> list[NanoNode]:
    if isinstance(part, _Group):
        return [leaf for member in part.members for leaf in _drawn_leaves(member)]
    return [part]


def render_mermaid(loaded: PipelineFile) -> str:
    """The pipeline's graph as a Mermaid flowchart."""
    pipeline = loaded.pipeline
    ids = {id(node): f"n{index}" for index, node in enumerate(pipeline.nodes)}
    tree, kinds = _graph_tree(loaded)
    group_ids = itertools.count()

    def label(text: str) -> str:
        return text.replace('"', "#quot;")

    lines = ["flowchart LR"]

    def draw(part: NanoNode | _Group, indent: str) -> None:
        if isinstance(part, _Group):
            lines.append(f'{indent}subgraph g{next(group_ids)}["{label(part.title)}"]')
            for member in part.members:
                draw(member, indent + "    ")
            lines.append(f"{indent}end")
            return
        kind = kinds.get(id(part), type(part).__name__)
        lines.append(f'{indent}{ids[id(part)]}["{label(part.name)}<br/>{label(kind)}"]')

    for part in tree:
        draw(part, "    ")
    for upstream, downstream, port in _links(pipeline):
        arrow = "-->" if port == "main" else "-.->|dead_letters|"
        lines.append(f"    {ids[id(upstream)]} {arrow} {ids[id(downstream)]}")
    return "\n".join(lines) + "\n"


def render_dot(loaded: PipelineFile) -> str:
    """The pipeline's graph in Graphviz DOT."""
    pipeline = loaded.pipeline
    tree, kinds = _graph_tree(loaded)
    cluster_ids = itertools.count()

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quote(pipeline.name)} {{", "    rankdir=LR;", "    node [shape=box];"]

    def draw(part: NanoNode | _Group, indent: str) -> None:
        if isinstance(part, _Group):
            lines.append(f"{indent}subgraph cluster_{next(cluster_ids)} {{")
            lines.append(f"{indent}    label={quote(part.title)};")
            for member in part.members:
                draw(member, indent + "    ")
            lines.append(f"{indent}}}")
            return
        kind = kinds.get(id(part), type(part).__name__)
        # Two quoted parts joined by DOT's own line-break escape.
        node_label = f"{quote(part.name)[:-1]}\\n{quote(kind)[1:]}"
        lines.append(f"{indent}{quote(part.name)} [label={node_label}];")

    for part in tree:
        draw(part, "    ")
    for upstream, downstream, port in _links(pipeline):
        style = "" if port == "main" else ' [style=dashed, label="dead_letters"]'
        lines.append(f"    {quote(upstream.name)} -> {quote(downstream.name)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cmd_graph(args: argparse.Namespace) -> int:
    loaded = read_pipeline(args.file, modules=args.module)
    render = render_mermaid if args.format == "mermaid" else render_dot
    sys.stdout.write(render(loaded))
    return EXIT_OK


def _kind(cls: type[NanoNode]) -> str:
    if issubclass(cls, _CompositeNode):
        return "composite"
    if cls._ns_kind == "abstract":
        return "composite" if getattr(cls, "_ns_allow_abstract", False) else "abstract"
    return cls._ns_kind


def describe_node_types() -> list[str]:
    """``nanostream nodes``: one entry per registered, usable node class."""
    with contextlib.suppress(ImportError):
        from . import nodes  # noqa: F401 - registers the built-in nodes

    lines: list[str] = []
    for name in sorted(registered_nodes(), key=str.lower):
        classes = registered_nodes()[name]
        latest = {(c.__module__, c.__qualname__): c for c in classes}
        for cls in latest.values():
            kind = _kind(cls)
            if kind == "abstract" or cls.__module__.startswith("nanostream_trio._"):
                continue
            if kind == "composite" and "__init__" not in vars(cls):
                continue  # a composite base class, not a node type of its own
            qualified = f"{cls.__module__}:{cls.__qualname__}" if len(latest) > 1 else name
            lines.append(f"{qualified}  [{kind}]  ({cls.__module__})")
            own_doc = vars(cls).get("__doc__")  # not NanoNode's, inherited
            doc = inspect.cleandoc(own_doc) if isinstance(own_doc, str) else ""
            if doc:
                lines.append(f"    {doc.splitlines()[0]}")
            params, open_ended = class_parameters(cls)
            shown = [
                p.name if p.required else f"{p.name}={p.default!r}"
                for p in params
                if p.name != "name" and p.name not in ("on_error", "retry", "capacity", "blocking")
            ]
            if open_ended:
                shown.append("**kwargs (any further argument is passed to the class unchecked)")
            lines.append(f"    arguments: {', '.join(shown) if shown else 'none'}")
    return lines


def _cmd_nodes(args: argparse.Namespace) -> int:
    print("\n".join(describe_node_types()))
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------

_DEMO_FRUIT = ("apple", "banana", "cherry", "damson", "elderberry", "fig", "grape", "kiwi")


def _demo_printer(printer_class: type[NanoNode], expected: int) -> Any:
    """A PrinterOfThings that also sets ``all_printed`` once ``expected`` rows went by."""

    class _DemoPrinter(printer_class):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__(prepend="row: ", stream=sys.stdout, name="PrinterOfThings")
            self.all_printed = trio.Event()
            self.printed = 0

        def process_item(self, item: Any) -> Any:
            result = super().process_item(item)
            self.printed += 1
            if self.printed >= expected:
                self.all_printed.set()
            return result

    return _DemoPrinter()


def _write_csv(directory: Path, staging: Path, index: int, rows: int) -> None:
    """Write one CSV file into ``staging`` and move it into ``directory`` in one step."""
    name = f"fruit-{index + 1}.csv"
    staged = staging / name
    with staged.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "row", "fruit", "quantity"])
        for row in range(rows):
            fruit = _DEMO_FRUIT[(index * rows + row) % len(_DEMO_FRUIT)]
            writer.writerow([name, row + 1, fruit, (index + 1) * (row + 2)])
    # A rename is atomic: the watcher never sees a half-written file.
    os.replace(staged, directory / name)


async def _demo(
    args: argparse.Namespace, log: Any, after_run: AfterRun
) -> tuple[PipelineStatistics, int]:
    from .nodes import CSVReader, LocalDirectoryWatchdog, LocalFileReader, PrinterOfThings

    with tempfile.TemporaryDirectory(prefix="nanostream-demo-") as temp:
        directory = Path(temp) / "data_directory"
        staging = Path(temp) / "staging"
        directory.mkdir()
        staging.mkdir()
        watchdog = LocalDirectoryWatchdog(directory=str(directory), pattern="*.csv", settle=0.2)
        file_reader = LocalFileReader(serialize=False)
        csv_reader = CSVReader()
        printer = _demo_printer(PrinterOfThings, args.files * args.rows)
        watchdog > file_reader > csv_reader > printer
        pipeline = Pipeline(watchdog, name="demo", stats_interval=None)
        summary: list[PipelineStatistics] = []
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            _Escalation(log),
        ):
            after_run.arm()
            async with trio.open_nursery() as nursery:

                async def run_pipeline(task_status: trio.TaskStatus[None]) -> None:
                    summary.append(await pipeline.run(task_status=task_status))
                    nursery.cancel_scope.cancel(reason="demo pipeline ended")

                nursery.start_soon(_watch_signals, signals, pipeline, log)
                await nursery.start(run_pipeline)
                log.info("pipeline_ready", nodes=[node.name for node in pipeline.nodes])
                await _feed_demo(args, pipeline, directory, staging, printer, log)
        return summary[0], summary[0][printer.name].items_in


async def _feed_demo(
    args: argparse.Namespace,
    pipeline: Pipeline,
    directory: Path,
    staging: Path,
    printer: Any,
    log: Any,
) -> None:
    """Drop the demo's files, wait for their rows, then stop (unless told to keep running)."""
    print(f"nanostream demo: watching {directory}", flush=True)
    for index in range(args.files):
        print(f"nanostream demo: dropping fruit-{index + 1}.csv", flush=True)
        _write_csv(directory, staging, index, args.rows)
    expected = args.files * args.rows
    with trio.move_on_after(args.timeout):
        await printer.all_printed.wait()
    received = pipeline.statistics()[printer.name].items_in
    if received < expected:
        log.warning("demo_rows_missing", expected=expected, received=received)
    if args.keep_running and pipeline.status == "running":
        print(f"nanostream demo: drop more CSV files into {directory}; Ctrl-C to stop", flush=True)
    else:
        pipeline.stop()


async def _demo_api(
    args: argparse.Namespace, log: Any, after_run: AfterRun
) -> tuple[PipelineStatistics, int]:
    from ._demo_api import build_api_demo, serving_catalogue

    def show(row: Any) -> None:
        print(f"row: {row}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="nanostream-demo-") as temp,
        serving_catalogue(args.products) as base_url,
    ):
        database = Path(temp) / "products.db"
        print(f"nanostream demo api: serving {base_url}/products", flush=True)
        pipeline = build_api_demo(base_url, database, show)
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            _Escalation(log),
        ):
            after_run.arm()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, signals, pipeline, log)
                summary = await pipeline.run()
                nursery.cancel_scope.cancel(reason="demo pipeline ended")
        rows = await trio.to_thread.run_sync(_count_rows, database)
        print(
            f"nanostream demo api: {summary.status}: {summary['HttpPoll'].items_out} pages, "
            f"{rows} products upserted into {database.name} in {summary.elapsed:.1f} s",
            flush=True,
        )
        return summary, rows


def _count_rows(database: Path) -> int:
    import sqlite3

    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM products").fetchone()
    return int(count)


def _cmd_demo(args: argparse.Namespace) -> int:
    output = _Output(sys.stderr)
    if args.which == "api":
        from ._demo_api import missing_httpx

        problem = missing_httpx()
        if problem is not None:
            print(problem, file=sys.stderr, flush=True)
            return EXIT_FAILED
    _configure_logging(output, args.log_format, args.log_level)
    log = structlog.get_logger("nanostream_trio.cli").bind(pipeline="demo")
    after_run = AfterRun(log)
    after_run.install()
    try:
        if args.which == "api":
            summary, rows = trio.run(_demo_api, args, log, after_run)
        else:
            summary, rows = trio.run(_demo, args, log, after_run)
    except BaseException as raised:
        exc = _single(raised)
        if isinstance(exc, KeyboardInterrupt):
            after_run.settle(EXIT_CANCELLED)
            raise exc from None
        if not isinstance(exc, Exception):
            raise
        after_run.settle(EXIT_FAILED)
        _report_failure(output, log, "demo", exc, False)
        return EXIT_FAILED
    status = _demo_report(args, summary, rows)
    after_run.settle(status)
    return status


def _demo_api_status(args: argparse.Namespace, summary: PipelineStatistics, rows: int) -> int:
    if summary.status == "cancelled":
        return EXIT_CANCELLED
    if summary.status != "finished" or rows != args.products:
        return EXIT_FAILED
    return EXIT_OK


def _demo_report(args: argparse.Namespace, summary: PipelineStatistics, rows: int) -> int:
    """Print the demo's last line; return its exit status."""
    if args.which == "api":
        return _demo_api_status(args, summary, rows)  # its last line is printed already
    print(
        f"nanostream demo: {summary.status}: {rows} rows from {args.files} files "
        f"in {summary.elapsed:.1f} s",
        flush=True,
    )
    if summary.status == "cancelled":
        return EXIT_CANCELLED
    expected = args.files * args.rows
    if summary.status != "finished" or (rows < expected and not args.keep_running):
        return EXIT_FAILED
    return EXIT_OK
