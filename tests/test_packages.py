"""gpar.apply(packages=...) on the embedded cluster: the image step, shipping, verification.

Distributions made up in a site-packages directory that only the driver has on its path play
the part of what the workers lack (tests/fake_dists.py).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from fake_dists import install

import envpack
import gpar


def shipped_value(name):
    module = importlib.import_module(name.replace("-", "_"))
    return module.VALUE, importlib.metadata.version(name)


def mark_ran(x, directory):
    Path(directory, f"ran-{x}").write_text("")
    return x


def test_nothing_ships_to_workers_that_run_the_callers_interpreter(cluster):
    results = gpar.apply([1, 2], abs, progress=False)

    image = results.report.image
    assert image.layers == () and image.cache_hit
    assert len(image.digest) == 64


def test_a_distribution_the_workers_lack_ships_and_fn_sees_the_callers_version(
        cluster, site, load):
    install(site, "ep-shipped", "1.5", source="VALUE = 'the caller'\n")
    load("ep_shipped")

    results = gpar.apply(["ep-shipped"], shipped_value, progress=False)

    assert results == [("the caller", "1.5")]
    assert [(layer.name, layer.version) for layer in results.report.image.layers] == [
        ("ep-shipped", "1.5")]
    again = gpar.apply(["ep-shipped"], shipped_value, progress=False)
    assert again == results and again.report.image.cache_hit


def test_packages_none_raises_the_mismatch_before_fn_runs(cluster, site, load, tmp_path):
    install(site, "ep-unshipped", "2.5")
    load("ep_unshipped")

    with pytest.raises(envpack.EnvironmentMismatch,
                       match="ep-unshipped: caller 2.5, worker not installed"):
        gpar.apply(range(3), mark_ran, str(tmp_path), packages="none", progress=False)
    assert not list(tmp_path.glob("ran-*"))


def test_a_list_of_packages_ships_only_those(cluster, site, load):
    install(site, "ep-listed", "1.0")
    install(site, "ep-unlisted", "1.0")
    load("ep_listed")
    load("ep_unlisted")

    with pytest.raises(envpack.EnvironmentMismatch) as raised:
        gpar.apply([0], abs, packages=["ep-listed"], progress=False)

    assert "ep-unlisted: caller 1.0, worker not installed" in str(raised.value)
    assert "ep-listed" not in str(raised.value).replace("ep-unlisted", "")


def test_packages_naming_what_is_not_installed_is_refused(cluster):
    with pytest.raises(ValueError, match="not-installed-anywhere"):
        gpar.apply([0], abs, packages=["not-installed-anywhere"], progress=False)
