"""envpack without Ray: discovery, the manifest, layers, the delta, verification, staging, CLI."""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from conftest import assert_ok
from fake_dists import install

import envpack
from envpack import _boot, layers
from envpack.checks import ImageCheck, check_of
from envpack.delta import WorkerFacts, select


def names(manifest):
    return {d.name: d for d in manifest.distributions}


def test_loaded_distribution_is_closed_over_its_requirements(site, load):
    install(site, "ep-alpha", "1.0", requires=("ep-beta>=2", "ep-gamma; extra == 'x'",
                                              "ep-delta; python_version < '3'"))
    for name in ("ep-beta", "ep-gamma", "ep-delta"):
        install(site, name, "2.0")
    load("ep_alpha")

    found = names(envpack.manifest())

    assert found["ep-alpha"].version == "1.0"
    assert found["ep-alpha"].why == "loaded: import ep_alpha"
    assert found["ep-beta"].why == "required by ep-alpha"
    assert "ep-gamma" not in found and "ep-delta" not in found  # extra, false marker


def test_extras_of_a_requirement_are_followed(site, load):
    install(site, "ep-alpha", "1.0", requires=("ep-beta[fast]",))
    install(site, "ep-beta", "1.0", requires=("ep-gamma; extra == 'fast'",))
    install(site, "ep-gamma", "1.0")
    load("ep_alpha")

    assert "ep-gamma" in names(envpack.manifest())


def test_a_shared_namespace_package_brings_only_the_distributions_loaded_from_it(site, load):
    install(site, "ep-ns-one", "1.0", modules={"epns/one/__init__.py": "X = 1\n"})
    install(site, "ep-ns-two", "1.0", modules={"epns/two/__init__.py": "X = 2\n"})
    load("epns")
    load("epns.one")

    found = names(envpack.manifest())

    assert "ep-ns-one" in found and "ep-ns-two" not in found


def test_stdlib_ray_and_what_ray_requires_are_never_in_the_manifest():
    import json  # noqa: F401 - loaded on purpose

    import packaging  # noqa: F401 - Ray requires it
    import ray  # noqa: F401

    manifest = envpack.manifest()
    found = names(manifest)
    assert "ray" not in found and "packaging" not in found and "msgpack" not in found
    # a fresh interpreter, where nothing loaded google.auth: its namespace is protobuf's too
    code = "import ray, envpack; print([d.name for d in envpack.manifest().distributions])"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert "google-auth" not in fresh and "cryptography" not in fresh
    assert not {"json", "os", "ray"} & {m.name for m in manifest.local_modules}
    assert manifest.ray_version == importlib.metadata.version("ray")


def test_local_modules_are_hashed_by_content(local_dir):
    (local_dir / "ep_helper.py").write_text("X = 1\n")
    importlib.invalidate_caches()
    import ep_helper  # noqa: F401

    try:
        first = envpack.manifest()
        helper = next(m for m in first.local_modules if m.name == "ep_helper")
        assert helper.files[0][0] == "ep_helper.py"
        assert envpack.manifest().digest == first.digest

        (local_dir / "ep_helper.py").write_text("X = 22\n")
        changed = envpack.manifest()
        assert changed.digest != first.digest
    finally:
        del sys.modules["ep_helper"]


def test_a_warm_manifest_reads_no_file(site, monkeypatch, load):
    install(site, "ep-alpha", "1.0")
    load("ep_alpha")
    first = envpack.manifest()

    def no_reads(*args, **kwargs):
        raise AssertionError("a warm manifest read a file")

    monkeypatch.setattr(Path, "read_bytes", no_reads)
    monkeypatch.setattr(Path, "read_text", no_reads)
    assert envpack.manifest().digest == first.digest


def test_reinstalling_a_distribution_changes_the_digest(site, load):
    install(site, "ep-alpha", "1.0")
    load("ep_alpha")
    before = envpack.manifest().digest
    shutil.rmtree(site / "ep_alpha-1.0.dist-info")  # as pip does: remove, then install anew
    install(site, "ep-alpha", "1.0", source="VERSION = 'rebuilt'\n")

    assert envpack.manifest().digest != before


def test_packages_naming_an_uninstalled_distribution_is_an_error():
    with pytest.raises(ValueError, match="not-installed-anywhere"):
        envpack.manifest(requested=["not-installed-anywhere"])
    with pytest.raises(TypeError, match="a list of distribution names, e.g. \\['numpy'\\]"):
        envpack.manifest(requested="numpy")


def test_packages_may_name_a_distribution_by_what_it_imports_as():
    named = {d.name: d.why for d in envpack.manifest(requested=["dateutil"]).distributions}
    assert named["python-dateutil"] == "named in packages="


def test_a_layer_holds_the_distribution_and_is_built_once(site, tmp_path, load):
    install(site, "ep-alpha", "1.0")
    load("ep_alpha")
    (site / "__pycache__").mkdir()
    item = names(envpack.manifest())["ep-alpha"]
    layer = envpack.layer_of(item)

    path, built = envpack.build(layer, tmp_path / "cache")
    again, built_again = envpack.build(layer, tmp_path / "cache")

    assert built and not built_again and again == path
    with zipfile.ZipFile(path) as archive:
        assert set(archive.namelist()) == {
            "ep_alpha.py", "ep_alpha-1.0.dist-info/METADATA", "ep_alpha-1.0.dist-info/WHEEL",
            "ep_alpha-1.0.dist-info/RECORD", _boot.MTIMES}
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary left behind


@pytest.fixture
def worker_cache(tmp_path, monkeypatch) -> Path:
    """A worker's own layer cache (its unpacked/ directory is returned), and a sys.path that
    staging may change."""
    monkeypatch.setenv("ENVPACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path / "cache" / "unpacked"


def _layer_archive(path: Path, module: str) -> bytes:
    """A layer's archive holding one module ``module``.py."""
    with zipfile.ZipFile(path, "w") as members:
        members.writestr(f"{module}.py", "WHERE = 'staged'\n")
    return path.read_bytes()


def test_unpacked_sources_keep_the_callers_mtimes_so_shipped_bytecode_stays_valid(
        site, load, tmp_path, worker_cache):
    install(site, "ep-alpha", "1.0")
    source = site / "ep_alpha.py"
    os.utime(source, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    load("ep_alpha")
    path, _ = envpack.build(envpack.layer_of(names(envpack.manifest())["ep-alpha"]), tmp_path)

    _boot.stage([("d", "ref")], lambda ref: path.read_bytes())

    assert (worker_cache / "d" / "ep_alpha.py").stat().st_mtime_ns == 1_600_000_000_123_456_789


def test_a_layer_too_large_for_ray_names_the_package(site, monkeypatch, load):
    install(site, "ep-alpha", "1.0")
    load("ep_alpha")
    monkeypatch.setattr(layers, "MAX_LAYER_BYTES", 10)

    with pytest.raises(envpack.LayerTooLarge, match=r"ep-alpha \(1.0\) is .* install it on"):
        envpack.layer_of(names(envpack.manifest())["ep-alpha"])


def _facts(distributions=(), host="elsewhere"):
    return WorkerFacts("2.60.0", "3.11.7", "cpython", "linux-x86_64", host, "/bare/python",
                       tuple(distributions))


def test_the_delta_is_what_workers_lack_or_have_at_another_version(site, local_dir, load):
    for name, version in (("ep-alpha", "1.0"), ("ep-beta", "2.0"), ("ep-gamma", "3.0")):
        install(site, name, version)
        load(name.replace("-", "_"))
    (local_dir / "ep_local.py").write_text("")
    load("ep_local")
    manifest = envpack.manifest()
    facts = _facts([("ep-alpha", "1.0"), ("ep-beta", "1.9")])

    shipped = {item.name for item in select(manifest, facts, "auto")}
    assert {"ep-beta", "ep-gamma", "ep_local"} <= shipped and "ep-alpha" not in shipped

    limited = {item.name for item in select(manifest, facts, ["ep-gamma"])}
    assert "ep-gamma" in limited and "ep-beta" not in limited and "ep_local" in limited

    nothing = {item.name for item in select(manifest, facts, "none", always={"ep_beta"})}
    assert nothing == {"ep-beta"}


def test_workers_of_the_callers_interpreter_get_no_local_module(local_dir, site, load):
    import socket

    (local_dir / "ep_local.py").write_text("")
    load("ep_local")
    here = socket.gethostname()
    facts = WorkerFacts("2.60.0", "3.11.7", "cpython", "linux-x86_64", here, sys.executable, (),
                        node_hosts=(here,), search_path=(str(local_dir),))
    shipped = {item.name for item in select(envpack.manifest(), facts, "auto")}
    assert "ep_local" not in shipped
    # a directory the caller put on its own sys.path at run time: the workers lack it
    unreachable = dataclasses.replace(facts, search_path=())
    assert "ep_local" in {item.name for item in select(envpack.manifest(), unreachable, "auto")}
    # the same interpreter named another way (`../.venv/bin/python` from a subdirectory)
    roundabout = os.path.join(os.path.dirname(sys.executable), "..", "bin",
                              os.path.basename(sys.executable))
    same = dataclasses.replace(facts, executable=roundabout)
    assert "ep_local" not in {item.name for item in select(envpack.manifest(), same, "auto")}
    # the probe ran here, but another node of the cluster is another host: ship it
    elsewhere = dataclasses.replace(facts, node_hosts=(here, "another-host"))
    assert "ep_local" in {item.name for item in select(envpack.manifest(), elsewhere, "auto")}


def test_an_edited_local_module_runs_its_new_code_where_workers_imported_the_old(run_script):
    """On the embedded cluster the workers import the caller's own files; a worker process
    that imported a module before the caller edited and reloaded it must not serve the job."""
    script = """
        import sys
        sys.dont_write_bytecode = False  # as a user's Python: it caches ep_edited's bytecode
        import importlib, os, pathlib, gpar, ep_edited, ep_caller
        first = gpar.apply(range(4), ep_caller.g, progress=False)
        path = pathlib.Path(ep_edited.__file__)
        before = path.stat()
        path.write_text("def f(x):\\n    return 2\\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        importlib.reload(ep_edited)
        print(list(first), list(gpar.apply(range(4), ep_caller.g, progress=False)))
    """
    completed = run_script(script, {"ep_edited.py": "def f(x):\n    return 1\n",
                                    # unchanged, but holds the edited module
                                    "ep_caller.py": "import ep_edited\n\n\ndef g(x):\n"
                                                    "    return ep_edited.f(x)\n"})
    assert assert_ok(completed).strip() == "[1, 1, 1, 1] [2, 2, 2, 2]"


def test_the_check_names_local_modules_but_never_the_runtime_the_task_needs_first(local_dir,
                                                                                  load):
    for name in ("ep_mine", "ep_runtime"):
        (local_dir / f"{name}.py").write_text("")
        load(name)
    named = {name for name, _ in check_of(envpack.manifest(), {"ep_runtime"}).local_modules}
    assert "ep_mine" in named and "ep_runtime" not in named


def _check(distributions, python_minor=None):
    return ImageCheck(digest=str(distributions), python_minor=python_minor or
                      ".".join(map(str, sys.version_info[:2])), implementation="cpython",
                      platform=envpack.manifest().platform, ray_version="",
                      distributions=tuple(distributions))


def test_verify_lists_each_distribution_callers_version_against_workers(site):
    install(site, "ep-alpha", "1.0")
    importlib.invalidate_caches()

    with pytest.raises(envpack.EnvironmentMismatch) as raised:
        envpack.verify(_check([("ep-alpha", "1.1", True), ("ep-missing", "2.0", True)]))

    message = str(raised.value)
    assert "ep-alpha: caller 1.1, worker 1.0" in message
    assert "ep-missing: caller 2.0, worker not installed" in message
    assert "pip install 'ep-alpha==1.1' 'ep-missing==2.0'" in message


def test_verify_passes_a_matching_worker_and_checks_python_only_for_compiled_code(site):
    install(site, "ep-alpha", "1.0")
    importlib.invalidate_caches()
    envpack.verify(_check([("ep-alpha", "1.0", True)], python_minor="3.99"))

    with pytest.raises(envpack.EnvironmentMismatch, match=r"python \(compiled: ep-alpha\): "
                       r"caller 3.98"):
        envpack.verify(_check([("ep-alpha", "1.0", False)], python_minor="3.98"))


def test_staging_unpacks_each_layer_once_and_puts_it_first_on_sys_path(tmp_path, worker_cache):
    archive = _layer_archive(tmp_path / "layer.zip", "ep_staged")
    fetched = []

    def fetch(ref):
        fetched.append(ref)
        return archive

    _boot.stage([("d1", "ref-1")], fetch)
    _boot.stage([("d1", "ref-1")], fetch)

    assert fetched == ["ref-1"]
    assert sys.path[0] == str(worker_cache / "d1")
    assert (worker_cache / "d1" / "ep_staged.py").exists()


def _aged(path: Path, days: float) -> Path:
    then = time.time() - days * 24 * 3600
    os.utime(path, (then, then))
    return path


def test_unpacking_a_new_layer_removes_layers_unused_for_a_month(tmp_path, worker_cache):
    archive = _layer_archive(tmp_path / "layer.zip", "ep_new")
    root = worker_cache
    for name in ("old", ".unpacking-crashed", "recent", "reused"):
        (root / name).mkdir(parents=True)
    for name in ("old", ".unpacking-crashed", "reused"):
        _aged(root / name, days=40)
    _aged(root / "recent", days=2)

    _boot.stage([("reused", "ref-0"), ("new", "ref-1")], lambda ref: archive)

    assert sorted(path.name for path in root.iterdir() if not path.name.endswith(".lock")) == [
        "new", "recent", "reused"]


def test_a_removal_cut_short_never_leaves_a_layer_under_its_name(tmp_path, monkeypatch):
    root = tmp_path / "unpacked"
    (root / "old").mkdir(parents=True)
    (root / "old" / "ep_old.py").write_text("")
    _aged(root / "old", days=40)
    with monkeypatch.context() as patched:  # the worker is killed before it removed a file
        patched.setattr(_boot.shutil, "rmtree", lambda *args, **kwargs: None)
        _boot.prune(str(root))
    assert [path.name.startswith(".pruning-") for path in root.iterdir()] == [True]
    _boot.prune(str(root))  # the next prune finishes the job
    assert list(root.iterdir()) == []


def test_building_a_new_archive_removes_archives_unused_for_a_month(local_dir, load, tmp_path):
    cache = tmp_path / "layers"
    cache.mkdir()
    (cache / "stale.zip").write_bytes(b"")
    stale = _aged(cache / "stale.zip", days=40)
    (local_dir / "ep_layered.py").write_text("")
    load("ep_layered")
    local = {module.name: module for module in envpack.manifest().local_modules}
    layer = envpack.layer_of(local["ep_layered"])
    path, built = envpack.build(layer, cache)
    assert built and not stale.exists()
    _aged(path, days=40)
    assert envpack.build(layer, cache) == (path, False)
    assert time.time() - path.stat().st_mtime < 3600  # a cache hit counts as a use


def _envpack(*args, cwd):
    envpack_script = Path(sys.executable).with_name("envpack")
    return subprocess.run([str(envpack_script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_show_lists_what_ships_with_versions_sizes_and_why(tmp_path):
    (tmp_path / "ep_cli_helper.py").write_text("import tqdm\n")
    out = _envpack("show", "ep_cli_helper", cwd=tmp_path)

    assert out.returncode == 0, out.stderr
    tqdm_version = importlib.metadata.version("tqdm")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("image ") and f"Python {sys.version.split()[0]}" in lines[0]
    assert any(line.split()[:2] == ["tqdm", tqdm_version] and "loaded: import tqdm" in line
               for line in lines)
    assert any(line.split()[:2] == ["ep_cli_helper", "local"] and
               str(tmp_path / "ep_cli_helper.py") in line for line in lines)
    assert not any(line.split()[:1] == ["ray"] for line in lines)


def test_cli_show_of_a_module_that_is_not_there_says_so_in_one_line(tmp_path):
    out = _envpack("show", "scikit-learn", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no module 'scikit-learn' here" in out.stderr


def test_cli_show_script_lists_what_its_functions_import_without_running_it(tmp_path):
    (tmp_path / "ep_script_helper.py").write_text("import tqdm\n")
    (tmp_path / "analysis.py").write_text(
        "import sys\n\n\ndef fit(x):\n    import ep_script_helper\n    import ep_nowhere\n"
        "    return x\n\n\nsys.exit('the script ran')\n")
    out = _envpack("show", "--script", "analysis.py", cwd=tmp_path)

    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert "local module" in rows["ep_script_helper"]
    assert rows["tqdm"].endswith("imported by ep_script_helper.py:top level: import tqdm")
    assert "ep_nowhere (by analysis.py:fit)" in out.stdout.splitlines()[-1]


def test_cli_build_writes_layers_and_the_manifest(tmp_path):
    (tmp_path / "ep_cli_helper.py").write_text("X = 1\n")
    out = _envpack("build", "-o", "image", "ep_cli_helper", cwd=tmp_path)

    assert out.returncode == 0, out.stderr
    manifest = (tmp_path / "image" / "manifest.json").read_text()
    assert '"ep_cli_helper"' in manifest
    archives = list((tmp_path / "image").glob("*.zip"))
    assert any("ep_cli_helper.py" in zipfile.ZipFile(path).namelist() for path in archives)
    assert textwrap.dedent(out.stdout).count("built ") == len(archives)


def test_a_worker_running_staged_layers_describes_them_as_they_were_shipped(
        tmp_path, monkeypatch, load):
    import socket

    monkeypatch.setenv("ENVPACK_CACHE_DIR", str(tmp_path))
    distribution_layer = tmp_path / "unpacked" / "d1"
    install(distribution_layer, "ep-staged", "1.0")
    local_layer = tmp_path / "unpacked" / "d2"
    local_layer.mkdir()
    (local_layer / "ep_staged_local.py").write_text("")
    monkeypatch.syspath_prepend(str(distribution_layer))
    monkeypatch.syspath_prepend(str(local_layer))
    load("ep_staged")
    load("ep_staged_local")

    manifest = envpack.manifest()

    assert names(manifest)["ep-staged"].version == "1.0"
    assert "ep_staged_local" in {module.name for module in manifest.local_modules}
    facts = WorkerFacts("2.60.0", "3.11.7", "cpython", "linux-x86_64", socket.gethostname(),
                        sys.executable, ())
    assert not facts.runs_callers_interpreter()  # a nested call ships its local layers too


def test_envpack_imports_ray_only_when_it_ships():
    code = ("import sys, envpack, envpack.cli, envpack.stage; "
            "print('ray' in sys.modules, sorted(envpack.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split(" ", 1)

    assert out[0] == "False"
    assert "EnvironmentMismatch" in out[1] and "manifest" in out[1] and "verify" in out[1]


def seen_by_the_task():
    """What a staged task sees of its submission: its image's variable and its CPUs."""
    import ray

    yield os.environ.get("ENVPACK_IMAGE"), ray.get_runtime_context().get_assigned_resources()


def test_a_submission_applies_the_image_and_the_placement_together(cluster):
    """Ray takes a task's options in one ``.options`` call (its result has no ``.options``):
    the image's runtime_env and the placement must both reach the task."""
    import ray

    from envpack import stage
    from gpar.raytasks import _ray_placement

    image = stage.StagedImage((), None, {"env_vars": {"ENVPACK_IMAGE": "ep-image"}},
                              stage.ImageReport("d", (), 0))
    # the placement gpar makes to keep batches off a slow node, and a share of a CPU to see
    placement = {**_ray_placement({"avoid_nodes": ("ep-no-such-node",)}), "num_cpus": 0.5}
    stream = stage.start(image.call("test_envpack:seen_by_the_task", [], ()),
                         {"num_returns": "streaming", "max_retries": 0}, placement)
    assert [ray.get(ref) for ref in stream] == [("ep-image", {"CPU": 0.5})]


def test_the_probe_counts_only_what_a_worker_has_installed_not_what_it_was_staged(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ENVPACK_CACHE_DIR", str(tmp_path))
    staged = tmp_path / "unpacked" / "layer-digest"
    install(staged, "ep-staged", "1.0")
    monkeypatch.syspath_prepend(str(staged))  # as a staged task leaves its process
    assert "ep-staged" not in dict(_boot.probe()["distributions"])


def test_a_mismatch_says_what_shipping_can_fix_and_what_it_cannot():
    from envpack.checks import describe

    text = describe([("ep-alpha", "1.0", "not installed"),
                     ("python (compiled: ep-beta)", "3.11", "3.12"), ("ray", "2.60.0", "2.59")])
    ship, interpreter = text.splitlines()[-2:]
    assert "pip install 'ep-alpha==1.0'" in ship and "ray" not in ship and "python" not in ship
    assert interpreter.startswith("python (compiled: ep-beta), ray: cannot be shipped")
