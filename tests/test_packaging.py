"""Package metadata in pyproject.toml: what PyPI and pip show users."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class TestProjectMetadata:
    def test_project_urls(self) -> None:
        """pyproject.toml names the home page, docs, changelog and issues (as PyPI shows them)."""
        urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
        assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
        assert all(url.startswith("https://") for url in urls.values())
        assert urls["Changelog"].endswith("/CHANGELOG.md")
        assert urls["Issues"] == urls["Homepage"] + "/issues"
