"""docs/testing.md and examples/testing run as written, as test modules of their own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "testing.md"
EXAMPLES = ROOT / "examples" / "testing"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def run_pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess, in trio mode with warnings as errors, as in this project."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "trio_mode=true", "-W", "error", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


class TestDocs:
    def test_the_page_has_examples(self) -> None:
        """The page shows runnable code, tests included."""
        blocks = python_blocks(DOCS.read_text())
        tests = [line for block in blocks for line in block.splitlines() if "def test_" in line]
        assert len(blocks) >= 10
        assert len(tests) >= 15

    def test_every_example_on_the_page_passes(self, tmp_path: Path) -> None:
        """The page's python blocks, in order, form a test module whose tests all pass."""
        blocks = python_blocks(DOCS.read_text())
        module = tmp_path / "test_docs_testing_page.py"
        module.write_text("\n\n".join(blocks))
        expected = sum(
            len(re.findall(r"^(?:async )?def test_", block, flags=re.MULTILINE)) for block in blocks
        )
        result = run_pytest(str(module), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{expected} passed" in result.stdout


class TestExamples:
    def test_the_example_tests_pass(self) -> None:
        """examples/testing's tests of the example order pipeline all pass."""
        result = run_pytest(str(EXAMPLES), cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "7 passed" in result.stdout
