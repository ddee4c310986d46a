"""Tests of LocalFileReader and PrinterOfThings on real files in a temporary directory."""

from __future__ import annotations

import io
import pprint
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trio

from nanostream_testing import CollectingSink, FakeSource
from nanostream_trio import DeadLetter, NanoNode, Pipeline
from nanostream_trio.nodes import (
    CSVReader,
    FileDecodeError,
    FileText,
    Line,
    LocalFileReader,
    PrinterOfThings,
)
from nanostream_trio.nodes._files import READ_CHUNK, TextChunk

PathSource = FakeSource  # scripted items, all at time 0


class Recorder(CollectingSink):
    """Keeps what arrives; nothing arriving is a legitimate outcome in these tests."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, allow_empty=True)


async def read(paths: list[Any], reader: LocalFileReader) -> tuple[Recorder, list[DeadLetter]]:
    source, sink, letters = PathSource(paths), Recorder(), Recorder(name="letters")
    source > reader > sink
    reader.dead_letters > letters
    await Pipeline(source).run()
    return sink, letters.items


class TestWholeText:
    async def test_emits_the_text_with_its_path(self, tmp_path: Path) -> None:
        """serialize=False emits the whole text as a FileText that knows its path."""
        target = tmp_path / "a.txt"
        target.write_text("one\ntwo\n")
        sink, _ = await read([target], LocalFileReader())
        (text,) = sink.items
        assert text == "one\ntwo\n"
        assert isinstance(text, FileText)
        assert text.path == str(target)

    async def test_binary_mode(self, tmp_path: Path) -> None:
        """binary=True emits the bytes unchanged."""
        target = tmp_path / "b.bin"
        target.write_bytes(b"\x00\xff\n")
        sink, _ = await read([str(target)], LocalFileReader(binary=True))
        assert sink.items == [b"\x00\xff\n"]

    async def test_binary_garbage_names_path_and_line(self, tmp_path: Path) -> None:
        """Undecodable bytes give a FileDecodeError naming the path and line."""
        target = tmp_path / "garbage.csv"
        target.write_bytes(b"ok\nfine\nbad \xff\xfe here\n")
        sink, letters = await read([target], LocalFileReader())
        assert sink.items == []
        (letter,) = letters
        assert letter.exc_type == "FileDecodeError"
        assert letter.message.startswith(f"{target}, line 3: cannot decode as utf-8")
        assert "binary=True" in letter.message


class TestPerLine:
    async def test_one_line_per_item_with_numbers(self, tmp_path: Path) -> None:
        """serialize=True emits plain str lines without endings; with locate=True, Lines
        numbered from 1."""
        target = tmp_path / "log.txt"
        target.write_bytes(b"alpha\r\nbeta\n\ngamma")
        sink, _ = await read([target], LocalFileReader(serialize=True))
        assert sink.items == ["alpha", "beta", "", "gamma"]
        assert {type(line) for line in sink.items} == {str}
        sink, _ = await read([target], LocalFileReader(serialize=True, locate=True))
        assert sink.items == ["alpha", "beta", "", "gamma"]
        assert [line.lineno for line in sink.items] == [1, 2, 3, 4]
        assert all(isinstance(line, Line) and line.path == str(target) for line in sink.items)

    async def test_large_file_streams_in_chunks(self, tmp_path: Path) -> None:
        """A file much larger than the read chunk arrives whole, line by line, in order."""
        target = tmp_path / "big.txt"
        lines = [f"line {i:06d} " + "x" * 50 for i in range(20_000)]
        target.write_text("\n".join(lines) + "\n")
        assert target.stat().st_size > 16 * 65536
        sink, _ = await read([target], LocalFileReader(serialize=True))
        assert sink.items == lines

    async def test_large_file_is_not_loaded_whole(self, tmp_path: Path) -> None:
        """With a slow consumer, the reader is never far ahead of it (bounded memory)."""
        target = tmp_path / "big.txt"
        target.write_text("".join(f"{i}\n" for i in range(50_000)))
        reader = LocalFileReader(serialize=True, name="reader")
        ahead: list[int] = []

        class SlowCounter(NanoNode):
            def __init__(self) -> None:
                super().__init__(capacity=10)
                self.count = 0

            async def process_item(self, item: Any) -> None:
                self.count += 1
                if self.count % 1000 == 0:
                    await trio.lowlevel.checkpoint()
                    ahead.append(pipeline.statistics()["reader"].items_out - self.count)

        source, sink = PathSource([target]), SlowCounter()
        source > reader > sink
        pipeline = Pipeline(source)
        await pipeline.run()
        assert sink.count == 50_000
        # At most one inbox plus one read chunk of lines (about 64 KiB) is in flight.
        assert max(ahead) <= 10 + 65536 // 2

    async def test_per_line_decode_error_has_line_number(self, tmp_path: Path) -> None:
        """A bad byte on line 2 is reported as line 2 of the file."""
        target = tmp_path / "bad.txt"
        target.write_bytes(b"fine\n\xc3\x28\n")
        reader = LocalFileReader(serialize=True)
        source = PathSource([target])
        source > reader > Recorder()
        with pytest.raises(FileDecodeError, match=r"bad.txt, line 2") as info:
            await Pipeline(source).run()
        assert info.value.line == 2

    async def test_undecodable_line_goes_through_the_policy_alone(self, tmp_path: Path) -> None:
        """With serialize=True and a dead-letter policy, a bad byte on line 2 dead-letters that
        line only; the lines around it still flow, numbered as in the file."""
        target = tmp_path / "mixed.txt"
        target.write_bytes(b"one\n\xc3\x28two\nthree\n")
        sink, letters = await read([target], LocalFileReader(serialize=True, name="lines"))
        assert sink.items == ["one", "three"]
        assert [line.lineno for line in sink.items] == [1, 3]
        (letter,) = letters
        assert letter.exc_type == "FileDecodeError"
        assert "mixed.txt, line 2" in letter.message

    async def test_skip_counts_each_bad_line(self, tmp_path: Path) -> None:
        """With on_error="skip" each undecodable line is one skip of the node; others flow."""
        target = tmp_path / "mixed.txt"
        target.write_bytes(b"\xff\na\n\xfe\nb\n")
        source, sink = PathSource([target]), Recorder()
        source > LocalFileReader(serialize=True, on_error="skip", name="lines") > sink
        stats = await Pipeline(source).run()
        assert sink.items == ["a", "b"]
        assert stats["lines"].skipped == 2
        assert stats["lines.read"].items_out == 4

    async def test_missing_file_per_line_names_the_path(self, tmp_path: Path) -> None:
        """With serialize=True a missing file is still one failure of the node naming it."""
        (tmp_path / "here.txt").write_text("x\n")
        missing = tmp_path / "gone.txt"
        sink, letters = await read(
            [missing, tmp_path / "here.txt"], LocalFileReader(serialize=True)
        )
        assert sink.items == ["x"]
        (letter,) = letters
        assert letter.exc_type == "FileNotFoundError"
        assert str(missing) in letter.message
        assert letter.item == str(missing)


class TestByteOrderMark:
    async def test_bom_is_dropped_from_whole_text(self, tmp_path: Path) -> None:
        """A UTF-8 BOM at the start of a file is not part of the text."""
        target = tmp_path / "excel.csv"
        target.write_bytes(b"\xef\xbb\xbfname\nann\n")
        sink, _ = await read([target], LocalFileReader())
        assert sink.items == ["name\nann\n"]

    async def test_bom_is_dropped_from_the_first_line(self, tmp_path: Path) -> None:
        """Per line, only the first line loses its BOM."""
        target = tmp_path / "excel.csv"
        target.write_bytes(b"\xef\xbb\xbfname\n\xef\xbb\xbfann\n")
        sink, _ = await read([target], LocalFileReader(serialize=True))
        assert sink.items == ["name", "\ufeffann"]

    async def test_binary_mode_keeps_the_bom(self, tmp_path: Path) -> None:
        """binary=True returns the bytes as they are."""
        target = tmp_path / "excel.csv"
        target.write_bytes(b"\xef\xbb\xbfname\n")
        sink, _ = await read([target], LocalFileReader(binary=True))
        assert sink.items == [b"\xef\xbb\xbfname\n"]


class TestBadPaths:
    async def test_missing_file_is_dead_lettered_with_its_path(self, tmp_path: Path) -> None:
        """A missing file goes through the policy with a message naming it; others are read."""
        (tmp_path / "here.txt").write_text("x")
        missing = tmp_path / "gone.txt"
        sink, letters = await read([missing, tmp_path / "here.txt"], LocalFileReader())
        assert sink.items == ["x"]
        (letter,) = letters
        assert letter.exc_type == "FileNotFoundError"
        assert str(missing) in letter.message

    async def test_unreadable_path_is_dead_lettered(self, tmp_path: Path) -> None:
        """A path that cannot be read as a file (a directory) names the path."""
        _, letters = await read([tmp_path], LocalFileReader(serialize=True))
        (letter,) = letters
        assert letter.exc_type == "IsADirectoryError"
        assert str(tmp_path) in letter.message

    async def test_not_a_path_is_a_type_error(self) -> None:
        """An item that is not a path is a TypeError naming the node."""
        _, letters = await read([42], LocalFileReader(name="files"))
        (letter,) = letters
        assert letter.exc_type == "TypeError"
        assert "node 'files' expects a file path" in letter.message

    async def test_skip_policy_records_and_continues(self, tmp_path: Path) -> None:
        """With skip, a vanished file is counted and the pipeline finishes."""
        (tmp_path / "a").write_text("a")
        source, sink = PathSource([tmp_path / "nope", tmp_path / "a"]), Recorder()
        source > LocalFileReader(on_error="skip", name="files") > sink
        stats = await Pipeline(source).run()
        assert sink.items == ["a"]
        assert stats["files"].skipped == 1


class TestPrinterOfThings:
    async def test_prints_and_passes_on(self) -> None:
        """Each item is printed with the prefix and passed downstream unchanged."""
        stream = io.StringIO()
        source, sink = PathSource([{"a": 1}, "b"]), Recorder()
        source > PrinterOfThings(prepend="> ", stream=stream) > sink
        await Pipeline(source).run()
        assert stream.getvalue() == "> {'a': 1}\n> b\n"
        assert sink.items == [{"a": 1}, "b"]

    async def test_pretty_and_stdout_as_sink(self, capsys: pytest.CaptureFixture[str]) -> None:
        """pretty=True uses pprint; as a sink it prints to sys.stdout."""
        source = PathSource([{"b": [1] * 30, "a": 2}])
        source > PrinterOfThings(pretty=True)
        await Pipeline(source).run()
        out = capsys.readouterr().out
        assert pprint.pformat({"a": 2, "b": [1] * 30}) + "\n" in out
        assert "\n 'b': [1,\n" in out


class ChunkRecorder(Recorder):
    """A sink that declares it accepts streamed text, as CSVReader does."""

    _ns_accepts_text_chunks = True


async def chunks_of(target: Path, reader: LocalFileReader | None = None) -> list[TextChunk]:
    source, sink = PathSource([target]), ChunkRecorder()
    reader = reader or LocalFileReader()
    source > reader > sink
    await Pipeline(source).run()
    assert reader.streams
    return sink.items


class TestStreaming:
    def test_streams_only_when_every_consumer_accepts_chunks(self) -> None:
        """A reader streams to CSVReader; not when another consumer wants whole texts, nor
        for binary, per-line or UTF-16 reading."""
        alone = LocalFileReader()
        _ = alone > CSVReader()
        assert alone.streams
        shared = LocalFileReader()
        _ = shared > [CSVReader(), Recorder()]
        assert not shared.streams
        for reader in (
            LocalFileReader(binary=True),
            LocalFileReader(serialize=True),
            LocalFileReader(encoding="utf-16"),
        ):
            _ = reader > CSVReader()
            assert not reader.streams

    async def test_chunks_are_whole_lines_in_order(self, tmp_path: Path) -> None:
        """A large file arrives as chunks of whole lines that add up to its text, numbered,
        one stream, the last one marked."""
        target = tmp_path / "big.txt"
        text = "".join(f"line {i} " + "y" * (i % 90) + "\n" for i in range(60_000))
        target.write_text(text)
        chunks = await chunks_of(target)
        assert len(chunks) > 10
        assert "".join(chunk.text for chunk in chunks) == text
        assert all(chunk.text.endswith("\n") for chunk in chunks[:-1])
        assert [chunk.last for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
        assert len({chunk.stream for chunk in chunks}) == 1
        line = 1
        for chunk in chunks:
            assert chunk.lineno == line
            assert chunk.path == str(target)
            line += chunk.text.count("\n")

    async def test_long_lines_and_cr_line_ends_are_never_cut(self, tmp_path: Path) -> None:
        """A line longer than a read, and a file whose lines end in CR alone, still come in
        chunks that end at a line end."""
        target = tmp_path / "odd.txt"
        text = "short\n" + "x" * (3 * READ_CHUNK) + "\n" + "".join(f"{i}\r" for i in range(40_000))
        target.write_text(text, newline="")
        chunks = await chunks_of(target)
        assert "".join(chunk.text for chunk in chunks) == text
        assert any(len(chunk.text) > 3 * READ_CHUNK for chunk in chunks)
        assert all(chunk.text[-1:] in ("\n", "\r", "") for chunk in chunks)

    async def test_bad_line_is_a_chunk_of_its_own(self, tmp_path: Path) -> None:
        """A line that does not decode becomes an error chunk naming file and line; the lines
        around it arrive as text."""
        target = tmp_path / "bad.txt"
        target.write_bytes(b"\xef\xbb\xbfone\ntwo\nth\xffree\nfour")
        chunks = await chunks_of(target)
        assert [(c.lineno, c.text) for c in chunks] == [
            (1, "one\ntwo\n"),
            (3, ""),
            (4, "four"),
            (4, ""),
        ]
        error = chunks[1].error
        assert isinstance(error, FileDecodeError)
        assert error.line == 3
        assert str(error).startswith(f"{target}, line 3: cannot decode")

    async def test_csv_job_memory_is_bounded_by_the_edges(self, tmp_path: Path) -> None:
        """LocalFileReader > CSVReader over a 12 MB file peaks below half the file's size in
        traced heap: the file is never in memory whole (a few MiB whatever its size)."""
        target = tmp_path / "rows.csv"
        filler = "z" * 380
        target.write_text(
            "id,text,amount\n" + "".join(f"{i},{filler},{i * 7}\n" for i in range(30_000))
        )
        size = target.stat().st_size
        assert size > 11_000_000
        counted = Counter()
        source = PathSource([target])
        source > LocalFileReader() > CSVReader() > counted
        tracemalloc.start()
        try:
            await Pipeline(source).run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert counted.count == 30_000
        assert peak < size / 2


class Counter(Recorder):
    """Counts what arrives without keeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def process_item(self, item: Any) -> None:
        self.count += 1
