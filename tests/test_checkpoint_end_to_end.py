"""Checkpoints through the built-in stateful nodes in a running pipeline, on the fake clock.

The node hooks' own tests call ``snapshot()``/``restore()`` directly; these run
the nodes in a pipeline with ``checkpoint=`` and ask for checkpoints, the way
the kill -9 scenarios (``test_checkpoint_kill.py``) use them.
"""

from __future__ import annotations

from pathlib import Path

import trio

from nanostream_testing import CollectingSink, FakeSource
from nanostream_trio import NanoNode, Pipeline
from nanostream_trio.nodes import Batch, Map, TumblingWindow

#: Virtual seconds a checkpoint may take before the test calls it stuck.
PATIENCE = 30.0


async def checkpoint_while_running(tmp_path: Path, node: NanoNode) -> tuple[int | None, float]:
    """Run ``FakeSource > node > sink`` and ask for a checkpoint after 1 s of virtual time.

    Returns the checkpoint's number (None if it did not complete within
    :data:`PATIENCE` virtual seconds) and when it completed.
    """
    source = FakeSource(range(10_000), interval=0.01)
    source > node > CollectingSink()
    pipeline = Pipeline(
        source, checkpoint=tmp_path / "state.db", checkpoint_interval=None, stats_interval=None
    )
    number = None
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        await trio.sleep(1.0)
        with trio.move_on_after(PATIENCE):
            number = await pipeline.checkpoint_now()
        nursery.cancel_scope.cancel(reason="the test is done")
    return number, trio.current_time()


class TestCheckpointsPassStatefulNodes:
    async def test_a_checkpoint_passes_a_stateless_node(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A checkpoint asked for while items flow through a ``Map`` completes (the control)."""
        number, _ = await checkpoint_while_running(tmp_path, Map(lambda item: item))
        assert number == 1

    async def test_a_checkpoint_passes_a_batch(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A checkpoint asked for while items flow through a ``Batch`` completes."""
        number, _ = await checkpoint_while_running(tmp_path, Batch(10, interval=0.5))
        assert number == 1

    async def test_a_checkpoint_passes_a_tumbling_window(
        self, tmp_path: Path, autojump_clock: trio.abc.Clock
    ) -> None:
        """A checkpoint asked for while items flow through a ``TumblingWindow`` completes."""
        number, _ = await checkpoint_while_running(tmp_path, TumblingWindow(0.5))
        assert number == 1
