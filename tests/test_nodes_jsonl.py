"""Tests of JSONLinesParser (bad lines through the policy with line numbers) and
JSONLinesWriter (appending, flushing, rotating) on real files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from nanostream_testing import CollectingSink, FakeSource, capture_events
from nanostream_trio import ConfigError, Items, NanoNode, Pipeline
from nanostream_trio.nodes import (
    JSONLineError,
    JSONLinesParser,
    JSONLinesWriter,
    Line,
    LocalFileReader,
)

ItemSource = FakeSource  # scripted items, all at time 0


class Recorder(CollectingSink):
    """Keeps what arrives; nothing arriving is a legitimate outcome in these tests."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, allow_empty=True)


def lines_of(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


class TestParser:
    async def test_parses_each_line(self) -> None:
        """Each line's JSON value is emitted; str and bytes both work; blank lines are ignored."""
        source, sink = ItemSource(['{"a": 1}', b"[2]", "  ", '"x"']), Recorder()
        source > JSONLinesParser() > sink
        await Pipeline(source).run()
        assert sink.items == [{"a": 1}, [2], "x"]

    async def test_bad_lines_are_dead_lettered_with_file_and_line(self, tmp_path: Path) -> None:
        """Bad lines from a file name the file, line number and content; good lines flow."""
        log = tmp_path / "app.jsonl"
        log.write_text('{"n": 1}\n{"n": 2\nnot json\n{"n": 4}\n')
        source, sink, letters = ItemSource([log]), Recorder(), Recorder(name="letters")
        parser = JSONLinesParser(name="parse")
        source > LocalFileReader(serialize=True) > parser > sink
        parser.dead_letters > letters
        stats = await Pipeline(source).run()
        assert sink.items == [{"n": 1}, {"n": 4}]
        assert stats["parse"].dead_lettered == 2
        first, second = letters.items
        assert first.exc_type == "JSONLineError"
        assert first.message.startswith(f"{log}, line 2: invalid JSON (")
        assert first.message.endswith("""'{"n": 2'""")
        assert (
            second.message == f"{log}, line 3: invalid JSON (Expecting value: column 1): 'not json'"
        )
        assert isinstance(first.item, Line)
        assert first.item.lineno == 2

    async def test_plain_strings_are_counted(self) -> None:
        """Without a Line, the line number is the count of lines the node received."""
        source = ItemSource(["1", "2", "{oops"])
        source > JSONLinesParser() > Recorder()
        with pytest.raises(JSONLineError, match=r"^input line 3: invalid JSON") as info:
            await Pipeline(source).run()
        assert (info.value.line, info.value.content) == (3, "{oops")

    async def test_binary_garbage_line(self) -> None:
        """Undecodable bytes are a JSONLineError through the skip policy."""
        source, sink = ItemSource([b"\xff\xfe\x00", b"{}"]), Recorder()
        source > JSONLinesParser(on_error="skip", name="parse") > sink
        stats = await Pipeline(source).run()
        assert sink.items == [{}]
        assert stats["parse"].skipped == 1

    async def test_blank_line_is_an_error_when_asked(self) -> None:
        """skip_blank=False makes an empty line invalid JSON."""
        source = ItemSource([""])
        source > JSONLinesParser(skip_blank=False) > Recorder()
        with pytest.raises(JSONLineError, match="input line 1"):
            await Pipeline(source).run()

    async def test_non_text_item_is_a_type_error(self) -> None:
        """A dict given to the parser is a TypeError naming the node."""
        source = ItemSource([{"a": 1}])
        source > JSONLinesParser(name="parse") > Recorder()
        with pytest.raises(TypeError, match="node 'parse' expects a line of JSON text"):
            await Pipeline(source).run()


class TestWriter:
    async def test_appends_one_line_per_item(self, tmp_path: Path) -> None:
        """Items are appended as JSON lines after what the file held."""
        out = tmp_path / "out.jsonl"
        out.write_text('{"old": true}\n')
        source = ItemSource([{"a": 1}, [1, "é"], "s"])
        source > JSONLinesWriter(out)
        await Pipeline(source).run()
        assert out.read_text(encoding="utf-8").splitlines() == [
            '{"old": true}',
            '{"a": 1}',
            '[1, "é"]',
            '"s"',
        ]

    async def test_ready_means_open_and_each_line_is_flushed(self, tmp_path: Path) -> None:
        """The file exists once the pipeline is ready, and each line is visible at once."""
        out = tmp_path / "live.jsonl"
        send, receive = trio.open_memory_channel[Any](0)

        class ChannelSource(NanoNode):
            async def generator(self) -> Any:
                async for item in receive:
                    yield item

        written = trio.Event()

        class SignallingWriter(JSONLinesWriter):
            def process_item(self, item: Any) -> None:
                super().process_item(item)
                written.set()

        source = ChannelSource()
        source > SignallingWriter(out)
        pipeline = Pipeline(source)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            assert out.exists()
            await send.send({"n": 1})
            with trio.fail_after(5):
                await written.wait()
            assert out.read_text() == '{"n": 1}\n'
            await send.aclose()

    async def test_unencodable_item_goes_through_policy(self, tmp_path: Path) -> None:
        """With default=None, an object JSON cannot encode is skipped; others are written."""
        out = tmp_path / "out.jsonl"
        source = ItemSource([1, object(), 2])
        source > JSONLinesWriter(out, default=None, on_error="skip", name="write")
        stats = await Pipeline(source).run()
        assert out.read_text() == "1\n2\n"
        assert stats["write"].skipped == 1

    async def test_default_str_for_other_objects(self, tmp_path: Path) -> None:
        """By default an unknown object is written as its str()."""
        out = tmp_path / "out.jsonl"
        source = ItemSource([{"p": Path("/x")}])
        source > JSONLinesWriter(out)
        await Pipeline(source).run()
        assert json.loads(out.read_text()) == {"p": "/x"}

    async def test_rotation_by_size_keeps_backups(self, tmp_path: Path) -> None:
        """Files rotate before exceeding max_bytes, keeping the newest backups."""
        out = tmp_path / "r.jsonl"
        source = ItemSource([f"{i:08d}" for i in range(10)])  # 11 bytes per line
        source > JSONLinesWriter(out, max_bytes=25, backups=2, flush_every=0)
        await Pipeline(source).run()
        assert out.read_text().splitlines() == ['"00000008"', '"00000009"']
        assert lines_of(f"{out}.1") == ['"00000006"', '"00000007"']
        assert lines_of(f"{out}.2") == ['"00000004"', '"00000005"']
        assert names_in(tmp_path) == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]

    def test_bad_settings_are_config_errors(self, tmp_path: Path) -> None:
        """Negative flush_every or zero max_bytes are refused with the key named."""
        with pytest.raises(ConfigError, match="flush_every"):
            JSONLinesWriter(tmp_path / "x", flush_every=-1)
        with pytest.raises(ConfigError, match="max_bytes"):
            JSONLinesWriter(tmp_path / "x", max_bytes=0)


class TestNothingLost:
    async def test_nulls_and_blank_lines_are_counted(self, tmp_path: Path) -> None:
        """500 null lines and 50 blank ones give no output and are counted, so every line
        received is an output, a dead letter, a null or a blank line; one event reports them."""
        log = tmp_path / "app.jsonl"
        lines = [f'{{"n": {i}}}' for i in range(2000)]
        lines += ["null"] * 500 + ["not json"] * 100 + ["  "] * 50
        random.Random(4).shuffle(lines)
        log.write_text("\n".join(lines) + "\n")
        source, sink, letters = ItemSource([log]), Recorder(), Recorder(name="letters")
        parser = JSONLinesParser(name="parse")
        source > LocalFileReader(serialize=True) > parser > sink
        parser.dead_letters > letters
        with capture_events() as events:
            stats = await Pipeline(source).run()
        parse = stats["parse"]
        assert (parser.nulls, parser.blank_lines) == (500, 50)
        assert (parse.items_in, parse.items_out, parse.dead_lettered) == (2650, 2000, 100)
        assert parse.items_in == (
            parse.items_out
            + parse.dead_lettered
            + parse.skipped
            + parser.nulls
            + parser.blank_lines
        )
        events.assert_emitted("json_lines_dropped", node="parse", nulls=500, blank_lines=50)


class TestFlushing:
    async def test_a_burst_is_flushed_together(self, tmp_path: Path) -> None:
        """By default 2,000 items arriving together cost a few flushes, not one per line (as
        flush_every=1 still does); every line is in the file at the end."""

        class BurstSource(NanoNode):
            async def generator(self) -> Any:
                yield Items({"n": i} for i in range(2000))

        flushes = []
        for every in (None, 1):
            out = tmp_path / f"burst-{every}.jsonl"
            writer = FlushCounter(out, flush_every=every)
            source = BurstSource()
            source > writer
            await Pipeline(source).run()
            assert len(lines_of(str(out))) == 2000
            flushes.append(writer.flushes)
        assert 1 <= flushes[0] <= 40
        assert flushes[1] >= 2000

    async def test_end_of_a_burst_is_flushed_before_the_pipeline_waits(
        self, tmp_path: Path
    ) -> None:
        """The whole burst is in the file once the pipeline is idle, while it keeps running."""
        out = tmp_path / "idle.jsonl"
        send, receive = trio.open_memory_channel[Any](0)

        class BurstSource(NanoNode):
            async def generator(self) -> Any:
                for i in range(500):
                    yield {"n": i}
                async for item in receive:
                    yield item

        source = BurstSource()
        source > JSONLinesWriter(out)
        pipeline = Pipeline(source)
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            with trio.fail_after(5):
                while pipeline.statistics()[source.downstream[0].name].items_in < 500:
                    await trio.testing.wait_all_tasks_blocked()
                await trio.testing.wait_all_tasks_blocked()
            assert len(lines_of(str(out))) == 500
            await send.aclose()


class FlushCounter(JSONLinesWriter):
    """Counts the flushes it makes."""

    flushes = 0

    def _flush(self) -> None:
        self.flushes += 1
        super()._flush()
