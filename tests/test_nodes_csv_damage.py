"""Tests of CSVReader on damaged files read by LocalFileReader (issue 15): an unterminated
quote, a stray quote or a bad byte costs its own row only, every good row arrives exactly once,
and a row may span only a few lines."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import pytest

from nanostream_testing import CollectingSink, FakeSource
from nanostream_trio import ConfigError, DeadLetter, Pipeline, PipelineStatistics
from nanostream_trio.nodes import CSVReader, FileText, LocalFileReader

ISSUE_TEXT = 'id,name,value\n1,"unterminated,v\n2,name2,6\n3,name3,9\n4,"ab"cd,v\n5,name5,15\n'


class Recorder(CollectingSink):
    """Keeps what arrives; nothing arriving is a legitimate outcome in these tests."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, allow_empty=True)


async def read_file(
    path: Path, reader: CSVReader, files: LocalFileReader | None = None
) -> tuple[list[dict[str, Any]], list[DeadLetter], PipelineStatistics]:
    """Run ``path > LocalFileReader > reader`` with both dead-letter ports collected."""
    files = files or LocalFileReader(name="files")
    source, sink, letters = FakeSource([str(path)]), Recorder(), Recorder(name="letters")
    source > files > reader > sink
    files.dead_letters > letters
    reader.dead_letters > letters
    stats = await Pipeline(source).run()
    return sink.items, letters.items, stats


class TestIssueExample:
    async def test_unterminated_and_stray_quotes_cost_their_own_rows(self, tmp_path: Path) -> None:
        """The issue's file: rows 2, 3 and 5 arrive; row 1 (unterminated quote, line 2) and
        row 4 (stray quote, line 5) are one dead letter each, naming file and line."""
        target = tmp_path / "issue.csv"
        target.write_text(ISSUE_TEXT)
        rows, letters, stats = await read_file(target, CSVReader(name="csv"))
        assert [row["id"] for row in rows] == ["2", "3", "5"]
        assert rows[0] == {"id": "2", "name": "name2", "value": "6"}
        assert [letter.item.line for letter in letters] == [2, 5]
        assert letters[0].message.startswith(f"{target}, line 2: malformed CSV row:")
        assert letters[0].item.raw == '1,"unterminated,v\n'
        assert "parsing resumes at line 3" in letters[0].message
        assert "expected after" in letters[1].message
        assert stats["csv"].dead_lettered == 2

    async def test_same_result_from_a_whole_text(self) -> None:
        """A FileText (not streamed) gives the same rows and dead letters."""
        source, sink, letters = FakeSource([FileText(ISSUE_TEXT, "x.csv")]), Recorder(), Recorder()
        reader = CSVReader()
        source > reader > sink
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert [row["id"] for row in sink.items] == ["2", "3", "5"]
        assert [letter.item.line for letter in letters.items] == [2, 5]


class TestRowSpan:
    async def test_legal_multiline_field_arrives_whole(self, tmp_path: Path) -> None:
        """A quoted field with line ends, within max_row_lines, is one row with those line ends."""
        target = tmp_path / "notes.csv"
        target.write_text('id,note\n1,"first\nsecond\nthird"\n2,x\n')
        rows, letters, _ = await read_file(target, CSVReader())
        assert rows == [{"id": "1", "note": "first\nsecond\nthird"}, {"id": "2", "note": "x"}]
        assert letters == []

    async def test_row_longer_than_the_bound_is_reported_on_its_first_line(
        self, tmp_path: Path
    ) -> None:
        """A field spanning 12 lines is an error at the default bound (10) and a row with
        max_row_lines=12."""
        note = "\n".join(f"part {i}" for i in range(12))
        target = tmp_path / "long.csv"
        target.write_text(f'id,note\n1,"{note}"\n2,x\n')
        rows, letters, _ = await read_file(target, CSVReader(on_error="dead_letter"))
        assert rows[-1] == {"id": "2", "note": "x"}
        assert letters[0].item.line == 2
        assert "max_row_lines=10" in letters[0].message
        assert all("\n" not in value for row in rows for value in row.values())
        rows, letters, _ = await read_file(target, CSVReader(max_row_lines=12))
        assert rows == [{"id": "1", "note": note}, {"id": "2", "note": "x"}]
        assert letters == []

    async def test_rows_spanning_chunk_boundaries(self, tmp_path: Path) -> None:
        """Multi-line rows are parsed whole wherever the 64 KiB reads cut the file."""
        target = tmp_path / "spans.csv"
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["id", "text", "n"])
        for i in range(6000):
            writer.writerow([i, f'line one {i}\nline two, with "quotes"\r\nthree', i * 2])
        target.write_bytes(buffer.getvalue().encode())
        assert target.stat().st_size > 4 * 65536
        files = LocalFileReader()
        rows, letters, _ = await read_file(target, CSVReader(), files)
        assert files.streams
        expected = list(csv.DictReader(io.StringIO(buffer.getvalue(), newline="")))
        assert letters == []
        assert rows == expected

    def test_bad_bound_is_a_config_error(self) -> None:
        """max_row_lines must be a whole number of lines, at least 1."""
        with pytest.raises(ConfigError, match="max_row_lines"):
            CSVReader(max_row_lines=0)


class TestBadBytes:
    async def test_one_bad_byte_costs_one_row(self, tmp_path: Path) -> None:
        """A line that does not decode is the CSV reader's dead letter for that line; the
        100,000 good rows around it arrive."""
        target = tmp_path / "big.csv"
        rows_text = [f"{i},name{i},{i * 3}\n".encode() for i in range(100_000)]
        rows_text.insert(50_000, b"x,caf\xe9,1\n")
        target.write_bytes(b"id,name,value\n" + b"".join(rows_text))
        counter = CountingSink()
        files, reader, letters = LocalFileReader(), CSVReader(name="csv"), Recorder()
        source = FakeSource([str(target)])
        source > files > reader > counter
        reader.dead_letters > letters
        await Pipeline(source).run()
        assert counter.count == 100_000
        (letter,) = letters.items
        assert letter.exc_type == "FileDecodeError"
        assert f"{target}, line 50002" in letter.message

    async def test_replace_delivers_the_row(self, tmp_path: Path) -> None:
        """With errors="replace" the bad byte becomes U+FFFD and the row arrives."""
        target = tmp_path / "latin.csv"
        target.write_bytes(b"id,name\n1,caf\xe9\n2,ok\n")
        rows, letters, _ = await read_file(target, CSVReader(), LocalFileReader(errors="replace"))
        assert rows == [{"id": "1", "name": "caf\ufffd"}, {"id": "2", "name": "ok"}]
        assert letters == []


class CountingSink(Recorder):
    """Counts rows without keeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def process_item(self, item: Any) -> None:
        self.count += 1


KINDS = ("unterminated", "stray", "bytes", "more_fields", "fewer_fields")


def damaged_file(path: Path, good: int, bad: int, seed: int) -> set[str]:
    """Write ``good`` good rows (some with legal quoted fields) and ``bad`` bad ones of five
    kinds in random places; return the ids of the good rows."""
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(bad)] + [""] * good
    rng.shuffle(kinds)
    out = [b"id,name,value\n"]
    ids: set[str] = set()
    for number, kind in enumerate(kinds):
        row_id = f"r{number}"
        if not kind:
            ids.add(row_id)
            name = f'"n, {number}"' if number % 7 == 0 else f"n{number}"
            out.append(f"{row_id},{name},{number}\n".encode())
        elif kind == "unterminated":
            out.append(f'{row_id},"open,{number}\n'.encode())
        elif kind == "stray":
            out.append(f'{row_id},"ab"cd,{number}\n'.encode())
        elif kind == "bytes":
            out.append(f"{row_id},b".encode() + b"\xff\xfe" + f",{number}\n".encode())
        elif kind == "more_fields":
            out.append(f"{row_id},a,b,{number}\n".encode())
        else:
            out.append(f"{row_id}\n".encode())
    path.write_bytes(b"".join(out))
    return ids


class TestAtVolume:
    async def check(self, tmp_path: Path, errors: str) -> None:
        target = tmp_path / "damaged.csv"
        good_ids = damaged_file(target, 100_000, 10_000, seed=15)
        rows, letters, stats = await read_file(
            target, CSVReader(name="csv"), LocalFileReader(errors=errors, name="files")
        )
        delivered = [row["id"] for row in rows]
        good_delivered = [row_id for row_id in delivered if row_id in good_ids]
        assert len(good_delivered) == len(good_ids)  # each good row exactly once...
        assert set(good_delivered) == good_ids  # ...and every one of them
        assert not [row for row in rows if any("\n" in str(v) for v in row.values())]
        assert len(letters) == (10_000 if errors == "strict" else 8_000)
        assert all(letter.node == "csv" for letter in letters)
        assert all(letter.message.startswith(f"{target}, line ") for letter in letters)
        csv_stats = stats["csv"]
        assert csv_stats.items_in == csv_stats.items_out + csv_stats.dead_lettered
        assert csv_stats.items_out == len(rows)

    async def test_every_good_row_arrives_once(self, tmp_path: Path) -> None:
        """100k good rows among 10k bad ones of five kinds: each good row arrives once, no
        delivered row holds a line end, every bad one is a dead letter naming file and line."""
        await self.check(tmp_path, "strict")

    async def test_every_good_row_arrives_once_with_replace(self, tmp_path: Path) -> None:
        """The same with errors="replace": undecodable rows arrive repaired, good rows once."""
        await self.check(tmp_path, "replace")
