"""A Ray cluster whose workers run a second virtualenv holding only Ray: nothing of the caller's.

The virtualenv is built once per Ray and Python version and kept in the user's cache directory
(a clean install takes ~40 s). It also holds an OLDER python-dateutil than the project's, so a
test can check that a worker runs the caller's version, not the one it has.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import platformdirs

#: Older than the project's python-dateutil (4.x): the worker must not run this one.
OLDER_DATEUTIL = "2.9.0.post0"
READY_LINE = "Ray runtime started"
#: Ray's token: ``ray start`` turns token authentication on by itself when this file exists.
TOKEN_PATH = Path.home() / ".ray" / "auth_token"
START_TIMEOUT_S = 60


def bare_venv() -> Path:
    """The virtualenv with Ray (the caller's version) and the older python-dateutil only."""
    ray_version = importlib.metadata.version("ray")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = Path(platformdirs.user_cache_dir("gpar-tests")) / (
        f"bare-ray{ray_version}-py{python}-dateutil{OLDER_DATEUTIL}")
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=root.parent, prefix=".building-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", f"ray=={ray_version}",
             f"python-dateutil=={OLDER_DATEUTIL}"],
            check=True, timeout=900)
        (building / ".complete").write_text("ok\n")
        with contextlib.suppress(OSError):  # another session finished first: keep theirs
            building.rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root


@contextlib.contextmanager
def running_cluster(venv: Path, worker_cache: Path, **env_overrides: str) -> Iterator[str]:
    """``ray start --head`` from ``venv`` on loopback, as a user starts it: token authentication
    on by Ray's default (a token exists; ``env_overrides`` may say otherwise); yields its
    address; stopped by SIGTERM to its own process (never ``ray stop``, which would kill every
    Ray on the machine)."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="gpar-bare-", dir="/tmp")
    log_path = Path(temp_dir) / "ray-start.log"
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")
           and not key.startswith("RAY_AUTH_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", ENVPACK_CACHE_DIR=str(worker_cache),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", **env_overrides)
    if not TOKEN_PATH.exists():  # a fresh machine: the first Ray of the session writes one
        subprocess.run([str(venv / "bin" / "python"), "-m", "ray.scripts.scripts",
                        "get-auth-token", "--generate"], env=env, check=True,
                       capture_output=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", "ray.scripts.scripts", "start", "--head",
             "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp_dir}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=temp_dir)
    try:
        _wait_until_started(process, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_until_started(process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if READY_LINE in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{text}")
        time.sleep(0.2)  # polling a log file: there is no event to wait on
    raise RuntimeError(f"ray start not ready after {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
