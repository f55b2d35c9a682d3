"""What runs on a worker before anything of the caller's is importable: the standard library
and Ray only.

stage.py registers this module with Ray's cloudpickle to be pickled by value, so a worker that
has never seen envpack (nor gpar) can run these functions: ``probe`` reports what the worker has,
``run_staged`` unpacks the image's layers and only then imports and calls the real task.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import pickle
import platform
import re
import shutil
import socket
import sys
import sysconfig
import tempfile
import time
import zipfile


def probe() -> dict:
    """What this worker's interpreter has: Python, platform, host, distributions and versions."""
    import ray

    distributions = {}
    staged = set(staged_paths())  # a process that ran a staged task: count only what it has
    installed = [entry for entry in sys.path if entry not in staged]
    for dist in importlib.metadata.distributions(path=installed):
        # the headers only: parsing all of METADATA (its long description) is most of the cost
        text = (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").split("\n\n")[0]
        name = re.search(r"^Name:\s*(\S+)", text, re.MULTILINE)
        version = re.search(r"^Version:\s*(\S+)", text, re.MULTILINE)
        if name and version:
            canonical = re.sub(r"[-_.]+", "-", name.group(1)).lower()
            distributions.setdefault(canonical, version.group(1))
    return {
        "ray_version": ray.__version__,
        "python_version": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "host": socket.gethostname(),
        "executable": sys.executable,
        "distributions": tuple(sorted(distributions.items())),
        "search_path": tuple(os.path.abspath(entry or os.getcwd()) for entry in installed),
    }


def run_staged(layers, target, refs, raw, payload):
    """Stage ``layers`` ((digest, ObjectRef) pairs), then yield from ``target(*ray.get(refs),
    *raw, *pickle.loads(payload))``, ``target`` being "module:function".

    The caller's arguments travel as opaque bytes and references: Ray would otherwise unpickle
    them before this function starts, when the packages their classes need are not there yet.
    ``raw``: bytes the target unpickles itself, when it can (a batch's elements: once its image
    is verified); passed as they are, never pickled again inside ``payload``.
    """
    import ray

    stage(layers, ray.get)
    try:  # the importable envpack, now staged if it was not installed: for nested calls
        importlib.import_module("envpack._boot").STAGED.update(layers)
    except ImportError:
        pass
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    yield from function(*ray.get(list(refs)), *raw, *pickle.loads(payload))


#: Layers staged into this worker process, digest -> ObjectRef: a nested call reuses them.
STAGED: dict = {}


def staged_paths() -> list[str]:
    """The entries of sys.path that are staged layers."""
    root = os.path.join(cache_root(), "unpacked") + os.sep
    return [entry for entry in sys.path if entry.startswith(root)]


def stage(layers, fetch) -> None:
    """Unpack each layer once per node and put the layers first on sys.path, in order.

    Each layer is unpacked into a directory named by its digest, renamed into place when
    complete, under a lock file: another worker of the node waits for it rather than fetching
    and unpacking the same layer at the same time, and finds it whole. Layers go before
    site-packages, so a shipped version wins over an older one the worker has; Ray starts
    processes dedicated to the image (the task's runtime_env names it), so no process that
    imported the older version runs this task. Each layer is marked used; a node that unpacked
    a new one then prunes layers unused for KEEP_UNUSED_S.
    """
    root = os.path.join(cache_root(), "unpacked")
    paths = [os.path.join(root, digest) for digest, _ in layers]
    for path in paths:
        used(path)  # before the pruning below
    unpacked = False
    for (digest, ref), path in zip(layers, paths, strict=True):
        if not os.path.isdir(path):
            with _node_lock(root, digest):
                if not os.path.isdir(path):
                    _unpack(fetch(ref), root, path)
                    unpacked = True
    if unpacked:
        prune(root)
    missing = [path for path in paths if path not in sys.path]
    if missing:
        sys.path[:0] = missing
        importlib.invalidate_caches()


@contextlib.contextmanager
def _node_lock(root: str, digest: str):
    """An exclusive lock on this layer among the node's processes (none where fcntl is not)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{digest}.lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Layers (unpacked on a node, archived on the driver) unused this long are removed when a new
#: one is made there: every edit of a local module makes a new layer.
KEEP_UNUSED_S = 30 * 24 * 3600


def used(path: str) -> None:
    """Mark ``path`` used now: its modification time, which prune() goes by."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(directory: str, keep_s: float = KEEP_UNUSED_S) -> None:
    """Remove what ``directory`` holds that was not used for ``keep_s`` (layers, their lock
    files, temporaries a crash left behind); best effort. A directory is first renamed out of
    its name, so one whose removal is cut short (a killed worker) is never taken for a whole
    layer: what is left keeps its old time and goes at the next prune."""
    cutoff = time.time() - keep_s
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in list(entries):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    doomed = os.path.join(directory, f".pruning-{os.getpid()}-{entry.name}")
                    os.rename(entry.path, doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
                else:
                    os.unlink(entry.path)


#: In a layer: {source file: modification time (ns)} on the caller, restored on unpacking so
#: the bytecode shipped beside the sources is valid here (it records its source's mtime).
MTIMES = ".envpack-mtimes.json"


def _unpack(archive: bytes, root: str, path: str) -> None:
    import io
    import json

    os.makedirs(root, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=root, prefix=".unpacking-")
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as members:
            members.extractall(temporary)
        mtimes = os.path.join(temporary, MTIMES)
        if os.path.exists(mtimes):
            with open(mtimes) as stream:
                for name, mtime_ns in json.load(stream).items():
                    os.utime(os.path.join(temporary, name), ns=(mtime_ns, mtime_ns))
        os.rename(temporary, path)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def cache_root() -> str:
    """ENVPACK_CACHE_DIR, else the user's cache directory (XDG's): the driver's built archives
    and the workers' unpacked layers. Here, as _boot is all a worker has before its image."""
    configured = os.environ.get("ENVPACK_CACHE_DIR")
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "envpack")
