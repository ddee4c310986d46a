"""The real workloads of issue 9, on generated files, each as a user would write it.

Every system here is a function ``(files, scratch) -> (seconds, result)``:
``files`` maps ``"text"``, ``"json"`` and ``"csv"`` to the generated inputs
(see ``datafiles.py``), ``scratch`` is a directory for outputs. ``result`` is
what the caller compares between a system and its limit (counts, or the
output's digest), so a system that drops, duplicates or reorders anything
fails the run.

The nanostream-trio systems use default options throughout: ``Pipeline(...)``
with its monitoring on (statistics every 10 s, the stall watchdog), nodes
without tuning, sync sources in their worker thread. The limits are the plain
scripts a user would otherwise write; the floors are the same shape written by
hand in bare Trio (a reader task handing lists of lines over a memory channel
to a consumer task), which is what an engine on Trio could at best do.

The Bytewax rows (an optional peer, ``pip install -e .[bench]``) build the
same jobs the way its documentation shows: a ``Dataflow`` of
``bytewax.operators`` steps from a ``FileSource``/``CSVSource`` into
``FileSink``s, run in-process with ``bytewax.testing.run_main``.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from nanostream_trio import NanoNode, Pipeline
from nanostream_trio.nodes import (
    CSVReader,
    Filter,
    JSONLinesParser,
    JSONLinesWriter,
    LocalFileReader,
    TailFile,
)

Result = tuple[float, Any]
Files = dict[str, str]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "log_ingestion" / "run.py"
#: Bytes per read in the bare-Trio floors (what the issue asks the engine's readers to use).
CHUNK = 64 * 1024
#: Items per batch handed over in the bare-Trio floors, and their channel's capacity.
FLOOR_BATCH = 512
FLOOR_CAPACITY = 1


def log_ingestion_example() -> Any:
    """The ``examples/log_ingestion/run.py`` module (its ``build_pipeline`` and helpers)."""
    spec = importlib.util.spec_from_file_location("log_ingestion_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bytewax_version() -> str | None:
    """Bytewax's version if it is installed, else ``None``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("bytewax")
    except PackageNotFoundError:
        return None


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def _fresh(path: Path) -> Path:
    path.unlink(missing_ok=True)
    return path


# -- nodes a user writes ----------------------------------------------------------------


class CountingSink(NanoNode):
    """Counts what arrives: the sink of the line-reading rows."""

    def __init__(self, **kwargs: Any) -> None:
        self.count = 0
        super().__init__(**kwargs)

    def process_item(self, item: Any) -> None:
        self.count += 1


class OnePath(NanoNode):
    """A source emitting one path (a sync ``generator()``: it runs in its worker thread)."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path
        super().__init__(**kwargs)

    def generator(self) -> Any:
        yield self.path


def _run(pipeline: Pipeline) -> tuple[float, Any]:
    started = time.perf_counter()
    summary = trio.run(pipeline.run)
    return time.perf_counter() - started, summary


def _checked_count(summary: Any, sink: CountingSink) -> int:
    if summary[sink.name].items_in != sink.count:
        seen = summary[sink.name].items_in
        msg = f"statistics disagree: {sink.name} items_in={seen}, counted {sink.count}"
        raise AssertionError(msg)
    return sink.count


# -- lines: TailFile / LocalFileReader(serialize=True) -> counting sink ------------------


def lines_limit(files: Files, scratch: Path) -> Result:
    """The plain script: ``for line in f``, line ending removed, into the sink's method."""
    sink = CountingSink()
    count = sink.process_item
    started = time.perf_counter()
    with open(files["text"], encoding="utf-8", errors="replace") as handle:
        for line in handle:
            count(line.rstrip("\n"))
    return time.perf_counter() - started, sink.count


def lines_tail(files: Files, scratch: Path) -> Result:
    """``TailFile(path, follow=False) > CountingSink()``."""
    tail, sink = TailFile(files["text"], follow=False), CountingSink()
    tail > sink
    seconds, summary = _run(Pipeline(tail))
    return seconds, _checked_count(summary, sink)


def lines_file_reader(files: Files, scratch: Path) -> Result:
    """``OnePath > LocalFileReader(serialize=True) > CountingSink()``."""
    source, sink = OnePath(files["text"]), CountingSink()
    source > LocalFileReader(serialize=True) > sink
    seconds, summary = _run(Pipeline(source))
    return seconds, _checked_count(summary, sink)


def lines_trio_floor(files: Files, scratch: Path) -> Result:
    """Bare Trio: a reader task (64 KiB reads in a thread, split and decoded per chunk)
    hands lists of lines over a memory channel to a task calling the sink's method."""
    sink = CountingSink()

    async def reader(outbox: trio.MemorySendChannel[list[str]]) -> None:
        async with outbox, await trio.open_file(files["text"], "rb") as handle:
            rest = b""
            while chunk := await handle.read(CHUNK):
                chunk = rest + chunk
                end = chunk.rfind(b"\n")
                if end < 0:
                    rest = chunk
                    continue
                rest = chunk[end + 1 :]
                await outbox.send(chunk[:end].decode("utf-8", "replace").split("\n"))
            if rest:
                await outbox.send([rest.decode("utf-8", "replace")])

    async def consumer(inbox: trio.MemoryReceiveChannel[list[str]]) -> None:
        count = sink.process_item
        async with inbox:
            async for lines in inbox:
                for line in lines:
                    count(line)

    async def main() -> None:
        outbox, inbox = trio.open_memory_channel[list[str]](FLOOR_CAPACITY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, outbox)
            nursery.start_soon(consumer, inbox)

    started = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - started, sink.count


# -- JSON log: tail > JSONLinesParser(dead letters linked) > Filter > sink ----------------

KEPT_LEVELS = frozenset({"warning", "error", "critical"})


def is_warning_or_worse(record: Any) -> bool:
    """The JSON log rows' filter (the same as the log_ingestion example's)."""
    return isinstance(record, dict) and record.get("level") in KEPT_LEVELS


def json_limit(files: Files, scratch: Path) -> Result:
    """The plain script: a ``json.loads`` loop counting kept records and bad lines."""
    kept, bad = CountingSink(), CountingSink()
    keep, reject = kept.process_item, bad.process_item
    started = time.perf_counter()
    with open(files["json"], encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                reject((line, exc))
                continue
            if is_warning_or_worse(record):
                keep(record)
    return time.perf_counter() - started, (kept.count, bad.count)


def json_pipeline(files: Files, scratch: Path) -> Result:
    """``TailFile > JSONLinesParser(on_error="dead_letter") > Filter > sink``, dead letters
    linked to a counting sink."""
    tail = TailFile(files["json"], follow=False)
    parse = JSONLinesParser(on_error="dead_letter")
    kept, bad = CountingSink(), CountingSink()
    tail > parse > Filter(is_warning_or_worse) > kept
    parse.dead_letters > bad
    seconds, summary = _run(Pipeline(tail))
    return seconds, (_checked_count(summary, kept), _checked_count(summary, bad))


# -- the log_ingestion example ------------------------------------------------------------


def _read_counts(path: Path) -> list[tuple[str, str, int]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return sorted((row["minute"], row["level"], row["count"]) for row in rows)


def _lines_in(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def ingestion_pipeline(files: Files, scratch: Path) -> Result:
    """``examples/log_ingestion``'s ``build_pipeline`` on the generated log."""
    example = log_ingestion_example()
    out = _fresh(scratch / "counts-pipeline.jsonl")
    with (
        open(_fresh(scratch / "shown-pipeline.txt"), "w", encoding="utf-8") as shown,
        open(_fresh(scratch / "bad-pipeline.txt"), "w", encoding="utf-8") as bad,
    ):
        pipeline = example.build_pipeline(files["json"], out, stream=shown, errors=bad)
        seconds, summary = _run(pipeline)
    dead = summary["parse"].dead_lettered + summary["per_minute"].dead_lettered
    reported = _lines_in(scratch / "bad-pipeline.txt")
    if dead != reported:
        msg = f"log_ingestion: {dead} dead letters but {reported} lines on its error stream"
        raise AssertionError(msg)
    return seconds, (_read_counts(out), reported)


def ingestion_limit(files: Files, scratch: Path) -> Result:
    """The same job as a plain script: parse, keep warnings and worse, count per level per
    event-time minute (windows closed ``LATENESS`` s after their end, late records reported),
    write the counts as JSON lines and as text, report bad lines."""
    example = log_ingestion_example()
    lateness, event_time = example.LATENESS, example.event_time
    out = _fresh(scratch / "counts-limit.jsonl")
    windows: dict[int, dict[str, int]] = {}
    closed_below = -sys.maxsize  # windows before this index were written
    newest = -float("inf")
    path = files["json"]

    def iso(seconds: float) -> str:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()

    def write(index: int, counts: dict[str, int], records: Any, shown: Any) -> None:
        start = index * 60.0
        moment = datetime.datetime.fromtimestamp(start, datetime.UTC)
        for level, count in counts.items():
            records.write(json.dumps({"minute": iso(start), "level": level, "count": count}))
            records.write("\n")
            records.flush()
            shown.write(f"{moment:%Y-%m-%d %H:%M}  {level:<8} {count:>4}\n")

    started = time.perf_counter()
    with (
        open(path, encoding="utf-8", errors="replace") as handle,
        open(out, "a", encoding="utf-8") as records,
        open(_fresh(scratch / "shown-limit.txt"), "w", encoding="utf-8") as shown,
        open(_fresh(scratch / "bad-limit.txt"), "w", encoding="utf-8") as bad,
    ):
        for lineno, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                bad.write(f"bad log line: {path}:{lineno}: {exc}: {line!r}\n")
                continue
            if not is_warning_or_worse(record):
                continue
            try:
                moment = event_time(record)
            except ValueError as exc:
                bad.write(f"record not counted: {exc}: {record!r}\n")
                continue
            index = int(moment // 60)
            if index < closed_below:
                bad.write(f"record not counted: late by {newest - moment:.0f} s: {record!r}\n")
                continue
            level = windows.setdefault(index, {})
            level[record["level"]] = level.get(record["level"], 0) + 1
            if moment > newest:
                newest = moment
                while windows and (first := min(windows)) * 60 + 60 + lateness <= newest:
                    write(first, windows.pop(first), records, shown)
                    closed_below = first + 1
        for index in sorted(windows):
            write(index, windows[index], records, shown)
    seconds = time.perf_counter() - started
    return seconds, (_read_counts(out), _lines_in(scratch / "bad-limit.txt"))


def ingestion_bytewax(files: Files, scratch: Path) -> Result:
    """The log_ingestion job as a Bytewax dataflow (``FileSource`` > parse > keep > count per
    level per event-time minute > ``FileSink``s; bad lines to their own ``FileSink``)."""
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.connectors.files import FileSink, FileSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    example = log_ingestion_example()
    out = _fresh(scratch / "counts-bytewax.jsonl")
    shown_path = _fresh(scratch / "shown-bytewax.txt")
    bad_path = _fresh(scratch / "bad-bytewax.txt")
    align = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)

    def parse(line: str) -> tuple[bool, Any]:
        try:
            return True, json.loads(line)
        except ValueError as exc:
            return False, f"bad log line: {exc}: {line!r}"

    def stamp(record: Any) -> tuple[bool, Any]:
        try:
            moment = datetime.datetime.fromtimestamp(example.event_time(record), datetime.UTC)
        except ValueError as exc:
            return False, f"record not counted: {exc}: {record!r}"
        return True, (record, moment)

    def as_record(keyed: tuple[str, tuple[int, int]]) -> tuple[str, str]:
        level, (window, count) = keyed
        start = align + datetime.timedelta(minutes=window)
        return "", json.dumps({"minute": start.isoformat(), "level": level, "count": count})

    def as_text(keyed: tuple[str, tuple[int, int]]) -> tuple[str, str]:
        level, (window, count) = keyed
        start = align + datetime.timedelta(minutes=window)
        return "", f"{start:%Y-%m-%d %H:%M}  {level:<8} {count:>4}"

    flow = Dataflow("log_ingestion")
    lines = op.input("tail", flow, FileSource(files["json"]))
    lines = op.filter("non_blank", lines, lambda line: bool(line.strip()))
    parsed = op.branch("parse", op.map("parse_json", lines, parse), lambda r: r[0])
    records = op.map("parsed", parsed.trues, lambda r: r[1])
    kept = op.filter("warnings_and_errors", records, is_warning_or_worse)
    stamped = op.branch("stamp", op.map("event_time", kept, stamp), lambda r: r[0])
    timed = op.map("stamped", stamped.trues, lambda r: r[1])
    clock = win.EventClock(
        lambda timed: timed[1], wait_for_system_duration=datetime.timedelta(seconds=300)
    )
    windower = win.TumblingWindower(length=datetime.timedelta(minutes=1), align_to=align)
    counts = win.count_window("per_minute", timed, clock, windower, lambda t: t[0]["level"])
    op.output("write", op.map("as_record", counts.down, as_record), FileSink(out))
    op.output("show", op.map("as_text", counts.down, as_text), FileSink(shown_path))
    late = op.map("late", counts.late, lambda k: ("", f"record not counted: late: {k[1]!r}"))
    bad_lines = op.merge(
        "bad",
        op.map("bad_parse", parsed.falses, lambda r: ("", r[1])),
        op.map("bad_stamp", stamped.falses, lambda r: ("", r[1])),
        late,
    )
    op.output("bad_lines", bad_lines, FileSink(bad_path))
    started = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - started
    return seconds, (_read_counts(out), _lines_in(bad_path))


# -- CSV: LocalFileReader > CSVReader > Filter > JSONLinesWriter ----------------------------


def shipped(row: dict[str, str]) -> bool:
    """The CSV rows' filter: orders that were shipped."""
    return row["status"] == "shipped"


def csv_limit(files: Files, scratch: Path) -> Result:
    """The plain script: ``csv.DictReader`` and ``json.dumps`` writing the kept rows."""
    out = _fresh(scratch / "orders-limit.jsonl")
    started = time.perf_counter()
    with (
        open(files["csv"], encoding="utf-8", newline="") as handle,
        open(out, "w", encoding="utf-8") as output,
    ):
        write = output.write
        for row in csv.DictReader(handle):
            if shipped(row):
                write(json.dumps(row, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - started
    return seconds, _digest(out)


def csv_pipeline(files: Files, scratch: Path) -> Result:
    """``OnePath > LocalFileReader() > CSVReader() > Filter(shipped) > JSONLinesWriter``."""
    out = _fresh(scratch / "orders-pipeline.jsonl")
    source = OnePath(files["csv"])
    source > LocalFileReader() > CSVReader() > Filter(shipped) > JSONLinesWriter(out)
    seconds, _ = _run(Pipeline(source))
    return seconds, _digest(out)


def csv_bytewax(files: Files, scratch: Path) -> Result:
    """The CSV job as a Bytewax dataflow: ``CSVSource`` > filter > ``json.dumps`` > ``FileSink``."""
    import bytewax.operators as op
    from bytewax.connectors.files import CSVSource, FileSink
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    out = _fresh(scratch / "orders-bytewax.jsonl")
    flow = Dataflow("csv_to_jsonl")
    rows = op.input("read", flow, CSVSource(Path(files["csv"])))
    kept = op.filter("shipped", rows, shipped)
    lines = op.map("to_json", kept, lambda row: ("", json.dumps(row, ensure_ascii=False)))
    op.output("write", lines, FileSink(out))
    started = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - started
    return seconds, _digest(out)


# -- the table --------------------------------------------------------------------------

#: name -> (workload, system label, system, limit, goal or None, issue's figure, peer).
WORKLOADS: dict[
    str, tuple[str, str, Callable[..., Result], Callable[..., Result], float | None, str, bool]
] = {
    "tail": (
        "lines",
        "`TailFile(path, follow=False)` > counting sink",
        lines_tail,
        lines_limit,
        0.45,
        "0.06",
        False,
    ),
    "file_reader": (
        "lines",
        "`LocalFileReader(serialize=True)` > counting sink",
        lines_file_reader,
        lines_limit,
        0.45,
        "0.02",
        False,
    ),
    "lines_floor": (
        "lines",
        "floor: bare Trio, reader task > channel of line lists > counting task",
        lines_trio_floor,
        lines_limit,
        None,
        "0.63",
        False,
    ),
    "json": (
        "json",
        '`TailFile > JSONLinesParser(on_error="dead_letter") > Filter > sink`, dead letters linked',
        json_pipeline,
        json_limit,
        0.65,
        "0.18",
        False,
    ),
    "ingestion": (
        "ingestion",
        "`examples/log_ingestion` `build_pipeline`",
        ingestion_pipeline,
        ingestion_limit,
        0.6,
        "0.21",
        False,
    ),
    "ingestion_bytewax": (
        "ingestion",
        "peer: Bytewax, the same job as a `Dataflow`",
        ingestion_bytewax,
        ingestion_limit,
        None,
        "0.79",
        True,
    ),
    "csv": (
        "csv",
        "`LocalFileReader > CSVReader > Filter > JSONLinesWriter`",
        csv_pipeline,
        csv_limit,
        0.9,
        "0.67",
        False,
    ),
    "csv_bytewax": (
        "csv",
        "peer: Bytewax, `CSVSource > filter > map > FileSink`",
        csv_bytewax,
        csv_limit,
        None,
        "0.91",
        True,
    ),
}

#: workload -> (what it is, the limit's description).
LIMITS = {
    "lines": ("text log lines", "`for line in f` calling the sink's method"),
    "json": ("JSON log lines, some malformed", "`json.loads` loop, same filter and counts"),
    "ingestion": ("JSON log lines, some malformed", "the same job as a plain script"),
    "csv": ("CSV order rows", "`csv.DictReader` + `json.dumps` writing the same file"),
}
