"""examples/api_to_sqlite run as users run it: a subprocess against its own local API."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "api_to_sqlite"
LIMIT = 60.0


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_api_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=LIMIT,
        check=False,
    )


class TestApiToSqlite:
    def test_every_product_is_written_once_with_its_details(self, tmp_path: Path) -> None:
        """Three offset pages of 10, 10 and 5 products, each joined to its details, upserted."""
        result = run_example("--db", "out.db", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        api = load(EXAMPLE / "catalogue_api.py")
        expected = [
            (p["id"], p["name"], api.details(p["id"])["price"], api.details(p["id"])["stock"])
            for p in api.catalogue(25)
        ]
        with sqlite3.connect(tmp_path / "out.db") as connection:
            rows = connection.execute(
                "SELECT id, name, price, stock FROM products ORDER BY id"
            ).fetchall()
        assert rows == expected
        worth = sum(price * stock for _, _, price, stock in expected)
        assert result.stdout.splitlines() == [
            f"3 pages, 25 products enriched; out.db holds 25 products, stock worth {worth:.2f}"
        ]

    def test_a_second_run_updates_the_same_rows(self, tmp_path: Path) -> None:
        """Run twice (the second with a longer catalogue): each product is in the table once."""
        assert run_example("--db", "out.db", "--products", "12", cwd=tmp_path).returncode == 0
        result = run_example("--db", "out.db", "--products", "31", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("4 pages, 31 products enriched; out.db holds 31 products")
        with sqlite3.connect(tmp_path / "out.db") as connection:
            ids = [row[0] for row in connection.execute("SELECT id FROM products ORDER BY id")]
        assert ids == list(range(1, 32))
