"""Pipeline: collects a graph of linked nodes and runs it in one nursery.

``Pipeline(node)`` walks every link from ``node`` and checks the graph.
``await pipeline.run()`` builds fresh edges, starts one task per node plus a
monitor task, and returns a :class:`PipelineStatistics` summary when every
source is exhausted and every item has reached the end. ``global_start()``
wraps that in ``trio.run`` with SIGINT/SIGTERM handling.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

import trio

from . import _node
from ._checkpoint import (
    DEFAULT_CHECKPOINT_INTERVAL,
    Checkpointer,
    check_checkpoint_options,
    open_checkpointer,
)
from ._edges import Edge
from ._exceptions import ConfigError, GraphError, PipelineStateError
from ._logging import library_logger
from ._metrics import parse_address, serve_metrics
from ._monitor import monitor, node_statistics, report_draining
from ._node import NanoNode, Port
from ._runtime import NodeRun, maybe_await
from ._stats import NodeStatistics, PipelineStatistics, PipelineStatus

__all__ = ["Pipeline"]

#: Seconds between ``pipeline_stats`` events by default.
DEFAULT_STATS_INTERVAL = 10.0
#: Seconds an inbox may hold items without progress before ``node_stalled``.
DEFAULT_STALL_TIMEOUT = 30.0


def _collect(nodes: Iterable[NanoNode]) -> list[NanoNode]:
    """Every node connected to ``nodes`` by any link, in topological order."""
    found: dict[int, NanoNode] = {}
    stack = [n._ns_entry() for n in nodes]
    while stack:
        node = stack.pop()
        if id(node) in found:
            continue
        found[id(node)] = node
        stack.extend(node._ns_downstream)
        stack.extend(node._ns_dead_letters.downstream)
        stack.extend(u.node if isinstance(u, Port) else u for u in node._ns_upstream)
    # Kahn's algorithm, stable in discovery order.
    indegree = {id(n): len(n._ns_upstream) for n in found.values()}
    order: list[NanoNode] = []
    ready = [n for n in found.values() if indegree[id(n)] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for target in [*node._ns_downstream, *node._ns_dead_letters.downstream]:
            indegree[id(target)] -= 1
            if indegree[id(target)] == 0:
                ready.append(target)
    return order


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The single real failure in a nursery's group, or the group itself."""
    _, rest = group.split(trio.Cancelled)
    if rest is None:
        return group
    leaves: list[BaseException] = []
    stack: list[BaseException] = [rest]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else rest


class Pipeline:
    """A runnable graph of linked nodes.

    Args:
        *nodes: any nodes of the graph; everything linked to them is included.
        name: the pipeline's name in events.
        stats_interval: seconds (Trio clock) between ``pipeline_stats``
            events; ``None`` turns them off.
        stall_timeout: seconds a node's inbox may hold items without the node
            taking any before a ``node_stalled`` event; ``None`` turns it off.
        logger: a structlog logger to emit events on; default
            the library's own (``structlog.get_logger("nanostream_trio")``
            once the application has configured structlog, quiet one-line
            warnings on stderr until then; see docs/events.md).
        metrics: ``"host:port"`` to serve Prometheus ``/metrics`` and ``/health``
            on while the pipeline runs (port 0 picks a free one; see
            :attr:`metrics_address`); ``None`` (the default) serves nothing.
        checkpoint: path of an SQLite file holding the pipeline's checkpoints
            (created if missing; one file per pipeline). A run that finds
            checkpoints there resumes from the newest; see docs/delivery.md.
            ``None`` (the default) keeps none.
        checkpoint_interval: seconds (Trio clock) between checkpoints;
            ``None``: only on :meth:`checkpoint_now` and at the end of a run.

    Raises:
        GraphError: no nodes, a processor nothing links into, a source with
            an upstream, or two nodes with the same name.
        ConfigError: ``on_error="dead_letter"`` without a linked ``dead_letters``.

    Example::

        summary = trio.run(Pipeline(source > Double() > sink).run)
    """

    def __init__(
        self,
        *nodes: NanoNode,
        name: str = "pipeline",
        stats_interval: float | None = DEFAULT_STATS_INTERVAL,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        logger: Any = None,
        metrics: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_interval: float | None = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        for node in nodes:
            if not isinstance(node, NanoNode):
                msg = f"Pipeline() takes NanoNode objects; got {type(node).__name__} {node!r}"
                raise GraphError(msg)
        if not nodes:
            msg = "Pipeline() needs at least one node"
            raise GraphError(msg)
        for value, what in ((stats_interval, "stats_interval"), (stall_timeout, "stall_timeout")):
            if value is not None and not value > 0:
                msg = f"Pipeline {what} must be a positive number of seconds or None; got {value!r}"
                raise ConfigError(msg, key=what)
        self.name = name
        self._nodes = _collect(nodes)
        self._check()
        self._stats_interval = stats_interval
        self._stall_timeout = stall_timeout
        self._logger = logger if logger is not None else library_logger()
        if metrics is not None:
            parse_address(metrics)  # a bad address fails here, not when the run starts
        self._metrics = metrics
        self._checkpoint, self._checkpoint_interval = check_checkpoint_options(
            checkpoint, checkpoint_interval
        )
        self._checkpointer: Checkpointer | None = None
        # Set by nanostream_testing.crash_at(): where a test makes a checkpoint fail.
        self._ns_checkpoint_fault: Any = None
        self._metrics_address: tuple[str, int] | None = None
        self._runs: dict[str, NodeRun] = {}
        self._status: PipelineStatus = "pending"
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._stop_requested = False
        self._cancel_requested = False
        self._cancel_scope: trio.CancelScope | None = None
        self._stopping = trio.Event()

    def _check(self) -> None:
        names: dict[str, NanoNode] = {}
        for node in self._nodes:
            if node.name in names:
                msg = (
                    f"two nodes are named {node.name!r} ({names[node.name]!r} and {node!r}); "
                    "names must be unique within a pipeline: pass name=... to tell them apart"
                )
                raise GraphError(msg, upstream=node.name)
            names[node.name] = node
            if node._ns_kind == "source" and node._ns_upstream:
                upstream = ", ".join(
                    repr(u.node.name if isinstance(u, Port) else u.name) for u in node._ns_upstream
                )
                msg = (
                    f"node {node.name!r} is a source (it defines generator) but is linked "
                    f"from {upstream}; a source cannot receive items"
                )
                raise GraphError(msg, downstream=node.name)
            if node._ns_kind == "processor" and not node._ns_upstream:
                msg = (
                    f"node {node.name!r} defines process_item but nothing is linked into it; "
                    f"link a source to it ('source > {node.name}') or give it a generator"
                )
                raise GraphError(msg, downstream=node.name)
            if node.on_error == "dead_letter" and not node.dead_letters.downstream:
                msg = (
                    f"node {node.name!r} has on_error='dead_letter' but its dead_letters port "
                    f"is not linked; link it to a sink: {node.name}.dead_letters > sink"
                )
                raise ConfigError(msg, node=node.name, key="on_error")

    # -- introspection ---------------------------------------------------------------

    @property
    def nodes(self) -> tuple[NanoNode, ...]:
        """Every node of the pipeline, upstream before downstream."""
        return tuple(self._nodes)

    @property
    def status(self) -> PipelineStatus:
        """One of pending, running, stopping, finished, failed, cancelled."""
        return self._status

    def statistics(self) -> PipelineStatistics:
        """A frozen snapshot of every node's counters (see :class:`NodeStatistics`)."""
        now = self._now()
        nodes: dict[str, NodeStatistics] = {}
        for node in self._nodes:
            run = self._runs.get(node.name)
            nodes[node.name] = node_statistics(node, run, now)
        elapsed = 0.0
        if self._started_at is not None:
            elapsed = (self._ended_at if self._ended_at is not None else now) - self._started_at
        checkpointer = self._checkpointer
        checkpoints, age = 0, None
        if checkpointer is not None:
            checkpoints = checkpointer.completed
            if checkpointer.last_completed is not None:
                age = now - checkpointer.last_completed
        return PipelineStatistics(
            name=self.name,
            status=self._status,
            elapsed=elapsed,
            nodes=nodes,
            checkpoints=checkpoints,
            checkpoint_age=age,
        )

    def _now(self) -> float:
        try:
            return trio.current_time()
        except RuntimeError:  # outside trio.run: a snapshot after the run
            return self._ended_at if self._ended_at is not None else 0.0

    # -- control ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: sources stop, everything already emitted drains, ``run()`` returns.

        Safe to call from the Trio thread at any time, also before ``run()``
        starts (the run then ends at once) and more than once.
        """
        self._stop_requested = True
        if self._status == "running":
            self._status = "stopping"
            self._log().info("pipeline_stopping")
            self._stopping.set()
        for run in self._runs.values():
            if run.node._ns_kind == "source":
                run.request_stop()

    def cancel(self) -> None:
        """Cancel every node now; items in flight are dropped and ``run()`` returns.

        Called before ``run()``, it makes the next run end at once, cancelled.
        """
        self._cancel_requested = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel(reason="Pipeline.cancel() was called")

    def _log(self) -> Any:
        return self._logger.bind(pipeline=self.name)

    # -- running ------------------------------------------------------------------------

    def _prepare(self) -> list[NodeRun]:
        log = self._log()
        inboxes: dict[int, Edge] = {}
        for node in self._nodes:
            if node._ns_kind != "source":
                inboxes[id(node)] = Edge(node._ns_capacity, node.name)
        runs = []
        for node in self._nodes:
            run = NodeRun(node, inboxes.get(id(node)), log.bind(node=node.name))
            run.outbox.edges = [inboxes[id(d)] for d in node._ns_downstream]
            run.dead_letter_outbox.edges = [inboxes[id(d)] for d in node.dead_letters.downstream]
            runs.append(run)
        return runs

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> PipelineStatistics:
        """Run every node as a task in one nursery until all items have reached the end.

        With ``await nursery.start(pipeline.run)`` this returns (to ``start``)
        once every node is ready: its ``setup`` has returned, so a source has
        opened what it reads.

        Returns:
            The final :class:`PipelineStatistics`.

        Raises:
            Exception: the first failure of a node whose policy is ``"raise"``,
                with its original type and a note naming the node and the item.
            PipelineStateError: the pipeline is already running.
        """
        if self._status in ("running", "stopping"):
            msg = f"pipeline {self.name!r} is already running"
            raise PipelineStateError(msg)
        runs = self._prepare()
        self._runs = {run.name: run for run in runs}
        self._stopping = trio.Event()
        self._status = "running"
        self._started_at = trio.current_time()
        self._ended_at = None
        log = self._log()
        log.info(
            "pipeline_started",
            nodes=[run.name for run in runs],
            sources=[run.name for run in runs if run.node._ns_kind == "source"],
        )
        if self._stop_requested:
            self.stop()
        try:
            with trio.CancelScope() as self._cancel_scope:
                if self._cancel_requested:
                    self._cancel_scope.cancel(reason="Pipeline.cancel() was called before run()")
                async with open_checkpointer(
                    self._checkpoint,
                    self._checkpoint_interval,
                    self.name,
                    self._nodes,
                    runs,
                    log,
                    self._ns_checkpoint_fault,
                ) as self._checkpointer:
                    async with trio.open_nursery() as monitor_nursery:
                        monitor_nursery.start_soon(
                            monitor, self, log, self._stats_interval, self._stall_timeout
                        )
                        monitor_nursery.start_soon(report_draining, self, log, self._stopping)
                        if self._metrics is not None:
                            await self._serve_metrics(monitor_nursery, log)
                        await self._run_nodes(runs, task_status, monitor_nursery)
                        monitor_nursery.cancel_scope.cancel(reason="pipeline finished")
                    if self._checkpointer is not None and not self._cancel_scope.cancel_called:
                        # Every node ended normally: record their final states.
                        await self._checkpointer.finish()
            self._status = "cancelled" if self._cancel_scope.cancelled_caught else "finished"
            if self._status == "finished":
                await self._succeeded(runs)
        except BaseExceptionGroup as group:
            failure = _unwrap(group)
            self._status = (
                "cancelled" if failure is group and not group.split(trio.Cancelled)[1] else "failed"
            )
            if failure is group:
                raise
            raise failure from None
        except trio.Cancelled:
            self._status = "cancelled"
            raise
        except BaseException:
            self._status = "failed"
            raise
        finally:
            self._ended_at = trio.current_time()
            self._metrics_address = None
            if self._status not in ("finished", "cancelled", "failed"):
                self._status = "cancelled"
            self._cancel_scope = None
            # A stop() or cancel() applies to the run it was meant for, not to the next.
            self._stop_requested = self._cancel_requested = False
            summary = self.statistics()
            log.info(
                "pipeline_finished",
                status=self._status,
                elapsed=summary.elapsed,
                nodes={name: _counts(stats) for name, stats in summary.nodes.items()},
            )
        return summary

    async def _run_nodes(
        self, runs: list[NodeRun], task_status: trio.TaskStatus[None], monitor: trio.Nursery
    ) -> None:
        """One task per node; ``task_status.started()`` once every node is ready.

        Periodic checkpoints start then, in the ``monitor`` nursery: every
        producer has registered on its edges, so barriers align over all of them.
        """
        pending = len(runs)
        all_ready = trio.Event()

        def ready() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                all_ready.set()

        async with trio.open_nursery() as node_nursery:
            for run in runs:
                node_nursery.start_soon(run.run, ready, name=f"nanostream:{run.name}")
            await all_ready.wait()
            if self._checkpointer is not None:
                monitor.start_soon(self._checkpointer.run_timer, name="nanostream:checkpoints")
            task_status.started()

    async def checkpoint_now(self) -> int:
        """Take a checkpoint now and wait until it is written; return its number.

        For tests, and for applications that want a checkpoint at a moment of
        their choosing. A graceful stop takes a final one by itself.

        Raises:
            PipelineStateError: the pipeline is not running, was built
                without ``checkpoint=``, or has no node left running.
        """
        checkpointer = self._checkpointer
        if checkpointer is None or self._status not in ("running", "stopping"):
            why = (
                "it has no checkpoint store (pass checkpoint=...)"
                if not self._checkpoint
                else ("it is not running")
            )
            msg = f"pipeline {self.name!r} cannot take a checkpoint: {why}"
            raise PipelineStateError(msg)
        n = await checkpointer.checkpoint_now()
        if n is None:
            msg = f"pipeline {self.name!r} cannot take a checkpoint: every node has ended"
            raise PipelineStateError(msg)
        return n

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint store's path for the next run (settable), or None."""
        return self._checkpoint

    @checkpoint.setter
    def checkpoint(self, path: str | os.PathLike[str] | None) -> None:
        self._checkpoint, _ = check_checkpoint_options(path, self._checkpoint_interval)

    @property
    def checkpoint_interval(self) -> float | None:
        """Seconds between checkpoints in the next run (settable); None: on demand only."""
        return self._checkpoint_interval

    @checkpoint_interval.setter
    def checkpoint_interval(self, interval: float | None) -> None:
        _, self._checkpoint_interval = check_checkpoint_options(self._checkpoint or "", interval)

    @property
    def metrics(self) -> str | None:
        """The ``"host:port"`` the next run serves metrics on (settable), or None."""
        return self._metrics

    @metrics.setter
    def metrics(self, address: str | None) -> None:
        if address is not None:
            parse_address(address)
        self._metrics = address

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``(host, port)`` the metrics endpoint listens on during a run, else None."""
        return self._metrics_address

    async def _serve_metrics(self, nursery: trio.Nursery, log: Any) -> None:
        """Start the ``metrics=`` endpoint in the monitor's nursery (it ends with the run)."""
        assert self._metrics is not None
        self._metrics_address = await nursery.start(serve_metrics, self, self._metrics)
        host, port = self._metrics_address
        log.info("metrics_serving", address=f"{host}:{port}", paths=["/metrics", "/health"])

    async def _succeeded(self, runs: list[NodeRun]) -> None:
        """Call every node's ``on_success`` hook, upstream first."""
        for run in runs:
            try:
                await maybe_await(run.node.on_success())
            except Exception as exc:
                exc.add_note(f"in nanostream node {run.name!r}, in on_success()")
                run.report_failure(exc)
                raise

    def start(self) -> PipelineStatistics:
        """Run the pipeline with ``trio.run``, handling SIGINT and SIGTERM.

        The first signal stops gracefully (:meth:`stop`); a second cancels
        at once and ends the process with status 130. This is what
        ``node.global_start()`` calls.

        The handlers stay installed after the run, until the process exits,
        so a signal that comes once the run has ended (the drain had
        finished) no longer kills the process by the signal: it is logged as
        ``signal_received`` (``action="exit"``). If it came while the run was
        returning, ``start()`` raises ``SystemExit`` with the run's status (0
        when it finished). Once ``start()`` has returned, SIGTERM raises
        ``SystemExit`` with that status in the main thread (``finally``
        blocks run), while SIGINT is a ``KeyboardInterrupt`` as usual; once
        the script has ended, both are only logged (a second exits at once).

        Returns:
            The final :class:`PipelineStatistics`.

        Raises:
            SystemExit: 130 when cancelled; the run's status when a signal
                came after the run had ended.
        """
        from ._signals import AfterRun

        after_run = AfterRun(self._log())
        after_run.install()
        try:
            summary: PipelineStatistics = trio.run(self._run_with_signals, after_run)
        except BaseException:
            after_run.returned(1)
            raise
        status = 130 if summary.status == "cancelled" else 0
        after_run.returned(status)
        if status or after_run.received:
            # Cancelled; or told to end while the run was ending: end with its status.
            raise SystemExit(status)
        return summary

    async def _run_with_signals(self, after_run: Any = None) -> PipelineStatistics:
        if threading.current_thread() is not threading.main_thread():
            return await self.run()
        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                # The receiver restores (and re-raises its unread signals into) the
                # handler installed before it: every later signal is a late one.
                if after_run is not None:
                    after_run.arm()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_signals, signals)
                    try:
                        return await self.run()
                    finally:
                        nursery.cancel_scope.cancel(reason="pipeline ended")
        except BaseExceptionGroup as group:
            # The signal watcher's nursery wraps the run's failure: hand the
            # caller the node's own exception, as run() does.
            failure = _unwrap(group)
            if failure is group:
                raise
            raise failure from None

    async def _watch_signals(self, signals: Any) -> None:
        received = 0
        async for signum in signals:
            received += 1
            self._log().warning(
                "signal_received", signal=signal.Signals(signum).name, action=(
                    "stop" if received == 1 else "cancel"
                )
            )  # fmt: skip
            if received == 1:
                self.stop()
            else:
                self.cancel()


def _start(node: NanoNode) -> PipelineStatistics:
    """``node.global_start()``: run the pipeline of ``node`` with signal handling."""
    return Pipeline(node).start()


_node._start_pipeline = _start


def _counts(stats: NodeStatistics) -> dict[str, Any]:
    return {
        "status": stats.status,
        "items_in": stats.items_in,
        "items_out": stats.items_out,
        "filtered": stats.filtered,
        "skipped": stats.skipped,
        "retried": stats.retried,
        "dead_lettered": stats.dead_lettered,
    }
