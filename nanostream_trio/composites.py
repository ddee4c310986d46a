"""The composite node classes defined in this process, by name.

Every class made from a composite definition (:func:`~nanostream_trio.class_factory`,
:func:`~nanostream_trio.load_composite`, :func:`~nanostream_trio.load_composite_text`
or a pipeline file's ``composites:``) is set here as an attribute under its
name, and reports this module as its ``__module__``. So once its definition
is loaded, a composite class can be imported, named as
``nanostream_trio.composites:Name`` in YAML, and pickled by reference::

    load_composite("foo_message_tester.yaml")
    from nanostream_trio.composites import FooMessageTester

Defining a composite again under the same name replaces the attribute (as it
replaces the name for YAML lookups); ``__all__`` lists the names defined so
far. Nothing is defined until a definition is loaded, in each process: a
process that unpickles a composite must load its definition first.
"""

# No `from __future__` (it would add a public name `annotations`) and only private
# imports: every public name in this module is a composite class. (Composite
# names never start with "_".)
from typing import Any as _Any

__all__: list[str] = []


def __getattr__(name: str) -> _Any:
    # Names not defined (yet) in this process. Typed Any so that type checkers
    # accept `from nanostream_trio.composites import FooMessageTester`.
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    msg = (
        f"no composite named {name!r} is defined in this process; load its definition "
        "first with load_composite(path), load_composite_text(text) or class_factory(config)"
    )
    raise AttributeError(msg)
