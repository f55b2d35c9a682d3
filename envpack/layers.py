"""Layers: one zip archive per distribution and per local top-level module, content-addressed.

A layer's digest comes from what it holds (a distribution's name, version and RECORD hash; a
local module's file hashes), so a change to one package re-ships one layer, and building a layer
that is already in the cache costs a ``stat`` and a ``utime`` (which marks it used). Archives
are written to a temporary name and renamed into place: a reader never sees half an archive,
and two builders of one layer agree.
A distribution's layer carries its bytecode for the caller's Python (``__pycache__``) and the
source files' modification times, which the worker restores so that the bytecode stays valid:
workers often cannot or must not write bytecode (PYTHONDONTWRITEBYTECODE), and compiling pandas
on every import costs ~1.7 s here. Compression is zlib level 1: about a third of the size of
stored files at ~40 MB/s here, and a layer crosses the network once per node (pyarrow: 176 MB
stored in 1.3 s, 63 MB at level 1 in 5.4 s; building happens once per version, shipping once
per node).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from envpack import _boot
from envpack.discover import record_files
from envpack.errors import LayerTooLarge
from envpack.records import Distribution, LocalModule

#: Largest layer: Ray's limit for one package in its object directory (GCS_STORAGE_MAX_SIZE,
#: the gRPC message limit of 512 MiB); beyond it a layer is better installed on the cluster.
MAX_LAYER_BYTES = 512 * 1024 * 1024
#: Changes whenever what a layer holds changes shape: archives of an older format are not reused.
FORMAT = 2


@dataclass(frozen=True)
class Layer:
    """One archive of the image: a distribution or a local top-level module."""

    name: str
    version: str  # "local" for local modules
    digest: str
    size_bytes: int  # before compression
    source: Distribution | LocalModule

    @property
    def filename(self) -> str:
        return f"{self.digest}.zip"


def layer_of(item: Distribution | LocalModule) -> Layer:
    """The layer that ships ``item``; raises LayerTooLarge if Ray cannot carry it."""
    if isinstance(item, Distribution):
        version, identity = item.version, ["distribution", item.name, item.version,
                                           item.record_sha256, FORMAT]
    else:
        version, identity = "local", ["local", item.name, item.content_sha256, FORMAT]
    if item.size_bytes >= MAX_LAYER_BYTES:
        raise LayerTooLarge(
            f"{item.name} ({version}) is {item.size_bytes / 2**20:.0f} MiB, over the "
            f"{MAX_LAYER_BYTES / 2**20:.0f} MiB Ray carries in one piece; install it on the "
            "cluster's workers instead (then it is not shipped), or leave it out of packages=."
        )
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    return Layer(item.name, version, digest, item.size_bytes, item)


def build(layer: Layer, directory: Path) -> tuple[Path, bool]:
    """The layer's archive in ``directory`` and whether it was built now (False: cached)."""
    path = directory / layer.filename
    if path.exists():
        _boot.used(str(path))
        return path, False
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{layer.digest}-")
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(
            stream, "w", zipfile.ZIP_DEFLATED, compresslevel=1
        ) as archive:
            members = _members(layer.source)
            for source, name in members:
                archive.write(source, name)
            archive.writestr(_boot.MTIMES, json.dumps(
                {name: os.stat(source).st_mtime_ns for source, name in members
                 if name.endswith(".py")}))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    _boot.prune(str(directory))
    return path, True


def _members(item: Distribution | LocalModule) -> list[tuple[str, str]]:
    """(file on disk, name in the archive) of what a layer holds; names are relative to the
    directory the worker puts on sys.path."""
    if isinstance(item, LocalModule):
        base = os.path.dirname(item.path)
        return [(os.path.join(base, name), name) for name, _, _ in item.files]
    site = os.path.dirname(item.location)
    record = Path(item.location, "RECORD").read_bytes()
    return [(os.path.join(site, name), name) for name, _ in record_files(record, bytecode=True)
            if os.path.isfile(os.path.join(site, name))]
