"""Tests of CSVReader: rows as dicts, format options, and bad rows through the error policy
with their line numbers while every other row still flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nanostream_testing import CollectingSink, FakeSource
from nanostream_trio import Pipeline
from nanostream_trio.nodes import CSVReader, CSVRecord, CSVRowError, FileText, LocalFileReader

TextSource = FakeSource  # scripted items, all at time 0


class Recorder(CollectingSink):
    """Keeps what arrives; nothing arriving is a legitimate outcome in these tests."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, allow_empty=True)


async def read_csv(texts: list[Any], reader: CSVReader) -> Recorder:
    source, sink = TextSource(texts), Recorder()
    source > reader > sink
    await Pipeline(source).run()
    return sink


BAD = "id,name\n1,ann\n2,bob,extra\n3,cy\n4\n5,dee\n"


class TestRows:
    async def test_header_keys_each_row(self) -> None:
        """Each row becomes a dict keyed by the header, in order; blank lines are skipped."""
        sink = await read_csv(["a,b\n1,2\n\n3,4\n"], CSVReader())
        assert sink.items == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]

    async def test_each_text_has_its_own_header(self) -> None:
        """Two texts with different headers give rows keyed by their own header."""
        sink = await read_csv(["a\n1\n", "b\n2\n"], CSVReader())
        assert sink.items == [{"a": "1"}, {"b": "2"}]

    async def test_fieldnames_instead_of_header(self) -> None:
        """With fieldnames, the first row is data."""
        sink = await read_csv(["1,2\n3,4\n"], CSVReader(fieldnames=["x", "y"]))
        assert sink.items == [{"x": "1", "y": "2"}, {"x": "3", "y": "4"}]

    async def test_dialect_options(self) -> None:
        """delimiter and quotechar are passed to the csv module."""
        text = "a;b\n'x;y';2\n"
        sink = await read_csv([text], CSVReader(delimiter=";", quotechar="'"))
        assert sink.items == [{"a": "x;y", "b": "2"}]

    async def test_quoted_newline_and_crlf(self) -> None:
        """A quoted field may span lines; CRLF line endings are handled."""
        sink = await read_csv(['a,b\r\n"one\r\ntwo",2\r\n'], CSVReader())
        assert sink.items == [{"a": "one\r\ntwo", "b": "2"}]

    async def test_only_newline_cr_and_crlf_end_rows(self) -> None:
        """Unicode line breaks (U+2028, NEL, VT, FF, FS/GS/RS) are field content, not row
        ends; CR alone ends a row; line numbers count only real line ends."""
        odd = "a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh"
        text = f"id,text\n1,{odd}\r2,x\r\n3,y,extra\n"
        letters = Recorder(name="letters")
        reader = CSVReader(on_error="dead_letter")
        reader.dead_letters > letters
        sink = await read_csv([text], reader)
        assert sink.items == [{"id": "1", "text": odd}, {"id": "2", "text": "x"}]
        assert [letter.item.line for letter in letters.items] == [4]

    async def test_utf8_byte_order_mark_is_not_part_of_the_header(self) -> None:
        """A leading BOM (as Excel writes) does not end up in the first column's name."""
        sink = await read_csv(["\ufeffname,age\nann,3\n"], CSVReader())
        assert sink.items == [{"name": "ann", "age": "3"}]

    async def test_lenient_fields_like_dictreader(self) -> None:
        """With strict_fields off, extras go to restkey and missing get restval."""
        reader = CSVReader(strict_fields=False, restkey="more", restval="?")
        sink = await read_csv(["a,b\n1,2,3\n4\n"], reader)
        assert sink.items == [{"a": "1", "b": "2", "more": ["3"]}, {"a": "4", "b": "?"}]

    def test_bad_format_option_fails_at_construction(self) -> None:
        """An unknown csv option fails when the node is made, with csv's message."""
        with pytest.raises(TypeError):
            CSVReader(delimitr=";")


class TestMalformedRows:
    async def test_skip_counts_each_bad_row_and_keeps_the_rest(self) -> None:
        """With skip, the two bad rows are skipped and counted; the four good ones flow."""
        source, sink = TextSource([BAD]), Recorder()
        reader = CSVReader(on_error="skip", name="csv")
        source > reader > sink
        stats = await Pipeline(source).run()
        assert [row["id"] for row in sink.items] == ["1", "3", "5"]
        assert stats["csv"].skipped == 2
        assert stats["csv"].items_out == 3

    async def test_dead_letters_carry_line_numbers_and_rows(self) -> None:
        """Each bad row is one dead letter naming its file, line and content."""
        source = TextSource([FileText(BAD, "data/people.csv")])
        sink, letters = Recorder(), Recorder(name="letters")
        reader = CSVReader()
        source > reader > sink
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert [row["id"] for row in sink.items] == ["1", "3", "5"]
        assert [letter.item.line for letter in letters.items] == [3, 5]
        assert all(isinstance(letter.item, CSVRecord) for letter in letters.items)
        first = letters.items[0]
        assert first.exc_type == "CSVRowError"
        assert first.message == (
            "data/people.csv, line 3: malformed CSV row: expected 2 fields (id, name), "
            "got 3: '2,bob,extra'"
        )

    async def test_raise_fails_the_pipeline_with_the_line(self) -> None:
        """With the default policy the first bad row fails the run, naming its line."""
        source = TextSource([BAD])
        source > CSVReader() > Recorder()
        with pytest.raises(CSVRowError, match="line 3") as info:
            await Pipeline(source).run()
        assert info.value.line == 3
        assert info.value.content == "2,bob,extra\n"

    async def test_parser_error_in_strict_dialect(self) -> None:
        """A row the csv module rejects is reported with the parser's complaint."""
        source = TextSource(['a,b\n1,"x"y\n2,z\n'])
        sink, letters = Recorder(), Recorder(name="letters")
        reader = CSVReader(strict=True)
        source > reader > sink
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert sink.items == [{"a": "2", "b": "z"}]
        (letter,) = letters.items
        assert "line 2" in letter.message
        assert "expected after" in letter.message

    async def test_unterminated_quote_does_not_swallow_the_rest(self) -> None:
        """A quote never closed makes its first line one bad row; the lines after it are
        parsed again as rows of their own."""
        text = 'a,b\n1,x\n2,"oops\n3,y\n4,z\n'
        sink, letters = Recorder(), Recorder(name="letters")
        reader = CSVReader(on_error="dead_letter")
        source = TextSource([text])
        source > reader > sink
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert sink.items == [{"a": "1", "b": "x"}, {"a": "3", "b": "y"}, {"a": "4", "b": "z"}]
        (letter,) = letters.items
        assert letter.item.line == 3
        assert letter.item.raw == '2,"oops\n'
        assert "unterminated quoted field" in letter.message

    async def test_unterminated_quote_in_strict_dialect(self) -> None:
        """In a strict dialect the parser's end-of-data error is reported on the quote's line
        and the rows after it still flow."""
        text = 'a,b\n1,"oops\n2,y\n'
        sink, letters = Recorder(), Recorder(name="letters")
        reader = CSVReader(strict=True, on_error="dead_letter")
        source = TextSource([text])
        source > reader > sink
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert sink.items == [{"a": "2", "b": "y"}]
        assert [letter.item.line for letter in letters.items] == [2]

    async def test_bytes_input_is_one_clear_error(self) -> None:
        """Bytes instead of text give one error that says how to fix it."""
        source, letters = TextSource([b"a,b\n1,2\n"]), Recorder(name="letters")
        reader = CSVReader()
        source > reader
        reader.dead_letters > letters
        await Pipeline(source).run()
        (letter,) = letters.items
        assert "expected CSV text (str); got bytes" in letter.message
        assert "binary=True" in letter.message

    async def test_rows_after_a_bad_file_keep_flowing(self, tmp_path: Path) -> None:
        """A garbage file costs a dead letter per bad line, naming file and line, and the next
        file's rows arrive."""
        good, garbage = tmp_path / "good.csv", tmp_path / "garbage.csv"
        good.write_text("a\n1\n")
        garbage.write_bytes(b"a\n\xff\xfe\x00\x81\n")
        source = TextSource([str(garbage), str(good)])
        sink, letters = Recorder(), Recorder(name="letters")
        files, reader = LocalFileReader(), CSVReader(name="csv")
        source > files > reader > sink
        files.dead_letters > letters
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert sink.items == [{"a": "1"}]
        (letter,) = letters.items
        assert letter.exc_type == "FileDecodeError"
        assert letter.node == "csv"
        assert f"{garbage}, line 2" in letter.message


class TestComposite:
    def test_stages_and_names(self) -> None:
        """CSVReader shows as '<name>.split' and '<name>'; renaming renames both."""
        reader = CSVReader(name="rows")
        assert [s.name for s in reader.stages] == ["rows.split", "rows"]
        reader.configure(name="people", on_error="skip", capacity=9)
        assert [s.name for s in reader.stages] == ["people.split", "people"]
        assert reader.stages[1].on_error == "skip"
        assert reader.stages[0]._ns_capacity == 9

    async def test_links_in_and_out(self) -> None:
        """Linking into and out of the reader reaches its stages; upstream/downstream show it."""
        source, reader, sink = TextSource(["a\n1\n"]), CSVReader(), Recorder()
        source > reader > sink
        assert reader.upstream == (source,)
        assert reader.downstream == (sink,)
        assert not reader.is_source
        await Pipeline(reader).run()
        assert sink.items == [{"a": "1"}]
