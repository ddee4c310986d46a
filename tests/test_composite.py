"""Composite nodes: class_factory, load_composite and load_composite_text."""

from __future__ import annotations

import inspect
import io
import pickle
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from structlog.testing import capture_logs

import nanostream_trio.composites
from nanostream_trio import (
    ConfigError,
    ConfigFileError,
    DeadLetter,
    NanoNode,
    Pipeline,
    class_factory,
    load_composite,
    load_composite_text,
    registered_nodes,
    resolve_node_class,
)

EXAMPLES = Path(__file__).parent.parent / "examples" / "yaml"


class CompNumbers(NanoNode):
    """Emit 1..count."""

    def __init__(self, count: int = 3, start: int = 1) -> None:
        super().__init__()
        self.count = count
        self.start = start

    def generator(self) -> Iterator[int]:
        yield from range(self.start, self.start + self.count)


class CompScale(NanoNode):
    """Multiply each item by ``factor`` (required)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def process_item(self, item: int) -> int:
        return item * self.factor


class CompAdd(NanoNode):
    """Add ``amount``."""

    def __init__(self, amount: int = 1) -> None:
        super().__init__()
        self.amount = amount

    def process_item(self, item: int) -> int:
        return item + self.amount


class CompFailOn(NanoNode):
    """Raise ValueError on ``bad``; pass the rest."""

    def __init__(self, bad: int = 2) -> None:
        super().__init__()
        self.bad = bad

    def process_item(self, item: int) -> int:
        if item == self.bad:
            raise ValueError(f"bad item {item}")
        return item


class CompCollect(NanoNode):
    """Keep every item."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Any] = []

    def process_item(self, item: Any) -> None:
        self.items.append(item)


class CompCounted(NanoNode):
    """Count its instances (to show the factory instantiates nothing)."""

    instances = 0

    def __init__(self) -> None:
        super().__init__()
        CompCounted.instances += 1

    def process_item(self, item: Any) -> Any:
        return item


SCALED = {
    "name": "CompScaledNumbers",
    "nodes": [
        {
            "name": "numbers",
            "class": "CompNumbers",
            "frozen_arguments": {"start": 1},
            "arg_mapping": {"count": "how_many"},
        },
        {"name": "scale", "class": "CompScale", "arg_mapping": {"factor": "factor"}},
    ],
}

DOUBLER = {
    "name": "CompDoubleThenAdd",
    "nodes": [
        {"name": "double", "class": "CompScale", "frozen_arguments": {"factor": 2}},
        {"name": "add", "class": "CompAdd", "arg_mapping": {"amount": "plus"}},
    ],
}


def collected(sink: CompCollect) -> list[Any]:
    return sink.items


class TestSeedExample:
    def test_seed_yaml_with_the_colon_defines_a_working_class(self) -> None:
        """The seed's FooMessageTester file (colon fixed) makes a class global_start() runs."""
        foo_message_tester = load_composite(EXAMPLES / "foo_message.yaml")
        assert foo_message_tester.__name__ == "FooMessageTester"
        assert foo_message_tester in registered_nodes()["FooMessageTester"]
        foo_node = foo_message_tester(foo_interval=0, messages=4)
        assert foo_node.is_source
        summary = foo_node.global_start()
        assert summary.status == "finished"
        assert summary["FooMessageTester.length_tester"].items_out == 4

    def test_seed_link_to_printer(self) -> None:
        """``foo_node > PrinterOfThings()`` prints what the composite's last node emits."""
        from nanostream_trio import PrinterOfThings

        foo_message_tester = load_composite(EXAMPLES / "foo_message.yaml")
        foo_node = foo_message_tester(foo_interval=0, messages=2)
        printed = io.StringIO()
        printer = PrinterOfThings(stream=printed)
        foo_node > printer
        foo_node.global_start()
        assert printed.getvalue() == "True\nTrue\n"

    def test_seed_yaml_as_written_names_the_missing_colon(self) -> None:
        """The seed's YAML, whose 'class FooEmitter' lacks a colon, gets a located message."""
        seed = textwrap.dedent(
            """\
            name: FooMessageTester

            nodes:
              - name: foo_generator
                class FooEmitter
                frozen_arguments:
                  message: foobar
                arg_mapping:
                  interval: foo_interval
              - name: length_tester
                class: MessageLengthTester
                arg_mapping: null
            """
        )
        with pytest.raises(ConfigFileError) as info:
            load_composite_text(seed, source="foo_message.yaml")
        assert str(info.value) == (
            "foo_message.yaml:5:5: nodes[0]: expected 'key: value' but found "
            "'class FooEmitter' with no ':'; did you mean 'class: FooEmitter'?"
        )
        assert (info.value.file, info.value.line, info.value.column) == ("foo_message.yaml", 5, 5)
        assert info.value.key == "nodes[0]"

    def test_seed_class_factory_on_safe_load(self) -> None:
        """The seed's call sequence works: yaml.safe_load the text, pass the dict on."""
        text = (EXAMPLES / "foo_message.yaml").read_text()
        config = yaml.safe_load(text)
        config["modules"] = [str(EXAMPLES / "foo_nodes.py")]
        cls = class_factory(config)
        assert cls.__name__ == "FooMessageTester"
        assert [p for p in inspect.signature(cls).parameters][:3] == [
            "name",
            "foo_interval",
            "messages",
        ]

    def test_seed_call_without_assignment_is_a_name_error(self) -> None:
        """class_factory injects nothing into the caller's namespace: the seed's bare call fails."""
        config = yaml.safe_load((EXAMPLES / "foo_message.yaml").read_text())
        config["modules"] = [str(EXAMPLES / "foo_nodes.py")]
        namespace: dict[str, Any] = {"class_factory": class_factory, "config": config}
        with pytest.raises(NameError, match="'FooMessageTester' is not defined"):
            exec("class_factory(config)\nFooMessageTester(foo_interval=0)", namespace)
        assert "FooMessageTester" not in namespace

    def test_docs_show_the_name_error_and_both_fixes(self) -> None:
        """The callout in docs/yaml.md runs as shown: the bare call fails, the two fixes work."""
        docs = (Path(__file__).parent.parent / "docs" / "yaml.md").read_text()
        quoted = "\n".join(
            line.removeprefix("> ").removeprefix(">") for line in docs.splitlines()
            if line.startswith(">")
        )  # fmt: skip
        blocks = quoted.split("```python\n")[1:]
        assert len(blocks) == 2, "the class_factory callout of docs/yaml.md has two code blocks"
        bare, fixed = (block.partition("```")[0] for block in blocks)
        config = yaml.safe_load((EXAMPLES / "foo_message.yaml").read_text())
        config["modules"] = [str(EXAMPLES / "foo_nodes.py")]
        namespace: dict[str, Any] = {
            "class_factory": class_factory,
            "foo_message_config": config,
        }
        with pytest.raises(NameError, match="'FooMessageTester' is not defined"):
            exec(bare, namespace)
        exec(fixed, namespace)
        assert type(namespace["foo_node"]) is namespace["FooMessageTester"]
        assert namespace["FooMessageTester"] is nanostream_trio.composites.FooMessageTester


class TestFactory:
    def test_returns_registered_node_class(self) -> None:
        """class_factory returns a NanoNode subclass registered under the definition's name."""
        cls = class_factory(SCALED)
        assert issubclass(cls, NanoNode)
        assert cls.__name__ == "CompScaledNumbers"
        assert registered_nodes()["CompScaledNumbers"][-1] is cls

    def test_nothing_instantiated_at_factory_time(self) -> None:
        """Making the class builds no inner node; each instance builds its own."""
        before = CompCounted.instances
        cls = class_factory(
            {"name": "CompCountedPair", "nodes": [{"class": "CompCounted"}, {"class": "CompAdd"}]}
        )
        assert CompCounted.instances == before
        cls()
        cls()
        assert CompCounted.instances == before + 2

    def test_signature_lists_composite_arguments(self) -> None:
        """The class's signature shows its arguments, required ones without a default."""
        cls = class_factory(SCALED)
        params = inspect.signature(cls).parameters
        assert params["factor"].default is inspect.Parameter.empty
        assert params["how_many"].default == 3
        assert "start" not in params

    def test_docstring_from_description(self) -> None:
        """``description`` becomes the class docstring; without it the inner nodes are listed."""
        cls = class_factory({**SCALED, "description": "Numbers, scaled."})
        assert cls.__doc__ == "Numbers, scaled."
        plain = class_factory(SCALED)
        assert plain.__doc__ == "Composite node of numbers (CompNumbers), scale (CompScale)."


class TestArguments:
    def test_frozen_argument_cannot_be_overridden(self) -> None:
        """Passing a frozen argument is an error naming the frozen value, not a silent override."""
        cls = class_factory(SCALED)
        with pytest.raises(ConfigError) as info:
            cls(factor=2, start=10)
        assert str(info.value) == (
            "CompScaledNumbers() argument 'start' is frozen to 1 by the composite definition "
            "(node 'numbers'); it cannot be overridden"
        )

    def test_unknown_argument_lists_accepted(self) -> None:
        """An unknown argument is an error listing the accepted ones and the near name."""
        cls = class_factory(SCALED)
        with pytest.raises(ConfigError) as info:
            cls(factor=2, how_mani=3)
        assert str(info.value) == (
            "CompScaledNumbers() got unexpected argument 'how_mani'; accepted: how_many, factor "
            "(and the engine options name, on_error, retry, capacity, blocking); "
            "did you mean 'how_many'?"
        )
        assert info.value.key == "how_mani"

    def test_missing_required_argument(self) -> None:
        """A composite argument mapped to a required inner argument must be given."""
        cls = class_factory(SCALED)
        with pytest.raises(ConfigError) as info:
            cls(how_many=2)
        assert str(info.value) == (
            "CompScaledNumbers() missing required argument 'factor' "
            "(node 'scale' needs it as 'factor')"
        )

    async def test_mapped_arguments_reach_inner_nodes(self) -> None:
        """Mapped arguments reach their inner argument; omitted ones keep the inner default."""
        cls = class_factory(SCALED)
        sink = CompCollect()
        cls(factor=10, how_many=2) > sink
        await Pipeline(sink).run()
        assert collected(sink) == [10, 20]
        sink = CompCollect()
        cls(factor=1) > sink
        await Pipeline(sink).run()
        assert collected(sink) == [1, 2, 3]

    def test_factory_rejects_unknown_inner_argument(self) -> None:
        """arg_mapping naming an argument the inner class lacks fails when the class is made."""
        config = {"name": "CompBad", "nodes": [{"class": "CompAdd", "arg_mapping": {"amout": "x"}}]}
        with pytest.raises(ConfigFileError) as info:
            class_factory(config)
        assert str(info.value) == (
            "nodes[0].arg_mapping.amout: node 'CompAdd' (CompAdd) got unexpected argument "
            "'amout'; accepted: amount; did you mean 'amount'?"
        )

    def test_factory_rejects_unset_required_inner_argument(self) -> None:
        """An inner argument with no default must be frozen or mapped."""
        config = {"name": "CompBad", "nodes": [{"name": "s", "class": "CompScale"}]}
        with pytest.raises(ConfigFileError) as info:
            class_factory(config)
        assert str(info.value) == (
            "nodes[0]: node 's' (CompScale) needs argument 'factor'; "
            "give it under frozen_arguments or arg_mapping"
        )

    def test_factory_rejects_engine_option_as_composite_argument(self) -> None:
        """A composite argument may not take the name of an engine option."""
        config = {
            "name": "CompBad",
            "nodes": [{"class": "CompAdd", "arg_mapping": {"amount": "name"}}],
        }
        with pytest.raises(ConfigFileError, match="'name' is an engine option of every node"):
            class_factory(config)

    def test_factory_rejects_frozen_and_mapped(self) -> None:
        """One inner argument cannot be both frozen and mapped."""
        config = {
            "name": "CompBad",
            "nodes": [
                {
                    "class": "CompAdd",
                    "frozen_arguments": {"amount": 1},
                    "arg_mapping": {"amount": "a"},
                }
            ],
        }
        with pytest.raises(ConfigFileError, match="'amount' is both frozen and mapped"):
            class_factory(config)


class TestBehavesAsOneNode:
    async def test_composite_is_never_a_task(self) -> None:
        """Only the inner nodes run; the composite object has no task and no statistics."""
        cls = class_factory(SCALED)
        sink = CompCollect()
        node = cls(factor=2)
        node > sink
        pipeline = Pipeline(node)
        assert [n.name for n in pipeline.nodes] == [
            "CompScaledNumbers.numbers",
            "CompScaledNumbers.scale",
            sink.name,
        ]
        assert node not in pipeline.nodes
        summary = await pipeline.run()
        assert set(summary) == {"CompScaledNumbers.numbers", "CompScaledNumbers.scale", sink.name}

    async def test_link_into_composite_goes_to_first_inner_node(self) -> None:
        """``source > composite > sink`` feeds the first inner node and drains the last."""
        cls = class_factory(DOUBLER)
        sink = CompCollect()
        node = cls(plus=100)
        assert not node.is_source
        CompNumbers(count=3) > node > sink
        await Pipeline(sink).run()
        assert collected(sink) == [102, 104, 106]
        assert node.upstream == node.inner_nodes["double"].upstream
        assert node.downstream == (sink,)

    async def test_nested_composites(self) -> None:
        """A composite may contain another; names nest and items flow through both."""
        class_factory(DOUBLER)
        outer = class_factory(
            {
                "name": "CompOuter",
                "nodes": [
                    {
                        "name": "first",
                        "class": "CompDoubleThenAdd",
                        "arg_mapping": {"plus": "plus"},
                    },
                    {
                        "name": "again",
                        "class": "CompDoubleThenAdd",
                        "frozen_arguments": {"plus": 0},
                    },
                ],
            }
        )
        sink = CompCollect()
        CompNumbers(count=2) > outer(plus=1) > sink
        summary = await Pipeline(sink).run()
        assert collected(sink) == [6, 10]  # ((x * 2) + 1) * 2
        assert "CompOuter.first.double" in summary
        assert "CompOuter.again.add" in summary

    async def test_explicit_edges_diamond(self) -> None:
        """``edges`` replace list order: a fan-out and fan-in inside the composite."""
        cls = class_factory(
            {
                "name": "CompDiamond",
                "nodes": [
                    {"name": "split", "class": "CompAdd", "frozen_arguments": {"amount": 0}},
                    {"name": "plus1", "class": "CompAdd", "frozen_arguments": {"amount": 1}},
                    {"name": "plus2", "class": "CompAdd", "frozen_arguments": {"amount": 2}},
                    {"name": "join", "class": "CompAdd", "frozen_arguments": {"amount": 0}},
                ],
                "edges": [
                    {"from": "split", "to": ["plus1", "plus2"]},
                    {"from": "plus1", "to": "join"},
                    {"from": "plus2", "to": "join"},
                ],
            }
        )
        sink = CompCollect()
        CompNumbers(count=2) > cls() > sink
        await Pipeline(sink).run()
        assert sorted(collected(sink)) == [2, 3, 3, 4]

    async def test_engine_options_apply_to_inner_nodes(self) -> None:
        """name renames the inner nodes, capacity sizes the first inbox, on_error reaches all."""
        cls = class_factory(DOUBLER)
        node = cls(name="calc", capacity=7, on_error="skip")
        inner = node.inner_nodes
        assert [n.name for n in inner.values()] == ["calc.double", "calc.add"]
        assert inner["double"]._ns_capacity == 7
        assert all(n.on_error == "skip" for n in inner.values())
        node.configure(name="renamed")
        assert [n.name for n in inner.values()] == ["renamed.double", "renamed.add"]

    async def test_dead_letters_of_every_inner_node(self) -> None:
        """``composite.dead_letters > sink`` receives the failures of any inner node."""
        cls = class_factory(
            {
                "name": "CompFragile",
                "nodes": [
                    {"name": "a", "class": "CompFailOn", "frozen_arguments": {"bad": 1}},
                    {"name": "b", "class": "CompFailOn", "frozen_arguments": {"bad": 3}},
                ],
            }
        )
        node = cls()
        sink, rejects = CompCollect(), CompCollect()
        CompNumbers(count=4) > node > sink
        node.dead_letters > rejects
        await Pipeline(sink).run()
        assert collected(sink) == [2, 4]
        letters = collected(rejects)
        assert all(isinstance(letter, DeadLetter) for letter in letters)
        assert sorted((letter.node, letter.item) for letter in letters) == [
            ("CompFragile.a", 1),
            ("CompFragile.b", 3),
        ]

    async def test_failure_names_inner_node(self) -> None:
        """A failure inside a composite keeps its type and names the inner node."""
        cls = class_factory({"name": "CompFails", "nodes": [{"name": "f", "class": "CompFailOn"}]})
        sink = CompCollect()
        CompNumbers(count=3) > cls() > sink
        with pytest.raises(ValueError, match="bad item 2") as info:
            await Pipeline(sink).run()
        assert any("CompFails.f" in note for note in getattr(info.value, "__notes__", []))

    def test_inner_constructor_failure_names_the_inner_node(self) -> None:
        """An inner constructor's error keeps its type, with a note naming node and composite."""

        class CompPicky(NanoNode):
            def __init__(self, level: int = 0) -> None:
                super().__init__()
                if level < 0:
                    raise ValueError("level must be >= 0")

            def process_item(self, item: Any) -> Any:
                return item

        cls = class_factory(
            {
                "name": "CompPickyWrap",
                "nodes": [{"name": "p", "class": "CompPicky", "arg_mapping": {"level": "level"}}],
            }
        )
        with pytest.raises(ValueError, match="level must be >= 0") as info:
            cls(level=-1)
        assert "while building node 'p' of composite CompPickyWrap" in info.value.__notes__


class TestEvents:
    async def test_log_event_carries_the_composite_name(self) -> None:
        """log_event on a composite is bound to the pipeline and the composite's own name."""
        node = class_factory(DOUBLER)(name="calc", plus=1)

        class Probe(NanoNode):
            async def generator(self) -> Any:
                node.log_event("calc_probed", "warning", seen=1)  # the composite runs now
                yield 1

        sink = CompCollect()
        Probe() > node > sink
        with capture_logs() as logs:
            await Pipeline(sink, name="calculator", stats_interval=None).run()
            node.log_event("calc_idle")
        ours = [e for e in logs if e["event"] in ("calc_probed", "calc_idle")]
        assert ours == [
            {
                "event": "calc_probed",
                "log_level": "warning",
                "pipeline": "calculator",
                "node": "calc",
                "seen": 1,
            },
            {"event": "calc_idle", "log_level": "info", "node": "calc"},
        ]
        assert collected(sink) == [3]


class TestCompositesModule:
    def test_classes_are_attributes_of_their_module(self) -> None:
        """A composite class is importable from nanostream_trio.composites, its __module__."""
        cls = class_factory(DOUBLER)
        from nanostream_trio.composites import CompDoubleThenAdd

        assert CompDoubleThenAdd is cls
        assert cls.__module__ == "nanostream_trio.composites"
        assert "CompDoubleThenAdd" in nanostream_trio.composites.__all__

    def test_redefinition_replaces_the_attribute(self) -> None:
        """Defining a composite again under its name makes the new class the module's."""
        class_factory(DOUBLER)
        newest = class_factory(DOUBLER)
        assert nanostream_trio.composites.CompDoubleThenAdd is newest
        assert nanostream_trio.composites.__all__.count("CompDoubleThenAdd") == 1

    def test_pickle_by_reference(self) -> None:
        """Composite classes, and instances with their inner nodes, survive pickle."""
        cls = class_factory(DOUBLER)
        assert pickle.loads(pickle.dumps(cls)) is cls
        copy = pickle.loads(pickle.dumps(cls(name="calc", plus=5)))
        assert type(copy) is cls
        assert [type(n).__name__ for n in copy.inner_nodes.values()] == ["CompScale", "CompAdd"]
        assert copy.inner_nodes["add"].amount == 5  # type: ignore[attr-defined]

    def test_undefined_name_says_to_load_the_definition(self) -> None:
        """An undefined composite name fails with a message saying how to define it."""
        with pytest.raises(AttributeError) as info:
            nanostream_trio.composites.CompNeverDefined  # noqa: B018 - the lookup is the test
        assert str(info.value) == (
            "no composite named 'CompNeverDefined' is defined in this process; load its "
            "definition first with load_composite(path), load_composite_text(text) or "
            "class_factory(config)"
        )
        with pytest.raises(ImportError):
            from nanostream_trio.composites import CompNeverDefined  # noqa: F401


class TestShape:
    @pytest.mark.parametrize(
        ("edges", "message"),
        [
            (
                [{"from": "a", "to": "b"}],
                "edges: a composite needs exactly one first node (links into it go there); "
                "these have no upstream: a, c",
            ),
            (
                [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "b"}],
                "edges: the edges form a cycle through: b, c",
            ),
            (
                [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}],
                "edges: a composite needs exactly one last node (links out of it leave from "
                "there); these have no downstream: b, c",
            ),
            (
                [{"from": "a", "to": "bb"}],
                "edges[0].to: no node is named 'bb'; nodes: a, b, c; did you mean 'b'?",
            ),
            (
                [["a", "b", "c"], {"from": "a", "to": "b"}],
                "edges[1].to: 'a' is already linked to 'b'",
            ),
        ],
    )
    def test_bad_edges(self, edges: list[Any], message: str) -> None:
        """Edges must make one flow: one first node, one last node, no cycle, known names."""
        config = {
            "name": "CompShape",
            "nodes": [{"name": n, "class": "CompAdd"} for n in ("a", "b", "c")],
            "edges": edges,
        }
        with pytest.raises(ConfigFileError) as info:
            class_factory(config)
        assert str(info.value) == message

    def test_source_cannot_be_linked_into(self) -> None:
        """An inner source placed after another node is refused when the class is made."""
        config = {
            "name": "CompShape",
            "nodes": [{"name": "a", "class": "CompAdd"}, {"name": "s", "class": "CompNumbers"}],
        }
        with pytest.raises(ConfigFileError) as info:
            class_factory(config)
        assert str(info.value) == (
            "nodes[1]: node 's' is a source (CompNumbers); nothing can link into it"
        )

    def test_dead_letter_sink_is_not_the_exit(self) -> None:
        """A node fed only by dead letters is not counted as the composite's last node."""
        cls = class_factory(
            {
                "name": "CompWithRejects",
                "nodes": [
                    {"name": "f", "class": "CompFailOn"},
                    {"name": "out", "class": "CompAdd"},
                    {"name": "rejects", "class": "CompCollect"},
                ],
                "edges": [["f", "out"], {"from": "f", "to": "rejects", "port": "dead_letters"}],
            }
        )
        node = cls()
        assert node._ns_exit() is node.inner_nodes["out"]


class TestNames:
    def test_ambiguous_bare_name_lists_qualified_names(self) -> None:
        """A bare name two modules define is an error listing module:Class; those resolve."""
        for module in ("comp_mod_one", "comp_mod_two"):
            type(
                "CompTwin",
                (NanoNode,),
                {"__module__": module, "process_item": lambda self, item: item},
            )
        with pytest.raises(ConfigFileError) as info:
            class_factory({"name": "CompUsesTwin", "nodes": [{"class": "CompTwin"}]})
        assert str(info.value) == (
            "nodes[0].class: node type 'CompTwin' is ambiguous; use one of: "
            "comp_mod_one:CompTwin, comp_mod_two:CompTwin"
        )
        cls = class_factory({"name": "CompUsesTwin", "nodes": [{"class": "comp_mod_two:CompTwin"}]})
        assert type(cls().inner_nodes["CompTwin"]).__module__ == "comp_mod_two"

    def test_redefining_a_composite_replaces_it(self) -> None:
        """Loading a composite again under the same name does not make the name ambiguous."""
        class_factory(DOUBLER)
        newest = class_factory(DOUBLER)
        user = class_factory(
            {"name": "CompUsesDoubler", "nodes": [{"name": "d", "class": "CompDoubleThenAdd"}]}
        )
        assert type(user().inner_nodes["d"]) is newest

    def test_redefined_class_resolves_to_the_latest_from_python(self) -> None:
        """resolve_node_class, like pipeline files, counts a redefined class once: the latest."""
        first, latest = (
            type("CompRedefined", (NanoNode,), {"__module__": "comp_mod_re", "process_item": f})
            for f in (lambda self, item: item, lambda self, item: item)
        )
        assert first is not latest
        assert resolve_node_class("CompRedefined") is latest
        assert resolve_node_class("comp_mod_re:CompRedefined") is latest

    def test_unknown_class_suggests_near_name(self) -> None:
        """A typo in a class name suggests the registered name it is close to."""
        with pytest.raises(ConfigFileError) as info:
            class_factory({"name": "CompTypo", "nodes": [{"class": "CompNumbrs"}]})
        assert str(info.value) == (
            "nodes[0].class: unknown node type 'CompNumbrs'; did you mean 'CompNumbers'?"
        )

    def test_only_node_classes_resolve(self) -> None:
        """A callable or import path that is not a registered NanoNode is never used."""
        for name in ("os:system", "builtins:eval", "subprocess.Popen", "Path"):
            with pytest.raises(ConfigFileError, match="unknown node type"):
                class_factory({"name": "CompEvil", "nodes": [{"class": name}]})

    def test_composite_name_must_be_identifier(self) -> None:
        """The class name must be a Python identifier."""
        with pytest.raises(ConfigFileError) as info:
            class_factory({"name": "my composite", "nodes": [{"class": "CompAdd"}]})
        assert str(info.value) == (
            "name: composite name 'my composite' must be a Python identifier not starting "
            "with '_', such as 'FooMessageTester'"
        )


class TestLoaders:
    def test_load_composite_reads_path_string(self, tmp_path: Path) -> None:
        """load_composite takes a str path too; errors name that file."""
        path = tmp_path / "comp.yaml"
        path.write_text(
            "name: CompFromFile\nnodes:\n  - class: CompAdd\n    arg_mapping: {amount: by}\n"
        )
        cls = load_composite(str(path))
        assert cls.__name__ == "CompFromFile"
        path.write_text("name: CompFromFile\nnodes:\n  - class: CompAdd\n    on_error: skipp\n")
        with pytest.raises(ConfigFileError) as info:
            load_composite(str(path))
        assert str(info.value) == (
            f"{path}:4:15: nodes[0].on_error: unknown error policy 'skipp'; "
            "expected one of: raise, skip, retry, dead_letter; did you mean 'skip'?"
        )

    def test_frozen_argument_types_checked_at_definition(self) -> None:
        """A frozen value of the wrong simple type is an error when the class is made."""
        text = (
            "name: CompBadFrozen\nnodes:\n  - class: CompAdd\n    frozen_arguments: {amount: x}\n"
        )
        with pytest.raises(ConfigFileError) as info:
            load_composite_text(text, source="comp.yaml")
        assert str(info.value) == (
            "comp.yaml:4:32: nodes[0].frozen_arguments.amount: node 'CompAdd' argument "
            "'amount': expected a whole number, got 'x'"
        )

    def test_composite_arguments_carry_inner_annotations(self) -> None:
        """A composite's signature shows the annotation of the inner argument it maps to."""
        cls = class_factory(SCALED)
        parameters = inspect.signature(cls).parameters
        assert parameters["how_many"].annotation in (int, "int")
        assert parameters["factor"].annotation in (int, "int")
        assert parameters["on_error"].annotation is inspect.Parameter.empty

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigFileError naming it."""
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigFileError) as info:
            load_composite(path)
        assert str(info.value) == f"{path}: composite file not found"

    def test_yaml_is_never_executed(self) -> None:
        """Python tags are refused by the safe loader (no object is ever constructed)."""
        text = "name: CompEvil\nnodes: !!python/object/apply:os.system ['echo hi']\n"
        with pytest.raises(ConfigFileError, match="could not determine a constructor"):
            load_composite_text(text)

    async def test_inner_engine_options(self) -> None:
        """Inner nodes take on_error, retry, capacity and blocking from the definition."""
        cls = load_composite_text(
            textwrap.dedent(
                """\
                name: CompTolerant
                nodes:
                  - name: f
                    class: CompFailOn
                    on_error: retry
                    retry: {attempts: 2, backoff: 0}
                    capacity: 5
                    blocking: true
                """
            )
        )
        node = cls()
        inner = node.inner_nodes["f"]
        assert (inner.on_error, inner._ns_retry.attempts, inner._ns_capacity) == ("retry", 2, 5)
        assert inner._ns_blocking is True
        rejects = CompCollect()
        sink = CompCollect()
        CompNumbers(count=3) > node > sink
        node.dead_letters > rejects
        with trio.fail_after(10):
            await Pipeline(sink).run()
        assert collected(sink) == [1, 3]
        assert [letter.item for letter in collected(rejects)] == [2]
