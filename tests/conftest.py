"""One embedded Ray cluster for the whole session, started the way gpar starts it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import gpar
from gpar import cluster as gpar_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``s3`` every test that uses the S3 server, by its fixture or as the ``output``
    fixture's s3 case: make test runs them again where gpar[s3] is installed."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "s3_environment" in item.fixturenames or params.get("output") == "s3":
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session", autouse=True)
def local_clusters():
    """Scripts that run with no address start the user's local cluster: in tests, one of a
    state directory of the session's own, and every one started there is stopped at the end."""
    directory = Path(tempfile.mkdtemp(prefix="gpar-state-"))
    os.environ["GPAR_STATE_DIR"] = str(directory)
    try:
        yield directory
    finally:
        stop_local_clusters(directory)
        shutil.rmtree(directory, ignore_errors=True)


def stop_local_clusters(state_dir: Path) -> None:
    """Stop every local cluster whose state file is in ``state_dir``, each by its own pid."""
    import json

    from gpar import client

    for state_file in state_dir.glob("*.json"):
        try:
            state = client.ServerState(**json.loads(state_file.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        client.stop(state, state_file)


@pytest.fixture(scope="session")
def cluster():
    """The embedded cluster (2 CPUs, private temp dir); yields its address for subprocesses.

    Test modules are plain files, not installed: workers find them through PYTHONPATH, as a
    user's workers would find an installed package.
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="gpar-ray-", dir="/tmp")
    tests_dir = str(Path(__file__).parent)
    gpar_cluster.connect(num_cpus=2, _temp_dir=temp_dir,
                         runtime_env={"env_vars": {"PYTHONPATH": tests_dir}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        gpar.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def run_script(cluster, tmp_path):
    """Run a script as __main__ in a fresh interpreter attached to the session's cluster."""

    def run(source: str, files: dict[str, str] | None = None, timeout_s: float = 120):
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(textwrap.dedent(text))
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source))
        env = {**os.environ, "RAY_ADDRESS": cluster}
        return subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=timeout_s,
        )

    run.address = cluster
    return run


def assert_ok(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    return completed.stdout


@pytest.fixture
def once_dir(tmp_path) -> Path:
    """A directory fns use to act differently on their first attempt (a marker file per task)."""
    return tmp_path


def _directory_on_sys_path(tmp_path: Path, monkeypatch, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An extra site-packages directory on sys.path."""
    return _directory_on_sys_path(tmp_path, monkeypatch, "site-packages")


@pytest.fixture
def local_dir(tmp_path, monkeypatch):
    """A project directory on sys.path: its modules are local, not installed."""
    return _directory_on_sys_path(tmp_path, monkeypatch, "project")


@pytest.fixture
def load(monkeypatch):
    """import a module for one test: it leaves sys.modules afterwards."""

    def load(name: str):
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.invalidate_caches()
        module = importlib.import_module(name)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return load
