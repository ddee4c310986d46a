"""Pipeline files: load_pipeline and load_pipeline_text build runnable pipelines."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanostream_trio import (
    ConfigFileError,
    DeadLetter,
    NanoNode,
    Pipeline,
    load_pipeline,
    load_pipeline_text,
)

EXAMPLES = Path(__file__).parent.parent / "examples" / "yaml"


class PfCount(NanoNode):
    """Emit 1..limit."""

    def __init__(self, limit: int = 3) -> None:
        super().__init__()
        self.limit = limit

    def generator(self) -> Iterator[int]:
        yield from range(1, self.limit + 1)


class PfAdd(NanoNode):
    """Add ``amount``; fail on ``fail_on``."""

    def __init__(self, amount: int = 0, fail_on: int | None = None) -> None:
        super().__init__()
        self.amount = amount
        self.fail_on = fail_on

    def process_item(self, item: int) -> int:
        if item == self.fail_on:
            raise ValueError(f"refusing {item}")
        return item + self.amount


class PfKeep(NanoNode):
    """Keep every item."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Any] = []

    def process_item(self, item: Any) -> None:
        self.items.append(item)


class PfEcho(NanoNode):
    """Emit ``value`` once (to see what a file passed in)."""

    def __init__(self, value: Any = None) -> None:
        super().__init__()
        self.value = value

    def generator(self) -> Iterator[Any]:
        yield self.value


def load(text: str, **kwargs: Any) -> Pipeline:
    return load_pipeline_text(textwrap.dedent(text), env=kwargs.pop("env", {}), **kwargs)


def node(pipeline: Pipeline, name: str) -> Any:
    return next(n for n in pipeline.nodes if n.name == name)


class TestStructure:
    async def test_nodes_chain_in_list_order_without_links(self) -> None:
        """Without ``links``, the nodes form one chain in the order listed."""
        pipeline = load(
            """\
            name: simple
            nodes:
              - {name: count, class: PfCount, args: {limit: 4}}
              - {name: add, class: PfAdd, args: {amount: 10}}
              - {name: keep, class: PfKeep}
            """
        )
        assert pipeline.name == "simple"
        summary = await pipeline.run()
        assert summary.status == "finished"
        assert node(pipeline, "keep").items == [11, 12, 13, 14]

    async def test_chains_and_edges(self) -> None:
        """Chains and from/to links combine; ``to`` may list several nodes (fan-out)."""
        pipeline = load(
            """\
            nodes:
              - {name: count, class: PfCount}
              - {name: plus1, class: PfAdd, args: {amount: 1}}
              - {name: plus2, class: PfAdd, args: {amount: 2}}
              - {name: keep, class: PfKeep}
            links:
              - {from: count, to: [plus1, plus2]}
              - [plus1, keep]
              - {from: plus2, to: keep}
            """
        )
        await pipeline.run()
        assert sorted(node(pipeline, "keep").items) == [2, 3, 3, 4, 4, 5]

    async def test_error_policy_and_dead_letters(self) -> None:
        """on_error and a dead_letters link route a failing item to another node."""
        pipeline = load(
            """\
            nodes:
              - {name: count, class: PfCount}
              - {name: add, class: PfAdd, args: {fail_on: 2}, on_error: dead_letter}
              - {name: keep, class: PfKeep}
              - {name: rejects, class: PfKeep}
            links:
              - [count, add, keep]
              - {from: add, port: dead_letters, to: rejects}
            """
        )
        await pipeline.run()
        assert node(pipeline, "keep").items == [1, 3]
        [letter] = node(pipeline, "rejects").items
        assert isinstance(letter, DeadLetter)
        assert (letter.node, letter.item, letter.exc_type) == ("add", 2, "ValueError")

    async def test_skip_retry_capacity_blocking(self) -> None:
        """Engine settings of a node entry reach the node."""
        pipeline = load(
            """\
            nodes:
              - {name: count, class: PfCount}
              - name: add
                class: PfAdd
                args: {fail_on: 3}
                on_error: skip
                retry: {attempts: 4, backoff: 0.5, factor: 3, max_backoff: 2}
                capacity: 7
                blocking: true
              - {name: keep, class: PfKeep}
            """
        )
        add = node(pipeline, "add")
        assert add.on_error == "skip"
        assert (add._ns_retry.attempts, add._ns_retry.backoff) == (4, 0.5)
        assert (add._ns_retry.factor, add._ns_retry.max_backoff) == (3, 2)
        assert add._ns_capacity == 7
        assert add._ns_blocking is True
        summary = await pipeline.run()
        assert node(pipeline, "keep").items == [1, 2]
        assert summary["add"].skipped == 1
        assert summary["add"].inbox_capacity == 7

    def test_pipeline_settings(self) -> None:
        """name, stats_interval and stall_timeout configure the Pipeline."""
        pipeline = load(
            """\
            name: tuned
            stats_interval: 2.5
            stall_timeout: null
            nodes: [{class: PfCount}, {class: PfKeep}]
            """
        )
        assert pipeline.name == "tuned"
        assert pipeline._stats_interval == 2.5
        assert pipeline._stall_timeout is None

    def test_default_node_name_is_class_name(self) -> None:
        """A node entry without ``name`` is named after its class."""
        pipeline = load("nodes: [{class: PfCount}, {class: PfKeep}]\n")
        assert [n.name for n in pipeline.nodes] == ["PfCount", "PfKeep"]


class TestEnvironment:
    @pytest.mark.parametrize(
        ("value", "env", "expected"),
        [
            ("${PF_VALUE}", {"PF_VALUE": "8080"}, "8080"),
            ("${PF_VALUE:-2.5}", {}, "2.5"),
            ("${PF_VALUE:-true}", {}, "true"),
            ("${PF_VALUE}", {"PF_VALUE": "on"}, "on"),
            ("${PF_VALUE}", {"PF_VALUE": "2024-05-17"}, "2024-05-17"),
            ("${PF_VALUE}", {"PF_VALUE": "null"}, "null"),
            ("'${PF_VALUE:-8080}'", {}, "8080"),
            (
                "http://${PF_HOST:-localhost}:${PF_PORT}/x",
                {"PF_PORT": "81"},
                "http://localhost:81/x",
            ),
            ("cost $$5", {}, "cost $5"),
            ("${PF_VALUE:-}", {}, ""),
        ],
    )
    async def test_substitution(self, value: str, env: dict[str, str], expected: Any) -> None:
        """``${NAME}`` and ``${NAME:-default}`` are replaced; the result is always a string."""
        pipeline = load(
            f"""\
            nodes:
              - name: echo
                class: PfEcho
                args:
                  value: {value}
              - {{name: keep, class: PfKeep}}
            """,
            env=env,
        )
        await pipeline.run()
        assert node(pipeline, "keep").items == [expected]

    def test_missing_variable(self) -> None:
        """A variable neither set nor defaulted is an error at its position."""
        with pytest.raises(ConfigFileError) as info:
            load(
                """\
                nodes:
                  - {class: PfCount}
                  - name: keep
                    class: PfKeep
                    capacity: ${PF_CAPACITY}
                """,
                source="env.yaml",
            )
        assert str(info.value) == (
            "env.yaml:5:15: nodes[1].capacity: environment variable 'PF_CAPACITY' is not set; "
            "set it, or give a default as ${PF_CAPACITY:-default}"
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("8", 8), (" -2 ", -2), ("0", 0)],
    )
    async def test_spelled_number_for_int_parameter(self, text: str, expected: int) -> None:
        """A string spelling a whole number fills an ``int`` parameter (how ``${N}`` gives one)."""
        pipeline = load(
            """\
            nodes:
              - {name: count, class: PfCount, args: {limit: "${PF_LIMIT}"}}
              - {name: echo, class: PfEcho, args: {value: "${PF_LIMIT}"}}
            links: []
            """,
            env={"PF_LIMIT": text},
        )
        assert node(pipeline, "count").limit == expected
        assert node(pipeline, "echo").value == text  # not annotated: stays the string

    def test_spelled_engine_options(self) -> None:
        """capacity, blocking, retry and stats_interval accept strings that spell their values."""
        pipeline = load(
            """\
            stats_interval: ${PF_STATS}
            nodes:
              - {name: count, class: PfCount}
              - name: keep
                class: PfKeep
                capacity: ${PF_CAPACITY}
                blocking: ${PF_BLOCKING}
                on_error: retry
                retry: {attempts: "${PF_ATTEMPTS}", backoff: "${PF_BACKOFF}"}
            """,
            env={
                "PF_STATS": "2.5",
                "PF_CAPACITY": "7",
                "PF_BLOCKING": "yes",
                "PF_ATTEMPTS": "4",
                "PF_BACKOFF": "0.5",
            },
        )
        keep = node(pipeline, "keep")
        assert pipeline._stats_interval == 2.5
        assert (keep._ns_capacity, keep._ns_blocking) == (7, True)
        assert (keep._ns_retry.attempts, keep._ns_retry.backoff) == (4, 0.5)

    def test_substituted_non_number_is_reported(self) -> None:
        """A substituted string spelling no whole number, for an ``int`` parameter, is an error."""
        with pytest.raises(ConfigFileError) as info:
            load(
                "nodes:\n  - name: count\n    class: PfCount\n    args:\n"
                "      limit: ${PF_LIMIT:-many}\n",
                source="env.yaml",
            )
        assert str(info.value) == (
            "env.yaml:5:14: nodes[0].args.limit: node 'count' argument 'limit': "
            "expected a whole number, got 'many'"
        )

    @pytest.mark.parametrize("data_dir", ["on", "2024-05-17", "123", "null", "~"])
    def test_csv_watch_directory_stays_a_string(self, tmp_path: Path, data_dir: str) -> None:
        """The audit's case: DATA_DIR=on / 2024-05-17 / 123 is a directory name, not a value."""
        pipeline = load_pipeline(EXAMPLES / "csv_watch.yaml", env={"DATA_DIR": data_dir})
        assert node(pipeline, "watch").directory == os.path.abspath(data_dir)

    def test_os_environ_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without ``env``, variables come from the process environment."""
        monkeypatch.setenv("PF_LIMIT", "9")
        pipeline = load_pipeline_text("nodes: [{class: PfEcho, args: {value: $PF_LIMIT}}]\n")
        assert node(pipeline, "PfEcho").value == "$PF_LIMIT"  # only ${...} is substituted
        text = "nodes:\n  - class: PfCount\n    args:\n      limit: ${PF_LIMIT}\n"
        assert node(load_pipeline_text(text), "PfCount").limit == 9


class TestModulesAndComposites:
    def test_module_by_path_relative_to_file(self, tmp_path: Path) -> None:
        """``modules:`` imports a .py file relative to the pipeline file, registering its nodes."""
        (tmp_path / "pf_custom_nodes.py").write_text(
            textwrap.dedent(
                """\
                from nanostream_trio import NanoNode

                class PfCustomSquare(NanoNode):
                    def process_item(self, item):
                        return item * item
                """
            )
        )
        path = tmp_path / "pipeline.yaml"
        path.write_text(
            "modules: [pf_custom_nodes.py]\n"
            "nodes: [{class: PfCount}, {class: PfCustomSquare}, {name: keep, class: PfKeep}]\n"
        )
        pipeline = load_pipeline(str(path), env={})
        assert type(node(pipeline, "PfCustomSquare")).__name__ == "PfCustomSquare"

    def test_module_by_dotted_name(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A dotted module name is imported normally; ``modules=`` adds more from the caller."""
        (tmp_path / "pf_dotted_nodes.py").write_text(
            "from nanostream_trio import NanoNode\n\n"
            "class PfDottedTwice(NanoNode):\n"
            "    def process_item(self, item):\n"
            "        return item * 2\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        pipeline = load(
            "nodes: [{class: PfCount}, {class: PfDottedTwice}, {class: PfKeep}]\n",
            modules=["pf_dotted_nodes"],
        )
        assert "pf_dotted_nodes" in sys.modules
        assert [n.name for n in pipeline.nodes][1] == "PfDottedTwice"

    def test_module_import_error(self) -> None:
        """A module that cannot be imported is an error at its list entry."""
        with pytest.raises(ConfigFileError) as info:
            load("modules: [pf_no_such_module]\nnodes: [{class: PfCount}]\n", source="m.yaml")
        assert str(info.value) == (
            "m.yaml:1:11: modules[0]: cannot import module 'pf_no_such_module': "
            "ModuleNotFoundError: No module named 'pf_no_such_module'"
        )

    async def test_inline_composite(self) -> None:
        """A composite defined under ``composites:`` is usable as a node type in the same file."""
        pipeline = load(
            """\
            composites:
              - name: PfPlusTen
                nodes:
                  - {name: a, class: PfAdd, frozen_arguments: {amount: 4}}
                  - {name: b, class: PfAdd, arg_mapping: {amount: rest}}
            nodes:
              - {name: count, class: PfCount, args: {limit: 2}}
              - {name: ten, class: PfPlusTen, args: {rest: 6}}
              - {name: keep, class: PfKeep}
            """
        )
        await pipeline.run()
        assert node(pipeline, "keep").items == [11, 12]
        assert [n.name for n in pipeline.nodes] == ["count", "ten.a", "ten.b", "keep"]

    def test_inline_composite_error_is_located(self) -> None:
        """An error inside an inline composite names its key path in the pipeline file."""
        with pytest.raises(ConfigFileError) as info:
            load(
                """\
                composites:
                  - name: PfBroken
                    nodes:
                      - {class: PfAd}
                nodes: [{class: PfCount}]
                """,
                source="c.yaml",
            )
        assert str(info.value) == (
            "c.yaml:4:17: composites[0].nodes[0].class: unknown node type 'PfAd'; "
            "did you mean 'PfAdd'?"
        )

    def test_frozen_argument_in_file(self) -> None:
        """A pipeline file cannot override a composite's frozen argument either."""
        with pytest.raises(ConfigFileError) as info:
            load(
                """\
                composites:
                  - name: PfFrozen
                    nodes: [{name: a, class: PfAdd, frozen_arguments: {amount: 4}}]
                nodes:
                  - {class: PfCount}
                  - {name: f, class: PfFrozen, args: {amount: 5}}
                """,
                source="f.yaml",
            )
        assert str(info.value) == (
            "f.yaml:6:39: nodes[1].args.amount: node 'f' (PfFrozen) got argument 'amount', "
            "which the composite freezes to 4 (node 'a'); it cannot be overridden"
        )

    def test_composite_file_not_found(self, tmp_path: Path) -> None:
        """A composite path that does not exist is an error at its entry."""
        path = tmp_path / "p.yaml"
        path.write_text("composites: [nothere.yaml]\nnodes: [{class: PfCount}]\n")
        with pytest.raises(ConfigFileError) as info:
            load_pipeline(path, env={})
        assert str(info.value) == (
            f"{path}:1:14: composites[0]: composite file '{tmp_path / 'nothere.yaml'}' not found"
        )


class TestSecurity:
    @pytest.mark.parametrize("name", ["os:system", "builtins:eval", "subprocess:Popen", "print"])
    def test_non_nodes_never_resolve(self, name: str) -> None:
        """Only registered NanoNode subclasses are node types; other callables are unknown."""
        with pytest.raises(ConfigFileError, match="unknown node type"):
            load(f"nodes: [{{class: '{name}'}}]\n")

    def test_class_name_does_not_import(self) -> None:
        """``module:Class`` never imports the module; the file must list it under modules."""
        with pytest.raises(ConfigFileError) as info:
            load("nodes: [{class: 'pf_never_imported.mod:Node'}]\n", source="s.yaml")
        assert "pf_never_imported.mod" not in sys.modules
        assert str(info.value) == (
            "s.yaml:1:17: nodes[0].class: unknown node type 'pf_never_imported.mod:Node': "
            "module 'pf_never_imported.mod' is not imported; name it under 'modules:' "
            "(or pass --module) so its nodes are registered"
        )

    def test_python_tags_refused(self) -> None:
        """YAML python/* tags are not constructed (safe loader only)."""
        with pytest.raises(ConfigFileError, match="could not determine a constructor"):
            load("nodes: !!python/object/apply:os.getcwd []\n")


class TestExamples:
    async def test_foo_pipeline_example(self, capsys: pytest.CaptureFixture[str]) -> None:
        """examples/yaml/foo_pipeline.yaml runs the seed composite through PrinterOfThings."""
        pipeline = load_pipeline(
            EXAMPLES / "foo_pipeline.yaml", env={"FOO_INTERVAL": "0", "FOO_MESSAGES": "3"}
        )
        summary = await pipeline.run()
        assert summary.status == "finished"
        printed = [
            line for line in capsys.readouterr().out.splitlines() if line.startswith("even length")
        ]
        assert printed == ["even length: True"] * 3

    async def test_dead_letters_example(self, capsys: pytest.CaptureFixture[str]) -> None:
        """examples/yaml/dead_letters.yaml retries, then dead-letters multiples of 5."""
        pipeline = load_pipeline(EXAMPLES / "dead_letters.yaml", env={})
        summary = await pipeline.run()
        lines = capsys.readouterr().out.splitlines()
        assert [line for line in lines if line.startswith("gave up")] == [
            "gave up on 5: ZeroDivisionError: division by zero",
            "gave up on 10: ZeroDivisionError: division by zero",
        ]
        assert len([line for line in lines if line.startswith("1/x = ")]) == 10
        assert summary["invert"].retried == 2

    def test_composite_arguments_are_checked_like_their_inner_ones(self) -> None:
        """A composite argument takes the annotation of the inner argument it maps to."""
        with pytest.raises(ConfigFileError) as info:
            load_pipeline(EXAMPLES / "foo_pipeline.yaml", env={"FOO_INTERVAL": "soon"})
        assert str(info.value) == (
            f"{EXAMPLES / 'foo_pipeline.yaml'}:13:21: nodes[0].args.foo_interval: "
            "node 'foo' argument 'foo_interval': expected a number, got 'soon'"
        )
        pipeline = load_pipeline(EXAMPLES / "foo_pipeline.yaml", env={"FOO_MESSAGES": "2"})
        emitter = node(pipeline, "foo.foo_generator")
        assert (emitter.interval, emitter.count) == (0.1, 2)

    def test_csv_watch_example_loads(self, tmp_path: Path) -> None:
        """examples/yaml/csv_watch.yaml builds the seed's headline pipeline (run in test_cli)."""
        pipeline = load_pipeline(EXAMPLES / "csv_watch.yaml", env={"DATA_DIR": str(tmp_path)})
        assert [
            type(n).__name__ for n in pipeline.nodes if n.name in ("watch", "read", "print")
        ] == [
            "LocalDirectoryWatchdog",
            "LocalFileReader",
            "PrinterOfThings",
        ]
        assert node(pipeline, "watch").directory == str(tmp_path)
