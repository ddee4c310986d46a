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

``--quick`` runs everything once on small inputs, in seconds, as a smoke test
(CI runs it); it prints the table but writes no file unless ``--output`` is
given. The full run writes ``benchmarks/RESULTS.md``.
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

    before = latency.bare_trio_latency(count)
    fused = latency.nanostream_latency(count, fuse=True)
    unfused = latency.nanostream_latency(count, fuse=False)
    after = latency.bare_trio_latency(count)
    bare = {key: (before[key] + after[key]) / 2 for key in before}
    return {"bare": bare, "nanostream": fused, "nanostream_unfused": unfused}


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    _quiet_structlog()
    kind = spec["kind"]
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


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=HERE)
    if done.returncode != 0:
        msg = f"benchmark child {spec} failed (exit {done.returncode}):\n{done.stderr}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


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


def run_suite(quick: bool, runs: int | None, n: int | None) -> str:
    """Run every measurement in child processes; return the Markdown report."""
    runs = runs or (1 if quick else 5)
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
    out(f"All count/sum checks passed. Suite time: {time.perf_counter() - started:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one run each")
    parser.add_argument("--runs", type=int, help="children per system (default 5, quick 1)")
    parser.add_argument("-n", type=int, help="records per throughput run")
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    report = run_suite(args.quick, args.runs, args.n)
    output = args.output or (None if args.quick else HERE / "RESULTS.md")
    if output is not None:
        header = (
            "# Benchmark results\n\n"
            "Written by `python benchmarks/run.py`; see docs/performance.md.\n\n"
        )
        output.write_text(header + report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
