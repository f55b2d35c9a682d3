"""On the worker, before fn runs: does this process see the distributions the caller saw?

A missing distribution or another version would surface as an ImportError or a wrong result
deep inside fn; here it is one EnvironmentMismatch listing each, caller's version against the
worker's, before anything of the caller's runs. Compiled code also needs the caller's Python
minor version and platform.
"""

from __future__ import annotations

import platform
import sys
import sysconfig
from collections.abc import Collection
from dataclasses import dataclass

from envpack.errors import EnvironmentMismatch
from envpack.records import Manifest


@dataclass(frozen=True)
class ImageCheck:
    """What the worker must match: small, pickled into every task."""

    digest: str
    python_minor: str
    implementation: str
    platform: str
    ray_version: str
    distributions: tuple[tuple[str, str, bool], ...]  # (name, version, pure)
    local_modules: tuple[tuple[str, str], ...] = ()  # (top-level name, content sha256)


def check_of(manifest: Manifest, runtime: Collection[str] = ()) -> ImageCheck:
    """``runtime``: top-level modules the task runs before it verifies (the bootstrap, the
    values it unpickles): never forgotten, though local, or their objects would change class."""
    return ImageCheck(
        digest=manifest.digest,
        python_minor=manifest.python_minor,
        implementation=manifest.implementation,
        platform=manifest.platform,
        ray_version=manifest.ray_version,
        distributions=tuple((d.name, d.version, d.pure) for d in manifest.distributions),
        local_modules=tuple((m.name, m.content_sha256) for m in manifest.local_modules
                            if m.name not in runtime),
    )


#: Digests this process has verified: the staged sys.path of a worker process does not change.
_verified: set[str] = set()

#: Each local module's content as the last check this process saw gave it.
_local_contents: dict[str, str] = {}


def verify(check: ImageCheck) -> None:
    """Raise EnvironmentMismatch unless this process matches ``check``."""
    _forget_edited(check.local_modules)
    if check.digest in _verified:
        return
    problems = mismatches(check)
    if problems:
        raise EnvironmentMismatch(describe(problems), problems)
    _verified.add(check.digest)


def _forget_edited(local_modules: tuple[tuple[str, str], ...]) -> None:
    """Where workers import the caller's own files (the embedded cluster), this process may
    hold a module the caller has since edited (and reloaded): then drop every local module and
    its submodules (one that imported the edited module holds its old objects), so that
    unpickling fn imports the files as they are now. (Shipped modules never change under a
    process: each image runs in processes of its own.)"""
    if any(_local_contents.get(name, content) != content for name, content in local_modules):
        _drop({name for name, _ in local_modules})
    _local_contents.update(local_modules)


def forget_local_modules(local_modules: tuple[tuple[str, str], ...] = ()) -> None:
    """Drop every local module this process loaded for earlier checks, and ``local_modules``:
    a worker that outlives a script then runs the next script's code from its files, with
    none of the last script's module state."""
    _drop(set(_local_contents) | {name for name, _ in local_modules})
    _local_contents.clear()


def _drop(names: set[str]) -> None:
    for loaded in [m for m in sys.modules if m.partition(".")[0] in names]:
        del sys.modules[loaded]


def mismatches(check: ImageCheck) -> list[tuple[str, str, str]]:
    """(what, caller's, worker's) for each difference that matters."""
    problems = []
    compiled = [name for name, _, pure in check.distributions if not pure]
    if compiled:
        here = {
            "python": ".".join(platform.python_version().split(".")[:2]),
            "python implementation": sys.implementation.name,
            "platform": sysconfig.get_platform(),
        }
        wanted = {"python": check.python_minor, "python implementation": check.implementation,
                  "platform": check.platform}
        for what, value in wanted.items():
            if here[what] != value:
                problems.append((f"{what} (compiled: {', '.join(compiled)})", value, here[what]))
    import importlib.metadata  # here: `import envpack` stays light

    versions = [("ray", check.ray_version)] if check.ray_version else []
    versions += [(name, version) for name, version, _ in check.distributions]
    for name, version in versions:
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found = "not installed"
        if found != version:
            problems.append((name, version, found))
    return problems


def describe(problems: list[tuple[str, str, str]]) -> str:
    """The mismatch as the user reads it: each difference, then what can fix each kind."""
    lines = [f"  {what}: caller {caller}, worker {worker}" for what, caller, worker in problems]
    interpreter = [what for what, _, _ in problems if " " in what or what == "ray"]
    shippable = [(what, caller) for what, caller, _ in problems if what not in interpreter]
    advice = []
    if shippable:
        pins = " ".join(f"'{what}=={caller}'" for what, caller in shippable)
        advice.append('Ship the distributions with the image (packages="auto", the default, '
                      "or name them in packages=[...]), or install them on the workers: "
                      f"pip install {pins}.")
    if interpreter:
        advice.append(f"{', '.join(interpreter)}: cannot be shipped; run the workers with the "
                      "caller's Python, platform and Ray version.")
    return ("the worker's environment differs from the caller's:\n" + "\n".join(lines) + "\n"
            + "\n".join(advice))
