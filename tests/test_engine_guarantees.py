"""Engine guarantees pinned from the outside: bounded inboxes and no lost items across stop().

Two promises every engine version must keep, checked only through the public
API (``Pipeline.statistics()``, ``NodeStatistics``, ``nanostream_testing``) so
that these tests survive rewrites of the engine's internals:

* **Back-pressure on every branch.** When a node fans out to several nodes,
  the slowest one throttles the producer: no inbox ever holds more than its
  capacity, however fast the other branches are. Each test observes every
  branch's inbox from inside the nodes on every item (``Watch``), and checks
  ``inbox_peak`` at the end, for every kind of source and for a fan-out after
  a processor; likewise for a fan-in into one slow sink.
* **Nothing lost or duplicated across a graceful stop().** Each test source
  records the items it hands over itself (in its thread, for a threaded one),
  so the test compares what the sink received with what was really emitted,
  never with the engine's own counters.

Time is the subject of most tests here, so they run on the fake clock
(``run_pipeline``); where a worker thread is the subject (a slow source
blocking on an event, a ``blocking=True`` node) the thread is real.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import CollectingSink, FakeSource, run_pipeline
from nanostream_trio import DEFAULT_CAPACITY, Items, NanoNode, Pipeline

#: Inbox capacity of every consuming node in these tests: small, so that a
#: missing bound shows at once (the items far outnumber it).
CAPACITY = 4
#: Items a source emits in the back-pressure tests.
COUNT = 60
#: Size of each ``Items`` batch of the batch-emitting sources.
CHUNK = 3
#: Real seconds a thread or the test waits for the other side before failing.
PATIENCE = 10.0


# -- what the sources emit, recorded as they hand it over -----------------------------


class Gate:
    """A point in a Script where the iterating thread stops until the test opens it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def pass_through(self) -> None:
        """Signal that the thread got here; wait (at most PATIENCE) for the test."""
        self.reached.set()
        assert self.opened.wait(PATIENCE), "the test never opened the gate"


class Script(list[Any]):
    """A source's entries (items, or ``Items`` of several), recording each as it is taken.

    Every source in this file emits by iterating a Script, and a function
    source returns one (it is a list). Iterating records each entry just
    before handing it over, in whatever thread iterates, so ``emitted`` is
    exactly what the source gave the engine, counted by the test. A
    :class:`Gate` at an entry's index holds the iterating thread before it.
    """

    def __init__(self, entries: Iterable[Any]) -> None:
        super().__init__(entries)
        self.emitted: list[Any] = []
        self.gates: dict[int, Gate] = {}
        self.threads: set[threading.Thread] = set()

    def gate(self, index: int) -> Gate:
        """A gate before entry ``index``."""
        gate = self.gates[index] = Gate()
        return gate

    def __iter__(self) -> Iterator[Any]:
        self.threads.add(threading.current_thread())
        for index, entry in enumerate(list.__iter__(self)):
            gate = self.gates.get(index)
            if gate is not None:
                gate.pass_through()
            if entry.__class__ is Items:
                self.emitted.extend(entry)
            else:
                self.emitted.append(entry)
            yield entry

    def open_all(self) -> None:
        """Open every gate (so that a thread can end also when a test fails)."""
        for gate in self.gates.values():
            gate.opened.set()


def script(count: int, *, first: int = 0, chunk: int = 1) -> Script:
    """``first .. first+count-1``, one item per entry, or in ``Items`` of ``chunk``."""
    if chunk == 1:
        return Script(range(first, first + count))
    starts = range(first, first + count, chunk)
    return Script(Items(range(start, min(start + chunk, first + count))) for start in starts)


_END = object()


class AsyncGeneratorSource(NanoNode):
    """An async generator source that awaits before each entry, as one reading its input does.

    It waits ``pause`` virtual seconds (by default it only passes a
    checkpoint, so other tasks run between its items). With ``shield``, the
    wait cannot be cut short by a stop: the entry that follows it is handed
    over after the stop was requested.
    """

    def __init__(
        self, entries: Script, *, pause: float = 0.0, shield: bool = False, **options: Any
    ) -> None:
        self.entries = entries
        self.pause = pause
        self.shield = shield
        super().__init__(**options)

    async def generator(self) -> AsyncIterator[Any]:
        entries = iter(self.entries)
        while True:
            with trio.CancelScope(shield=self.shield):
                await trio.sleep(self.pause)
            entry = next(entries, _END)
            if entry is _END:
                return
            yield entry


class SyncGeneratorSource(NanoNode):
    """A sync generator source: in its worker thread, or inline with ``blocking=False``."""

    def __init__(self, entries: Script, **options: Any) -> None:
        self.entries = entries
        super().__init__(**options)

    def generator(self) -> Iterator[Any]:
        yield from self.entries


class FunctionSource(NanoNode):
    """A sync function source returning a list (its Script): in a thread, or inline."""

    def __init__(self, entries: Script, **options: Any) -> None:
        self.entries = entries
        super().__init__(**options)

    def generator(self) -> list[Any]:
        return self.entries


class AsyncFunctionSource(NanoNode):
    """An async function source returning a list (its Script)."""

    def __init__(self, entries: Script, **options: Any) -> None:
        self.entries = entries
        super().__init__(**options)

    async def generator(self) -> list[Any]:
        await trio.lowlevel.checkpoint()
        return self.entries


#: Every way a source can be written, by the name the tests are parametrized with.
SOURCE_KINDS = [
    "async_generator",
    "thread_generator",
    "inline_generator",
    "thread_function",
    "inline_function",
    "async_function",
    "thread_items",
    "inline_items",
    "async_items",
    "fake_source",
]


def make_source(
    kind: str, count: int, *, name: str = "src", first: int = 0
) -> tuple[NanoNode, Callable[[], list[Any]]]:
    """A source of ``kind`` emitting ``first .. first+count-1``, and what it has emitted so far."""
    if kind == "fake_source":
        fake = FakeSource(range(first, first + count), name=name)
        return fake, lambda: fake.emitted
    entries = script(count, first=first, chunk=CHUNK if kind.endswith("_items") else 1)
    return source_of(kind, entries, name=name), lambda: entries.emitted


def source_of(kind: str, entries: Script, *, name: str = "src") -> NanoNode:
    """A source of ``kind`` (any but ``fake_source``) emitting ``entries``."""
    if kind in ("async_generator", "async_items"):
        return AsyncGeneratorSource(entries, name=name)
    if kind in ("thread_generator", "thread_items"):
        return SyncGeneratorSource(entries, name=name)
    if kind in ("inline_generator", "inline_items"):
        return SyncGeneratorSource(entries, name=name, blocking=False)
    if kind == "thread_function":
        return FunctionSource(entries, name=name)
    if kind == "inline_function":
        return FunctionSource(entries, name=name, blocking=False)
    if kind == "async_function":
        return AsyncFunctionSource(entries, name=name)
    raise AssertionError(kind)


# -- watching the inboxes from inside the nodes -----------------------------------------


class Watch:
    """The most items each watched inbox held, as seen from inside the nodes on every item."""

    def __init__(self) -> None:
        self.capacities: dict[str, int] = {}
        self.worst: dict[str, int] = {}
        self.looks = 0
        self.pipeline: Pipeline | None = None

    def expect(self, node: NanoNode, capacity: int) -> NanoNode:
        """Watch ``node``'s inbox, configured with ``capacity``; return the node."""
        node.configure(capacity=capacity)
        self.capacities[node.name] = capacity
        self.worst[node.name] = 0
        return node

    def look(self) -> None:
        """Read every watched inbox's ``inbox_queued`` now (on the Trio thread)."""
        assert self.pipeline is not None
        stats = self.pipeline.statistics()
        self.looks += 1
        for name in self.worst:
            self.worst[name] = max(self.worst[name], stats[name].inbox_queued)

    def check(self, summary: Any, *, full: str | None) -> None:
        """Every inbox stayed within its capacity, seen from inside and by ``inbox_peak``.

        ``full`` names the slow node, whose inbox must have filled up: the
        bound was really put to the test (None where which node is slower is
        a race between two threads).
        """
        assert self.looks > 0
        for name, capacity in self.capacities.items():
            assert summary[name].inbox_capacity == capacity
            assert self.worst[name] <= capacity, (name, capacity, self.worst)
            assert summary[name].inbox_peak <= capacity, (name, capacity, summary[name].inbox_peak)
        if full is not None:
            assert summary[full].inbox_peak == self.capacities[full], (full, summary[full])


class _Branch(NanoNode):
    """A sink of the back-pressure tests: it keeps its items and looks at the inboxes."""

    def __init__(self, watch: Watch, name: str, capacity: int = CAPACITY, **options: Any) -> None:
        self.watch = watch
        self.items: list[Any] = []
        super().__init__(name, **options)
        watch.expect(self, capacity)


class FastSink(_Branch):
    """A sink that takes each item at once, looking at the inboxes first."""

    def process_item(self, item: Any) -> None:
        self.watch.look()
        self.items.append(item)


class SlowSink(_Branch):
    """A sink taking one virtual second per item, looking at the inboxes before each."""

    async def process_item(self, item: Any) -> None:
        self.watch.look()
        await trio.sleep(1)
        self.items.append(item)


class SlowerSink(_Branch):
    """A sink taking three virtual seconds per item, looking at the inboxes before each."""

    async def process_item(self, item: Any) -> None:
        self.watch.look()
        await trio.sleep(3)
        self.items.append(item)


class BlockingSink(_Branch):
    """A sync sink in its worker thread (``blocking=True``), slow by its thread hops.

    From its thread it asks the Trio thread to look at the inboxes on every
    item, and waits for that: each item costs two real thread hops, while the
    producers run freely in the Trio thread.
    """

    def __init__(self, watch: Watch, name: str, capacity: int = CAPACITY) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        super().__init__(watch, name, capacity, blocking=True)

    def setup(self) -> None:
        self.token = trio.lowlevel.current_trio_token()

    def process_item(self, item: Any) -> None:
        assert threading.current_thread() is not threading.main_thread()
        trio.from_thread.run_sync(self.watch.look, trio_token=self.token)
        self.items.append(item)


SLOW_KINDS: dict[str, type[_Branch]] = {"async": SlowSink, "thread": BlockingSink}

#: SOURCE_KINDS for the bound tests (Items batches included: a batch larger than the
#: room is sent as room is made).
BOUNDED_SOURCE_KINDS = SOURCE_KINDS


def branches(
    watch: Watch, slow_kind: str, slow_at: int, fast_capacity: int
) -> tuple[list[_Branch], _Branch]:
    """Three branch sinks, the slow one (capacity CAPACITY) at ``slow_at``; and the slow one."""
    nodes: list[_Branch] = []
    for position in range(3):
        name = f"branch_{position}"
        if position == slow_at:
            nodes.append(SLOW_KINDS[slow_kind](watch, name))
        else:
            nodes.append(FastSink(watch, name, fast_capacity))
    return nodes, nodes[slow_at]


def run_watched(source: NanoNode, watch: Watch) -> Any:
    """Run the pipeline of ``source`` on the fake clock, ``watch`` looking from inside."""
    pipeline = Pipeline(source, name="guarantees")
    watch.pipeline = pipeline
    return run_pipeline(pipeline, time_limit=10_000)


#: Capacities of the fast branches: the slow one's (edges fill in step) and more
#: (the fast inboxes have room while the slow one is full).
FAST_CAPACITIES = [CAPACITY, 4 * CAPACITY]


class TestFanOutBackPressure:
    @pytest.mark.parametrize("fast_capacity", FAST_CAPACITIES)
    @pytest.mark.parametrize("slow_at", [0, 2])
    @pytest.mark.parametrize("slow_kind", sorted(SLOW_KINDS))
    @pytest.mark.parametrize("kind", BOUNDED_SOURCE_KINDS)
    def test_source_fan_out_bounds_every_branch(
        self, kind: str, slow_kind: str, slow_at: int, fast_capacity: int
    ) -> None:
        """A source fanning out to three branches, one slow, never overfills any branch's inbox."""
        watch = Watch()
        source, emitted = make_source(kind, COUNT)
        sinks, slow = branches(watch, slow_kind, slow_at, fast_capacity)
        source > sinks
        summary = run_watched(source, watch)
        watch.check(summary, full=slow.name)
        assert emitted() == list(range(COUNT))
        for sink in sinks:
            assert sink.items == emitted(), sink.name

    @pytest.mark.parametrize("slow_kind", sorted(SLOW_KINDS))
    @pytest.mark.parametrize("kind", BOUNDED_SOURCE_KINDS)
    def test_slow_branch_beside_a_default_capacity_branch(self, kind: str, slow_kind: str) -> None:
        """A slow capacity-4 branch linked after a fast branch of default capacity stays bounded."""
        watch = Watch()
        source, emitted = make_source(kind, COUNT)
        fast = FastSink(watch, "fast", DEFAULT_CAPACITY)
        slow = SLOW_KINDS[slow_kind](watch, "slow")
        source > [fast, slow]
        summary = run_watched(source, watch)
        watch.check(summary, full="slow")
        assert fast.items == slow.items == emitted() == list(range(COUNT))


class PassFunction(NanoNode):
    def process_item(self, item: Any) -> Any:
        return item


class PassGenerator(NanoNode):
    def process_item(self, item: Any) -> Iterator[Any]:
        yield item


class PassAsyncFunction(NanoNode):
    async def process_item(self, item: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return item


class PassAsyncGenerator(NanoNode):
    async def process_item(self, item: Any) -> AsyncIterator[Any]:
        await trio.lowlevel.checkpoint()
        yield item


class PassWithFinish(NanoNode):
    def process_item(self, item: Any) -> Any:
        return item

    def finish(self) -> None:
        return None


#: A pass-through processor of each style and policy the engine runs differently.
PROCESSORS: dict[str, Callable[[], NanoNode]] = {
    "function": lambda: PassFunction(name="proc"),
    "function_with_finish": lambda: PassWithFinish(name="proc"),
    "generator": lambda: PassGenerator(name="proc"),
    "async_function": lambda: PassAsyncFunction(name="proc"),
    "async_generator": lambda: PassAsyncGenerator(name="proc"),
    "skip_policy": lambda: PassFunction(name="proc", on_error="skip"),
    "retry_policy": lambda: PassGenerator(name="proc", on_error="retry"),
    "blocking": lambda: PassFunction(name="proc", blocking=True),
    "blocking_generator": lambda: PassGenerator(name="proc", blocking=True),
}


class TestProcessorFanOutBackPressure:
    @pytest.mark.parametrize("slow_kind", sorted(SLOW_KINDS))
    @pytest.mark.parametrize("kind", ["async_generator", "thread_generator", "inline_generator"])
    @pytest.mark.parametrize("style", sorted(PROCESSORS))
    def test_processor_fan_out_bounds_every_branch(
        self, style: str, kind: str, slow_kind: str
    ) -> None:
        """A processor fanning out to three branches, the middle one slow, overfills none."""
        watch = Watch()
        source, emitted = make_source(kind, COUNT)
        processor = watch.expect(PROCESSORS[style](), CAPACITY)
        sinks, slow = branches(watch, slow_kind, 1, 4 * CAPACITY)
        source > processor > sinks
        summary = run_watched(source, watch)
        # A processor in a thread feeding a sink in a thread: either may be the slower.
        racing = style.startswith("blocking") and slow_kind == "thread"
        watch.check(summary, full=None if racing else slow.name)
        for sink in sinks:
            assert sink.items == emitted() == list(range(COUNT)), sink.name


class TestFanInBackPressure:
    @pytest.mark.parametrize("slow_kind", sorted(SLOW_KINDS))
    @pytest.mark.parametrize(
        "kinds",
        [
            ("async_generator", "async_generator"),
            ("thread_generator", "thread_generator"),
            ("inline_generator", "inline_generator"),
            ("thread_function", "inline_function"),
            ("async_generator", "thread_generator", "inline_generator", "fake_source"),
        ],
        ids="+".join,
    )
    def test_fan_in_into_one_slow_sink(self, kinds: tuple[str, ...], slow_kind: str) -> None:
        """Several sources into one slow sink never overfill its inbox, and lose nothing."""
        watch = Watch()
        sink = SLOW_KINDS[slow_kind](watch, "sink")
        sources = []
        for number, kind in enumerate(kinds):
            source, emitted = make_source(kind, COUNT, name=f"src_{number}", first=1000 * number)
            source > sink
            sources.append((number, emitted))
        summary = run_watched(sink, watch)
        watch.check(summary, full="sink")
        assert len(sink.items) == COUNT * len(kinds)
        for number, emitted in sources:
            mine = [item for item in sink.items if item // 1000 == number]
            assert mine == emitted() == list(range(1000 * number, 1000 * number + COUNT))

    @pytest.mark.parametrize("other_kind", ["async_generator", "thread_generator", "fake_source"])
    @pytest.mark.parametrize("kind", ["async_generator", "thread_generator", "fake_source"])
    def test_fan_out_into_an_inbox_another_source_also_fills(
        self, kind: str, other_kind: str
    ) -> None:
        """A fan-out waiting on two slow inboxes in turn never overfills the one shared by fan-in.

        While the first source waits for room in its second branch, the other
        source refills the shared inbox it already waited on: it must wait
        for that one again before it pushes.
        """
        watch = Watch()
        shared = SlowSink(watch, "shared")
        slower = SlowerSink(watch, "slower")
        fanning, fanned = make_source(kind, COUNT, name="fanning")
        other, others = make_source(other_kind, COUNT, name="other", first=1000)
        fanning > [shared, slower]
        other > shared
        summary = run_watched(fanning, watch)
        watch.check(summary, full="shared")
        assert slower.items == fanned() == list(range(COUNT))
        assert [item for item in shared.items if item < 1000] == fanned()
        assert [item for item in shared.items if item >= 1000] == others()
        assert len(others()) == COUNT


# -- stop(): what the sources emitted is what the sink received ------------------------


class StoppingSink(NanoNode):
    """A slow sink that stops its pipeline once ``stop_at`` items have arrived.

    It takes one virtual second per item, so the source runs into
    back-pressure and the stop lands while items are in flight everywhere:
    in the inbox, in the producer's hands, in a thread's hand-off.
    """

    def __init__(self, stop_at: int, **options: Any) -> None:
        self.stop_at = stop_at
        self.items: list[Any] = []
        self.pipeline: Pipeline | None = None
        self.stopped_at: float | None = None
        super().__init__(capacity=CAPACITY, **options)

    async def process_item(self, item: Any) -> None:
        self.items.append(item)
        if len(self.items) == self.stop_at:
            assert self.pipeline is not None
            self.stopped_at = trio.current_time()
            self.pipeline.stop()
        await trio.sleep(1)


def assert_delivered_exactly(received: list[Any], emitted: list[Any], *, at_least: int) -> None:
    """The sink got exactly what the source emitted, in order, once each."""
    assert len(set(received)) == len(received), "an item arrived twice"
    assert received == emitted, (len(received), len(emitted))
    assert len(received) >= at_least


#: Far more items than any test lets through before it stops.
ENDLESS = 10_000


class TestStopLosesNothing:
    @pytest.mark.parametrize("stop_at", [1, 10, 25])
    @pytest.mark.parametrize("kind", SOURCE_KINDS)
    def test_stop_from_the_sink(self, kind: str, stop_at: int) -> None:
        """A stop() from the sink mid-stream delivers every item the source handed over, once."""
        source, emitted = make_source(kind, ENDLESS)
        sink = StoppingSink(stop_at, name="sink")
        source > sink
        pipeline = sink.pipeline = Pipeline(source, name="stopping")
        summary = run_pipeline(pipeline, time_limit=10_000)
        assert summary.status == "finished"
        assert sink.stopped_at is not None
        assert_delivered_exactly(sink.items, emitted(), at_least=stop_at)
        assert len(emitted()) < ENDLESS  # the stop really stopped the source

    @pytest.mark.parametrize("kind", SOURCE_KINDS)
    def test_stop_through_a_processor_fan_out(self, kind: str) -> None:
        """A stop() delivers every emitted item through a processor to each branch of a fan-out."""
        source, emitted = make_source(kind, ENDLESS)
        sink = StoppingSink(12, name="sink")
        other = CollectingSink(name="other", capacity=CAPACITY)
        source > PassGenerator(name="proc", capacity=CAPACITY) > [other, sink]
        pipeline = sink.pipeline = Pipeline(source, name="stopping")
        run_pipeline(pipeline, time_limit=10_000)
        assert_delivered_exactly(sink.items, emitted(), at_least=12)
        assert other.items == emitted()

    @pytest.mark.parametrize("shield", [False, True])
    def test_stop_while_an_async_source_waits(self, shield: bool) -> None:
        """A stop() from a task while an async source awaits: what it yields after is delivered.

        Shielded, the source's wait outlasts the stop and it hands over one
        more item after the stop was requested; that item must arrive too.
        """
        entries = script(ENDLESS)
        source = AsyncGeneratorSource(entries, pause=2.0, shield=shield, name="src")
        sink = CollectingSink(name="sink", capacity=CAPACITY)
        source > sink
        pipeline = Pipeline(source, name="stopping")
        stopped_with: list[int] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.sleep(11)  # items at t=2, 4, ... 10 are out; the next one is due at 12
                stopped_with.append(len(entries.emitted))
                pipeline.stop()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert stopped_with == [5]
        assert_delivered_exactly(sink.items, entries.emitted, at_least=5)
        assert len(entries.emitted) == (6 if shield else 5)

    def test_stop_from_a_task_with_a_fake_source(self) -> None:
        """A stop() from another task midway through a FakeSource script delivers all it emitted."""
        source = FakeSource(range(ENDLESS), interval=0.5, name="src")
        sink = CollectingSink(name="sink", capacity=CAPACITY)
        source > sink
        pipeline = Pipeline(source, name="stopping")

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                await trio.sleep(7.25)
                pipeline.stop()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert_delivered_exactly(sink.items, source.emitted, at_least=15)
        assert sink.items == list(range(15))


class HeldSink(NanoNode):
    """A sink that holds on to its first item until ``release`` is set."""

    def __init__(self, **options: Any) -> None:
        self.items: list[Any] = []
        self.release = trio.Event()
        super().__init__(capacity=CAPACITY, **options)

    async def process_item(self, item: Any) -> None:
        self.items.append(item)
        await self.release.wait()


async def wait_in_thread(event: threading.Event) -> None:
    """Wait for a worker thread to set ``event``, without blocking Trio."""
    assert await trio.to_thread.run_sync(event.wait, PATIENCE, abandon_on_cancel=True)


class TestStopWithItemsInTheThreadHandOff:
    @pytest.mark.parametrize("kind", ["thread_generator", "thread_function", "thread_items"])
    async def test_stop_while_items_wait_in_the_hand_off(self, kind: str) -> None:
        """A stop() while a real source thread's items wait in its hand-off delivers all of them.

        The sink holds its first item, so its inbox fills up and the Trio side
        of the source waits for room; the thread then hands over a few more
        items, which can only wait in the hand-off, and blocks on an event.
        The stop lands there; then the thread hands over the entry it was
        producing and the sink is released: every recorded item must arrive,
        once, in order.
        """
        chunk = CHUNK if kind == "thread_items" else 1
        # More than the sink's batch in hand plus its full inbox, then a few.
        first = -(-(2 * CAPACITY + 2) // chunk)
        second = 1 if chunk > 1 else 3
        entries = script(ENDLESS * chunk, chunk=chunk)
        filled, waiting = entries.gate(first), entries.gate(first + second)
        source = source_of(kind, entries)
        sink = HeldSink(name="sink")
        source > sink
        pipeline = Pipeline(source, name="gated")
        try:
            with trio.fail_after(PATIENCE):
                async with trio.open_nursery() as nursery:
                    await nursery.start(pipeline.run)
                    await wait_in_thread(filled.reached)
                    # Every task parked: the sink on its first item, the
                    # source's Trio side waiting for room in the full inbox.
                    await trio.testing.wait_all_tasks_blocked()
                    assert pipeline.statistics()["sink"].inbox_queued == CAPACITY
                    filled.opened.set()
                    await wait_in_thread(waiting.reached)
                    assert len(entries.emitted) == (first + second) * chunk
                    pipeline.stop()
                    waiting.opened.set()
                    sink.release.set()
        finally:
            entries.open_all()
        assert pipeline.status == "finished"
        assert_delivered_exactly(sink.items, entries.emitted, at_least=(first + second) * chunk)
        # The entry in production when the stop landed still went out, then the thread quit.
        assert len(entries.emitted) <= (first + second + 1) * chunk
        (thread,) = entries.threads
        assert thread is not threading.main_thread()
        assert not thread.is_alive()
