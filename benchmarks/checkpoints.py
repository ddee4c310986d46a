"""Issue 10's benchmark: the tail and CSV workloads with checkpoints every second, and off.

Each workload is one function ``(files, scratch, checkpoint) -> Run``: the same
pipeline built afresh, with ``Pipeline(checkpoint=<a new store>,
checkpoint_interval=1.0)`` when ``checkpoint`` is true and without a store
otherwise. A child process (``run.py``) times them alternately (see below), so
noise on a shared machine hits both sides. The checkpoints' durations (from
``checkpoint_started`` to ``checkpoint_completed``, as the event reports
them) and sizes come from the ``checkpoint_completed`` events, recorded by a
logger passed to the pipeline (the runs without checkpoints use the same
logger, so both pay the same for events).

The inputs are the suite's generated files, made longer so that a run takes
several seconds and so takes several checkpoints:

* *tail*: ``TailFile(path, follow=False) > counting sink`` over the text log
  written :data:`TAIL_REPEAT` times into one file;
* *csv*: ``paths > LocalFileReader() > CSVReader() > Filter > JSONLinesWriter``
  over the orders CSV split into :data:`CSV_PARTS` files, from a source that
  yields their paths and whose position (``snapshot``/``restore``) is how many
  it has yielded: a barrier passes between two files. (With the real-workload
  row's single-path source, which ends at once, the only checkpoint would be
  the final one; for the same reason the reader's inbox holds
  :data:`READER_CAPACITY` paths, not the default 256.)

A child alternates off, on, off, on, off and reports the total time with
checkpoints over the total without (scaled to the same number of runs).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from realworld import CountingSink, _checked_count, _digest, _fresh, shipped

from nanostream_trio import NanoNode, Pipeline
from nanostream_trio.nodes import CSVReader, Filter, JSONLinesWriter, LocalFileReader, TailFile

#: Seconds between checkpoints in the runs with checkpoints (the issue's figure).
INTERVAL = 1.0
#: Copies of the text log in the tail workload's input.
TAIL_REPEAT = 3
#: Files the orders CSV is split into for the CSV workload.
CSV_PARTS = 50
#: Paths the CSV reader's inbox holds: with the default (256) the source would hand over
#: all its paths at once and end, and a checkpoint could then only complete at the end.
READER_CAPACITY = 2
#: The issue's goal: the run with checkpoints at most this much slower.
GOAL = 1.10


#: Which runs of a child have checkpoints on, in order.
ORDER = (False, True, False, True, False)


@dataclasses.dataclass
class Run:
    """One timed run: seconds, the result to compare, and its checkpoints' events."""

    seconds: float
    result: Any
    checkpoints: list[dict[str, Any]]


class EventLog:
    """A pipeline logger that keeps the ``checkpoint_completed`` events and drops the rest."""

    def __init__(self) -> None:
        self.completed: list[dict[str, Any]] = []

    def bind(self, **fields: Any) -> EventLog:
        return self

    def info(self, event: str, **fields: Any) -> None:
        if event == "checkpoint_completed":
            self.completed.append(fields)

    def _drop(self, *args: Any, **fields: Any) -> None:
        pass

    debug = warning = error = exception = log = _drop


def prepare(files: dict[str, str], scratch: Path) -> dict[str, str]:
    """Write this section's inputs from the suite's files; return ``files`` with theirs added."""
    tail_log = scratch / "checkpoints-tail.log"
    with tail_log.open("wb") as output:
        for _ in range(TAIL_REPEAT):
            with open(files["text"], "rb") as text:
                shutil.copyfileobj(text, output)
    parts = scratch / "checkpoints-csv"
    parts.mkdir(exist_ok=True)
    with open(files["csv"], encoding="utf-8", newline="") as handle:
        header = handle.readline()
        rows = handle.readlines()
    size = -(-len(rows) // CSV_PARTS)
    for index in range(CSV_PARTS):
        part = parts / f"orders-{index:03}.csv"
        part.write_text(header + "".join(rows[index * size : (index + 1) * size]), "utf-8")
    return {**files, "tail_log": str(tail_log), "csv_parts": str(parts)}


class Paths(NanoNode):
    """A source yielding the paths of a list; its position is how many it has yielded."""

    def __init__(self, paths: list[str], **kwargs: Any) -> None:
        self.paths = paths
        self.done = 0
        super().__init__(**kwargs)

    def setup(self) -> None:
        self.done = 0

    async def generator(self) -> Any:
        while self.done < len(self.paths):
            path = self.paths[self.done]
            self.done += 1  # before the yield: the position covers what was yielded
            yield path

    def snapshot(self) -> int:
        return self.done

    def restore(self, state: int) -> None:
        self.done = state


def _run(
    source: NanoNode, scratch: Path, name: str, checkpoint: bool
) -> tuple[float, Any, list[dict[str, Any]]]:
    """Run the pipeline of ``source`` (with a new store ``<name>.db``, or none); time it."""
    for suffix in ("", "-wal", "-shm"):
        _fresh(scratch / f"{name}.db{suffix}")
    log = EventLog()
    store = scratch / f"{name}.db" if checkpoint else None
    pipeline = Pipeline(source, checkpoint=store, checkpoint_interval=INTERVAL, logger=log)
    started = time.perf_counter()
    summary = trio.run(pipeline.run)
    return time.perf_counter() - started, summary, log.completed


def tail(files: dict[str, str], scratch: Path, checkpoint: bool) -> Run:
    """``TailFile(path, follow=False) > CountingSink()``."""
    source, sink = TailFile(files["tail_log"], follow=False), CountingSink()
    source > sink
    seconds, summary, events = _run(source, scratch, "tail", checkpoint)
    return Run(seconds, _checked_count(summary, sink), events)


def csv(files: dict[str, str], scratch: Path, checkpoint: bool) -> Run:
    """``Paths(parts) > LocalFileReader() > CSVReader() > Filter(shipped) > JSONLinesWriter``."""
    out = _fresh(scratch / "checkpoints-orders.jsonl")
    source = Paths(sorted(str(path) for path in Path(files["csv_parts"]).iterdir()))
    reader = LocalFileReader(capacity=READER_CAPACITY)
    source > reader > CSVReader() > Filter(shipped) > JSONLinesWriter(out)
    seconds, _, events = _run(source, scratch, "csv", checkpoint)
    return Run(seconds, _digest(out), events)


#: name -> (label, run).
WORKLOADS: dict[str, tuple[str, Callable[[dict[str, str], Path, bool], Run]]] = {
    "tail": (f"`TailFile(path, follow=False)` > counting sink, text log x{TAIL_REPEAT}", tail),
    "csv": (
        f"paths > `LocalFileReader > CSVReader > Filter > JSONLinesWriter`, "
        f"orders CSV in {CSV_PARTS} files",
        csv,
    ),
}


def measure(
    name: str, files: dict[str, str], timed: Callable[[Callable[[], Run]], Run]
) -> dict[str, Any]:
    """Off, on, off, on, off: the slowdown, and the checkpoints of the runs with them.

    ``timed`` runs a workload after the suite's garbage collection.
    """
    _, run = WORKLOADS[name]
    scratch = Path(files["scratch"])
    runs = [timed(functools.partial(run, files, scratch, on)) for on in ORDER]
    off = [each for each, on in zip(runs, ORDER, strict=True) if not on]
    on = [each for each, on in zip(runs, ORDER, strict=True) if on]
    for each in runs:
        if each.result != runs[0].result:
            msg = (
                f"checkpoints {name}: two runs gave different results: "
                f"{str(each.result)[:200]} and {str(runs[0].result)[:200]}"
            )
            raise AssertionError(msg)
    events = [event for each in on for event in each.checkpoints]
    for each in on:
        if not each.checkpoints or not each.checkpoints[-1].get("final"):
            msg = f"checkpoints {name}: a run with checkpoints wrote no final checkpoint"
            raise AssertionError(msg)
    periodic = [float(event["duration"]) for event in events if not event.get("final")]
    durations = sorted(float(event["duration"]) for event in events)
    seconds_off = sum(each.seconds for each in off) / len(off)
    seconds_on = sum(each.seconds for each in on) / len(on)
    return {
        "slowdown": seconds_on / seconds_off,
        "seconds_off": seconds_off,
        "seconds_on": seconds_on,
        "periodic": len(periodic) / len(on),
        "duration_median": durations[len(durations) // 2],
        "duration_max": durations[-1],
        "periodic_duration_max": max(periodic, default=0.0),
        "bytes": max(int(event["bytes"]) for event in events),
    }
