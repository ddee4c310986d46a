"""The public surface of nanostream_trio, and the quickstart example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nanostream_trio

ROOT = Path(__file__).parent.parent


class TestExports:
    def test_all_matches_public_names(self) -> None:
        """__all__ lists exactly the public names the package defines, sorted."""
        public = {
            name
            for name in vars(nanostream_trio)
            if not name.startswith("_") and name not in {"annotations", "nodes"}
        }
        # Submodules a user imports by topic are not part of __all__.
        public -= {n for n in public if type(getattr(nanostream_trio, n)).__name__ == "module"}
        assert set(nanostream_trio.__all__) == public

        # isort-style order, as ruff's RUF022 keeps it: CONSTANTS, Classes, functions.
        def order(name: str) -> tuple[int, str]:
            return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

        assert nanostream_trio.__all__ == sorted(nanostream_trio.__all__, key=order)

    def test_public_objects_report_public_module(self) -> None:
        """Classes show nanostream_trio.X in reprs and tracebacks, not a private module."""
        for name in nanostream_trio.__all__:
            obj = getattr(nanostream_trio, name)
            if isinstance(obj, type):
                # The seed's built-in nodes are re-exported from their topic module.
                assert obj.__module__ in {"nanostream_trio", "nanostream_trio.nodes"}, name

    def test_testing_package_not_imported(self) -> None:
        """Importing nanostream_trio does not import nanostream_testing."""
        code = "import sys, nanostream_trio; print('nanostream_testing' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.stdout.strip() == "False", result.stderr

    def test_seed_nodes_at_top_level(self) -> None:
        """The seed README's built-in node names import from nanostream_trio itself."""
        from nanostream_trio import nodes

        for name in ("LocalDirectoryWatchdog", "LocalFileReader", "CSVReader", "PrinterOfThings"):
            assert getattr(nanostream_trio, name) is getattr(nodes, name)


class TestQuickstart:
    def test_quickstart_runs(self) -> None:
        """examples/quickstart.py prints five results and its summary, and exits 0."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "quickstart.py")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["even length: True"] * 5 + ["done: 5 messages tested"]
