"""One error tree: whatever apply() raises about a job is a gpar.GparError, drawn in one place."""

from __future__ import annotations

import pickle
import re

import pytest
from fake_dists import install

import envpack
import gpar
import reduce_sql
from envpack import layers
from gpar import errors


def error_classes() -> dict[str, type[BaseException]]:
    """Every exception class gpar.errors defines."""
    return {name: value for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, BaseException)
            and value.__module__ == errors.__name__}


def test_every_error_is_a_gpar_error_drawn_in_the_tree_and_exported():
    tree, warnings_list = errors.__doc__.split("\n\n")[1:3]
    for name, kind in error_classes().items():
        if issubclass(kind, Warning):
            assert re.search(rf"\b{name}\b", warnings_list), f"{name} is not listed"
        elif name != "RemoteTraceback":  # a cause's text, never raised
            assert issubclass(kind, gpar.GparError), name
            assert re.search(rf"\b{name}\b", tree), f"{name} is missing from the tree"
        if name != "RemoteTraceback":
            assert getattr(gpar, name) is kind and name in gpar.__all__, name


def test_envpacks_and_reduce_sqls_errors_have_a_gpar_class_each():
    assert errors.GPAR_CLASS_OF == {
        envpack.EnvironmentMismatch: gpar.EnvironmentMismatch,
        envpack.LayerTooLarge: gpar.LayerTooLarge,
        reduce_sql.OutputExistsError: gpar.OutputExistsError,
        reduce_sql.OutputBusyError: gpar.OutputBusyError,
        reduce_sql.SchemaConflictError: gpar.SchemaConflictError,
    }
    for original, ours in errors.GPAR_CLASS_OF.items():
        assert issubclass(ours, original) and issubclass(ours, gpar.GparError)
        assert ours.__name__ == original.__name__
        copy = pickle.loads(pickle.dumps(ours("text")))
        assert type(copy) is ours and str(copy) == "text"


def test_the_boundary_raises_gpar_classes_from_the_originals():
    class Subclass(reduce_sql.OutputBusyError):  # mapped as its original is
        pass

    for original, ours in [*errors.GPAR_CLASS_OF.items(), (Subclass, gpar.OutputBusyError)]:
        with pytest.raises(gpar.GparError) as raised, errors.as_gpar_errors():
            raise original("text")
        assert type(raised.value) is ours and str(raised.value) == "text"
        assert type(raised.value.__cause__) is original
    with pytest.raises(KeyError), errors.as_gpar_errors():  # not a job's error: as it is
        raise KeyError("x")


def test_a_mismatch_keeps_its_problems_across_the_boundary_and_pickling():
    problems = [("ep-absent", "2.5", "not installed")]
    mismatch = errors.gpar_error(envpack.EnvironmentMismatch("ep-absent differs", problems))
    assert type(mismatch) is gpar.EnvironmentMismatch
    for copy in (mismatch, pickle.loads(pickle.dumps(mismatch))):
        assert str(copy) == "ep-absent differs" and copy.problems == tuple(problems)
    assert errors.gpar_error(mismatch) is mismatch


def test_a_connection_error_is_also_the_builtin_one():
    assert issubclass(gpar.ClusterConnectionError, ConnectionError)


def test_apply_into_another_jobs_output_raises_a_gpar_error(cluster, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(gpar.GparError) as raised:
        gpar.apply([1], columns, output=tmp_path, progress=False)
    assert isinstance(raised.value, reduce_sql.OutputExistsError)


def test_conflicting_tables_raise_a_gpar_error(cluster, tmp_path):
    with pytest.raises(gpar.GparError) as raised:
        gpar.apply([1, "one"], columns, output=tmp_path / "out", progress=False)
    assert isinstance(raised.value, reduce_sql.SchemaConflictError)


def test_a_layer_too_large_raises_a_gpar_error(cluster, site, load, monkeypatch):
    install(site, "ep-bulky", "1.0")
    load("ep_bulky")
    monkeypatch.setattr(layers, "MAX_LAYER_BYTES", 10)

    with pytest.raises(gpar.GparError, match="ep-bulky") as raised:
        gpar.apply([0], abs, progress=False)
    assert isinstance(raised.value, envpack.LayerTooLarge)


def test_the_workers_mismatch_reaches_the_caller_as_itself(cluster, site, load):
    install(site, "ep-absent", "2.5")
    load("ep_absent")

    with pytest.raises(gpar.GparError) as raised:
        gpar.apply(range(3), abs, packages="none", progress=False)

    mismatch = raised.value
    assert type(mismatch) is gpar.EnvironmentMismatch
    assert isinstance(mismatch, envpack.EnvironmentMismatch)
    # what the worker found, as data: a mismatch rebuilt from the message would have none
    assert ("ep-absent", "2.5", "not installed") in mismatch.problems
    # where the worker found it: its traceback's text, as a TaskError's, under the mismatch
    assert isinstance(mismatch.__cause__, errors.RemoteTraceback)
    assert "in _image_verified" in str(mismatch.__cause__)


def test_misuse_stays_a_type_or_value_error(cluster):
    with pytest.raises(TypeError) as not_callable:
        gpar.apply([1], "abs")
    with pytest.raises(ValueError) as bad_option:
        gpar.apply([1], abs, quorum=2)
    assert not isinstance(not_callable.value, gpar.GparError)
    assert not isinstance(bad_option.value, gpar.GparError)


def columns(x):
    return {"x": [x]}
