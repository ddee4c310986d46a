"""No silent loss: over generated bad input, every record is delivered, dead-lettered or counted.

For each built-in node that emits at most one output per item, the engine's counters must
balance (``items_in == items_out + filtered + skipped + dead_lettered``), and every good
record of the input must arrive at the sink, once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanostream_testing import CollectingSink, FakeSource, run_pipeline
from nanostream_trio import DeadLetter, Pipeline, PipelineStatistics
from nanostream_trio.nodes import CSVReader, Filter, JSONLinesParser, LocalFileReader

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Good records are numbered; bad ones are the kinds of damage seen in the field.
CSV_DAMAGE = st.sampled_from(
    [
        b'x,"unterminated,v',  # an open quote that never closes
        b'x,"ab"cd,v',  # a stray quote
        b"x,\xff\xfe,v",  # bytes that are not UTF-8
        b"only-one-field",  # too few fields
        b"a,b,c,d,e",  # too many fields
    ]
)
JSON_DAMAGE = st.sampled_from([b"not json", b'{"open": ', b"null", b"", b"\xff\xfe{}", b"[1,"])


def balanced(stats: PipelineStatistics, names: list[str]) -> None:
    for name in names:
        node = stats[name]
        accounted = node.items_out + node.filtered + node.skipped + node.dead_lettered
        assert node.items_in == accounted, (name, node)


def good_ids(items: list[Any], key: str) -> list[int]:
    return sorted(int(item[key]) for item in items)


class TestNoSilentLoss:
    @SETTINGS
    @given(lines=st.lists(st.one_of(st.integers(0, 10**6), CSV_DAMAGE), max_size=60))
    def test_csv_rows(self, tmp_path_factory: Any, lines: list[int | bytes]) -> None:
        """Damaged CSV rows are dead letters; every good row arrives once; counters balance."""
        path = tmp_path_factory.mktemp("csv") / "data.csv"
        body = [b"id,name,value"]
        body += [f"{x},name{x},{x % 7}".encode() if isinstance(x, int) else x for x in lines]
        path.write_bytes(b"\n".join(body) + b"\n")
        source = FakeSource([str(path)], name="paths")
        reader = CSVReader(on_error="dead_letter", name="csv")
        keep = Filter(lambda row: row is not None, name="keep")
        sink, letters = (
            CollectingSink(name="sink", allow_empty=True),
            CollectingSink(name="letters", allow_empty=True),
        )
        source > LocalFileReader(name="read") > reader > keep > sink
        reader.dead_letters > letters
        stats = run_pipeline(Pipeline(source))
        expected = sorted(x for x in lines if isinstance(x, int))
        assert good_ids(sink.items, "id") == expected
        assert all(isinstance(letter, DeadLetter) for letter in letters.items)
        assert len(sink.items) + len(letters.items) == len(lines)
        balanced(stats, ["csv", "keep"])

    @SETTINGS
    @given(lines=st.lists(st.one_of(st.integers(0, 10**6), JSON_DAMAGE), max_size=60))
    def test_json_lines(self, tmp_path_factory: Any, lines: list[int | bytes]) -> None:
        """Bad JSON lines are dead letters, nulls and blanks are counted, good ones arrive."""
        path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
        body = [json.dumps({"n": x}).encode() if isinstance(x, int) else x for x in lines]
        path.write_bytes(b"\n".join(body) + (b"\n" if body else b""))
        source = FakeSource([str(path)], name="paths")
        reader = LocalFileReader(serialize=True, errors="strict", on_error="dead_letter")
        reader.configure(name="read")
        parser = JSONLinesParser(name="parse")
        sink, letters = (
            CollectingSink(name="sink", allow_empty=True),
            CollectingSink(name="letters", allow_empty=True),
        )
        source > reader > parser > sink
        reader.dead_letters > letters
        parser.dead_letters > letters
        stats = run_pipeline(Pipeline(source))
        assert good_ids(sink.items, "n") == sorted(x for x in lines if isinstance(x, int))
        dropped = parser.nulls + parser.blank_lines
        assert len(sink.items) + len(letters.items) + dropped == len(lines)
        balanced(stats, ["parse"])

    @SETTINGS
    @given(
        files=st.lists(st.sampled_from(["good", "missing", "directory"]), min_size=1, max_size=8)
    )
    def test_files_that_vanish_or_cannot_be_opened(
        self, tmp_path_factory: Any, files: list[str]
    ) -> None:
        """A missing path or a directory is a dead letter naming it; the readable files arrive."""
        root: Path = tmp_path_factory.mktemp("files")
        paths = []
        for index, kind in enumerate(files):
            path = root / f"{kind}-{index}"
            if kind == "good":
                path.write_text(f"file {index}\n")
            elif kind == "directory":
                path.mkdir()
            paths.append(str(path))
        source = FakeSource(paths, name="paths")
        reader = LocalFileReader(on_error="dead_letter", name="read")
        sink, letters = (
            CollectingSink(name="sink", allow_empty=True),
            CollectingSink(name="letters", allow_empty=True),
        )
        source > reader > sink
        reader.dead_letters > letters
        run_pipeline(Pipeline(source))
        assert sorted(str(text) for text in sink.items) == sorted(
            f"file {i}\n" for i, kind in enumerate(files) if kind == "good"
        )
        bad = sorted(p for p, kind in zip(paths, files, strict=True) if kind != "good")
        assert sorted(str(letter.item) for letter in letters.items) == bad
