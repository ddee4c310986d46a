"""Lines handed over as plain ``str`` in located batches (TailFile, LocalFileReader per line):
a line singled out by an error still names its file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from nanostream_testing import CollectingSink
from nanostream_trio import NanoNode, Pipeline, Retry
from nanostream_trio._items import Lines
from nanostream_trio.nodes import JSONLineError, JSONLinesParser, Line, LocalFileReader, TailFile

#: Line numbers of the bad lines in ``json_log``: first chunk, a later chunk, the last line.
BAD = (3, 2_500, 6_000)


class Recorder(CollectingSink):
    def __init__(self, name: str | None = None, **engine: Any) -> None:
        super().__init__(name, allow_empty=True, **engine)


class OnePath(NanoNode):
    def __init__(self, path: Path) -> None:
        super().__init__(blocking=False)
        self.path = path

    def generator(self) -> Any:
        yield self.path


class FailsOn(NanoNode):
    """Raises ValueError for the lines in ``bad`` (by text); passes the others on."""

    def __init__(self, bad: set[str], **engine: Any) -> None:
        super().__init__(**engine)
        self.bad = bad

    def process_item(self, line: Any) -> Any:
        return passed(line, self.bad)


def passed(line: Any, bad: set[str]) -> Any:
    """``line``, or ValueError if it is one of ``bad``."""
    if line in bad:
        msg = f"bad: {line}"
        raise ValueError(msg)
    return line


class ReadsPath(NanoNode):
    def process_item(self, line: Any) -> Any:
        return line.path


def json_log(tmp_path: Path) -> Path:
    """6,000 JSON lines (several 64 KiB chunks), not JSON at the numbers in ``BAD``."""
    return json_log_at(tmp_path / "app.jsonl")


def json_log_at(log: Path) -> Path:
    """``json_log``'s lines written to ``log``."""
    lines = [f'{{"n": {n}, "pad": "{"x" * 40}"}}' for n in range(1, 6_001)]
    for number in BAD:
        lines[number - 1] = f"broken {number}"
    log.write_text("\n".join(lines) + "\n")
    return log


def reader(kind: str, log: Path) -> tuple[NanoNode, NanoNode]:
    """A source of ``log``'s lines with default options: (the pipeline's source, its exit)."""
    if kind == "tail":
        tail = TailFile(log, follow=False)
        return tail, tail
    source, lines = OnePath(log), LocalFileReader(serialize=True)
    source > lines
    return source, lines


@pytest.mark.parametrize("kind", ["tail", "file_reader"])
class TestLocatedLines:
    async def test_lines_are_plain_strings_by_default(self, tmp_path: Path, kind: str) -> None:
        """By default every line arrives as an exact str, in order."""
        log = json_log(tmp_path)
        source, lines = reader(kind, log)
        sink = Recorder()
        lines > sink
        await Pipeline(source).run()
        assert sink.items == log.read_text().splitlines()
        assert {type(line) for line in sink.items} == {str}

    async def test_parser_dead_letters_name_file_and_line(self, tmp_path: Path, kind: str) -> None:
        """JSONLinesParser linked after the reader (inbox smaller than a chunk, so batches
        are cut) names the file and line of each bad line; each dead letter's item is a
        Line with its path and number."""
        log = json_log(tmp_path)
        source, lines = reader(kind, log)
        sink, letters = Recorder(), Recorder(name="letters")
        parser = JSONLinesParser(on_error="dead_letter", capacity=100)
        lines > parser > sink
        parser.dead_letters > letters
        await Pipeline(source).run()
        assert len(sink.items) == 6_000 - len(BAD)
        assert [letter.message.split(": invalid JSON")[0] for letter in letters.items] == [
            f"{log}, line {number}" for number in BAD
        ]
        assert [(type(x.item), x.item.path, x.item.lineno) for x in letters.items] == [
            (Line, str(log), number) for number in BAD
        ]

    async def test_parser_error_names_file_and_line(self, tmp_path: Path, kind: str) -> None:
        """Under on_error="raise" the parser's error names the file and line."""
        log = json_log(tmp_path)
        source, lines = reader(kind, log)
        lines > JSONLinesParser() > Recorder()
        with pytest.raises(JSONLineError, match=rf"^{log}, line 3: invalid JSON") as caught:
            await Pipeline(source).run()
        assert (caught.value.path, caught.value.line, caught.value.content) == (
            str(log),
            3,
            "broken 3",
        )

    async def test_any_node_error_is_noted_with_file_and_line(
        self, tmp_path: Path, kind: str
    ) -> None:
        """A user's node that fails on a line gets a note naming the file and line; a skipped
        line's event shows it too."""
        log = json_log(tmp_path)
        source, lines = reader(kind, log)
        lines > FailsOn({"broken 2500"}) > Recorder()
        with pytest.raises(ValueError, match="bad: broken 2500") as caught:
            await Pipeline(source).run()
        assert f"the item is {log}, line 2500" in caught.value.__notes__

    async def test_reading_path_gives_a_hint(self, tmp_path: Path, kind: str) -> None:
        """A node reading line.path on a plain line is told about locate=True."""
        log = json_log(tmp_path)
        source, lines = reader(kind, log)
        lines > ReadsPath() > Recorder()
        with pytest.raises(AttributeError) as caught:
            await Pipeline(source).run()
        assert any("locate=True" in note for note in caught.value.__notes__)

    async def test_locate_true_gives_line_objects(self, tmp_path: Path, kind: str) -> None:
        """With locate=True each line is a Line with its path and number (the old default)."""
        log = json_log(tmp_path)
        if kind == "tail":
            source = exit_node = TailFile(log, follow=False, locate=True)
        else:
            source, exit_node = OnePath(log), LocalFileReader(serialize=True, locate=True)
            source > exit_node
        sink = Recorder()
        exit_node > sink
        await Pipeline(source).run()
        assert all(isinstance(line, Line) for line in sink.items)
        assert [(x.path, x.lineno) for x in sink.items[:2]] == [(str(log), 1), (str(log), 2)]
        assert sink.items[-1].lineno == 6_000


class TestFanOut:
    async def test_each_branch_names_file_and_line(self, tmp_path: Path) -> None:
        """TailFile feeding two parsers: both name the file and line of the bad lines."""
        log = json_log(tmp_path)
        tail = TailFile(log, follow=False)
        first, second = JSONLinesParser(on_error="dead_letter"), JSONLinesParser(on_error="skip")
        letters = Recorder(name="letters")
        tail > [first, second]
        first > Recorder()
        second > Recorder()
        first.dead_letters > letters
        summary = await Pipeline(tail).run()
        assert [x.item.lineno for x in letters.items] == list(BAD)
        assert summary[second.name].skipped == len(BAD)


class TestLinesBatch:
    def test_pieces_and_lines_keep_their_numbers(self) -> None:
        """A piece of a Lines batch is numbered on from the batch's first line."""
        batch = Lines(["a", "b", "c", "d"], "app.log", 10)
        piece = batch.piece(2, 4)
        assert (piece, piece.path, piece.first) == (["c", "d"], "app.log", 12)
        line = piece.line(1)
        assert (type(line), line, line.path, line.lineno) == (Line, "d", "app.log", 13)


class OnePathLater(NanoNode):
    """Emits the path ``log`` (the test writes the file after the reader's first failure)."""

    def __init__(self, log: Path) -> None:
        super().__init__(blocking=False)
        self.log = log

    async def generator(self) -> Any:
        yield self.log


class TestReadAgain:
    async def test_a_file_that_opens_on_retry_is_read_in_located_blocks(
        self, tmp_path: Path, autojump_clock: Any
    ) -> None:
        """A file missing when the read stage tried it, there at the retry, is read by the
        policy stage: every line once, bad JSON lines still named by file and line."""
        log = tmp_path / "late.jsonl"
        source = OnePathLater(log)
        retry = Retry(attempts=2, backoff=10)
        reader = LocalFileReader(serialize=True, on_error="retry", retry=retry)
        parser = JSONLinesParser(on_error="dead_letter")
        sink, letters = Recorder(), Recorder(name="letters")
        source > reader > parser > sink
        parser.dead_letters > letters
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(Pipeline(source).run)
                for _ in range(5_000):  # virtual ms; the retry waits 10 s after the failure
                    if any(e["event"] == "item_retried" for e in logs):
                        break
                    await trio.sleep(0.001)
                json_log_at(log)
        assert [e["attempt"] for e in logs if e["event"] == "item_retried"] == [1]
        assert len(sink.items) == 6_000 - len(BAD)
        assert [x.item.lineno for x in letters.items] == list(BAD)
        assert {x.item.path for x in letters.items} == {str(log)}


class AsyncFailsOn(NanoNode):
    """FailsOn as an async node."""

    def __init__(self, bad: set[str], **engine: Any) -> None:
        super().__init__(**engine)
        self.bad = bad

    async def process_item(self, line: Any) -> Any:
        return passed(line, self.bad)


class TestEveryKindOfNode:
    @pytest.mark.parametrize(
        "make",
        [
            lambda bad: FailsOn(bad, blocking=True),
            lambda bad: AsyncFailsOn(bad),
        ],
        ids=["blocking", "async"],
    )
    async def test_error_is_noted_with_file_and_line(self, tmp_path: Path, make: Any) -> None:
        """A blocking or async node right after TailFile notes the file and line of a failure."""
        log = json_log(tmp_path)
        tail = TailFile(log, follow=False)
        tail > make({"broken 2500"}) > Recorder()
        with pytest.raises(ValueError, match="bad: broken 2500") as caught:
            await Pipeline(tail).run()
        assert f"the item is {log}, line 2500" in caught.value.__notes__

    async def test_async_dead_letter_item_is_a_line(self, tmp_path: Path) -> None:
        """An async node's dead letter for a located line holds a Line with its number."""
        log = json_log(tmp_path)
        tail = TailFile(log, follow=False)
        node, letters = (
            AsyncFailsOn({"broken 3", "broken 6000"}, on_error="dead_letter"),
            Recorder(),
        )
        tail > node > Recorder()
        node.dead_letters > letters
        await Pipeline(tail).run()
        assert [(x.item.path, x.item.lineno) for x in letters.items] == [
            (str(log), 3),
            (str(log), 6_000),
        ]
