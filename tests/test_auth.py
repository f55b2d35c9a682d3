"""Ray's token as gpar uses it: a private token file, and clusters by address with or without
authentication. (Token-protected clusters by address: tests/test_envpack_cluster.py.)"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from bare_cluster import running_cluster
from conftest import stop_local_clusters

from gpar import auth


def driver_env(home: Path | None = None, **overrides: str) -> dict[str, str]:
    """A new user's environment: none of Ray's settings, no cluster address."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RAY_") and key != "PYTHONPATH"}
    if home is not None:
        env["HOME"] = str(home)
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **overrides}


def run(source: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture
def ray_tmpdir():
    """A short temporary directory for Ray's sessions (its socket paths must stay short)."""
    path = tempfile.mkdtemp(prefix="gpar-auth-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_the_embedded_clusters_new_token_is_readable_by_its_owner_only(tmp_path, ray_tmpdir):
    home = tmp_path / "home"
    home.mkdir()
    state_dir = tmp_path / "state"  # a local cluster of this test's own, started by this HOME
    try:
        completed = run("""
            import gpar
            print(list(gpar.apply([-1, 2], abs, progress=False)))
        """, driver_env(home, RAY_TMPDIR=ray_tmpdir, GPAR_STATE_DIR=str(state_dir)), tmp_path)
    finally:
        stop_local_clusters(state_dir)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[1, 2]"
    token = home / ".ray" / "auth_token"
    assert mode_of(token) == 0o600 and mode_of(token.parent) == 0o700
    assert len(token.read_text()) == 64


def test_an_existing_token_file_is_made_private_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)  # as Ray writes it

    auth.private_default_token()

    assert mode_of(token) == 0o600 and token.read_text() == "a" * 64


def test_a_token_path_that_names_nothing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(auth.ClusterConnectionError, match="RAY_AUTH_TOKEN_PATH=.*missing"):
        auth.token_source()


def test_nothing_listening_at_the_address_is_a_clear_error_at_once(tmp_path):
    completed = run("""
        import socket, gpar
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        try:
            gpar.apply([1], abs, address=f"127.0.0.1:{port}", progress=False)
        except gpar.ClusterConnectionError as error:
            print("refused:", error)
    """, driver_env(), tmp_path)

    assert completed.stdout.startswith("refused: no Ray cluster answers at 127.0.0.1:"), (
        completed.stderr)


@pytest.mark.slow
def test_a_cluster_without_authentication_still_connects(tmp_path):
    """The driver has a token; the cluster wants none. A driver that sent it would also refuse
    the workers' token-less calls, and streamed results would never arrive."""
    project_venv = Path(sys.executable).parent.parent
    with running_cluster(project_venv, tmp_path / "cache", RAY_AUTH_MODE="disabled") as address:
        completed = run(f"""
            import gpar
            def double(x):
                return 2 * x
            print(list(gpar.apply(range(4), double, address={address!r}, progress=False)))
        """, driver_env(), tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[0, 2, 4, 6]"
