"""NanoNode definitions, names, linking and graph checks."""

from __future__ import annotations

import pytest
import trio

from nanostream_trio import (
    ConfigError,
    GraphError,
    LinkError,
    NanoNode,
    NodeDefinitionError,
    Pipeline,
)


class Numbers(NanoNode):
    def __init__(self, n: int = 3, **kwargs: object) -> None:
        self.n = n
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def generator(self):  # type: ignore[no-untyped-def]
        for i in range(self.n):
            yield i


class Keep(NanoNode):
    def __init__(self, **kwargs: object) -> None:
        self.items: list[object] = []
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def process_item(self, item: object) -> None:
        self.items.append(item)


class Ident(NanoNode):
    def process_item(self, item: object) -> object:
        return item


class SubIdent(Ident):
    """A subclass, to exercise Python's reflected-comparison rule."""


class TestDefinition:
    def test_forgotten_super_init_works(self) -> None:
        """A subclass whose __init__ never calls super().__init__() still runs with defaults."""

        class Forgetful(NanoNode):
            def __init__(self) -> None:
                self.count = 41

            def process_item(self, item: int) -> int:
                self.count += 1
                return item

        node = Forgetful()
        sink = Keep()
        Numbers(2) > node > sink
        trio.run(Pipeline(node).run)
        assert sink.items == [0, 1]
        assert node.count == 43
        assert node.name.startswith("Forgetful")

    def test_user_attributes_do_not_clash(self) -> None:
        """Attributes named count, items, interval, name-like state are the user's own."""

        class Busy(NanoNode):
            def __init__(self) -> None:
                self.items = "mine"
                self.interval = 5
                self.count = 0
                self.inputs = None
                self.outputs = None
                super().__init__()

            def process_item(self, item: int) -> int:
                self.count += 1
                return item

        node = Busy()
        sink = Keep()
        Numbers(3) > node > sink
        trio.run(Pipeline(node).run)
        assert (node.items, node.interval, node.count) == ("mine", 5, 3)
        assert sink.items == [0, 1, 2]

    def test_both_methods_is_an_error(self) -> None:
        """A class defining process_item and generator fails when the class is created."""
        with pytest.raises(NodeDefinitionError, match="defines both process_item and generator"):

            class Both(NanoNode):
                def process_item(self, item: object) -> None: ...

                def generator(self) -> None: ...

    def test_neither_method_cannot_be_instantiated(self) -> None:
        """A class with neither method cannot be instantiated, and the message says what to add."""

        class Empty(NanoNode):
            pass

        with pytest.raises(NodeDefinitionError, match=r"define process_item\(self, item\)"):
            Empty()

    def test_same_class_name_in_two_modules(self) -> None:
        """Two classes with one name (as in different test modules) are both registered."""
        from nanostream_trio import registered_nodes

        first = type("Twin", (Ident,), {"__module__": "mod_a"})
        second = type("Twin", (Ident,), {"__module__": "mod_b"})
        assert {first, second} <= set(registered_nodes()["Twin"])

    def test_name_and_policy_settable(self) -> None:
        """self.name = ... and self.on_error = ... in a user's __init__ work and are checked."""

        class Greeter(NanoNode):
            def __init__(self) -> None:
                super().__init__()
                self.name = "greeter"
                self.on_error = "skip"

            def process_item(self, item: object) -> None: ...

        node = Greeter()
        assert (node.name, node.on_error) == ("greeter", "skip")
        with pytest.raises(ConfigError, match="got on_error='nope'"):
            node.on_error = "nope"  # type: ignore[assignment]

    def test_default_names_are_unique_and_readable(self) -> None:
        """Default names are the class name, then ClassName-2, ClassName-3."""

        class Named(NanoNode):
            def process_item(self, item: object) -> None: ...

        assert [Named().name, Named().name, Named().name] == ["Named", "Named-2", "Named-3"]
        assert Named(name="custom").name == "custom"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"on_error": "ignore"}, "got on_error='ignore'; accepted: 'raise', 'skip'"),
            ({"capacity": 0}, "got capacity=0; expected a whole number of items, at least 1"),
            ({"name": ""}, "node name must be a non-empty string"),
            ({"retry": 3}, "got retry=3; expected a Retry"),
        ],
    )
    def test_bad_engine_arguments(self, kwargs: dict[str, object], message: str) -> None:
        """Bad engine settings raise ConfigError naming the node, value and what is accepted."""
        with pytest.raises(ConfigError, match=message):
            Ident(**kwargs)  # type: ignore[arg-type]


class TestLinking:
    def test_gt_links_and_returns_right_operand(self) -> None:
        """a > b returns b, so a > b > c builds both links."""
        a, b, c = Numbers(), Ident(), Keep()
        assert (a > b) is b
        b > c
        assert a.downstream == (b,)
        assert b.downstream == (c,)
        assert c.upstream == (b,)

    def test_chain_builds_both_links(self) -> None:
        """A chained a > b > c links a to b and b to c."""
        a, b, c = Numbers(), Ident(), Keep()
        a > b > c
        assert (a.downstream, b.downstream) == ((b,), (c,))

    def test_subclass_on_the_right_links_forward(self) -> None:
        """When b's class subclasses a's, Python tries b.__lt__ first; a > b still links a to b."""
        a, b = Ident(), SubIdent()
        Numbers() > a
        a > b
        assert a.downstream == (b,)
        assert b.upstream == (a,)

    def test_list_fans_out(self) -> None:
        """a > [b, c] links a to both."""
        a, b, c = Numbers(), Keep(), Keep()
        a > [b, c]
        assert a.downstream == (b, c)

    def test_list_fans_in(self) -> None:
        """[a, b] > c links both into c."""
        a, b, c = Numbers(), Numbers(), Keep()
        [a, b] > c
        assert c.upstream == (a, b)

    def test_lt_is_refused(self) -> None:
        """a < b raises TypeError instead of silently building b -> a."""
        a, b = Numbers(), Keep()
        with pytest.raises(TypeError, match="'<' is not a link") as info:
            a < b
        assert isinstance(info.value, LinkError)
        assert b.upstream == ()

    def test_lt_with_subclass_is_refused(self) -> None:
        """Also when the left operand's class subclasses the right one's."""
        a, b = SubIdent(), Ident()
        with pytest.raises(LinkError, match="'<' is not a link"):
            a < b
        assert a.upstream == ()
        assert b.upstream == ()

    def test_lt_with_subclass_on_the_right_is_refused(self) -> None:
        """Base() < Sub() tries Sub.__gt__ first; it is still refused, and nothing is linked."""
        a, b = Ident(), SubIdent()
        with pytest.raises(LinkError, match=r"'<' is not a link.*got 'Ident[-\w]*' < 'SubIdent"):
            a < b
        assert a.upstream == ()
        assert b.upstream == ()

    def test_list_lt_is_refused(self) -> None:
        """[a, b] < c is refused too (Python reflects it to c.__gt__)."""
        a, b, c = Numbers(), Numbers(), Keep()
        with pytest.raises(LinkError, match="'<' is not a link"):
            [a, b] < c
        assert c.downstream == ()
        assert a.upstream == ()

    def test_operator_module_links(self) -> None:
        """operator.gt(a, b) links like a > b (no comparison in the caller's code)."""
        import operator

        a, b = Numbers(), Keep()
        operator.gt(a, b)
        assert a.downstream == (b,)

    def test_same_pair_twice(self) -> None:
        """Linking a pair twice names both nodes."""
        a, b = Numbers(name="src"), Keep(name="out")
        a > b
        with pytest.raises(GraphError, match="node 'src' is already linked to node 'out'"):
            a > b

    def test_cycle(self) -> None:
        """A link closing a cycle is refused, naming both ends."""
        a, b, c = Ident(name="a"), Ident(name="b"), Ident(name="c")
        a > b > c
        with pytest.raises(GraphError, match="linking node 'c' to node 'a' would make a cycle"):
            c > a
        with pytest.raises(GraphError, match="would make a cycle"):
            a > a

    @pytest.mark.parametrize("other", [42, "printer", None, print])
    def test_non_node(self, other: object) -> None:
        """Linking to something that is not a node is a TypeError naming the node and the type."""
        a = Numbers(name="src")
        with pytest.raises(TypeError, match=r"cannot link node 'src' to a \w+ object"):
            a > other

    def test_dead_letter_port_links(self) -> None:
        """node.dead_letters > sink links the port; the policy becomes dead_letter."""
        a = Ident()
        sink = Keep()
        assert a.on_error == "raise"
        a.dead_letters > sink
        assert a.dead_letters.downstream == [sink]
        assert a.on_error == "dead_letter"


class TestPipelineGraph:
    def test_collects_whole_graph_from_any_node(self) -> None:
        """Pipeline(node) finds every connected node, upstream first."""
        a, b, c, d = Numbers(), Ident(), Keep(), Keep()
        a > b > c
        b > d
        for start in (a, b, c, d):
            nodes = Pipeline(start).nodes
            assert set(nodes) == {a, b, c, d}
            assert nodes.index(a) < nodes.index(b) < nodes.index(c)

    def test_processor_without_upstream(self) -> None:
        """A process_item node nothing links into is refused with the fix in the message."""
        with pytest.raises(GraphError, match="node 'lonely' defines process_item but nothing"):
            Pipeline(Keep(name="lonely"))

    def test_duplicate_explicit_names(self) -> None:
        """Two nodes sharing a name in one pipeline are refused."""
        a = Numbers(name="x")
        a > Keep(name="x")
        with pytest.raises(GraphError, match="two nodes are named 'x'"):
            Pipeline(a)

    def test_dead_letter_policy_needs_link(self) -> None:
        """on_error='dead_letter' without a linked port is a ConfigError at Pipeline()."""
        a = Numbers()
        a > Ident(name="p", on_error="dead_letter")
        with pytest.raises(ConfigError, match=r"p.dead_letters > sink"):
            Pipeline(a)

    def test_pipeline_needs_nodes(self) -> None:
        """Pipeline() with nothing, or with a non-node, says what it takes."""
        with pytest.raises(GraphError, match="at least one node"):
            Pipeline()
        with pytest.raises(GraphError, match="takes NanoNode objects; got int"):
            Pipeline(3)  # type: ignore[arg-type]
