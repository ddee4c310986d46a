"""Structured-log ingestion: tail JSON logs, keep warnings and errors, count them per
level per minute, write the counts as JSON lines and show them on the terminal.

Run it with::

    python examples/log_ingestion/run.py [--log PATH] [--out PATH] [--follow]

By default it reads the bundled ``sample.jsonl`` (made by
``generate_sample.py``) to its end and writes ``counts.jsonl`` in the current
directory. With ``--follow`` it keeps following the log like ``tail -F``
(rotation included), with the pipeline's checkpoints in ``<out>.state.db`` (the
read position and the open windows' counts), so a restart continues where the
last checkpoint was taken; Ctrl-C stops it gracefully, with a last checkpoint.

Windows are minutes of the records' own timestamps (event time), so replaying
an old file gives the same counts as following it live. Records may arrive up
to ``LATENESS`` seconds out of order (several files through a glob, or a
process that writes late) and still count in their minute. A line that is not
JSON is reported on stderr with its file and line number, and so is a record
without a usable ``timestamp`` or one later than ``LATENESS``; the rest flow.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from nanostream_trio import DeadLetter, Pipeline
from nanostream_trio.nodes import (
    Filter,
    JSONLinesParser,
    JSONLinesWriter,
    Map,
    PrinterOfThings,
    TailFile,
    TumblingWindow,
    WindowResult,
)

SAMPLE = Path(__file__).with_name("sample.jsonl")
KEPT_LEVELS = frozenset({"warning", "error", "critical"})
#: Seconds a record may arrive behind the newest one and still count in its minute.
LATENESS = 300.0


def is_warning_or_worse(record: Any) -> bool:
    """Whether a parsed record is a warning, an error or critical."""
    return isinstance(record, dict) and record.get("level") in KEPT_LEVELS


def event_time(record: dict[str, Any]) -> float:
    """The record's ISO 8601 ``timestamp`` as seconds since the epoch.

    Raises:
        ValueError: no ``timestamp``, or not an ISO 8601 string (the record is
            then reported as a bad line, and the others still count).
    """
    stamp = record.get("timestamp")
    if not isinstance(stamp, str):
        msg = f"record has no ISO 8601 'timestamp' string (got {stamp!r})"
        raise ValueError(msg)
    moment = datetime.datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)  # naive times are taken as UTC
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def as_record(result: WindowResult) -> dict[str, Any]:
    """A window count as the JSON object written to the output file."""
    return {
        "minute": _iso(result.start),
        "level": result.key,
        "count": result.value,
    }


def as_text(result: WindowResult) -> str:
    """A window count as one line for the terminal."""
    start = datetime.datetime.fromtimestamp(result.start, datetime.UTC)
    return f"{start:%Y-%m-%d %H:%M}  {result.key:<8} {result.value:>4}"


def describe_bad_line(letter: DeadLetter) -> str:
    """A line for stderr about a log line that could not be parsed or counted."""
    if letter.node == "per_minute":
        return f"record not counted: {letter.message.splitlines()[0]}: {letter.item!r}"
    return f"bad log line: {letter.message}"


def build_pipeline(
    log: str | Path = SAMPLE,
    out: str | Path = "counts.jsonl",
    *,
    follow: bool = False,
    checkpoint: str | Path | None = None,
    stream: TextIO | None = None,
    errors: TextIO | None = None,
) -> Pipeline:
    """tail > parse > keep warnings and errors > count per level per minute > write and print.

    Args:
        log: the log file (or a glob of files) to read.
        out: the JSON Lines file the counts are appended to.
        follow: keep following the log instead of stopping at its end.
        checkpoint: the pipeline's checkpoint store (a SQLite file), to continue
            from the last checkpoint after a restart; ``None`` keeps none.
        stream: where counts are printed (default ``sys.stdout``).
        errors: where bad log lines are reported (default ``sys.stderr``).

    Returns:
        The pipeline, ready for ``pipeline.start()`` or ``await pipeline.run()``.
    """
    tail = TailFile(log, follow=follow, name="tail")
    parse = JSONLinesParser(name="parse")
    keep = Filter(is_warning_or_worse, name="warnings_and_errors")
    per_minute = TumblingWindow(
        60,
        key=lambda record: record["level"],
        timestamp=event_time,
        allowed_lateness=LATENESS,
        on_error="dead_letter",
        name="per_minute",
    )
    tail > parse > keep > per_minute
    per_minute > Map(as_record, name="as_record") > JSONLinesWriter(out, name="write")
    per_minute > Map(as_text, name="as_text") > PrinterOfThings(stream=stream, name="show")
    describe = Map(describe_bad_line, name="describe_bad_line")
    parse.dead_letters > describe
    per_minute.dead_letters > describe
    describe > PrinterOfThings(stream=errors or sys.stderr, name="bad_lines")
    if checkpoint is None:
        return Pipeline(tail, name="log_ingestion")
    return Pipeline(tail, name="log_ingestion", checkpoint=checkpoint, checkpoint_interval=5.0)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the pipeline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", default=str(SAMPLE), help="log file or glob (default: sample)")
    parser.add_argument("--out", default="counts.jsonl", help="output JSON Lines file")
    parser.add_argument("--follow", action="store_true", help="keep following the log")
    args = parser.parse_args(argv)
    # This script is the application: engine events to stderr, warnings and up.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    checkpoint = f"{args.out}.state.db" if args.follow else None
    print("minute            level    count", flush=True)
    pipeline = build_pipeline(args.log, args.out, follow=args.follow, checkpoint=checkpoint)
    summary = pipeline.start()
    bad = summary["parse"].dead_lettered + summary["per_minute"].dead_lettered
    print(
        f"read {summary['tail'].items_out} lines, kept {summary['warnings_and_errors'].items_out}, "
        f"{bad} bad; counts appended to {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
