"""Imports inside fn: found in its code and what it reaches, shipped without being imported here.
(On workers that have only Ray: tests/test_envpack_cluster.py.)"""

from __future__ import annotations

import functools
import importlib
import sys

import pytest
from conftest import assert_ok
from fake_dists import install

import envpack
import gpar
from envpack import discover
from envpack.imports import imports_in_code, imports_reached

SHIPPED = ("gpar", "envpack", "reduce_sql", "cloudpickle")


def discovered(*roots):
    """The manifest of this process with what ``roots``' code will import."""
    found = imports_reached(roots, discover.callers_code(SHIPPED))
    return envpack.manifest(imports=found, runtime=SHIPPED)


def by_name(manifest):
    return {d.name: d for d in manifest.distributions}


def uses_pandas_inside(x):
    import pandas as pd

    return pd.Series([x]).sum()


def test_each_kind_of_import_in_code_is_found():
    def fn():  # never called: its code is only read
        import a.b  # noqa: F401
        from c import d  # noqa: F401

        from . import relative  # noqa: F401 - inside its own package: never reported
        importlib.import_module("e")
        __import__("f")

        def nested():
            import g  # noqa: F401

    assert [(i.name, i.where) for i in imports_in_code(fn.__code__)] == [
        ("a.b", "test_each_kind_of_import_in_code_is_found.fn"),
        ("c", "test_each_kind_of_import_in_code_is_found.fn"),
        ("c.d", "test_each_kind_of_import_in_code_is_found.fn"),
        ("e", "test_each_kind_of_import_in_code_is_found.fn"),
        ("f", "test_each_kind_of_import_in_code_is_found.fn"),
        ("g", "test_each_kind_of_import_in_code_is_found.fn.nested"),
    ]


def test_a_distribution_imported_only_inside_fn_is_in_the_image_unloaded(site):
    install(site, "ep-inner", "1.0", requires=("ep-dep",))
    install(site, "ep-dep", "2.0")

    def fn(x):
        import ep_inner

        return ep_inner.VERSION

    dists = by_name(discovered(fn))
    assert dists["ep-inner"].why == (
        "imported by test_imports.test_a_distribution_imported_only_inside_fn_is_in_the_image_"
        "unloaded.fn: import ep_inner")
    assert dists["ep-dep"].why == "required by ep-inner"
    assert "ep_inner" not in sys.modules  # found, not imported


def helper_that_imports(x):
    return importlib.import_module("ep_literal").VERSION


def logged(function):
    @functools.wraps(function)
    def wrapper(*args):
        return function(*args)

    return wrapper


@logged
def decorated_helper(x):
    import ep_decorated

    return ep_decorated.VERSION


class Model:
    def predict(self, x):
        from ep_method import VERSION

        return VERSION


def test_imports_of_helpers_methods_and_arguments_fn_reaches_are_found(site):
    install(site, "ep-literal", "1.0")
    install(site, "ep-method", "1.0")
    install(site, "ep-argument", "1.0")
    install(site, "ep-decorated", "1.0")
    model = Model()

    def fn(x, callback):
        return helper_that_imports(x), model.predict(x), callback(), decorated_helper(x)

    def callback():
        import ep_argument

        return ep_argument

    dists = by_name(discovered(fn, callback))
    assert {"ep-literal", "ep-method", "ep-argument", "ep-decorated"} <= dists.keys()
    assert dists["ep-method"].why.startswith("imported by test_imports.Model.predict")


def test_a_local_module_imported_only_in_fn_ships_with_what_it_imports(site, local_dir):
    install(site, "ep-of-local", "1.0")
    (local_dir / "ep_fn_only.py").write_text("import ep_of_local\n\n\ndef value():\n"
                                            "    return 1\n")

    def fn(x):
        import ep_fn_only

        return ep_fn_only.value()

    manifest = discovered(fn)
    assert "ep_fn_only" in {m.name for m in manifest.local_modules}
    assert by_name(manifest)["ep-of-local"].why == (
        "imported by ep_fn_only.py:top level: import ep_of_local")
    assert "ep_fn_only" not in sys.modules


def test_a_name_nothing_provides_is_listed_not_dropped():
    def fn(x):
        try:
            import ep_nowhere_at_all  # noqa: F401
        except ImportError:
            return 0

    assert discovered(fn).unresolved == (
        ("ep_nowhere_at_all",
         "test_imports.test_a_name_nothing_provides_is_listed_not_dropped.fn"),)


def test_installed_code_and_the_standard_library_are_not_read():
    import json

    def fn(x):
        import os  # noqa: F401

        return json.dumps(x), uses_pandas_inside(x)

    manifest = discovered(fn)
    assert manifest.unresolved == ()
    assert "pandas" in by_name(manifest)  # a function of the caller's own, read


def imports_what_is_nowhere(x):
    try:
        import ep_nowhere_here  # noqa: F401
    except ImportError:
        return -x


def test_apply_warns_about_an_import_it_cannot_ship(cluster):
    with pytest.warns(envpack.UnresolvedImportWarning, match="'ep_nowhere_here'") as warned:
        results = gpar.apply([1, 2], imports_what_is_nowhere, progress=False)
    assert results == [-1, -2]
    assert warned[0].filename == __file__  # pointed at the call


def test_an_edited_module_that_only_fn_imports_runs_as_edited(run_script):
    script = """
        import os, pathlib, gpar

        def fn(x):
            import ep_fn_helper
            return ep_fn_helper.value()

        first = gpar.apply(range(4), fn, progress=False)
        path = pathlib.Path("ep_fn_helper.py")
        before = path.stat()
        path.write_text("def value():\\n    return 2\\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        print(list(first), list(gpar.apply(range(4), fn, progress=False)))
    """
    completed = run_script(script, {"ep_fn_helper.py": "def value():\n    return 1\n"})
    assert assert_ok(completed).strip() == "[1, 1, 1, 1] [2, 2, 2, 2]"


def test_reading_what_fn_reaches_never_runs_a_module_getattr(monkeypatch):
    """numpy warns when its deprecated ``np.object`` is looked up: fn naming ``object`` (as in
    ``dtype=object``) beside ``np`` must not make apply() look it up, nor import lazily."""
    import types

    lazy = types.ModuleType("ep_lazy")

    def looked_up(name):
        raise AssertionError(f"ep_lazy.{name} was looked up")

    lazy.__getattr__ = looked_up
    monkeypatch.setitem(sys.modules, "ep_lazy", lazy)
    namespace = {"ep_lazy": lazy}
    exec("def fn(x):\n    return ep_lazy, object, x\n", namespace)
    imports_reached([namespace["fn"]], lambda module: True)
