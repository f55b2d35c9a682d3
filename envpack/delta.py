"""Which parts of the manifest a cluster's workers lack: the delta that is shipped."""

from __future__ import annotations

import importlib.machinery
import os
import socket
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from envpack import _boot
from envpack.discover import canonical
from envpack.records import Distribution, LocalModule, Manifest


@dataclass(frozen=True)
class WorkerFacts:
    """What a probe task found on a worker (see _boot.probe)."""

    ray_version: str
    python_version: str
    implementation: str
    platform: str
    host: str
    executable: str
    distributions: tuple[tuple[str, str], ...]  # (canonical name, version)
    node_hosts: tuple[str, ...] = ()  # every live node's host: the probe saw only one
    search_path: tuple[str, ...] = ()  # the worker's sys.path, absolute

    def imports_callers_file(self, module: LocalModule) -> bool:
        """Whether the workers import ``module`` from the caller's own file: the caller's
        interpreter, and the module found by an import hook both share (an editable install)
        or in a directory on the workers' sys.path (one the caller added to its own sys.path
        at run time is not)."""
        if not self.runs_callers_interpreter():
            return False
        if importlib.machinery.PathFinder.find_spec(module.name) is None:  # an import hook
            return True
        return os.path.dirname(os.path.abspath(module.path)) in self.search_path

    def runs_callers_interpreter(self) -> bool:
        """Same host and same interpreter: the worker imports the caller's local modules from
        the same files (the embedded local cluster, or one started from the caller's venv).
        Not so for a caller that is itself a worker running staged layers, nor when some
        node of the cluster is another host."""
        here = socket.gethostname()
        same_executable = os.path.abspath(self.executable) == os.path.abspath(sys.executable)
        return (self.host == here and same_executable  # abspath: not realpath, venvs share it
                and all(host == here for host in self.node_hosts)
                and not _boot.staged_paths())


def select(
    manifest: Manifest,
    facts: WorkerFacts,
    packages: str | Sequence[str],
    always: Collection[str] = (),
) -> tuple[Distribution | LocalModule, ...]:
    """What to ship: distributions missing on the workers or at another version, and local
    modules the workers would not import from the caller's own files; ``packages`` is "auto" (all of
    it), "none" (nothing) or the distributions to consider. Whatever provides a top-level
    module named in ``always`` ships in every mode when the workers lack it (the runtime that
    verifies the image on the worker)."""
    have = dict(facts.distributions)
    local = [module for module in manifest.local_modules
             if not facts.imports_callers_file(module)]
    named = {canonical(name) for name in packages} if not isinstance(packages, str) else set()

    def wanted(item: Distribution | LocalModule) -> bool:
        provides = item.top_levels if isinstance(item, Distribution) else (item.name,)
        if any(name in always for name in provides):
            return True
        if packages == "none":
            return False
        return packages == "auto" or isinstance(item, LocalModule) or item.name in named

    lacking = [d for d in manifest.distributions if have.get(d.name) != d.version]
    return tuple(item for item in (*lacking, *local) if wanted(item))
