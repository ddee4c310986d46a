"""The seed README's headline pipeline: watch a directory, read new CSV files, print their rows.

Run it with::

    python examples/csv_watch/run.py [DIRECTORY]

(default ``./data_directory``, created if missing), then drop a CSV file into
the directory, for instance ``cp examples/csv_watch/people.csv data_directory/``.
Each row is printed once the file is complete: on Linux when its writer
closes it, elsewhere once it has not changed for ``settle`` seconds. A
program producing the files should write each under a temporary name (say
``x.csv.tmp``) and rename it to ``x.csv`` when done: that is always safe.
Files already in the directory are read at start. Ctrl-C stops gracefully:
rows already read are printed before the program exits.

A malformed row is reported on stderr with its file and line, and the other
rows keep flowing; so is a file that cannot be read. :func:`build_pipeline`
builds the same pipeline for other programs (``nanostream demo`` uses it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

from nanostream_trio import DeadLetter, Pipeline
from nanostream_trio.nodes import (
    CSVReader,
    LocalDirectoryWatchdog,
    LocalFileReader,
    Map,
    PrinterOfThings,
)


def describe_problem(letter: DeadLetter) -> str:
    """One readable line for a file or row that could not be used."""
    return f"skipped: {letter.message}"


def build_pipeline(
    directory: str | Path,
    *,
    stream: TextIO | None = None,
    errors: TextIO | None = None,
    settle: float = 0.2,
    initial_scan: bool = True,
) -> Pipeline:
    """The headline pipeline on ``directory``: watchdog > file reader > CSV reader > printer.

    Args:
        directory: the directory to watch (it must exist).
        stream: where rows are printed (default ``sys.stdout``).
        errors: where unreadable files and malformed rows are reported
            (default ``sys.stderr``).
        settle: seconds a file must stay unchanged (on Linux: after its writer
            closed it) before it is read.
        initial_scan: also read the CSV files already in the directory.

    Returns:
        The pipeline, ready for ``pipeline.start()`` or ``await pipeline.run()``.
    """
    watchdog = LocalDirectoryWatchdog(
        directory=directory,
        pattern="*.csv",
        settle=settle,
        initial_scan=initial_scan,
        name="watchdog",
    )
    file_reader = LocalFileReader(serialize=False, name="file_reader")
    csv_reader = CSVReader(name="csv_reader")
    printer = PrinterOfThings(prepend="row: ", stream=stream, name="printer")
    watchdog > file_reader > csv_reader > printer

    problems = Map(describe_problem, name="describe_problem")
    file_reader.dead_letters > problems
    csv_reader.dead_letters > problems
    problems > PrinterOfThings(stream=errors or sys.stderr, name="problems")
    return Pipeline(watchdog, name="csv_watch")


def main(argv: list[str] | None = None) -> None:
    """Watch the directory given on the command line until interrupted."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "data_directory")
    directory.mkdir(parents=True, exist_ok=True)
    # The library never configures logging; this script is the application:
    # engine events go to stderr, warnings and up only, so the rows stay readable.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(f"watching {directory.resolve()} for CSV files (Ctrl-C to stop)", flush=True)
    summary = build_pipeline(directory).start()
    rows = summary["csv_reader"].items_out
    print(f"stopped: {rows} rows printed", flush=True)


if __name__ == "__main__":
    main()
