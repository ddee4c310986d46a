"""Checkpoints from pipeline files and the command line: ``checkpoint:`` and ``--checkpoint``."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nanostream_trio import ConfigFileError, load_pipeline

NODES = textwrap.dedent(
    """\
    import trio
    from nanostream_trio import NanoNode


    class CkCount(NanoNode):
        def __init__(self, upto=50, **options):
            super().__init__(**options)
            self.upto = upto
            self.position = 0

        def snapshot(self):
            return self.position

        def restore(self, state):
            self.position = state

        async def generator(self):
            while self.position < self.upto:
                self.position += 1
                yield self.position


    class CkAppend(NanoNode):
        def __init__(self, path, **options):
            super().__init__(**options)
            self.path = path

        def process_item(self, item):
            with open(self.path, "a") as out:
                out.write(f"{item}\\n")
    """
)


def pipeline_file(tmp_path: Path, checkpoint: str) -> Path:
    (tmp_path / "ck_nodes.py").write_text(NODES)
    path = tmp_path / "p.yaml"
    path.write_text(
        "modules: [ck_nodes.py]\n"
        f"{checkpoint}"
        "nodes:\n"
        "  - {name: count, class: CkCount, args: {upto: 50}}\n"
        f"  - {{name: out, class: CkAppend, args: {{path: {tmp_path / 'out.txt'}}}}}\n"
    )
    return path


class TestPipelineFile:
    """The ``checkpoint:`` key of a pipeline file."""

    def test_path_and_interval(self, tmp_path: Path) -> None:
        """``checkpoint: {path, interval}`` configures the pipeline's store and interval."""
        path = pipeline_file(tmp_path, "checkpoint: {path: state.db, interval: 2.5}\n")
        pipeline = load_pipeline(str(path), env={})
        assert pipeline.checkpoint == "state.db"
        assert pipeline.checkpoint_interval == 2.5

    def test_a_bare_path_takes_the_default_interval(self, tmp_path: Path) -> None:
        """``checkpoint: state.db`` is the path with checkpoints every 5 seconds."""
        pipeline = load_pipeline(str(pipeline_file(tmp_path, "checkpoint: state.db\n")), env={})
        assert (pipeline.checkpoint, pipeline.checkpoint_interval) == ("state.db", 5.0)

    def test_no_checkpoint_key_keeps_none(self, tmp_path: Path) -> None:
        """Without the key a pipeline keeps no checkpoints."""
        assert load_pipeline(str(pipeline_file(tmp_path, "")), env={}).checkpoint is None

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("checkpoint: {path: s.db, interval: 0}\n", "expected a positive number of seconds"),
            ("checkpoint: {interval: 3}\n", "path"),
            ("checkpoint: {path: s.db, every: 3}\n", "every"),
        ],
    )
    def test_bad_settings_are_located(self, tmp_path: Path, text: str, expected: str) -> None:
        """A bad checkpoint setting names the file, the line and what is wrong."""
        path = pipeline_file(tmp_path, text)
        with pytest.raises(ConfigFileError) as caught:
            load_pipeline(str(path), env={})
        assert caught.value.line == 2
        assert expected in str(caught.value)
        assert str(path) in str(caught.value)


def nanostream(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "nanostream_trio", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


class TestCommandLine:
    """``nanostream run --checkpoint`` keeps and resumes from a store."""

    def test_second_run_resumes_after_the_first(self, tmp_path: Path) -> None:
        """A finished run's final checkpoint makes the rerun emit nothing twice."""
        path = pipeline_file(tmp_path, "")
        first = nanostream("run", str(path), "--checkpoint", "state.db", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        second = nanostream("run", str(path), "--checkpoint", "state.db", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        assert (tmp_path / "out.txt").read_text().split() == [str(k) for k in range(1, 51)]
        db = sqlite3.connect(tmp_path / "state.db")
        assert db.execute("SELECT count(*) FROM checkpoints WHERE final = 1").fetchone()[0] >= 1
        assert "checkpoint_restored" in second.stderr

    @pytest.mark.parametrize("command", ["check", "run"])
    def test_store_in_a_missing_directory_is_located(self, tmp_path: Path, command: str) -> None:
        """check and run both name the checkpoint line when its directory does not exist."""
        path = pipeline_file(tmp_path, "checkpoint: {path: nowhere/state.db}\n")
        result = nanostream(command, str(path), cwd=tmp_path)
        assert result.returncode == 2
        assert f"{path}:2:" in result.stderr
        assert "the checkpoint store" in result.stderr
        assert "of file 'nowhere/state.db' does not exist" in result.stderr
        assert not (tmp_path / "out.txt").exists()

    def test_interval_without_a_store_is_refused(self, tmp_path: Path) -> None:
        """--checkpoint-interval alone says that it needs --checkpoint."""
        result = nanostream("run", str(pipeline_file(tmp_path, "")), "--checkpoint-interval", "1",
                            cwd=tmp_path)  # fmt: skip
        assert result.returncode == 2
        assert "give --checkpoint PATH" in result.stderr

    def test_bad_interval_is_refused(self, tmp_path: Path) -> None:
        """A non-positive interval is a usage error naming the option."""
        result = nanostream(
            "run", str(pipeline_file(tmp_path, "")), "--checkpoint", "s.db",
            "--checkpoint-interval", "0", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert "--checkpoint-interval" in result.stderr
        assert not (tmp_path / "s.db").exists()


class TestDocs:
    """docs/delivery.md's python example runs as written."""

    def test_the_delivery_page_example_passes(self, tmp_path: Path) -> None:
        """The page's python blocks form a test module whose tests pass."""
        page = (Path(__file__).resolve().parent.parent / "docs" / "delivery.md").read_text()
        blocks = re.findall(r"^```python\n(.*?)^```", page, flags=re.DOTALL | re.MULTILINE)
        assert blocks
        module = tmp_path / "test_delivery_page.py"
        module.write_text("\n\n".join(blocks))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-o", "trio_mode=true", "-W", "error", str(module)]  # fmt: skip
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed" in result.stdout
