"""Functions in YAML: ``module:name`` for function arguments, only from the file's own modules."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from nanostream_testing import CollectingSink
from nanostream_trio import ConfigFileError, NanoNode, load_pipeline
from nanostream_trio._cli import main
from nanostream_trio._config import read_pipeline
from nanostream_trio.nodes import Dedupe, Filter, Map, TumblingWindow

# The functions a user keeps in a module of their own, next to the pipeline file.
RULES = """\
import os

THRESHOLD = 2


def is_big(number):
    return number > THRESHOLD


def double(number):
    return number * 2


def twice(number):
    return [number, number]


def parity(number):
    return number % 2


def seconds(number):
    return float(number)


async def slow_check(number):
    return True


class Limits:
    @staticmethod
    def small(number):
        return number < 2
"""


class FnNumbers(NanoNode):
    """Emit 1..limit."""

    def __init__(self, limit: int = 4) -> None:
        super().__init__()
        self.limit = limit

    def generator(self) -> Iterator[int]:
        yield from range(1, self.limit + 1)


def write_project(tmp_path: Path, pipeline: str, *, rules_name: str = "fn_rules") -> Path:
    """A directory holding ``<rules_name>.py`` and ``pipeline.yaml``; returns the YAML path."""
    (tmp_path / f"{rules_name}.py").write_text(RULES)
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(pipeline))
    return path


def error_of(path: Path, **options: Any) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        load_pipeline(path, **options)
    return info.value


CHAIN = """\
    modules: [{listed}]
    nodes:
      - {{name: numbers, class: FnNumbers}}
      - {{name: keep, class: Filter, args: {{predicate: "{predicate}"}}}}
      - {{name: double, class: Map, args: {{func: "fn_rules:double"}}}}
      - {{name: twice, class: FlatMap, args: {{func: "fn_rules:twice"}}}}
      - {{name: out, class: CollectingSink}}
    """


class TestFunctionArguments:
    def test_map_filter_flatmap_run_with_module_functions(self, tmp_path: Path) -> None:
        """Filter, Map and FlatMap get the named functions of a listed .py file and run them."""
        path = write_project(
            tmp_path, CHAIN.format(listed="fn_rules.py", predicate="fn_rules:is_big")
        )
        loaded = read_pipeline(path)
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sink.items == [6, 6, 8, 8]
        keep = loaded.nodes["keep"]
        assert isinstance(keep, Filter)
        assert keep.predicate.__name__ == "is_big"
        assert keep.predicate.__code__.co_filename == str(tmp_path / "fn_rules.py")

    def test_module_written_as_listed_path(self, tmp_path: Path) -> None:
        """'fn_rules.py:is_big' (the module as modules: spells it) means the same module."""
        path = write_project(
            tmp_path, CHAIN.format(listed="fn_rules.py", predicate="fn_rules.py:is_big")
        )
        keep = read_pipeline(path).nodes["keep"]
        assert isinstance(keep, Filter)
        assert keep.predicate(3) is True
        assert keep.predicate(2) is False

    def test_module_in_a_subdirectory(self, tmp_path: Path) -> None:
        """A .py file listed by a relative path is named by that path or by its stem."""
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "fn_lib.py").write_text(RULES)
        pipeline = CHAIN.format(listed="lib/fn_lib.py", predicate="lib/fn_lib.py:is_big")
        path = write_project(tmp_path, pipeline.replace("fn_rules:", "fn_lib:"))
        loaded = read_pipeline(path)
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sink.items == [6, 6, 8, 8]

    def test_dotted_module_on_sys_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A module listed by dotted name gives its functions, a class attribute included."""
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "fn_dotted", raising=False)
        path = write_project(
            tmp_path,
            CHAIN.format(listed="fn_dotted", predicate="fn_dotted:Limits.small").replace(
                "fn_rules:", "fn_dotted:"
            ),
            rules_name="fn_dotted",
        )
        loaded = read_pipeline(path)
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sink.items == [2, 2]

    def test_dedupe_and_window_functions(self, tmp_path: Path) -> None:
        """Dedupe's key and TumblingWindow's key and timestamp take module functions too."""
        path = write_project(
            tmp_path,
            """\
            modules: [fn_rules.py]
            nodes:
              - {name: numbers, class: FnNumbers}
              - {name: unique, class: Dedupe, args: {key: "fn_rules:parity"}}
              - name: window
                class: TumblingWindow
                args: {size: 10, key: "fn_rules:parity", timestamp: "fn_rules:seconds"}
              - {name: out, class: CollectingSink}
            """,
        )
        loaded = read_pipeline(path)
        unique, window = loaded.nodes["unique"], loaded.nodes["window"]
        assert isinstance(unique, Dedupe)
        assert isinstance(window, TumblingWindow)
        assert unique.key is window.key
        assert (window.key(3), window.timestamp(3)) == (1, 3.0)
        assert window.key.__code__.co_filename == str(tmp_path / "fn_rules.py")
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sorted((r.key, r.value) for r in sink.items) == [(0, 1), (1, 1)]

    def test_null_keeps_the_default(self, tmp_path: Path) -> None:
        """``key: null`` leaves Dedupe's default (the item itself), not a lookup."""
        path = write_project(
            tmp_path,
            """\
            nodes:
              - {name: numbers, class: FnNumbers}
              - {name: unique, class: Dedupe, args: {key: null}}
            """,
        )
        unique = read_pipeline(path).nodes["unique"]
        assert isinstance(unique, Dedupe)
        assert unique.key is None

    def test_module_given_on_the_command_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file without modules: gets its functions from --module (load_pipeline's modules=)."""
        path = write_project(tmp_path, CHAIN.format(listed="", predicate="fn_rules:is_big"))
        rules = str(tmp_path / "fn_rules.py")
        keep = read_pipeline(path, modules=[rules]).nodes["keep"]
        assert isinstance(keep, Filter)
        assert keep.predicate.__name__ == "is_big"
        assert main(["check", str(path), "--module", rules]) == 0
        assert ": ok: pipeline" in capsys.readouterr().out

    def test_composite_frozen_function(self, tmp_path: Path) -> None:
        """A composite's frozen_arguments name functions of the composite's own modules."""
        (tmp_path / "fn_rules.py").write_text(RULES)
        (tmp_path / "doubler.yaml").write_text(
            textwrap.dedent(
                """\
                name: FnDoubler
                modules: [fn_rules.py]
                nodes:
                  - {name: map, class: Map, frozen_arguments: {func: "fn_rules:double"}}
                """
            )
        )
        path = tmp_path / "pipeline.yaml"
        path.write_text(
            textwrap.dedent(
                """\
                composites: [doubler.yaml]
                nodes:
                  - {name: numbers, class: FnNumbers, args: {limit: 2}}
                  - {name: doubled, class: FnDoubler}
                  - {name: out, class: CollectingSink}
                """
            )
        )
        loaded = read_pipeline(path)
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sink.items == [2, 4]

    def test_composite_argument_mapped_to_a_function(self, tmp_path: Path) -> None:
        """A composite argument mapped to Map's func takes module:name from the pipeline file."""
        (tmp_path / "mapper.yaml").write_text(
            "name: FnMapper\nnodes:\n  - {name: map, class: Map, arg_mapping: {func: how}}\n"
        )
        path = write_project(
            tmp_path,
            """\
            modules: [fn_rules.py]
            composites: [mapper.yaml]
            nodes:
              - {name: numbers, class: FnNumbers, args: {limit: 2}}
              - {name: mapped, class: FnMapper, args: {how: "fn_rules:twice"}}
              - {name: out, class: CollectingSink}
            """,
        )
        loaded = read_pipeline(path)
        trio.run(loaded.pipeline.run)
        sink = loaded.nodes["out"]
        assert isinstance(sink, CollectingSink)
        assert sink.items == [[1, 1], [2, 2]]


class TestRefusedFunctions:
    @pytest.mark.parametrize(
        ("predicate", "problem"),
        [
            (
                "os:system",
                "module 'os' is not listed under 'modules:' (listed: fn_rules); functions come "
                "only from the file's own modules",
            ),
            ("json:loads", "module 'json' is not listed under 'modules:'"),
            (
                "fn_rules:os.system",
                "'fn_rules:os.system' reaches into module 'os', which is not listed under "
                "'modules:'",
            ),
            ("fn_rules:THRESHOLD", "'fn_rules:THRESHOLD' is int 2, not a function"),
            (
                "fn_rules:is_bigg",
                "module 'fn_rules' has no attribute 'is_bigg'; did you mean 'is_big'?",
            ),
            (
                "lambda r: r > 2",
                "expected a function as 'module:name' from a module listed under 'modules:' "
                "(such as 'fn_rules:my_function'); got str 'lambda r: r > 2'; YAML holds data, "
                "not code",
            ),
            ("is_big", "expected a function as 'module:name'"),
        ],
    )
    def test_refused_with_location_node_key_and_fix(
        self, tmp_path: Path, predicate: str, problem: str
    ) -> None:
        """Anything but a callable of a listed module is a ConfigFileError at the value."""
        path = write_project(tmp_path, CHAIN.format(listed="fn_rules.py", predicate=predicate))
        error = error_of(path)
        prefix = f"{path}:4:51: nodes[1].args.predicate: node 'keep' argument 'predicate': "
        assert str(error).startswith(prefix + problem), str(error)
        assert (error.line, error.node, error.key) == (4, "keep", "nodes[1].args.predicate")

    def test_non_string_value(self, tmp_path: Path) -> None:
        """A number where a function is expected says what form is wanted."""
        path = write_project(
            tmp_path,
            """\
            nodes:
              - {name: numbers, class: FnNumbers}
              - {name: keep, class: Filter, args: {predicate: 3}}
            """,
        )
        assert str(error_of(path)) == (
            f"{path}:3:51: nodes[1].args.predicate: node 'keep' argument 'predicate': expected "
            "a function as 'module:name' from a module listed under 'modules:' (such as "
            "'my_rules:is_error'); got int 3"
        )

    def test_async_function_is_refused_by_the_node(self, tmp_path: Path) -> None:
        """An async function is found, then refused by Filter itself, at the same argument."""
        path = write_project(
            tmp_path, CHAIN.format(listed="fn_rules.py", predicate="fn_rules:slow_check")
        )
        error = error_of(path)
        assert str(error).startswith(
            f"{path}:4:51: nodes[1].args.predicate: node 'keep' got an async predicate"
        )

    def test_nothing_is_imported_for_a_reference(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Naming an importable but unlisted module does not import it."""
        (tmp_path / "fn_side_effect.py").write_text("raise SystemExit('imported!')\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        path = write_project(
            tmp_path, CHAIN.format(listed="fn_rules.py", predicate="fn_side_effect:anything")
        )
        error = error_of(path)
        assert "module 'fn_side_effect' is not listed under 'modules:'" in str(error)
        assert "fn_side_effect" not in sys.modules

    def test_map_function_from_python_is_unchanged(self) -> None:
        """Python callers still pass callables; nothing in the node changed."""
        node = Map(str.upper)
        assert node.func is str.upper
