"""The YAML layer's modules import in one direction: document, node entries, composites, files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "nanostream_trio"

#: The YAML layer, bottom-up: each module may import only those before it.
LAYERS = ("_yaml_document", "_node_spec", "_composite", "_config")


def imported_modules(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere in its file, functions included."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
    return found


def package_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, for every top-level module of the package."""
    return {path.stem: imported_modules(path.stem) for path in PACKAGE.glob("*.py")}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph.get(module, ()))
    return seen


class TestImportStructure:
    @pytest.mark.parametrize("module", LAYERS)
    def test_no_import_circle_through_yaml_modules(self, module: str) -> None:
        """No chain of imports (lazy ones in functions too) leads from a YAML module back to it."""
        graph = package_graph()
        assert module not in reachable(graph, module), sorted(reachable(graph, module))

    @pytest.mark.parametrize("module", LAYERS)
    def test_layers_import_downwards_only(self, module: str) -> None:
        """A YAML module never imports one above it (the document knows no composite)."""
        above = set(LAYERS[LAYERS.index(module) + 1 :])
        assert not imported_modules(module) & above

    @pytest.mark.parametrize("module", LAYERS)
    def test_each_module_imports_alone(self, module: str) -> None:
        """Each module imports on its own in a fresh interpreter (no partial-init circle)."""
        result = subprocess.run(
            [sys.executable, "-c", f"import nanostream_trio.{module}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
