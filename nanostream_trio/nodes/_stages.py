"""A node made of a few private inner nodes: how CSVReader, Batch and TumblingWindow work.

Some built-in nodes need more than one task. CSVReader must send each bad row
through the error policy while the other rows of the same file keep flowing,
so the rows of a text become items of an inner node that carries the policy.
Batch and TumblingWindow must emit on a timer and at the end of the stream, so
an inner node runs a loop that owns the timing. The engine's composite hooks
(``_ns_entry`` / ``_ns_exit``) make such a group look like one node when linked:
links into it go to its entry stage, links out of it leave its exit stage.

The *policy stage* is the inner node named exactly like the composite: it
receives ``on_error`` and ``retry``, its ``dead_letters`` port is the
composite's, and its events carry the composite's name. Other stages are named
``<name>.<role>`` in events and statistics. The node's own events
(:meth:`_Staged.log_event`) carry the composite's name whichever stage is
running.
"""

from __future__ import annotations

import itertools
from typing import Any, TypedDict

from .._node import DeadLetterPort, EngineSettings, NanoNode, Port
from .._policy import ErrorPolicy, Retry

__all__ = ["EngineOptions", "_Staged"]


class EngineOptions(TypedDict, total=False):
    """The engine settings every built-in node passes on to :class:`NanoNode` (besides ``name``)."""

    on_error: ErrorPolicy
    retry: Retry
    capacity: int
    blocking: bool


class _Staged(NanoNode):
    """Base of built-in nodes that run as a short chain of inner nodes.

    Subclasses build their stages, then call :meth:`_ns_set_stages` before
    ``NanoNode.__init__`` (which calls :meth:`configure`).
    """

    _ns_allow_abstract = True
    _ns_stages: tuple[tuple[str, NanoNode], ...]
    _ns_policy_stage: NanoNode

    def _ns_set_stages(self, stages: list[tuple[str, NanoNode]], policy_stage: NanoNode) -> None:
        """Record the stages (role, node) in order and link each to the next."""
        self._ns_stages = tuple(stages)
        self._ns_policy_stage = policy_stage
        for (_, upstream), (_, downstream) in itertools.pairwise(stages):
            _ = upstream > downstream
        self._ns_rename(self._ns_name)

    def _ns_rename(self, name: str) -> None:
        for role, stage in self._ns_stages:
            stage_name = name if stage is self._ns_policy_stage else f"{name}.{role}"
            stage.configure(name=stage_name)

    def _ns_configured(self, changes: EngineSettings) -> None:
        """The name renames every stage, ``capacity`` sizes the entry stage's inbox,
        ``on_error`` and ``retry`` go to the policy stage; each stage decides for itself
        whether it blocks."""
        if not hasattr(self, "_ns_stages"):  # set up by _ns_set_stages, before __init__
            return
        if "name" in changes:
            self._ns_rename(changes["name"])
        self._ns_policy_stage.configure(
            on_error=changes.get("on_error"), retry=changes.get("retry")
        )
        self._ns_entry().configure(capacity=changes.get("capacity"))

    def _ns_entry(self) -> NanoNode:
        return self._ns_stages[0][1]

    def _ns_exit(self) -> NanoNode:
        return self._ns_stages[-1][1]

    def log_event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Emit a monitoring event about this node (see :meth:`NanoNode.log_event`).

        The node itself never runs, its stages do: while any of them runs, the
        event goes to the pipeline's logger bound to ``pipeline`` and to this
        node's name (not a stage's ``<name>.<role>``).
        """
        running = next((stage._ns_log for stage in self.stages if stage._ns_log is not None), None)
        if running is None or level not in ("debug", "info", "warning", "error"):
            super().log_event(event, level, **fields)  # not running, or a bad level to reject
            return
        getattr(running.bind(node=self._ns_name), level)(event, **fields)

    @property
    def stages(self) -> tuple[NanoNode, ...]:
        """The inner nodes, entry first; they appear under their own names in statistics."""
        return tuple(stage for _, stage in self._ns_stages)

    @property
    def dead_letters(self) -> DeadLetterPort:
        """The policy stage's ``dead_letters`` port."""
        return self._ns_policy_stage.dead_letters

    @property
    def on_error(self) -> ErrorPolicy:
        """The policy stage's effective error policy."""
        return self._ns_policy_stage.on_error

    @on_error.setter
    def on_error(self, on_error: ErrorPolicy) -> None:
        self.configure(on_error=on_error)

    @property
    def downstream(self) -> tuple[NanoNode, ...]:
        """Nodes linked after the exit stage."""
        return self._ns_exit().downstream

    @property
    def upstream(self) -> tuple[NanoNode | Port, ...]:
        """Nodes linked into the entry stage."""
        return self._ns_entry().upstream

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._ns_name!r}>"
