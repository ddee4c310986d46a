"""The public face of nanostream_testing, and its separation from nanostream_trio."""

from __future__ import annotations

import subprocess
import sys
import types

import nanostream_testing


class TestExports:
    def test_all_is_sorted(self) -> None:
        """__all__ is kept sorted: constants, then classes, then functions (ruff's RUF022)."""
        names = nanostream_testing.__all__
        constants = [n for n in names if n.isupper()]
        classes = [n for n in names if not n.isupper() and n[0].isupper()]
        functions = [n for n in names if n[0].islower()]
        assert names == sorted(constants) + sorted(classes) + sorted(functions)

    def test_all_matches_the_public_names(self) -> None:
        """Every public name is in __all__ and everything in __all__ exists."""
        public = {
            name
            for name, value in vars(nanostream_testing).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        public.discard("annotations")  # from __future__ import annotations
        assert set(nanostream_testing.__all__) == public

    def test_public_objects_report_the_public_module(self) -> None:
        """Classes and functions show nanostream_testing, not a private module."""
        for name in nanostream_testing.__all__:
            module = getattr(getattr(nanostream_testing, name), "__module__", None)
            assert module in (None, "builtins", "nanostream_testing"), name


class TestSeparation:
    def test_the_engine_never_imports_the_testing_package(self) -> None:
        """Importing nanostream_trio and all its submodules leaves nanostream_testing unloaded."""
        code = (
            "import pkgutil, sys, nanostream_trio\n"
            "for info in pkgutil.walk_packages(nanostream_trio.__path__, 'nanostream_trio.'):\n"
            "    if not info.name.endswith('__main__'): __import__(info.name)\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('nanostream_testing'))\n"
            "print(len([m for m in sys.modules if m.startswith('nanostream_trio')]), loaded)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        count, loaded = result.stdout.split(" ", 1)
        assert int(count) > 10
        assert loaded.strip() == "[]"
