"""Run the nanostream-trio benchmark suite: ``python benchmarks/run.py [--quick]``.

Every measurement runs in a fresh child process (this script again, with
``--child``). A throughput child times its system's limit (a fused loop over
the same functions), then the system, then the limit again, and reports the
system's rate as a ratio to the mean of the two limit runs: noise on a shared
machine hits both and cancels. Each system runs in several children; the
table shows medians. Every run checks the sink's count and sum (and the
engine's statistics where there are some) and fails loudly on a mismatch.

Each timed run (limit, system, limit) starts with ``gc.collect()``. A fresh
process has never had a full collection, so the first run that leaves
objects alive between collections (any system with queues in it; never the
fused loops, whose records die one by one) would otherwise pay for one: about
12 ms here, spent scanning the objects the imports created, in whichever run
happened to come first. Collecting up front starts every run from the same
state; the collections that a system itself causes stay in its time.

Sections: the synthetic workload above (``systems.py``, ``workload.py``), idle
latency and memory (``latency.py``); then issue 9's real workloads on files
generated into a temporary directory (``realworld.py``, ``datafiles.py``:
ratios to the plain script, peak RSS and peak traced heap, Bytewax as an
optional peer), the seed-style shapes with default ``Pipeline`` options, a
1 ms ticker's lateness beside busy pipelines and the stalled-sink RSS with
100 KB items (``load.py``). Each row states its goal and whether it is met.

``--quick`` runs everything once on small inputs, in seconds, as a smoke test
(CI runs it: it checks results, never timings); each new section then runs in
one process, so its memory figures mean nothing. It prints the table but writes
no file unless ``--output`` is given. The full run (3 fresh processes per
figure; under 10 minutes on 2 cores) writes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# name -> (description, system function, limit function, limit description, n scale)
THROUGHPUT: dict[str, tuple[str, str, str, str, float]] = {
    "fused_loop": ("fused `for` loop (the limit)", "fused_loop", "fused_loop", "fused loop", 1.0),
    "nanostream_builtins": (
        "nanostream-trio, built-in `Map`/`Filter` + plain functions",
        "nanostream_builtins",
        "fused_loop",
        "fused loop",
        1.0,
    ),
    "nanostream_generators": (
        "nanostream-trio, `NanoNode` subclasses, generator `process_item`",
        "nanostream_generators",
        "fused_generator_loop",
        "fused generator loop",
        1.0,
    ),
    "nanostream_thread_source": (
        "nanostream-trio, sync generator source in a worker thread > sink",
        "nanostream_thread_source",
        "inline_source_loop",
        "inline generator loop",
        1.0,
    ),
    "nanostream_thread_source_handoff1": (
        "the same, hand-off only as large as the inbox (`THREAD_HANDOFF_FACTOR = 1`)",
        "nanostream_thread_source_handoff1",
        "inline_source_loop",
        "inline generator loop",
        1.0,
    ),
    "thread_per_node": (
        "thread per node, `queue.Queue(256)` (original nanostream design)",
        "thread_per_node",
        "fused_loop",
        "fused loop",
        0.25,
    ),
    "asyncio_queues": (
        "asyncio tasks, `asyncio.Queue(256)`",
        "asyncio_queues",
        "fused_loop",
        "fused loop",
        0.5,
    ),
    "trio_channels": (
        "bare Trio channels, per-item `await send()`",
        "trio_channels",
        "fused_loop",
        "fused loop",
        0.1,
    ),
}

#: Seed-style shapes, default ``Pipeline`` options: name -> (description, limit, goal).
SEED: dict[str, tuple[str, str, float | None]] = {
    "seed_async_source": (
        "(a) async generator source > 3 generator `process_item` nodes > sink",
        "fused_generator_loop",
        0.85,
    ),
    "seed_trio_floor": (
        "floor of (a): bare Trio, source task > channel of record lists > fused loop task",
        "fused_generator_loop",
        None,
    ),
    "seed_thread_source": (
        "(b) the same behind a sync `generator()` source in its thread (the default)",
        "fused_generator_loop",
        0.8,
    ),
    "seed_inline_source": (
        "(c) the same with `blocking=False` on the sync source",
        "fused_generator_loop",
        0.9,
    ),
}
#: The issue's "now" figures for the seed shapes (issue 9's table), for comparison.
SEED_ISSUE = {
    "seed_async_source": "0.51",
    "seed_trio_floor": "0.95",
    "seed_thread_source": "0.65",
    "seed_inline_source": "0.71",
}
#: A 1 ms ticker's p99 lateness under every busy shape must stay within this (ms).
TICKER_P99_GOAL_MS = 2.0
#: Stalled-sink peak RSS with 100 KB items: at most this times bare Trio's.
STALLED_RSS_GOAL = 2.0

#: Rows that turn a private engine knob; skipped ("n/a") when the knob is gone.
KNOB_ROWS = {"nanostream_thread_source_handoff1": "THREAD_HANDOFF_FACTOR"}
#: Lines or rows of the generated inputs in the full run.
REAL_SIZES = {"text": 1_000_000, "json": 300_000, "csv": 500_000}
#: Records through each busy shape beside the ticker (full run).
TICKER_N = 1_000_000

TARGETS = {
    "nanostream_builtins": 0.8,
    "nanostream_generators": 0.7,
    "nanostream_thread_source": 0.5,
}


def _quiet_structlog() -> None:
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )


# -- child side ----------------------------------------------------------------------


def _timed(run: Callable[[int], Any], n: int) -> Any:
    """``run(n)`` after a full garbage collection (see the module docstring)."""
    gc.collect()
    return run(n)


def _child_throughput(system: str, n: int) -> dict[str, Any]:
    import systems
    import workload

    _, system_name, limit_name, _, _ = THROUGHPUT[system]
    run_system: Callable[[int], Any] = getattr(systems, system_name)
    run_limit: Callable[[int], Any] = getattr(systems, limit_name)
    expected = (
        workload.expected_source(n)
        if limit_name == "inline_source_loop"
        else workload.expected_pipeline(n)
    )
    limit_before, totals = _timed(run_limit, n)
    workload.check(limit_name, totals, expected)
    seconds, totals = _timed(run_system, n)
    workload.check(system_name, totals, expected)
    limit_after, totals = _timed(run_limit, n)
    workload.check(limit_name, totals, expected)
    limit_rate = n / ((limit_before + limit_after) / 2)
    rate = n / seconds
    return {"rate": rate, "limit_rate": limit_rate, "ratio": rate / limit_rate}


def _child_latency(count: int) -> dict[str, Any]:
    import latency
    import systems

    before = latency.bare_trio_latency(count)
    fused = latency.nanostream_latency(count, fuse=True)
    result = {"nanostream": fused}
    if systems.has_engine_knob("FUSE_CHAINS"):
        result["nanostream_unfused"] = latency.nanostream_latency(count, fuse=False)
    after = latency.bare_trio_latency(count)
    result["bare"] = {key: (before[key] + after[key]) / 2 for key in before}
    return result


def _child_seed(system: str, n: int) -> dict[str, Any]:
    import systems
    import workload

    _, limit_name, _ = SEED[system]
    run_system: Callable[[int], Any] = getattr(systems, system)
    run_limit: Callable[[int], Any] = getattr(systems, limit_name)
    expected = workload.expected_pipeline(n)
    limit_before, totals = _timed(run_limit, n)
    workload.check(limit_name, totals, expected)
    seconds, totals = _timed(run_system, n)
    workload.check(system, totals, expected)
    limit_after, totals = _timed(run_limit, n)
    workload.check(limit_name, totals, expected)
    limit_seconds = (limit_before + limit_after) / 2
    return {"ratio": limit_seconds / seconds}


def _child_real(name: str, files: dict[str, str]) -> dict[str, Any]:
    """Limit, system, limit on the generated files; the system must give the limit's result."""
    import realworld

    _, _, run_system, run_limit, _, _, _ = realworld.WORKLOADS[name]
    scratch = Path(files["scratch"])
    limit_before, expected = _timed(lambda _: run_limit(files, scratch), 0)
    seconds, got = _timed(lambda _: run_system(files, scratch), 0)
    if got != expected:
        msg = f"{name}: wrong result: {str(got)[:300]}; the limit gave {str(expected)[:300]}"
        raise AssertionError(msg)
    limit_after, again = _timed(lambda _: run_limit(files, scratch), 0)
    if again != expected:
        msg = f"{name}: the limit gave two different results"
        raise AssertionError(msg)
    return {"ratio": (limit_before + limit_after) / 2 / seconds}


def _child_real_memory(name: str, role: str, files: dict[str, str]) -> dict[str, Any]:
    """A workload's system (or its limit) run twice: its peak RSS, then its peak traced heap."""
    import tracemalloc

    import latency
    import realworld

    _, _, run_system, run_limit, _, _, _ = realworld.WORKLOADS[name]
    run = run_system if role == "system" else run_limit
    scratch = Path(files["scratch"])
    gc.collect()
    run(files, scratch)
    rss = latency.peak_rss_mib()
    gc.collect()
    tracemalloc.start()
    run(files, scratch)
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_peak_mib": rss, "heap_peak_mib": heap / 2**20}


def _child_checkpoints(name: str, files: dict[str, str]) -> dict[str, Any]:
    """A workload without checkpoints, with them every second, and without again."""
    import checkpoints

    return checkpoints.measure(name, files, lambda run: _timed(lambda _: run(), 0))


def _child_ticker(shape: str, n: int, files: dict[str, str], seconds: float) -> dict[str, Any]:
    import load

    if shape == "alone":
        return load.ticker_alone(seconds)
    _, build = load.BUSY[shape]
    return load.ticker_beside(build(n, files))


def _child(spec: dict[str, Any]) -> Any:
    _quiet_structlog()
    kind = spec["kind"]
    if kind == "many":  # --quick: several measurements in one process, to save start-ups
        return [_child(each) for each in spec["specs"]]
    if kind == "seed":
        return _child_seed(spec["system"], spec["n"])
    if kind == "real":
        return _child_real(spec["workload"], spec["files"])
    if kind == "real_memory":
        return _child_real_memory(spec["workload"], spec["role"], spec["files"])
    if kind == "checkpoints":
        return _child_checkpoints(spec["workload"], spec["files"])
    if kind == "ticker":
        return _child_ticker(spec["shape"], spec["n"], spec["files"], spec["seconds"])
    if kind == "stalled_big":
        import load

        if spec["system"] == "bare":
            return load.stalled_bare_trio(spec["n"])
        return load.stalled_nanostream(spec["n"])
    if kind == "throughput":
        return _child_throughput(spec["system"], spec["n"])
    if kind == "latency":
        return _child_latency(spec["count"])
    import latency

    if kind == "rss":
        return latency.run_rss(spec["n"])
    if kind == "stalled":
        return latency.run_stalled(spec["n"])
    msg = f"unknown child kind {kind!r}"
    raise ValueError(msg)


# -- parent side -----------------------------------------------------------------------


def _spawn(spec: dict[str, Any]) -> Any:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=HERE)
    if done.returncode != 0:
        msg = f"benchmark child {spec} failed (exit {done.returncode}):\n{done.stderr}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spawn_all(specs: list[dict[str, Any]], together: bool) -> list[Any]:
    """Each spec in its own fresh process, or (``together``, for --quick) all in one."""
    if together:
        results: list[Any] = _spawn({"kind": "many", "specs": specs})
        return results
    return [_spawn(spec) for spec in specs]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import trio

    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}"
    )


def _fmt_rate(rate: float) -> str:
    return f"{rate / 1e3:,.0f}k/s"


def _status(value: float, target: float | None, higher_is_better: bool = True) -> str:
    if target is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def _generate_files(directory: Path, quick: bool) -> dict[str, Any]:
    """Write the real workloads' inputs into ``directory``; return their paths and sizes."""
    import datafiles

    sizes = {"text": 10_000, "json": 5_000, "csv": 5_000} if quick else REAL_SIZES
    files: dict[str, Any] = {"scratch": str(directory)}
    datafiles.text_log(directory / "text.log", sizes["text"])
    facts = datafiles.json_log(directory / "json.log", sizes["json"])
    datafiles.orders_csv(directory / "orders.csv", sizes["csv"])
    files.update(
        text=str(directory / "text.log"),
        json=str(directory / "json.log"),
        csv=str(directory / "orders.csv"),
    )
    info = {
        "sizes": sizes,
        "malformed": facts["malformed"],
        "unstamped": facts["unstamped"],
        "bytes": {key: Path(files[key]).stat().st_size for key in ("text", "json", "csv")},
    }
    return {"files": files, "info": info}


#: Issue 9's goals as measured in this run: (what, figure, goal, status); see ``_goal``.
GOALS: list[tuple[str, str, str, str]] = []


def _goal(what: str, figure: str, goal: str, met: bool) -> None:
    """Record one of issue 9's goals for the summary at the top of the report."""
    GOALS.append((what, figure, goal, "met" if met else "**missed**"))


def _mib(size: float) -> str:
    return f"{size:.1f} MiB"


def _real_section(
    out: Callable[[str], None],
    quick: bool,
    runs: int,
    data: dict[str, Any],
    rows: list[str] | None = None,
) -> None:
    import realworld

    files, info = data["files"], data["info"]
    bytewax = realworld.bytewax_version()
    sizes, sizes_bytes = info["sizes"], info["bytes"]
    out("## Real workloads (ratio to the plain script, measured in the same process)")
    out("")
    out(
        f"Generated inputs: {sizes['text']:,} text log lines "
        f"({sizes_bytes['text'] / 2**20:.1f} MiB); {sizes['json']:,} JSON log lines "
        f"({sizes_bytes['json'] / 2**20:.1f} MiB, {info['malformed']} malformed, "
        f"{info['unstamped']} warnings without a timestamp); {sizes['csv']:,} CSV rows "
        f"({sizes_bytes['csv'] / 2**20:.1f} MiB). Default options everywhere (`Pipeline(source)`, "
        f"monitoring on). Bytewax: {bytewax or 'not installed'}."
    )
    out("")
    out(
        "| workload | system | ratio | issue's figure | goal | peak RSS system / limit "
        "| peak heap system / limit |"
    )
    out("|---|---|---:|---:|---|---:|---:|")
    names = [name for name in realworld.WORKLOADS if rows is None or name in rows]
    # Memory: one fresh process per system (floors left out) and one per limit.
    memory_specs = [
        {"kind": "real_memory", "workload": name, "role": "system", "files": files}
        for name in names
        if not name.endswith("_floor") and (bytewax or not realworld.WORKLOADS[name][6])
    ]
    for group in sorted({realworld.WORKLOADS[name][0] for name in names}):
        limit_name = next(name for name in names if realworld.WORKLOADS[name][0] == group)
        memory_specs.append(
            {"kind": "real_memory", "workload": limit_name, "role": "limit", "files": files}
        )
    memory = dict(
        zip(
            [(spec["workload"], spec["role"]) for spec in memory_specs],
            _spawn_all(memory_specs, together=quick),
            strict=True,
        )
    )

    def limit_memory(group: str, key: str) -> float:
        for (name, role), result in memory.items():
            if role == "limit" and realworld.WORKLOADS[name][0] == group:
                return float(result[key])
        raise KeyError(group)

    specs = [
        {"kind": "real", "workload": name, "files": files}
        for name in names
        if bytewax or not realworld.WORKLOADS[name][6]
    ]
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):  # round-robin, so a busy minute on the machine hits every row
        for spec, result in zip(specs, _spawn_all(specs, together=quick), strict=True):
            results[spec["workload"]].append(result["ratio"])
    csv_heap = None
    for name in names:
        group, label, _, _, goal, issue, peer = realworld.WORKLOADS[name]
        what, limit_text = realworld.LIMITS[group]
        workload_text = f"{what}; limit: {limit_text}"
        if peer and not bytewax:
            out(f"| {workload_text} | {label} | not installed | {issue} | peer | | |")
            continue
        ratio = statistics.median(results[name])
        goal_text = f">= {goal} {_status(ratio, goal)}" if goal else ("peer" if peer else "floor")
        if goal:
            _goal(f"{label} ({what})", f"{ratio:.2f}", f">= {goal}", ratio >= goal)
        rss_text = heap_text = ""
        if (name, "system") in memory:
            rss = memory[(name, "system")]["rss_peak_mib"]
            heap = memory[(name, "system")]["heap_peak_mib"]
            csv_heap = heap if name == "csv" else csv_heap
            rss_text = f"{_mib(rss)} / {_mib(limit_memory(group, 'rss_peak_mib'))}"
            heap_text = f"{_mib(heap)} / {_mib(limit_memory(group, 'heap_peak_mib'))}"
        out(
            f"| {workload_text} | {label} | {ratio:.2f} | {issue} | {goal_text} "
            f"| {rss_text} | {heap_text} |"
        )
        print(f"  real {name}: ratio {ratio:.3f} over {len(results[name])} run(s)", file=sys.stderr)
    out("")
    if csv_heap is not None:
        size = sizes_bytes["csv"] / 2**20
        met = "met" if csv_heap < size else "**missed**"
        _goal("peak traced heap of the CSV job", _mib(csv_heap), f"< {_mib(size)}", csv_heap < size)
        out(
            f"Peak traced heap of the CSV job: {_mib(csv_heap)} for a {_mib(size)} file "
            f"(goal: below the file's size, {met})."
        )
        out("")


def _checkpoint_section(
    out: Callable[[str], None], quick: bool, runs: int, data: dict[str, Any]
) -> None:
    import checkpoints

    files = checkpoints.prepare(data["files"], Path(data["files"]["scratch"]))
    out(f"## Checkpoints every {checkpoints.INTERVAL:g} s, and off (issue 10)")
    out("")
    out(
        "Each child runs the workload alternately without checkpoints and with "
        f"`Pipeline(checkpoint=..., checkpoint_interval={checkpoints.INTERVAL:g})` (a new "
        "store each time), three runs off and two on; slowdown = mean seconds on / mean "
        "seconds off. "
        "Checkpoints: periodic + the final one; duration from `checkpoint_started` to "
        "`checkpoint_completed` (event fields), median and max over the run's checkpoints "
        "(max of the periodic ones in brackets); size: the largest checkpoint's state."
    )
    out("")
    out(
        "| workload | seconds off | seconds on | slowdown | checkpoints | duration median "
        "| duration max | state size | goal |"
    )
    out("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    specs = [
        {"kind": "checkpoints", "workload": name, "files": files} for name in checkpoints.WORKLOADS
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in checkpoints.WORKLOADS}
    for _ in range(runs):
        for spec, result in zip(specs, _spawn_all(specs, together=quick), strict=True):
            results[spec["workload"]].append(result)
    for name, (label, _) in checkpoints.WORKLOADS.items():
        rows = results[name]

        def median(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(float(row[key]) for row in rows)

        slowdown = median("slowdown")
        goal = checkpoints.GOAL
        _goal(
            f"checkpoints every {checkpoints.INTERVAL:g} s: {name} workload, time with / without",
            f"{slowdown:.3f}",
            f"<= {goal}",
            slowdown <= goal,
        )
        out(
            f"| {label} | {median('seconds_off'):.2f} | {median('seconds_on'):.2f} "
            f"| {slowdown:.3f} | {median('periodic'):.1f} + 1 "
            f"| {median('duration_median') * 1e3:.1f} ms "
            f"| {median('duration_max') * 1e3:.1f} ms "
            f"({median('periodic_duration_max') * 1e3:.1f} ms) "
            f"| {median('bytes'):,.0f} B | <= {goal} {_status(slowdown, goal, False)} |"
        )
        print(f"  checkpoints {name}: slowdown {slowdown:.3f}", file=sys.stderr)
    out("")


def _seed_section(out: Callable[[str], None], quick: bool, runs: int, n: int) -> None:
    out("## Seed-style shapes, default `Pipeline` options (ratio to the fused generator loop)")
    out("")
    out("| system | ratio | issue's figure | goal |")
    out("|---|---:|---:|---|")
    specs = [{"kind": "seed", "system": name, "n": n} for name in SEED]
    results: dict[str, list[float]] = {name: [] for name in SEED}
    for _ in range(runs):
        for spec, result in zip(specs, _spawn_all(specs, together=quick), strict=True):
            results[spec["system"]].append(result["ratio"])
    for name, (description, _, goal) in SEED.items():
        ratio = statistics.median(results[name])
        goal_text = f">= {goal} {_status(ratio, goal)}" if goal else "floor"
        if goal:
            _goal(f"seed shape {description}", f"{ratio:.2f}", f">= {goal}", ratio >= goal)
        out(f"| {description} | {ratio:.2f} | {SEED_ISSUE[name]} | {goal_text} |")
        print(f"  seed {name}: ratio {ratio:.3f}", file=sys.stderr)
    out("")


def _ticker_section(
    out: Callable[[str], None], quick: bool, runs: int, n: int, files: dict[str, Any]
) -> None:
    import load

    out("## Latency under load: a `trio.sleep(0.001)` ticker in the same Trio run")
    out("")
    out("Lateness of each wake-up; medians over the runs of each run's p50, p99 and max.")
    out("")
    out("| busy shape | ticks | p50 | p99 | max | goal (p99) |")
    out("|---|---:|---:|---:|---:|---|")
    shapes = ["alone", *load.BUSY]
    seconds = 0.2 if quick else 2.0
    specs = [
        {"kind": "ticker", "shape": shape, "n": n, "files": files, "seconds": seconds}
        for shape in shapes
    ]
    results: dict[str, list[dict[str, float]]] = {shape: [] for shape in shapes}
    for _ in range(runs):
        for spec, result in zip(specs, _spawn_all(specs, together=quick), strict=True):
            results[spec["shape"]].append(result)
    for shape in shapes:
        label = "none: the ticker alone, bare Trio" if shape == "alone" else load.BUSY[shape][0]
        rows = results[shape]
        p50, p99, top = (
            statistics.median(r[key] for r in rows) for key in ("p50_ms", "p99_ms", "max_ms")
        )
        ticks = statistics.median(r["ticks"] for r in rows)
        goal = (
            "reference"
            if shape == "alone"
            else f"<= {TICKER_P99_GOAL_MS} ms {_status(p99, TICKER_P99_GOAL_MS, False)}"
        )
        if shape != "alone":
            _goal(
                f"1 ms ticker p99 beside: {label}",
                f"{p99:.2f} ms",
                f"<= {TICKER_P99_GOAL_MS} ms",
                p99 <= TICKER_P99_GOAL_MS,
            )
        out(f"| {label} | {ticks:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {top:.2f} ms | {goal} |")
        print(f"  ticker {shape}: p99 {p99:.2f} ms", file=sys.stderr)
    out("")


def _stalled_big_section(out: Callable[[str], None], quick: bool, runs: int) -> None:
    n = 600 if quick else 20_000
    out("## Stalled sink behind a threaded source, 100 KB items (peak RSS)")
    out("")
    out("| system | peak RSS | before the run | items produced | ratio to bare Trio | goal |")
    out("|---|---:|---:|---:|---:|---|")
    specs = [{"kind": "stalled_big", "system": system, "n": n} for system in ("bare", "nanostream")]
    results: dict[str, list[dict[str, float]]] = {"bare": [], "nanostream": []}
    for _ in range(runs):
        for spec, result in zip(specs, _spawn_all(specs, together=quick), strict=True):
            results[spec["system"]].append(result)
    bare = statistics.median(r["rss_peak_mib"] for r in results["bare"])
    for system, label in (
        ("bare", "bare Trio: thread > `from_thread.run(send)` > channel of the default capacity"),
        ("nanostream", "nanostream-trio: sync `generator()` source (thread) > stalled sink"),
    ):
        rows = results[system]
        peak = statistics.median(r["rss_peak_mib"] for r in rows)
        before = statistics.median(r["rss_before_mib"] for r in rows)
        produced = statistics.median(r["produced"] for r in rows)
        ratio = peak / bare
        goal = (
            "reference"
            if system == "bare"
            else f"<= {STALLED_RSS_GOAL}x {_status(ratio, STALLED_RSS_GOAL, False)}"
        )
        if system != "bare":
            _goal(
                "stalled-sink peak RSS, 100 KB items, vs bare Trio",
                f"{ratio:.2f}x",
                f"<= {STALLED_RSS_GOAL}x",
                ratio <= STALLED_RSS_GOAL,
            )
        out(f"| {label} | {_mib(peak)} | {_mib(before)} | {produced:,.0f} | {ratio:.2f} | {goal} |")
        print(f"  stalled {system}: {peak:.0f} MiB", file=sys.stderr)
    out("")


#: Sections measured by standalone scripts of their own: name -> (script, heading).
STANDALONE = {
    "connectors": ("connectors.py", "## Connectors (issue 12)"),
    "redis": ("redis_streams.py", "## Redis Streams with 1, 2 and 4 workers (issue 11)"),
}


def _standalone_section(out: Callable[[str], None], name: str, quick: bool) -> None:
    """Run ``benchmarks/<script>`` in a child process and put its table under a heading."""
    script, heading = STANDALONE[name]
    command = [sys.executable, str(HERE / script), *(["--quick"] if quick else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if not result.stdout.startswith("## "):  # a table without a heading of its own
        out(heading)
        out("")
    if result.returncode != 0:
        # A section that cannot run here (no redis-server, no httpx) says why; the rest stand.
        reason = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        out(f"Not measured: `{script}` exited {result.returncode}: {' '.join(reason)}")
    else:
        out(result.stdout.strip())
    out("")


def _progress(done: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:4.0f} s] done: {done}", file=sys.stderr)


def run_suite(quick: bool, runs: int | None, n: int | None) -> str:
    """Run every measurement in child processes; return the Markdown report."""
    runs = runs or (1 if quick else 3)
    n = n or (20_000 if quick else 200_000)
    latency_count = 1_000 if quick else 10_000
    rss_sizes = (100_000, 200_000) if quick else (1_000_000, 10_000_000)
    stalled_n = 100_000 if quick else 10_000_000
    started = time.perf_counter()
    lines: list[str] = []
    out = lines.append

    import systems

    _, _, real_builtins = systems.builtin_nodes()
    out(f"Machine: {_machine()}  ")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out(f"Run: {stamp}, {'--quick' if quick else 'full'}, N = {n:,} records, {runs} run(s)")
    out("per system, each in a fresh process; medians.")
    if not real_builtins:
        out("")
        out("**nanostream_trio.nodes.Map/Filter were missing: stand-ins were used.**")
    out("")
    out("## Throughput (ratio to the limit measured in the same process)")
    out("")
    out("| system | limit | rate | limit rate | ratio | target |")
    out("|---|---|---:|---:|---:|---|")
    for name, (description, _, _, limit_text, scale) in THROUGHPUT.items():
        size = max(int(n * scale), 1000)
        knob = KNOB_ROWS.get(name)
        if knob and not systems.has_engine_knob(knob):
            out(f"| {description} | {limit_text} | n/a: the engine has no `{knob}` | | | |")
            continue
        results = [_spawn({"kind": "throughput", "system": name, "n": size}) for _ in range(runs)]
        ratio = statistics.median(r["ratio"] for r in results)
        rate = statistics.median(r["rate"] for r in results)
        limit_rate = statistics.median(r["limit_rate"] for r in results)
        target = TARGETS.get(name)
        target_text = f">= {target} {_status(ratio, target)}" if target else ""
        out(
            f"| {description} | {limit_text} | {_fmt_rate(rate)} | {_fmt_rate(limit_rate)} "
            f"| {ratio:.2f} | {target_text} |"
        )
        print(f"  {name}: ratio {ratio:.3f} over {runs} run(s)", file=sys.stderr)

    out("")
    out(f"## Idle latency through 5 hops ({latency_count:,} items, one at a time)")
    out("")
    out("| system | median | p99 | median / bare | p99 / bare | target |")
    out("|---|---:|---:|---:|---:|---|")
    latencies = [_spawn({"kind": "latency", "count": latency_count}) for _ in range(runs)]
    bare_median = statistics.median(r["bare"]["median_us"] for r in latencies)
    bare_p99 = statistics.median(r["bare"]["p99_us"] for r in latencies)
    out(
        f"| bare Trio channels (`send_nowait`/`receive_nowait`) | {bare_median:.1f} us "
        f"| {bare_p99:.1f} us | 1.00 | 1.00 | reference |"
    )
    for key, label in (
        ("nanostream", "nanostream-trio, async source > 4 `Map` > sink"),
        ("nanostream_unfused", "the same with chain fusion off (`FUSE_CHAINS = False`)"),
    ):
        if key == "nanostream_unfused" and not systems.has_engine_knob("FUSE_CHAINS"):
            out(f"| {label} | n/a: the engine has no `FUSE_CHAINS` | | | | |")
            continue
        median_ratio = statistics.median(
            r[key]["median_us"] / r["bare"]["median_us"] for r in latencies
        )
        p99_ratio = statistics.median(r[key]["p99_us"] / r["bare"]["p99_us"] for r in latencies)
        median = statistics.median(r[key]["median_us"] for r in latencies)
        p99 = statistics.median(r[key]["p99_us"] for r in latencies)
        target = ""
        if key == "nanostream":
            met = median_ratio <= 1.3 and p99_ratio <= 1.5
            target = "<= 1.3 / <= 1.5 " + ("met" if met else "**missed**")
            _goal(
                "idle 5-hop latency vs bare Trio channels (median / p99)",
                f"{median_ratio:.2f} / {p99_ratio:.2f}",
                "<= 1.3 / <= 1.5",
                met,
            )
        out(
            f"| {label} | {median:.1f} us | {p99:.1f} us | {median_ratio:.2f} "
            f"| {p99_ratio:.2f} | {target} |"
        )
        print(f"  latency {key}: {median_ratio:.2f} / {p99_ratio:.2f}", file=sys.stderr)

    out("")
    out("## Peak memory (ru_maxrss of the child process)")
    out("")
    out("| run | peak RSS | note |")
    out("|---|---:|---|")
    peaks = []
    for size in rss_sizes:
        result = _spawn({"kind": "rss", "n": size})
        peaks.append(result["rss_peak_mib"])
        out(
            f"| workload pipeline, N = {size:,} | {result['rss_peak_mib']:.1f} MiB "
            f"| {result['rss_before_mib']:.1f} MiB before the run |"
        )
    growth = peaks[-1] - peaks[0]
    flat = "met" if abs(growth) <= 2 else "**missed**"
    stalled = _spawn({"kind": "stalled", "n": stalled_n})
    out(
        f"| stalled sink, source of N = {stalled_n:,} | {stalled['rss_peak_mib']:.1f} MiB "
        f"| source emitted {stalled['source_emitted']:.0f} items, then was held "
        f"(inboxes hold {stalled['queued']:.0f} of {stalled['capacity']:.0f}) |"
    )
    out("")
    out(
        f"Growth from N = {rss_sizes[0]:,} to N = {rss_sizes[-1]:,}: {growth:+.1f} MiB "
        f"(target: within 2 MiB, {flat})."
    )
    out("")
    _progress("synthetic workload, idle latency, memory", started)
    with tempfile.TemporaryDirectory(prefix="nanostream-bench-") as directory:
        data = _generate_files(Path(directory), quick)
        _progress("generated the input files", started)
        _real_section(out, quick, runs, data)
        _progress("real workloads", started)
        _checkpoint_section(out, quick, runs, data)
        _progress("checkpoints", started)
        _seed_section(out, quick, runs, n)
        _progress("seed-style shapes", started)
        _ticker_section(out, quick, runs, 20_000 if quick else TICKER_N, data["files"])
        _progress("ticker under load", started)
    _stalled_big_section(out, quick, runs)
    _progress("stalled sink, 100 KB items", started)
    if not quick:  # their --quick modes have tests of their own
        for name in STANDALONE:
            _standalone_section(out, name, quick)
            _progress(name, started)
    if quick:
        out("(--quick: one process per section; memory figures there are not measurements.)")
        out("")
    out(f"All count/sum checks passed. Suite time: {time.perf_counter() - started:.0f} s.")
    summary = [
        "## Goals of issues 9 and 10 in this run",
        "",
        "| goal | figure | target | status |",
        "|---|---:|---|---|",
        *(f"| {what} | {figure} | {goal} | {status} |" for what, figure, goal, status in GOALS),
        "",
    ]
    first_section = next(i for i, line in enumerate(lines) if line.startswith("## "))
    lines[first_section:first_section] = summary
    GOALS.clear()
    return "\n".join(lines) + "\n"


def run_section_only(
    section: str, quick: bool, runs: int | None, rows: list[str] | None = None
) -> str:
    """``--only checkpoints`` or ``--only real``: the generated files and one section alone
    (``rows``: only these workloads of the real section, by name); ``--only connectors`` or
    ``--only redis``: that standalone script's table."""
    started = time.perf_counter()
    lines: list[str] = [f"Machine: {_machine()}  ", ""]
    if section in STANDALONE:
        _standalone_section(lines.append, section, quick)
        return "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory(prefix="nanostream-bench-") as directory:
        data = _generate_files(Path(directory), quick)
        _progress("generated the input files", started)
        runs = runs or (1 if quick else 3)
        if section == "real":
            _real_section(lines.append, quick, runs, data, rows)
        else:
            _checkpoint_section(lines.append, quick, runs, data)
    GOALS.clear()
    lines.append(
        f"All count/sum checks passed. Section time: {time.perf_counter() - started:.0f} s."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one run each")
    parser.add_argument("--runs", type=int, help="fresh processes per figure (default 3, quick 1)")
    parser.add_argument("-n", type=int, help="records per throughput run")
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    parser.add_argument("--note", help="a paragraph to put under the title of the written file")
    parser.add_argument(
        "--only",
        choices=["checkpoints", "real", *STANDALONE],
        help="run one section alone (prints its table; writes a file only with --output)",
    )
    parser.add_argument(
        "--rows",
        help="with --only real: the workloads to run, by name, comma-separated "
        "(tail, file_reader, lines_floor, json, ingestion, ingestion_bytewax, csv, csv_bytewax)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if args.only:
        rows = args.rows.split(",") if args.rows else None
        report = run_section_only(args.only, args.quick, args.runs, rows)
        if args.output is not None:
            args.output.write_text(report)
        print(report)
        return 0
    report = run_suite(args.quick, args.runs, args.n)
    output = args.output or (None if args.quick else HERE / "RESULTS.md")
    if output is not None:
        header = (
            "# Benchmark results\n\n"
            "Written by `python benchmarks/run.py`; see docs/performance.md.\n\n"
        )
        if args.note:
            header += f"{args.note}\n\n"
        output.write_text(header + report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
