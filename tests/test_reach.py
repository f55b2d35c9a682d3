"""What fn reaches (envpack/reach.py), as its three users see it: capture (the caller's global
names, the random generators fn draws from), shipping (the imports in code fn reaches) and the
job's identity (a changed object fn reaches is another job). Each way of reaching a function is
a shape; the three must agree on every shape, and on shapes nested in one another."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import textwrap
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envpack import reach
from envpack.imports import imports_reached
from gpar.environment import callers_code, random_states, reached_globals
from gpar.jobid import job_digest

#: The function at the end of every path: it imports a module and draws from a global generator.
LEAF = """
import random
TARGET = random.Random(1)
def leaf():
    import ep_reached_target
    return TARGET.random()
"""

#: Each shape makes ``fn``, which reaches ``g`` only that way.
SHAPES = {
    "decorated": """
        def logged(function):
            @functools.wraps(function)
            def wrapper(*args):
                return function(*args)
            return wrapper
        @logged
        def fn():
            return g()
    """,
    "lru_cache": """
        @functools.lru_cache
        def fn():
            return g()
    """,
    "closure": """
        def make(h):
            return lambda: h()
        fn = make(g)
    """,
    "set sharing an object": """
        shared = (g,)
        PAIRS = {("a", shared), ("b", shared), ("c", shared), ("d", shared), ("e", shared)}
        def fn():
            return sorted(PAIRS)[0][1][0]()
    """,
    "class constant": """
        class Model:
            STEPS = (g,)
        def fn():
            return Model.STEPS[0]()
    """,
    "base-class method": """
        class Base:
            def run(self):
                return g()
        class Model(Base):
            pass
        def fn():
            return Model().run()
    """,
    "partial": """
        def call(h):
            return h()
        fn = functools.partial(call, g)
    """,
    "bound method": """
        class Holder:
            def __init__(self, h):
                self.h = h
            def run(self):
                return self.h()
        fn = Holder(g).run
    """,
    "property": """
        class Model:
            @property
            def value(self):
                return g()
        def fn():
            return Model().value
    """,
    "staticmethod": """
        class Model:
            @staticmethod
            def run():
                return g()
        def fn():
            return Model.run()
    """,
    "classmethod": """
        class Model:
            @classmethod
            def run(cls):
                return g()
        def fn():
            return Model.run()
    """,
    "default argument": """
        def fn(h=g):
            return h()
    """,
    "lambda in a list global": """
        STEPS = [lambda: g()]
        def fn():
            return STEPS[0]()
    """,
    "nested function": """
        def fn():
            def inner():
                return g()
            return inner()
    """,
    "module attribute of a local module": """
        def fn():
            return helpers.g()
    """,
}


def main_namespace(source: str, **names) -> dict:
    """Globals of code run as a script (``__main__``): the caller's own code."""
    namespace = {"__name__": "__main__", "functools": functools, **names}
    exec(textwrap.dedent(source), namespace)
    return namespace


def local_module(**names) -> types.ModuleType:
    """A module of the caller's that is not installed (one of ``__main__``'s neighbours)."""
    module = types.ModuleType("ep_reach_helpers")
    module.__file__ = "/home/analyst/project/ep_reach_helpers.py"
    vars(module).update(names)
    return module


def shaped(shape: str, g, namespace: dict | None = None):
    """fn reaching ``g`` through ``shape``; its code runs in ``namespace`` (a fresh one)."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    namespace.update(functools=functools, g=g, helpers=local_module(g=g))
    exec(textwrap.dedent(SHAPES[shape]), namespace)
    return namespace["fn"]


def agreed(fn, leaf, args: tuple = ()) -> dict[str, bool]:
    """Whether each user sees that fn reaches leaf (its import, its global, its constant)."""
    roots = (fn, *args)
    scope = leaf.__globals__
    before = job_digest([1], fn, args, {})
    saved = scope["TARGET"]
    scope["TARGET"] = random.Random(2)
    try:
        changed = job_digest([1], fn, args, {})
    finally:
        scope["TARGET"] = saved
    return {
        "shipping": "ep_reached_target" in {i.name for i in imports_reached(roots, callers_code())},
        "capture": "TARGET" in reached_globals(roots, scope),
        "capture, loaded only": "TARGET" in reached_globals(roots, scope, attributes=False),
        "identity": before != changed and before == job_digest([1], fn, args, {}),
    }


ALL = dict.fromkeys(["shipping", "capture", "capture, loaded only", "identity"], True)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_user_sees_what_fn_reaches_through_each_shape(shape):
    namespace = main_namespace(LEAF)
    fn = shaped(shape, namespace["leaf"], namespace)
    assert agreed(fn, namespace["leaf"]) == ALL
    assert random_states(fn, (), {}) == ["global 'TARGET' (random.Random)"]


def test_every_user_sees_a_local_modules_own_function():
    helpers = local_module()
    exec(LEAF, vars(helpers))
    fn = main_namespace("def fn():\n    return helpers.leaf()\n", helpers=helpers)["fn"]
    assert agreed(fn, helpers.leaf) == ALL
    assert random_states(fn, (), {}) == []  # a module's generator is made afresh on a worker


def test_every_user_sees_what_an_argument_reaches():
    namespace = main_namespace(LEAF + "\ndef fn(x, h):\n    return h()\n")
    assert agreed(namespace["fn"], namespace["leaf"], args=(namespace["leaf"],)) == ALL


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=4))
def test_every_user_sees_through_shapes_nested_in_one_another(shapes):
    leaf = main_namespace(LEAF)["leaf"]
    fn = leaf
    for shape in shapes:
        fn = shaped(shape, fn)
    assert agreed(fn, leaf) == ALL


#: Each shape as a script: its digest, which a re-run in a new process must repeat to resume.
SHAPE_DIGESTS = """
from gpar.jobid import job_digest
from test_reach import LEAF, SHAPES, shaped
exec(LEAF)
for shape in SHAPES:
    print(shape, job_digest([1], shaped(shape, leaf, globals()), (), {}))
"""


def test_each_shape_has_the_same_digest_in_another_process(tmp_path):
    (tmp_path / "job.py").write_text(SHAPE_DIGESTS)
    environment = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    digests = {subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True,
                              text=True, check=True,
                              env={**environment, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2", "3", "4")}  # a set iterates by its hashes
    assert len(digests) == 1 and len(digests.pop().splitlines()) == len(SHAPES)


def test_installed_code_is_not_followed():
    """A global of an installed module is its own business: not the caller's to ship."""
    import json

    found = [obj for obj, _ in reach.walk([json.dumps], callers_code())]
    assert found[0] is json.dumps and not any(callable(obj) for obj in found[1:])  # defaults


def test_a_table_of_records_is_not_walked_element_by_element():
    records = [{"a": i, "b": float(i), "c": str(i)} for i in range(1000)]
    rows = [(i, str(i)) for i in range(1000)]
    assert reach.references(records, callers_code()) == []
    assert reach.references(rows, callers_code()) == []
    assert [r.value for r in reach.references([1, len, "x"], callers_code())] == [len]
