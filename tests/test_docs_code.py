"""Every code block of the docs runs: docs/**/*.md and README.md, found by glob.

Python blocks (```python or ```py, also indented in a list or quoted in a ``>`` callout) of
one page run in order as one module, in a subprocess, in a temporary directory where
``examples`` links to the repository's (pages load example files by relative path): with
pytest when the page defines tests (every one must pass), as a script otherwise (it must exit
0). Each block keeps its line number in the module, so a traceback's line is the page's line.

A block that cannot run (a watcher that runs until interrupted, a one-call fragment whose
neighbours are the reader's own nodes, a call to a real service) is marked on the line before
its fence, invisibly on the rendered page::

    <!-- not-run: why it cannot run -->

YAML blocks: one whose first line names a file of the repository (``# examples/yaml/x.yaml``)
shows that file as it is; any other with a top-level ``nodes:`` is a pipeline file that
``nanostream check`` accepts. A marker skips these too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"])
PYTHON = ("python", "py")
YAML = ("yaml", "yml")

_FENCE = re.compile(r"^(?P<prefix>[ >]*)(?P<fence>```+)\s*(?P<info>[^`\s]*)[^`]*$")
_MARKER = re.compile(r"^<!--\s*not-run:(?P<reason>.*?)-->$")

_TEST = re.compile(r"^(?:async )?def test_", flags=re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int  # the line of its first line of code (1-based)
    language: str
    code: str
    not_run: str | None  # the marker's reason

    @property
    def where(self) -> str:
        return f"{name_of(self.page)}:{self.line - 1}"


def _unquote(line: str, prefix: str) -> str:
    """``line`` without the fence's prefix (a ``>`` callout, a list's indentation)."""
    marks = prefix.rstrip()
    if marks and line.startswith(marks):
        line = line[len(marks) :]
    spaces = len(prefix) - len(marks)
    return line[min(spaces, len(line) - len(line.lstrip(" "))) :]


def blocks_of(page: Path) -> list[Block]:
    """The page's fenced code blocks, in order; a fence left open is an error."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        prefix, fence = opening["prefix"], opening["fence"]
        end = index + 1
        while end < len(lines) and _unquote(lines[end], prefix).rstrip() != fence:
            end += 1
        if end == len(lines):
            msg = f"{name_of(page)}:{index + 1}: the code block is never closed"
            raise ValueError(msg)
        code = "".join(_unquote(line, prefix) + "\n" for line in lines[index + 1 : end])
        before = [_unquote(line, prefix).strip() for line in lines[:index]]
        before = [line for line in before if line]
        marker = _MARKER.match(before[-1]) if before else None
        reason = marker["reason"].strip() if marker else None
        blocks.append(Block(page, index + 2, opening["info"].lower(), code, reason))
        index = end + 1
    return blocks


def name_of(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def python_pages() -> list[Path]:
    return [p for p in PAGES if any(b.language in PYTHON and not b.not_run for b in blocks_of(p))]


def yaml_blocks() -> list[Block]:
    return [b for p in PAGES for b in blocks_of(p) if b.language in YAML and not b.not_run]


def module_of(blocks: list[Block]) -> str:
    """The blocks as one module, each at its line of the page (blank lines in between)."""
    text = ""
    for block in blocks:
        text += "\n" * (block.line - 1 - text.count("\n")) + block.code
    return text


def run_in(directory: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in ``directory``, with this interpreter and without this run's pytest vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, *command],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def workspace(tmp_path: Path) -> Path:
    """An empty directory to run a page's code in, with the repository's examples reachable."""
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    return tmp_path


class TestPythonBlocks:
    @pytest.mark.parametrize("page", python_pages(), ids=name_of)
    def test_the_page_runs(self, page: Path, tmp_path: Path) -> None:
        """The page's python blocks run in order: its tests pass, or the script exits 0."""
        blocks = [b for b in blocks_of(page) if b.language in PYTHON and not b.not_run]
        code = module_of(blocks)
        tests = len(_TEST.findall(code))
        stem = re.sub(r"\W", "_", str(page.relative_to(ROOT).with_suffix("")))
        directory = workspace(tmp_path)
        if tests:
            module = directory / f"test_{stem}.py"
            module.write_text(code)
            result = run_in(
                directory, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                "-W", "error", "--rootdir", str(directory), module.name,
            )  # fmt: skip
        else:
            module = directory / f"{stem}.py"
            module.write_text(code)
            result = run_in(directory, "-W", "error", module.name)
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"{name_of(page)}: its python blocks (lines {', '.join(str(b.line) for b in blocks)}) "
            f"fail; a line N of {module.name} in the traceback is line N of the page:\n{output}"
        )
        if tests:
            assert f"{tests} passed" in result.stdout, output


def yaml_problem(block: Block, directory: Path) -> str | None:
    """What is wrong with a YAML block (None: nothing), checked in ``directory``."""
    first = block.code.splitlines()[0] if block.code else ""
    named = ROOT / first.removeprefix("#").strip() if first.startswith("# ") else None
    if named is not None and named.is_file():
        # The file itself is loaded by the tests of examples/; the page may leave out its
        # comments, never change its content.
        if yaml.safe_load(block.code) != yaml.safe_load(named.read_text()):
            return f"{block.where}: the block's content differs from {named.relative_to(ROOT)}"
        return None
    document = yaml.safe_load(block.code)
    if not isinstance(document, dict) or "nodes" not in document:
        return f"{block.where}: neither a file of the repository nor a pipeline file (nodes:)"
    (directory / "pipeline.yaml").write_text(block.code)
    result = run_in(directory, "-m", "nanostream_trio", "check", "pipeline.yaml")
    if result.returncode != 0:
        return f"{block.where}: nanostream check refuses it:\n{result.stderr}"
    return None


class TestYamlBlocks:
    @pytest.mark.parametrize("block", yaml_blocks(), ids=lambda b: b.where)
    def test_the_block_is_a_valid_file(self, block: Block, tmp_path: Path) -> None:
        """A YAML block shows its repository file as it is, or is a pipeline check accepts."""
        assert yaml_problem(block, workspace(tmp_path)) is None

    def test_what_is_caught(self, tmp_path: Path) -> None:
        """A pipeline check refuses, a repository file shown changed, and other YAML fail."""
        page = tmp_path / "page.md"
        page.write_text(
            "```yaml\nnodes:\n  - {class: TailFile, args: {path: app.log}}\n"
            "  - {class: PrinterOfThings}\n```\n\n"
            "```yaml\nnodes:\n  - {class: PrinterOfThing}\n```\n\n"
            "```yaml\n# examples/yaml/foo_message.yaml\nname: Renamed\n```\n\n"
            "```yaml\nkey: value\n```\n"
        )
        good, typo, changed, other = blocks_of(page)
        (directory := tmp_path / "run").mkdir()
        assert yaml_problem(good, directory) is None
        assert "unknown node type 'PrinterOfThing'" in str(yaml_problem(typo, directory))
        differs = "differs from examples/yaml/foo_message.yaml"
        assert differs in str(yaml_problem(changed, directory))
        assert "neither a file of the repository" in str(yaml_problem(other, directory))


class TestMarkers:
    def test_pages_are_found(self) -> None:
        """The glob finds the docs pages, README.md and python blocks to run in them."""
        names = [name_of(page) for page in PAGES]
        assert {"README.md", "docs/testing.md", "docs/yaml.md", "docs/nodes.md"} <= set(names)
        assert len(python_pages()) >= 6

    def test_marked_blocks_are_few_and_say_why(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every not-run marker gives a reason and precedes a block; two thirds or more run."""
        run, marked, checked = 0, [], len(yaml_blocks())
        for page in PAGES:
            text = page.read_text()
            blocks = blocks_of(page)
            for block in blocks:
                if block.not_run is not None:
                    assert block.not_run, f"{block.where}: a not-run marker without a reason"
                    marked.append(f"{block.where} ({block.not_run})")
                elif block.language in PYTHON:
                    run += 1
            markers = len(re.findall(r"<!--\s*not-run:", text))
            assert markers == sum(b.not_run is not None for b in blocks), (
                f"{name_of(page)}: a not-run marker is not on the line before a code block"
            )
        with capsys.disabled():
            print(
                f"\ndocs code blocks: {run} python blocks run, {checked} YAML blocks checked, "
                f"{len(marked)} marked not-run: " + "; ".join(marked)
            )
        total = run + checked + len(marked)
        assert len(marked) <= total // 3, f"more than a third of the blocks not run: {marked}"


class TestTheParser:
    def test_quoted_and_indented_blocks_and_markers(self, tmp_path: Path) -> None:
        """Blocks in callouts and lists are found without their prefix, markers with them."""
        page = tmp_path / "page.md"
        page.write_text(
            "text\n\n```python\nx = 1\n```\n\n> <!-- not-run: a fragment -->\n> ```py\n"
            "> y = x\n>\n> z = y\n> ```\n\n- item:\n\n  ```python\n  if x:\n      w = 2\n"
            "  ```\n"
        )
        blocks = blocks_of(page)
        assert [(b.line, b.language, b.code, b.not_run) for b in blocks] == [
            (4, "python", "x = 1\n", None),
            (9, "py", "y = x\n\nz = y\n", "a fragment"),
            (17, "python", "if x:\n    w = 2\n", None),
        ]
        assert module_of([blocks[0], blocks[2]]).splitlines()[16:18] == ["if x:", "    w = 2"]
