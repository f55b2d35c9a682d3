"""The caller's manifest: the modules in ``sys.modules``, mapped to distributions and local files.

A loaded top-level module whose file lies in a site-packages directory belongs to the
distribution whose RECORD lists it; the distributions are then closed over their requirements
(markers evaluated for this interpreter). A module whose file lies outside site-packages and the
standard library is local: the script's helpers, a package in the working tree, an editable
install. Never shipped: the standard library, Ray and what Ray itself requires (the cluster runs
Ray already), and the installer (pip, setuptools, wheel).

Modules the caller's code will import but has not (``import pandas`` inside fn: imports.py finds
them) are resolved the same way without importing them: ``find_spec`` of the top-level name
gives the file or directory, and the site index the distribution. A local module found so is
shipped like a loaded one, and read in turn for what it imports. A name nothing provides is
listed as ``unresolved``, for the caller to be warned.

Computing the manifest again with nothing changed costs about a millisecond: every file read is
cached by its (path, mtime, size), and a site directory's index of distributions by its mtime,
which changes whenever a distribution is installed, reinstalled or removed (pip replaces the
whole .dist-info directory). A local file's cache also keys on its inode and change time, and
trusts only a read made once the file had settled: an edit of the same size within one tick of
the clock, or one whose old mtime a tool restored, leaves mtime and size as they were.
"""

from __future__ import annotations

import csv
import email.message
import email.parser
import functools
import hashlib
import importlib.util
import os
import pickle
import platform
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

from envpack import _boot
from envpack.imports import Import, imports_in_source, is_standard_library, top_level
from envpack.records import Distribution, LocalModule, Manifest

#: Installed with the interpreter and loaded by .pth hooks, not by the caller's code.
INSTALLER = frozenset({"pip", "setuptools", "wheel"})


def manifest(requested: Iterable[str] = (), imports: Iterable[Import] = (),
             runtime: Collection[str] = ()) -> Manifest:
    """The manifest of this process as it is now, with the ``requested`` distributions (and
    what they require) even if nothing imported them yet, and what ``imports`` (found in the
    caller's code) will load. ``runtime``: top-level modules whose own imports are not read
    (gpar and envpack: their requirements are known)."""
    sites = site_directories()
    indexes = {site: _site_index(site) for site in sites}
    index = _installed(indexes.values())
    excluded = _closure(index, {"ray": "ray"}).keys() | INSTALLER
    local: dict[str, LocalModule] = {}
    if isinstance(requested, str):
        raise TypeError(f"packages= takes a list of distribution names, e.g. [{requested!r}]")
    roots = {_distribution_named(name, index, indexes.values()): "named in packages="
             for name in requested}
    unknown = sorted(name for name in roots if name not in index)
    if unknown:
        raise ValueError(f"packages= names distributions not installed here: {unknown}")
    staged = set(_boot.staged_paths())
    for name, path in loaded_top_levels():
        site = _site_of(path, sites)
        owners = _owners_of(name, indexes[site]) if site is not None else ()
        for dist in owners:
            if dist not in excluded:
                roots.setdefault(dist, f"loaded: import {name}")
        # a staged local layer stays local; a namespace package counts once, its first part
        if (not owners and name not in local
                and (site is None or site in staged) and not _in_stdlib(path)):
            local[name] = _local_module(name, path)
    unresolved = _add_imports(imports, sites, indexes, roots, local, set(runtime))
    distributions = tuple(
        _distribution(index[name], why) for name, why in sorted(_closure(index, roots).items())
        if name not in excluded
    )
    ray = index.get("ray")
    return Manifest(
        python_version=platform.python_version(),
        implementation=sys.implementation.name,
        platform=sysconfig.get_platform(),
        distributions=distributions,
        local_modules=tuple(local[name] for name in sorted(local)),
        ray_version=ray.version if ray else "",
        unresolved=unresolved,
    )


def callers_code(runtime: Collection[str] = ()) -> Callable[[str], bool]:
    """A test of a module name: is that module the caller's own code, whose imports are read
    (``__main__``, a module pickled by value, a local module), rather than installed code,
    the standard library or the ``runtime``?"""
    sites = site_directories()

    def is_callers(name: str) -> bool:
        top = top_level(name)
        if top in runtime or is_standard_library(name):
            return False
        module = sys.modules.get(name) or sys.modules.get(top)
        if name == "__main__" or module is None:
            return True
        path = getattr(module, "__file__", None)
        return bool(path) and _site_of(path, sites) is None and not _in_stdlib(path)

    return is_callers


def _add_imports(imports: Iterable[Import], sites: tuple[str, ...],
                 indexes: dict[str, _SiteIndex], roots: dict[str, str],
                 local: dict[str, LocalModule], runtime: set[str]) -> tuple[tuple[str, str], ...]:
    """Add what ``imports`` load to ``roots`` (distribution -> why) and ``local``; the local
    modules they name are read for their own imports in turn. Returns what nothing provides,
    (top-level name, where), once per name."""
    staged = set(_boot.staged_paths())
    pending, seen, read = list(imports), set(), set()
    unresolved: dict[str, str] = {}
    while pending:
        found = pending.pop(0)
        top = top_level(found.name)
        if found.name in seen or is_standard_library(found.name) or top in runtime:
            continue
        seen.add(found.name)
        path = _import_path(top)
        if path is None:
            unresolved.setdefault(top, found.where)
            continue
        if not path:  # built into the interpreter
            continue
        site = _site_of(path, sites)
        owners = _import_owners(found.name, indexes[site]) if site is not None else ()
        for dist in owners:
            roots.setdefault(dist, f"imported by {found.where}: import {found.name}")
        if owners or not (site is None or site in staged) or _in_stdlib(path):
            continue
        local.setdefault(top, _local_module(top, path))
        if top not in read:
            read.add(top)
            pending.extend(_local_imports(local[top]))
    return tuple(sorted(unresolved.items()))


def _import_path(top: str) -> str | None:
    """The file or package directory ``top`` would be imported from, without importing it;
    "" for a module built into the interpreter; None if nothing provides it."""
    module = sys.modules.get(top)
    if module is not None:
        path = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", None) or ())
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        path = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or ())
    if path and locations:
        return os.path.dirname(path)
    return path or (locations[0] if locations else "")


def _import_owners(name: str, site_index: _SiteIndex) -> tuple[str, ...]:
    """The distributions that provide ``name``: by its second level first, for a namespace
    package several share (``google.protobuf``)."""
    parts = name.split(".")
    if len(parts) > 1 and f"{parts[0]}.{parts[1]}" in site_index.owners:
        return site_index.owners[f"{parts[0]}.{parts[1]}"]
    return site_index.owners.get(parts[0], ())


def _local_imports(module: LocalModule) -> list[Import]:
    """The imports of every Python file of a local module, labelled by file."""
    base = os.path.dirname(module.path)
    found = []
    for path in _source_files(module.path):
        if path.endswith(".py"):
            relative = os.path.relpath(path, base)
            found.extend(Import(i.name, relative + i.where[len(path):])
                         for i in _file_imports(path))
    return found


_file_import_cache: dict[str, tuple[tuple[int, ...] | None, tuple[Import, ...]]] = {}


def _file_imports(path: str) -> tuple[Import, ...]:
    _, key, cached = _read_key(path, _file_import_cache)
    if cached is not None:
        return cached
    found = imports_in_source(path)
    _file_import_cache[path] = (key, found)
    return found


def _distribution_named(name: str, index: Collection[str],
                        site_indexes: Iterable[_SiteIndex]) -> str:
    """The distribution ``name`` means: itself, or the one installing the import name
    (packages=["yaml"] means PyYAML, ["sklearn"] scikit-learn)."""
    if canonical(name) in index:
        return canonical(name)
    owners = {dist for site_index in site_indexes for dist in site_index.owners.get(name, ())}
    return owners.pop() if len(owners) == 1 else canonical(name)


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def site_directories() -> tuple[str, ...]:
    """Directories on sys.path where installed distributions live, in import order: site
    directories, and the layers staged into this process when it is a worker (a nested call
    ships what it runs with)."""
    staged = set(_boot.staged_paths())
    return tuple(
        entry for entry in sys.path
        if (os.path.basename(entry) in ("site-packages", "dist-packages") or entry in staged)
        and os.path.isdir(entry)
    )


def loaded_top_levels() -> Iterator[tuple[str, str]]:
    """(top-level name, file or package directory) of each loaded module not built in."""
    for name, module in list(sys.modules.items()):
        if "." in name or name in sys.stdlib_module_names or name.startswith("__"):
            continue  # __main__ goes by value; __editable__ finders are install machinery
        path = getattr(module, "__file__", None)
        if path:
            yield name, os.path.dirname(path) if hasattr(module, "__path__") else path
            continue
        for entry in getattr(module, "__path__", None) or ():  # a namespace package
            yield name, entry


# -- installed distributions --------------------------------------------------------------------


@dataclass(frozen=True)
class _Installed:
    """One .dist-info directory, read once per change of its RECORD."""

    name: str
    version: str
    location: str
    record_sha256: str
    size_bytes: int
    pure: bool
    top_levels: tuple[str, ...]
    requires: tuple[str, ...]  # Requires-Dist lines, parsed only when the closure reaches it


@dataclass(frozen=True)
class _SiteIndex:
    distributions: dict[str, _Installed]  # canonical name -> distribution
    owners: dict[str, tuple[str, ...]]  # top-level import name -> canonical names


_site_indexes: dict[str, tuple[int, _SiteIndex]] = {}
_dist_infos: dict[str, tuple[tuple[int, int], _Installed]] = {}


def _installed(indexes: Iterable[_SiteIndex]) -> dict[str, _Installed]:
    """Every distribution importable here by canonical name; the first on sys.path wins."""
    index: dict[str, _Installed] = {}
    for site_index in indexes:
        for name, dist in site_index.distributions.items():
            index.setdefault(name, dist)
    return index


def _site_index(site: str) -> _SiteIndex:
    mtime = os.stat(site).st_mtime_ns  # changes with every install: pip replaces .dist-info
    cached = _site_indexes.get(site) or _stored_site_index(site)
    if cached and cached[0] == mtime:
        _site_indexes[site] = cached
        return cached[1]
    distributions: dict[str, _Installed] = {}
    owners: dict[str, list[str]] = {}
    with os.scandir(site) as entries:
        for entry in entries:
            if entry.name.endswith(".dist-info") and entry.is_dir():
                dist = _read_dist_info(entry.path)
                if dist is None:
                    continue
                distributions.setdefault(dist.name, dist)
                for top in dist.top_levels:
                    owners.setdefault(top, []).append(dist.name)
    index = _SiteIndex(distributions, {name: tuple(dists) for name, dists in owners.items()})
    _site_indexes[site] = (mtime, index)
    if time.time_ns() - mtime > SETTLED_NS and os.stat(site).st_mtime_ns == mtime:
        _store(_site_index_file(site), (mtime, index))  # not one an install is still writing
    return index


#: A site directory changed this recently may be mid-install (a .dist-info without its RECORD
#: yet): its index is kept for this process only, not on disk for later ones.
SETTLED_NS = 2_000_000_000


def _site_index_file(site: str) -> Path:
    digest = hashlib.sha256(f"{sys.executable}\0{site}".encode()).hexdigest()[:24]
    return Path(_boot.cache_root()) / "sites" / digest


def _stored_site_index(site: str) -> tuple[int, _SiteIndex] | None:
    """The index an earlier process made of ``site``: reading every .dist-info of a
    site-packages directory costs a new script ~0.2-0.3 s, its pickle ~1 ms."""
    return _stored(_site_index_file(site))


def _stored(path: Path) -> Any:
    """What ``_store`` left at ``path`` (marked used), or None."""
    try:
        value = pickle.loads(path.read_bytes())
    except Exception:  # none yet, or written by another version of envpack
        return None
    _boot.used(str(path))
    return value


def _store(path: Path, value: Any) -> None:
    """Keep ``value`` for later processes, whole under its final name at once; entries
    unused for KEEP_UNUSED_S go when a new one is made."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(pickle.dumps(value))
        os.replace(temporary, path)
    except OSError:  # a read-only cache: each process works it out again
        return
    _boot.prune(str(path.parent))


def _record_key(location: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(os.path.join(location, "RECORD"))
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _read_dist_info(location: str) -> _Installed | None:
    key = _record_key(location)
    if key is None:
        return None  # not installed from a wheel: nothing tells which files are its own
    cached = _dist_infos.get(location)
    if cached and cached[0] == key:
        return cached[1]
    record = Path(location, "RECORD").read_bytes()
    files = record_files(record)
    headers = _metadata_headers(Path(location, "METADATA"))
    wheel = Path(location, "WHEEL")
    dist = _Installed(
        name=canonical(headers["Name"]),
        version=headers["Version"],
        location=location,
        record_sha256=hashlib.sha256(record).hexdigest(),
        size_bytes=sum(size for _, size in files),
        pure=wheel.exists() and "Root-Is-Purelib: true" in wheel.read_text(),
        top_levels=tuple(sorted(_top_levels(path for path, _ in files))),
        requires=tuple(headers.get_all("Requires-Dist") or ()),
    )
    _dist_infos[location] = (key, dist)
    return dist


_BYTECODE_SUFFIX = f".{sys.implementation.cache_tag}.pyc"


def _metadata_headers(path: Path) -> email.message.Message:
    """METADATA's headers only: its body (the long description) is all a parser would read."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return email.parser.HeaderParser().parsestr(text.split("\n\n", 1)[0])


def record_files(record: bytes, bytecode: bool = False) -> list[tuple[str, int]]:
    """(path relative to the site directory, bytes) of the files a RECORD lists that live in
    the site directory; scripts installed elsewhere (``../../bin``) are left out, and bytecode
    unless ``bytecode`` (then only this interpreter's: ``*.cpython-311.pyc``)."""
    files = []
    for line in record.decode().splitlines():
        if '"' in line:  # a quoted path (one with a comma): let csv read it
            line = ",".join(next(csv.reader([line])))
        path, _, size = line.rsplit(",", 2) if line.count(",") >= 2 else (line, "", "")
        if not path or path.startswith(("..", "/")):
            continue
        if "__pycache__" in path and not (bytecode and path.endswith(_BYTECODE_SUFFIX)):
            continue
        files.append((path, int(size) if size.isdigit() else 0))
    return files


def _top_levels(paths: Iterable[str]) -> set[str]:
    """Import names a distribution installs: top-level ones, and (for namespace packages that
    several distributions share, like ``google``) each package's second level too."""
    tops = set()
    for path in paths:
        parts = path.split("/")
        if parts[0].endswith((".dist-info", ".data", ".pth")):
            continue
        top = parts[0].split(".", 1)[0]  # "six.py", "_cffi.cpython-311-x86_64.so" -> module
        tops.add(top)
        second = parts[1].split(".", 1)[0] if len(parts) > 1 else "__init__"
        if second != "__init__" and (len(parts) > 2 or parts[1].endswith(".py")):
            tops.add(f"{top}.{second}")
    return tops


def _owners_of(name: str, site_index: _SiteIndex) -> tuple[str, ...]:
    """The distributions that provide the loaded top-level module ``name``. For a namespace
    package several distributions share (``google``: protobuf, google-auth ...), only those
    whose subpackages are loaded: importing google.protobuf does not use google-auth."""
    owners = site_index.owners.get(name, ())
    if len(owners) <= 1 or getattr(sys.modules.get(name), "__file__", None):
        return owners
    loaded = [module for module in list(sys.modules)
              if module.startswith(f"{name}.") and module.count(".") == 1]
    used = dict.fromkeys(dist for module in loaded for dist in site_index.owners.get(module, ()))
    return tuple(used) or owners


_closures: dict[str, dict[tuple, dict[str, str]]] = {}  # index digest -> roots -> closure


def _closure(index: dict[str, _Installed], roots: dict[str, str]) -> dict[str, str]:
    """The installed distributions reachable from ``roots`` (name -> why) through requirements,
    with why each is included; cached in memory and on disk by the installed distributions
    (evaluating markers is the slow part: ~0.15 s for Ray's requirements alone)."""
    digest = hashlib.sha256(" ".join([*(dist.record_sha256 for dist in index.values()),
                                      repr(sorted(default_environment().items()))])
                            .encode()).hexdigest()[:24]  # markers are evaluated against it
    if digest not in _closures:
        _closures[digest] = _stored(_closures_file(digest)) or {}
    known, key = _closures[digest], tuple(sorted(roots.items()))
    if key not in known:
        known[key] = _reach(index, roots)
        _store(_closures_file(digest), known)
    return known[key]


def _closures_file(digest: str) -> Path:
    return Path(_boot.cache_root()) / "closures" / f"{sys.implementation.cache_tag}-{digest}"


def _reach(index: dict[str, _Installed], roots: dict[str, str]) -> dict[str, str]:
    reached = {name: why for name, why in roots.items() if name in index}
    stack = [(name, frozenset()) for name in reached]
    seen_extras: set[tuple[str, frozenset]] = set()
    while stack:
        name, extras = stack.pop()
        if (name, extras) in seen_extras:
            continue
        seen_extras.add((name, extras))
        for requirement in _parsed(index[name].requires):
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            required = canonical(requirement.name)
            if required not in index:
                continue
            reached.setdefault(required, f"required by {name}")
            stack.append((required, frozenset(requirement.extras)))
    return reached


@functools.lru_cache(maxsize=1024)
def _parsed(requires: tuple[str, ...]) -> tuple[Requirement, ...]:
    parsed = []
    for text in requires:
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement:  # a broken line in someone's METADATA: not ours to refuse
            continue
    return tuple(parsed)


def _distribution(dist: _Installed, why: str) -> Distribution:
    return Distribution(dist.name, dist.version, dist.record_sha256, dist.size_bytes, dist.pure,
                        dist.location, dist.top_levels, why)


def _site_of(path: str, sites: Iterable[str]) -> str | None:
    for site in sites:
        if path.startswith(site + os.sep):
            return site
    return None


_STDLIB = tuple(
    os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")
)


def _in_stdlib(path: str) -> bool:
    return os.path.realpath(path).startswith(_STDLIB) or path.startswith(_STDLIB)


# -- local modules ------------------------------------------------------------------------------

_file_hashes: dict[str, tuple[tuple[int, ...] | None, str]] = {}


def _local_module(name: str, path: str) -> LocalModule:
    base = os.path.dirname(path)
    files = tuple(
        (os.path.relpath(file, base), *_hash_file(file)) for file in sorted(_source_files(path))
    )
    return LocalModule(name, path, files)


def _source_files(path: str) -> Iterator[str]:
    """The file itself, or every file of a package directory but bytecode and hidden ones."""
    if not os.path.isdir(path):
        yield path
        return
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and not name.endswith((".pyc", ".pyo")):
                yield os.path.join(folder, name)


def _hash_file(path: str) -> tuple[str, int]:
    stat, key, cached = _read_key(path, _file_hashes)
    if cached is None:
        content = Path(path).read_bytes()
        cached = hashlib.sha256(content).hexdigest()
        _file_hashes[path] = (key, cached)
        _forget_stale_bytecode(path, stat)
    return cached, stat.st_size


def _read_key(path: str, cache: dict[str, tuple[Any, Any]]
              ) -> tuple[os.stat_result, tuple[int, ...] | None, Any]:
    """``path``'s stat, the key to cache what is read from it now under, and what ``cache``
    holds for it (None: read it). The key is None while the file has not settled: its
    timestamps are too recent to tell a later same-size edit apart, so it is read again."""
    before = time.time_ns()
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
    cached = cache.get(path)
    if cached is not None and cached[0] == key:
        return stat, key, cached[1]
    changed = max(stat.st_mtime_ns, stat.st_ctime_ns)
    tick = SETTLED_NS if changed % 1_000_000_000 == 0 else FINE_TICK_NS  # whole seconds kept
    return stat, key if before - changed > tick else None, None


#: How far a file's timestamps may lag a change on filesystems that keep nanoseconds (the
#: kernel stamps files from a clock that advances in ticks of a few milliseconds).
FINE_TICK_NS = 100_000_000


def _forget_stale_bytecode(path: str, stat: os.stat_result) -> None:
    """Remove the bytecode Python cached for ``path`` if Python would run it though it was
    written before the file last changed. Python checks it by the file's mtime in whole
    seconds and its size only: after a same-size edit within a second (or one whose mtime a
    tool restored) every process, the workers included, would go on running the old code."""
    if not path.endswith(".py"):
        return
    try:
        bytecode = importlib.util.cache_from_source(path)
        with open(bytecode, "rb") as stream:
            header = stream.read(16)
            written_ns = os.fstat(stream.fileno()).st_mtime_ns
    except (OSError, ValueError, NotImplementedError):  # none, or not cached for this Python
        return
    source = (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
    if (len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER
            or int.from_bytes(header[4:8], "little") != 0  # checked by the source's hash
            or (int.from_bytes(header[8:12], "little"),
                int.from_bytes(header[12:16], "little")) != source  # Python recompiles it
            or written_ns > max(stat.st_mtime_ns, stat.st_ctime_ns)):  # of the file as it is
        return
    try:
        os.unlink(bytecode)
    except OSError:
        pass
