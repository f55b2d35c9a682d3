"""Getting the image onto a Ray cluster: the only module of envpack that uses Ray.

Why this mechanism. Ray's own package shipping (``py_modules``/``working_dir`` with local
paths) is accepted only when the driver connects (``ray.init``), not per task, and gpar builds
the image per call on a cluster that is already connected; per task Ray takes only URIs of
packages already uploaded, which needs Ray's private upload functions. ``pip``/``uv`` runtime
envs need a package registry reachable from every node and ~10 s per environment. So:

* each layer's archive is put in the object store once per connection (``ray.put``; the
  reference is kept here by digest, so a second job ships nothing);
* tasks run ``_boot.run_staged``, pickled by value, which fetches each layer only on nodes that
  have not unpacked it yet, unpacks it into a node-local directory named by its digest and puts
  the layers first on sys.path before importing the real task;
* a task-level ``runtime_env`` sets ENVPACK_IMAGE to the layers' digest: the one per-task
  runtime_env field Ray accepts that needs no upload, and it makes Ray run the task only in
  worker processes started for that image, never in one that already imported an older version.

Measured with bench/bench_envpack.py (numpy, pandas, pyarrow and their kin to workers that
have only Ray): the first job 18-23 s on this 2-core machine (image step ~7 s of it, mostly
compressing pyarrow once; then Ray's worker start, unpacking and imports), a second job
~0.05 s with an image step of 3-8 ms. Ray's py_modules given the same package directories does
not even import numpy there: a wheel installs files beside the package (numpy.libs).

When the workers run the caller's interpreter on the caller's host (the embedded cluster), the
delta is normally empty: no layer, no runtime_env, and tasks run in Ray's ordinary worker
processes; the step then costs the warm manifest, a few ms. Those processes import the caller's
local modules from the caller's files; one that imported a module the caller has since edited
drops it when the image check names other contents (checks.py). A runtime_env per edit would
do it too, but workers outside Ray's default pool are killed when idle and restarted by the
next call (~0.3-0.7 s a call, measured here).

A nested call (fn calling gpar.apply on a worker) ships what its worker was staged with: the
staged directories count as installed distributions and local modules, and their layers are
already in the object store (_boot.STAGED), so nothing is built or sent again.
"""

from __future__ import annotations

import functools
import hashlib
import time
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

from envpack import _boot, discover, imports
from envpack.checks import ImageCheck, check_of
from envpack.delta import WorkerFacts, select
from envpack.errors import UnresolvedImportWarning
from envpack.layers import Layer, build, layer_of


@dataclass(frozen=True)
class ShippedLayer:
    """One layer of a job's image, as the job report shows it."""

    name: str
    version: str
    archive_bytes: int
    built: bool  # False: the archive was in the disk cache
    sent: bool  # False: the cluster already held it from an earlier job


@dataclass(frozen=True)
class ImageReport:
    """What the image step did for one job."""

    digest: str
    layers: tuple[ShippedLayer, ...]
    seconds: float

    @property
    def cache_hit(self) -> bool:
        """Nothing was built or sent for this job."""
        return not any(layer.built or layer.sent for layer in self.layers)


@dataclass(frozen=True)
class StagedImage:
    """A job's image, ready to be used in task submissions."""

    layers: tuple[tuple[str, Any], ...]  # (layer digest, ObjectRef of its archive)
    check: ImageCheck
    runtime_env: dict[str, Any] | None
    report: ImageReport

    def call(self, target: str, refs: Sequence[Any], args: tuple,
             raw: tuple[bytes, ...] = ()) -> StagedCall:
        """A call of ``target`` ("module:function") on a worker through the image, with the
        values of ``refs``, the ``raw`` bytes as they are, then ``args``: what ``start``
        submits, plain data that can be handed to another process to submit."""
        return StagedCall(self.layers, self.runtime_env, target, tuple(refs), raw,
                          cloudpickle.dumps(args))


@dataclass(frozen=True)
class StagedCall:
    """One task through a job's image, ready to submit (see ``start``)."""

    layers: tuple[tuple[str, Any], ...]
    runtime_env: dict[str, Any] | None
    target: str
    refs: tuple[Any, ...]
    raw: tuple[bytes, ...]
    payload: bytes


def start(call: StagedCall, options: dict[str, Any], placement: dict[str, Any] | None = None
          ) -> Any:
    """Submit ``call`` as a task of ``bootstrap(**options)``, placed by ``placement`` (Ray's
    per-task options, such as a scheduling strategy); returns its reference (a streaming
    generator with ``num_returns="streaming"``). Runs where Ray is attached."""
    remote = bootstrap(**options)
    per_task = dict(placement or {})
    if call.runtime_env is not None:
        per_task["runtime_env"] = call.runtime_env
    if per_task:
        remote = remote.options(**per_task)
    return remote.remote(call.layers, call.target, list(call.refs), call.raw, call.payload)


def bootstrap(**ray_options: Any) -> Any:
    """The Ray remote function every staged task runs (``_boot.run_staged``)."""
    return _remote(tuple(sorted(ray_options.items())))


class Cluster(Protocol):
    """Where the image goes: the Ray cluster this process is attached to (``Attached``), or
    one a long-lived driver holds for this process (gpar's local cluster server)."""

    connection_id: str  # object references live as long as this connection

    def probe(self) -> WorkerFacts:
        """What the cluster's workers have; asked once per connection."""

    def put(self, data: bytes) -> Any:
        """Store ``data`` in the cluster's object store; a reference to pass in a call."""


def prepare(packages: str | Sequence[str] = "auto", always: Collection[str] = (),
            code: Iterable[Any] = (), cluster: Cluster | None = None) -> StagedImage:
    """Build what ``cluster`` (default: the one this process is attached to) lacks, put it
    in its object store, and describe it.

    ``code``: the caller's function and arguments: what their code imports is in the image
    too, loaded or not (imports.py); a name nothing here provides is an
    UnresolvedImportWarning, once per name.
    """
    started = time.perf_counter()
    cluster = cluster or Attached()
    named = () if isinstance(packages, str) else packages
    facts = cluster.probe()
    found = imports.imports_reached(code, discover.callers_code(always))
    manifest = discover.manifest(requested=named, imports=found, runtime=always)
    _warn_unresolved(manifest.unresolved)
    items = select(manifest, facts, packages, always)
    layers = [layer_of(item) for item in items]
    shipped, refs = [], []
    for layer in layers:
        ref, archive_bytes, built, sent = _ship(layer, cluster)
        refs.append((layer.digest, ref))
        shipped.append(ShippedLayer(layer.name, layer.version, archive_bytes, built, sent))
    image = hashlib.sha256(" ".join(layer.digest for layer in layers).encode()).hexdigest()[:16]
    runtime_env = {"env_vars": {"ENVPACK_IMAGE": image}} if layers else None
    report = ImageReport(manifest.digest, tuple(shipped), time.perf_counter() - started)
    return StagedImage(tuple(refs), check_of(manifest, always), runtime_env, report)


def _warn_unresolved(unresolved: Sequence[tuple[str, str]]) -> None:
    for name, where in unresolved:
        warnings.warn(
            f"{where} imports {name!r}, which is neither installed nor a local module here, so "
            f"the workers will not get it: install {name!r} here (gpar then ships it), or on "
            "the cluster", UnresolvedImportWarning, stacklevel=6)  # the caller of gpar.apply


def layers_dir() -> Path:
    """Where built archives are kept: beside the layers a worker on this host unpacks."""
    return Path(_boot.cache_root()) / "layers"


class Attached:
    """The Ray cluster this process is attached to (``ray.init`` done, or a Ray worker)."""

    def __init__(self) -> None:
        import ray

        context = ray.get_runtime_context()
        self.connection_id = f"{context.gcs_address}/{context.get_job_id()}"

    def probe(self) -> WorkerFacts:
        return probe()

    def put(self, data: bytes) -> Any:
        import ray

        return ray.put(data)


_facts: dict[str, WorkerFacts] = {}
_refs: dict[tuple[str, str], Any] = {}


def probe() -> WorkerFacts:
    """What the attached cluster's workers have; asked once per connection."""
    import ray

    key = Attached().connection_id
    if key not in _facts:
        _ship_boot_by_value()
        remote = ray.remote(num_cpus=0, max_retries=1)(_boot.probe)
        hosts = tuple(sorted({node["NodeManagerHostname"] for node in ray.nodes()
                              if node["Alive"]}))
        _facts[key] = WorkerFacts(**ray.get(remote.remote()), node_hosts=hosts)
    return _facts[key]


def _ship(layer: Layer, cluster: Cluster) -> tuple[Any, int, bool, bool]:
    """The layer's reference, its archive's size, whether it was built and whether it was
    sent now. A layer this connection sent before, or that this worker process was staged
    with (a nested call), is neither built nor sent again."""
    key = (cluster.connection_id, layer.digest)
    if key not in _refs and layer.digest in _boot.STAGED:
        _refs[key] = (_boot.STAGED[layer.digest], 0)
    if key in _refs:
        ref, size = _refs[key]
        return ref, size, False, False
    path, built = build(layer, layers_dir())
    archive = path.read_bytes()
    _refs[key] = (cluster.put(archive), len(archive))
    return _refs[key][0], len(archive), built, True


@functools.cache
def _remote(options: tuple[tuple[str, Any], ...]) -> Any:
    import ray

    _ship_boot_by_value()
    return ray.remote(**dict(options))(_boot.run_staged)


def _ship_boot_by_value() -> None:
    """A worker may have neither envpack nor gpar: _boot travels as code, not as a name."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(_boot)
