"""Tests of the public surface of nanostream_trio.nodes."""

from __future__ import annotations

import nanostream_trio
import nanostream_trio.nodes as nodes
from nanostream_trio import NanoNode, resolve_node_class


class TestSurface:
    def test_all_is_sorted_and_complete(self) -> None:
        """__all__ is sorted and lists exactly the public names of the module."""
        public = {name for name in vars(nodes) if not name.startswith("_")}
        public -= {"annotations"}
        assert nodes.__all__ == sorted(nodes.__all__)
        assert set(nodes.__all__) == public

    def test_public_objects_report_the_public_module(self) -> None:
        """Every exported class says it lives in nanostream_trio.nodes."""
        for name in nodes.__all__:
            assert getattr(nodes, name).__module__ == "nanostream_trio.nodes", name

    def test_seed_names_from_the_top_level(self) -> None:
        """The seed's four built-in nodes import from nanostream_trio as well."""
        for name in ("CSVReader", "LocalDirectoryWatchdog", "LocalFileReader", "PrinterOfThings"):
            assert getattr(nanostream_trio, name) is getattr(nodes, name)

    def test_node_classes_are_registered_for_yaml(self) -> None:
        """Each public node class resolves by its bare name; inner stages are not registered."""
        node_classes = [
            obj
            for obj in (getattr(nodes, name) for name in nodes.__all__)
            if isinstance(obj, type) and issubclass(obj, NanoNode)
        ]
        assert len(node_classes) == 21
        for cls in node_classes:
            assert resolve_node_class(f"nanostream_trio.nodes:{cls.__qualname__}") is cls
        assert "_CSVRows" not in nanostream_trio.registered_nodes()
