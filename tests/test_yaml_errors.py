"""Configuration errors people can act on: file, line, column, key path, expectation, hint."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from typing import Any, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanostream_trio import (
    ConfigError,
    ConfigFileError,
    NanoNode,
    load_composite_text,
    load_pipeline_text,
)


class YeSource(NanoNode):
    """Emit 1..limit."""

    def __init__(self, limit: int = 3) -> None:
        super().__init__()
        self.limit = limit

    def generator(self) -> Iterator[int]:
        yield from range(1, self.limit + 1)


class YeSink(NanoNode):
    """Keep items."""

    def __init__(self, label: str = "") -> None:
        super().__init__()
        self.label = label
        self.items: list[Any] = []

    def process_item(self, item: Any) -> None:
        self.items.append(item)


class YeTyped(NanoNode):
    """Simple annotations the loader checks before calling the class."""

    def __init__(
        self,
        settle: float = 1.0,
        flag: bool = False,
        label: str | None = None,
        count: Optional[int] = None,  # noqa: UP045 - the old spelling is checked too
        path: str | os.PathLike[str] = ".",
    ) -> None:
        super().__init__()
        self.settle, self.flag, self.label, self.count, self.path = settle, flag, label, count, path

    def generator(self) -> Iterator[Any]:
        yield self.settle


class YePicky(NanoNode):
    """Rejects a bad ``mode`` with a ConfigError naming the argument (and takes ``name``)."""

    def __init__(self, mode: str = "a", name: str | None = None) -> None:
        super().__init__(name)
        if mode not in ("a", "b"):
            msg = f"node {self.name!r} got mode={mode!r}; accepted: 'a', 'b'"
            raise ConfigError(msg, node=self.name, key="mode")

    def generator(self) -> Iterator[Any]:
        yield 1


class YePickyNoName(NanoNode):
    """Like YePicky, but cannot be given its name when built."""

    def __init__(self, mode: str = "a") -> None:
        super().__init__()
        if mode not in ("a", "b"):
            msg = f"node {self.name!r} got mode={mode!r}; accepted: 'a', 'b'"
            raise ConfigError(msg, node=self.name, key="mode")

    def generator(self) -> Iterator[Any]:
        yield 1


def error_of(text: str, *, composite: bool = False) -> str:
    text = textwrap.dedent(text)
    if composite:
        with pytest.raises(ConfigFileError) as info:
            load_composite_text(text, source="comp.yaml")
    else:
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text(text, source="pipe.yaml", env={})
    return str(info.value)


class TestTypicalMistakes:
    """Each message is compared whole: where, what is wrong, what was expected, the fix."""

    def test_missing_colon(self) -> None:
        """A key without its colon (the seed README's own typo) is pointed at and corrected."""
        message = error_of(
            """\
            nodes:
              - name: source
                class YeSource
              - name: sink
                class: YeSink
            """
        )
        assert message == (
            "pipe.yaml:3:5: nodes[0]: expected 'key: value' but found 'class YeSource' "
            "with no ':'; did you mean 'class: YeSource'?"
        )

    def test_misspelt_node_type(self) -> None:
        """A node type typo names the near registered type."""
        message = error_of(
            """\
            nodes:
              - {name: read, class: YeSource}
              - {name: parse, class: CSVReder}
            """
        )
        assert message == (
            "pipe.yaml:3:26: nodes[1].class: unknown node type 'CSVReder'; "
            "did you mean 'CSVReader'?"
        )

    def test_unknown_type_without_near_name(self) -> None:
        """An unknown type in a file without modules: asks whether its module is listed."""
        message = error_of("nodes: [{class: Zzzqqq}]\n")
        assert message == (
            "pipe.yaml:1:17: nodes[0].class: unknown node type 'Zzzqqq'; is its module listed "
            "under 'modules:'? The file lists none, so only the built-in node types and classes "
            "imported already are known (or pass --module)"
        )

    def test_unknown_type_with_modules_listed(self, tmp_path: Any) -> None:
        """With modules listed, the message names them and how node types become known."""
        (tmp_path / "ye_listed.py").write_text("")
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text(
                "modules: [ye_listed.py]\nnodes: [{class: Zzzqqq}]\n",
                source="pipe.yaml",
                base_dir=tmp_path,
            )
        assert str(info.value).endswith(
            "unknown node type 'Zzzqqq'; node types are registered NanoNode subclasses: import "
            "the module that defines it with 'modules:' (or --module); imported: ye_listed"
        )

    def test_custom_class_near_a_builtin_without_modules(self) -> None:
        """'LevelFilter' in a file without modules: asks about modules first, then Filter."""
        message = error_of("nodes: [{class: LevelFilter}]\n")
        assert message.endswith(
            "unknown node type 'LevelFilter'; is its module listed under 'modules:'? The file "
            "lists none, so only the built-in node types and classes imported already are "
            "known (or pass --module); or did you mean 'Filter'?"
        )

    def test_misspelt_key(self) -> None:
        """An unknown key in a node entry lists the keys a node takes, with the near one."""
        message = error_of(
            """\
            nodes:
              - name: source
                clas: YeSource
            """
        )
        assert message == (
            "pipe.yaml:3:5: nodes[0].clas: unknown key 'clas' in a node; expected one of: "
            "name, class, args, on_error, retry, capacity, blocking; did you mean 'class'?"
        )

    def test_misspelt_argument(self) -> None:
        """An argument the class does not take lists the accepted ones, with the near one."""
        message = error_of(
            """\
            nodes:
              - name: source
                class: YeSource
                args:
                  limt: 3
              - {name: sink, class: YeSink}
            """
        )
        assert message == (
            "pipe.yaml:5:7: nodes[0].args.limt: node 'source' (YeSource) got unexpected "
            "argument 'limt'; accepted: limit; did you mean 'limit'?"
        )

    def test_engine_option_under_args(self) -> None:
        """on_error given as an argument says where it belongs."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - name: sink
                class: YeSink
                args: {on_error: skip}
            """
        )
        assert message == (
            "pipe.yaml:5:12: nodes[1].args.on_error: 'on_error' is an engine option, not an "
            "argument of YeSink; give it as a key of the node itself, next to 'class'"
        )

    def test_args_not_a_mapping(self) -> None:
        """Arguments given as a list say a mapping was expected and what came instead."""
        message = error_of(
            """\
            nodes:
              - name: source
                class: YeSource
                args: [3]
            """
        )
        assert message == (
            "pipe.yaml:4:11: nodes[0].args: expected the arguments of 'source' (a mapping of "
            "key: value); got list [3]"
        )

    def test_link_to_unknown_node(self) -> None:
        """A link naming a node that is not in the file suggests the near name."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - {name: sink, class: YeSink}
            links:
              - [source, sinc]
            """
        )
        assert message == (
            "pipe.yaml:5:14: links[0][1]: no node is named 'sinc'; nodes: source, sink; "
            "did you mean 'sink'?"
        )

    def test_duplicate_key(self) -> None:
        """A key given twice (YAML would silently keep the last) is an error."""
        message = error_of(
            """\
            nodes:
              - name: source
                class: YeSource
                name: other
            """
        )
        assert message == (
            "pipe.yaml:4:5: nodes[0].name: duplicate key 'name' (first given on line 2)"
        )

    def test_tab_indentation(self) -> None:
        """A tab used for indentation is reported at its position."""
        message = error_of("nodes:\n\t- class: YeSource\n")
        assert message == (
            "pipe.yaml:2:1: nodes: not valid YAML: a tab cannot indent YAML; indent with spaces"
        )

    def test_bad_indentation(self) -> None:
        """A key indented too far is reported with the key path it sits under."""
        message = error_of(
            """\
            nodes:
              - name: source
                class: YeSource
                  args: {limit: 1}
            """
        )
        assert message == (
            "pipe.yaml:4:11: nodes[0]: not valid YAML: unexpected ':' here: this line is "
            "indented more than the key above it, or a value holds ': ' and needs quotes\n"
            "    (PyYAML: mapping values are not allowed here)"
        )

    def test_orphan_processor(self) -> None:
        """A processor nothing links into is blamed at its own entry."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - {name: sink, class: YeSink}
              - {name: lonely, class: YeSink}
            links:
              - [source, sink]
            """
        )
        assert message == (
            "pipe.yaml:4:5: nodes[2]: node 'lonely' defines process_item but nothing is linked "
            "into it; link a source to it ('source > lonely') or give it a generator"
        )

    def test_not_a_mapping(self) -> None:
        """A document that is a list says what a pipeline file holds."""
        assert error_of("- YeSource\n- YeSink\n") == (
            "pipe.yaml:1:1: expected a pipeline (name, nodes, links, ...) (a mapping of "
            "key: value); got list ['YeSource', 'YeSink']"
        )

    def test_empty_file(self) -> None:
        """An empty file says what is needed."""
        assert error_of("") == ("pipe.yaml: the pipeline file is empty; it needs at least 'nodes:'")

    def test_composite_missing_name(self) -> None:
        """A composite without ``name`` says so."""
        assert error_of("nodes: [{class: YeSink}]\n", composite=True) == (
            "comp.yaml:1:1: a composite definition needs the key 'name'"
        )

    def test_error_attributes(self) -> None:
        """The error carries file, line, column and key path, and is a ConfigError/ValueError."""
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text("nodes:\n  - class: YeSource\n    capacity: -1\n", source="a.yaml")
        error = info.value
        assert isinstance(error, ConfigError)
        assert isinstance(error, ValueError)
        assert (error.file, error.line, error.column, error.key) == (
            "a.yaml",
            3,
            15,
            "nodes[0].capacity",
        )
        assert error.node == "YeSource"
        assert error.problem == (
            "expected the inbox capacity as a whole number of items, at least 1; got int -1"
        )


class TestNodeArguments:
    """Arguments a node class rejects are reported at the argument, naming the node as the file."""

    @pytest.mark.parametrize(
        ("arg", "problem"),
        [
            ("settle: abc", "argument 'settle': expected a number, got 'abc'"),
            ("settle: null", "argument 'settle': expected a number, got null"),
            ("flag: 1", "argument 'flag': expected true or false, got 1"),
            (
                "label: 5",
                "argument 'label': expected a string or null, got 5; quote it to make it a string",
            ),
            ("count: 1.5", "argument 'count': expected a whole number or null, got 1.5"),
            ("count: true", "argument 'count': expected a whole number or null, got true"),
        ],
    )
    def test_simple_annotation_mismatch(self, arg: str, problem: str) -> None:
        """A value not of the annotated simple type is an error at its position, before the call."""
        message = error_of(
            f"""\
            nodes:
              - name: typed
                class: YeTyped
                args:
                  {arg}
            """
        )
        key = arg.partition(":")[0]
        assert message == f"pipe.yaml:5:{len(key) + 9}: nodes[0].args.{key}: node 'typed' {problem}"

    def test_matching_values_pass(self) -> None:
        """Whole numbers fit float, null fits optional ones; other annotations are not checked."""
        pipeline = load_pipeline_text(
            "nodes:\n"
            "  - {name: typed, class: YeTyped, args: {settle: 2, flag: true, label: null, "
            "count: 3, path: 7}}\n"
            "  - {class: YeSink}\n",
            env={},
        )
        typed = next(node for node in pipeline.nodes if node.name == "typed")
        assert isinstance(typed, YeTyped)
        given: tuple[Any, ...] = (typed.settle, typed.flag, typed.label, typed.count, typed.path)
        assert given == (
            2,
            True,
            None,
            3,
            7,
        )

    @pytest.mark.parametrize("cls", ["YePicky", "YePickyNoName"])
    def test_constructor_config_error_points_at_argument(self, cls: str) -> None:
        """A ConfigError with ``key`` extends the key path and names the node as the file does."""
        message = error_of(
            f"""\
            nodes:
              - name: picky
                class: {cls}
                args:
                  mode: c
            """
        )
        assert message == (
            "pipe.yaml:5:13: nodes[0].args.mode: node 'picky' got mode='c'; accepted: 'a', 'b'"
        )

    def test_builtin_node(self) -> None:
        """The audit's case: LocalDirectoryWatchdog's ``settle: abc``."""
        message = error_of(
            """\
            nodes:
              - name: watch
                class: LocalDirectoryWatchdog
                args:
                  directory: /tmp
                  settle: abc
              - {name: print, class: PrinterOfThings}
            """
        )
        assert message == (
            "pipe.yaml:6:15: nodes[0].args.settle: node 'watch' argument 'settle': "
            "expected a number, got 'abc'"
        )

    def test_builtin_config_error(self) -> None:
        """The audit's case: TailFile's ``start_at: middle`` is reported at ``start_at``."""
        message = error_of(
            """\
            nodes:
              - name: tail
                class: TailFile
                args: {path: /tmp/x, start_at: middle}
            """
        )
        assert message == (
            "pipe.yaml:4:36: nodes[0].args.start_at: node 'tail' got start_at='middle'; "
            "accepted: 'beginning', 'end'"
        )


# -- property tests ---------------------------------------------------------------------

VALID_PIPELINE = {
    "name": "prop",
    "nodes": [
        {"name": "source", "class": "YeSource", "args": {"limit": 2}},
        {"name": "sink", "class": "YeSink", "args": {"label": "x"}, "capacity": 4},
    ],
    "links": [["source", "sink"]],
}

VALID_COMPOSITE = {
    "name": "YePropComposite",
    "nodes": [
        {"name": "source", "class": "YeSource", "arg_mapping": {"limit": "limit"}},
        {"name": "sink", "class": "YeSink", "frozen_arguments": {"label": "y"}},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(["YeSource", "YeSink", "source", "sink", "${NOPE}", "${X:-1}", "os:system"]),
)
keys = st.one_of(
    st.sampled_from(
        ["name", "class", "nodes", "links", "args", "on_error", "retry", "capacity", "blocking",
         "from", "to", "port", "frozen_arguments", "arg_mapping", "edges", "limit", "label",
         "stats_interval", "stall_timeout", "attempts"]
    ),
    st.text(max_size=6),
)  # fmt: skip
data = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)
yaml_tokens = st.sampled_from(
    ["nodes:", "name:", "class:", " ", "  ", "\n", "- ", "[", "]", "{", "}", ",", ":", "&a ",
     "*a", "!!binary ", "!!python/name:os.system ", "? ", "|", ">", "'", '"', "#", "\t", "%YAML",
     "---", "...", "<<: ", "2024-02-30", "YeSource", "${X}", "\\", "@", "`", "0x1f", "~"]
)  # fmt: skip
yaml_text = st.lists(yaml_tokens, max_size=40).map("".join)


def mutate(base: dict[str, Any], path: list[int], value: Any) -> dict[str, Any]:
    """Replace one value somewhere in a copy of ``base`` (the path picks it)."""
    copy: Any = yaml.safe_load(yaml.safe_dump(base))
    container = copy
    for step in path:
        children = list(container.values()) if isinstance(container, dict) else container
        keys_ = list(container) if isinstance(container, dict) else list(range(len(container)))
        if not children:
            break
        index = step % len(children)
        child = children[index]
        if not isinstance(child, dict | list) or step % 3 == 0:
            container[keys_[index]] = value
            return copy  # type: ignore[no-any-return]
        container = child
    return copy  # type: ignore[no-any-return]


def only_config_errors(load: Any, text: str) -> None:
    try:
        load(text)
    except ConfigFileError:
        pass


# YE_EXAMPLES=5000 pytest tests/test_yaml_errors.py runs a longer search.
PROPERTY = settings(
    max_examples=int(os.environ.get("YE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestArbitraryInput:
    @PROPERTY
    @given(yaml_text)
    def test_token_soup(self, text: str) -> None:
        """YAML-ish token soup only ever raises ConfigFileError."""
        only_config_errors(lambda t: load_pipeline_text(t, env={}), text)
        only_config_errors(load_composite_text, text)

    @PROPERTY
    @given(st.text(max_size=80))
    def test_any_text(self, text: str) -> None:
        """Any text at all only ever raises ConfigFileError."""
        only_config_errors(lambda t: load_pipeline_text(t, env={}), text)

    @PROPERTY
    @given(data)
    def test_any_structure(self, value: Any) -> None:
        """Any YAML data structure only ever raises ConfigFileError."""
        text = yaml.safe_dump(value)
        only_config_errors(lambda t: load_pipeline_text(t, env={}), text)
        only_config_errors(load_composite_text, text)

    @PROPERTY
    @given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), data)
    def test_mutated_pipeline(self, path: list[int], value: Any) -> None:
        """A valid pipeline file with any one value replaced loads or raises ConfigFileError."""
        text = yaml.safe_dump(mutate(VALID_PIPELINE, path, value))
        only_config_errors(lambda t: load_pipeline_text(t, env={}), text)

    @PROPERTY
    @given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), data)
    def test_mutated_composite(self, path: list[int], value: Any) -> None:
        """A valid composite with any one value replaced loads or raises ConfigFileError."""
        mutated = mutate(VALID_COMPOSITE, path, value)
        if isinstance(mutated, dict):
            mutated["name"] = "YePropComposite"  # keep the registry to one made-up name
        only_config_errors(load_composite_text, yaml.safe_dump(mutated))

    def test_alias_bomb_is_bounded(self) -> None:
        """A billion-laughs document fails fast with a short message, not a huge repr."""
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for level in range(1, 9):
            refs = ", ".join([f"*a{level - 1}"] * 10)
            lines.append(f"a{level}: &a{level} [{refs}]")
        lines.append("nodes: *a8")
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text("\n".join(lines) + "\n", env={})
        assert len(str(info.value)) < 300

    def test_deep_nesting(self) -> None:
        """Nesting deeper than the parser can follow is a ConfigFileError."""
        with pytest.raises(ConfigFileError, match="not valid YAML"):
            load_pipeline_text("[" * 5000 + "]" * 5000, env={})


# -- tags ----------------------------------------------------------------------------------

#: Values PyYAML's own constructors fail on with IndexError, KeyError, AttributeError
#: or ValueError, and what the message must then say.
BAD_TAGGED = [
    ('!!timestamp "abc"', "cannot read 'abc' as !!timestamp: expected a date"),
    ("!!timestamp 2024-13-99x", "cannot read '2024-13-99x' as !!timestamp"),
    ('!!timestamp ""', "cannot read '' as !!timestamp"),
    ("!!timestamp 2024-01-01T25:00:00", "(hour must be in 0..23)"),
    ('!!bool "abc"', "cannot read 'abc' as !!bool: expected true or false"),
    ('!!int ""', "cannot read '' as !!int: expected a whole number"),
    ('!!int "-"', "cannot read '-' as !!int"),
    ("!!int 0x", "cannot read '0x' as !!int"),
    ('!!float ""', "cannot read '' as !!float: expected a number"),
    ('!!float "x"', "cannot read 'x' as !!float"),
]


class TestTags:
    @pytest.mark.parametrize(("tagged", "problem"), BAD_TAGGED)
    def test_bad_tagged_value_in_pipeline(self, tagged: str, problem: str) -> None:
        """A value that does not fit its standard tag is located at the value, with the tag."""
        message = error_of(
            f"""\
            nodes:
              - name: source
                class: YeSource
                args: {{limit: {tagged}}}
            """
        )
        assert message.startswith("pipe.yaml:4:19: nodes[0].args.limit: not valid YAML: ")
        assert problem in message

    @pytest.mark.parametrize(("tagged", "problem"), BAD_TAGGED)
    def test_bad_tagged_value_in_composite(self, tagged: str, problem: str) -> None:
        """The same in a composite definition, also as the value of a top-level key."""
        message = error_of(f"name: YeTagged\nnodes: {tagged}\n", composite=True)
        assert message.startswith("comp.yaml:2:8: nodes: not valid YAML: ")
        assert problem in message

    def test_untagged_bad_date_suggests_quoting(self) -> None:
        """A plain 2024-13-99 reads as a date (YAML's rule); the error says to quote it."""
        message = error_of(
            """\
            nodes:
              - class: YeSink
                args: {label: 2024-13-99}
            """
        )
        assert message == (
            "pipe.yaml:3:19: nodes[0].args.label: not valid YAML: cannot read '2024-13-99' as "
            "!!timestamp: expected a date or a date and time such as 2024-05-17 or "
            "2024-05-17T12:30:00Z (month must be in 1..12); quote it to make it a string"
        )

    def test_bad_item_of_tagged_collection(self) -> None:
        """An error inside a tagged collection names the item, not the place before it."""
        message = error_of("name: YeTagged\nnodes: !!omap [{a: 1}, 1]\n", composite=True)
        assert message.startswith("comp.yaml:2:24: nodes[1]: not valid YAML: ")

    def test_error_is_a_config_file_error_with_position(self) -> None:
        """The error carries file, line and column as attributes, with no PyYAML exception."""
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text("nodes: !!timestamp 2024-13-99x\n", source="p.yaml", env={})
        assert (info.value.file, info.value.line, info.value.column) == ("p.yaml", 1, 8)
        assert info.value.key == "nodes"
        assert info.value.__cause__ is None


class TestNonYamlComposite:
    @pytest.mark.parametrize(
        ("name", "content"),
        [
            ("data.csv", "id,name,token\n1,alice,hunter2-secret\n"),
            ("settings.env", "TOKEN=hunter2-secret\nMODE=fast\n"),
        ],
    )
    def test_file_is_named_not_echoed(self, tmp_path: Any, name: str, content: str) -> None:
        """A composites: entry naming a non-YAML file gives its name and position, not its text."""
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text(
                f"composites: [{name}]\nnodes: [{{class: YeSink}}]\n",
                source="pipe.yaml",
                base_dir=tmp_path,
                env={},
            )
        message = str(info.value)
        assert message == (
            f"{tmp_path / name}:1:1: expected a composite definition (name, nodes, ...) "
            "(a mapping of key: value); the document is a single text value (not YAML?)"
        )
        assert "hunter2" not in message
        assert info.value.__notes__ == [
            "named at pipe.yaml:1:14: composites[0]: this composites: entry"
        ]


standard_tags = st.sampled_from(
    ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary", "!!set",
     "!!omap", "!!pairs", "!!map", "!!seq", "!!merge", "!!value", "!!yaml",
     "!!python/name:os.system", "!!python/object/apply:os.system"]
)  # fmt: skip
other_tags = st.one_of(
    st.from_regex(r"!![a-z]{1,8}", fullmatch=True),
    st.from_regex(r"![a-z]{1,8}", fullmatch=True),
    st.just("!"),
    st.just("!<tag:example.com,2000:thing>"),
)
tricky_scalars = st.sampled_from(
    ["abc", "2024-13-99x", "2024-02-30", "2024-01-01T25:00:00", "12:30:00", "0x", "0b", "0o",
     "1_000", "-", "+", ".", "_", ".inf", ".nan", "yes", "~", "1:2:3", "@@", "AAAA", "=", "<<"]
)  # fmt: skip
tag_values = st.one_of(
    tricky_scalars,
    tricky_scalars.map(lambda text: f'"{text}"'),
    st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), max_size=10).map(
        lambda text: "'" + text.replace("'", "''") + "'"
    ),
    st.just('""'),
    st.lists(tricky_scalars, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    st.dictionaries(tricky_scalars, tricky_scalars, max_size=3).map(
        lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs.items()) + "}"
    ),
    st.lists(tricky_scalars, max_size=2).map(
        lambda items: "[" + ", ".join(f"{{{item}: 1}}" for item in items) + "]"
    ),
)
tagged_values = st.builds(
    lambda tag, value: f"{tag} {value}", st.one_of(standard_tags, other_tags), tag_values
)
MARKER = "YeTaggedMarker"


def tagged_text(base: dict[str, Any], path: list[int], tagged: str) -> str:
    """``base`` as YAML with one value (the path picks it) replaced by a tagged one."""
    return yaml.safe_dump(mutate(base, path, MARKER)).replace(MARKER, tagged, 1)


def only_located_config_errors(load: Any, text: str) -> None:
    """``load(text)`` succeeds or raises a ConfigFileError with a line and column."""
    error: ConfigFileError | None = None
    try:
        load(text)
    except ConfigFileError as exc:
        error = exc
    if error is not None:
        assert error.line is not None, str(error)
        assert error.column is not None, str(error)


class TestArbitraryTags:
    @PROPERTY
    @given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), tagged_values)
    def test_tagged_value_in_pipeline(self, path: list[int], tagged: str) -> None:
        """A pipeline file with any value replaced by a tagged one gives a located error at most."""
        text = tagged_text(VALID_PIPELINE, path, tagged)
        only_located_config_errors(lambda t: load_pipeline_text(t, env={}), text)

    @PROPERTY
    @given(st.lists(st.integers(min_value=0, max_value=50), max_size=5), tagged_values)
    def test_tagged_value_in_composite(self, path: list[int], tagged: str) -> None:
        """A composite with any value replaced by a tagged one gives a located error at most."""
        composite = {**VALID_COMPOSITE, "name": "YeTaggedComposite"}
        text = tagged_text(composite, path, tagged)
        only_located_config_errors(load_composite_text, text)

    @PROPERTY
    @given(st.lists(st.one_of(yaml_tokens, tagged_values.map(lambda t: t + " ")), max_size=30))
    def test_token_soup_with_tags(self, tokens: list[str]) -> None:
        """Token soup with tags in it only ever raises ConfigFileError."""
        text = "".join(tokens)
        only_config_errors(lambda t: load_pipeline_text(t, env={}), text)
        only_config_errors(load_composite_text, text)


class YeMinLevel(NanoNode):
    """Takes ``**options`` only to pass them on to NanoNode (the engine options)."""

    def __init__(self, min_level: str = "info", **options: Any) -> None:
        super().__init__(**options)
        self.min_level = min_level

    def process_item(self, item: Any) -> Any:
        return item


class YeLenient(NanoNode):
    """Keeps whatever ``**options`` it gets: it accepts any argument."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def generator(self) -> Iterator[Any]:
        yield self.options


class YePassesOn(NanoNode):
    """Passes ``**options`` to a function that refuses unknown ones."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.settings = self._settings(**options)

    @staticmethod
    def _settings(*, width: int = 1) -> dict[str, int]:
        return {"width": width}

    def generator(self) -> Iterator[Any]:
        yield self.settings


class TestOpenEndedNodes:
    def test_options_passed_to_nanonode_are_checked(self) -> None:
        """**options that only reach NanoNode.__init__ keep the located unknown-argument error."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - name: levels
                class: YeMinLevel
                args: {min_levle: warning}
            """
        )
        assert message == (
            "pipe.yaml:5:12: nodes[1].args.min_levle: node 'levels' (YeMinLevel) got "
            "unexpected argument 'min_levle'; accepted: min_level; did you mean 'min_level'?"
        )

    def test_engine_option_under_args_of_such_a_node(self) -> None:
        """An engine option given under args of such a node says where it belongs."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - {name: levels, class: YeMinLevel, args: {on_error: skip}}
            """
        )
        assert "'on_error' is an engine option, not an argument of YeMinLevel" in message

    def test_declared_options_are_checked(self) -> None:
        """CSVReader's **options take the csv format parameters it declares, and no others."""
        message = error_of(
            """\
            nodes:
              - {name: source, class: YeSource}
              - {name: parse, class: CSVReader, args: {delimeter: ";"}}
            """
        )
        assert message.startswith(
            "pipe.yaml:3:44: nodes[1].args.delimeter: node 'parse' (CSVReader) got unexpected "
            "argument 'delimeter'; accepted: fieldnames, dialect, strict_fields, restkey, "
            "restval, max_row_lines, delimiter,"
        )
        assert message.endswith("did you mean 'delimiter'?")

    def test_declared_options_pass(self) -> None:
        """A declared option reaches the class."""
        pipeline = load_pipeline_text(
            "nodes:\n  - {name: s, class: YeSource}\n"
            "  - {name: parse, class: CSVReader, args: {delimiter: ';'}}\n",
            env={},
        )
        assert {node.name for node in pipeline.nodes} >= {"s", "parse"}

    def test_options_kept_by_the_node_accept_anything(self) -> None:
        """A node that keeps its **options gets any argument, unchecked."""
        pipeline = load_pipeline_text(
            "nodes:\n  - {name: any, class: YeLenient, args: {colour: red}}\n", env={}
        )
        [node] = pipeline.nodes
        assert isinstance(node, YeLenient)
        assert node.options == {"colour": "red"}

    def test_refused_by_what_the_options_reach(self) -> None:
        """A TypeError for an unexpected keyword is reported at that argument, with a hint."""
        message = error_of("nodes:\n  - {name: p, class: YePassesOn, args: {widht: 2}}\n")
        assert message.startswith(
            "pipe.yaml:2:41: nodes[0].args.widht: node 'p' (YePassesOn) got unexpected "
            "argument 'widht' (the class refused it: TypeError: YePassesOn._settings() got an "
            "unexpected keyword argument 'widht')"
        )


class TestSyntaxInPlainWords:
    @pytest.mark.parametrize(
        ("text", "first_line"),
        [
            (
                "nodes:\n  - name: source\n    class: YeSource\n   args: {limit: 1}\n",
                "pipe.yaml:4:4: nodes[0]: not valid YAML: this line's indentation does not match "
                "the lines above it: the keys of one mapping, and the '-' items of one list, "
                "start in the same column",
            ),
            (
                "nodes:\n  - name: a\n    class: YeSource\n - name: b\n",
                "pipe.yaml:4:2: nodes[0]: not valid YAML: this line's indentation does not match",
            ),
            (
                'nodes:\n  - name: "source\n    class: YeSource\n',
                "pipe.yaml:2:11: nodes[0].name: not valid YAML: a quoted value is never closed: "
                "add the closing quote",
            ),
            (
                "nodes:\n  - {name: keep, class: YeSink\n",
                "pipe.yaml:3:1: nodes[0]: not valid YAML: the '{' opened at line 2, column 5 is "
                "not closed by '}', or two of its entries lack a ',' between them",
            ),
            (
                "nodes:\n  - name: @x\n",
                "pipe.yaml:2:11: nodes[0].name: not valid YAML: '@' cannot start an unquoted "
                "value (YAML reserves it); put the value in quotes",
            ),
            (
                'nodes:\n  - name: "C:\\data"\n',
                "pipe.yaml:2:15: nodes[0].name: not valid YAML: unknown backslash escape in a "
                "double-quoted value (a Windows path?): use single quotes, or double each "
                "backslash",
            ),
            (
                "nodes:\n  - name: *x\n",
                "pipe.yaml:2:11: nodes[0].name: not valid YAML: '*x' refers to an anchor '&x' "
                "not defined before it",
            ),
        ],
    )
    def test_plain_sentence_then_pyyaml(self, text: str, first_line: str) -> None:
        """A common syntax error reads as a located sentence, PyYAML's words on a second line."""
        first, second = error_of(text).split("\n")
        assert first.startswith(first_line)
        assert second.startswith("    (PyYAML: ")

    def test_unclosed_quote_points_at_its_opening(self) -> None:
        """An unclosed quote is reported where it opens, not at the end of the file."""
        with pytest.raises(ConfigFileError) as info:
            load_pipeline_text("nodes:\n  - name: 'source\n\n\n", source="pipe.yaml", env={})
        assert (info.value.line, info.value.column) == (2, 11)
