"""``envpack show`` and ``envpack build``: the image of a set of modules, from the shell.

    envpack show numpy pandas helpers        what would ship to workers that have only Ray
    envpack show --address HOST:PORT pandas  what would ship to that cluster's workers
    envpack show --script analysis.py        what the script's code imports would ship, and why
    envpack build -o DIR numpy helpers       write the layers and manifest.json to DIR

The modules are imported first, with the current directory on the path (so a script's local
helpers count), exactly as a script that imports them would before calling gpar.apply. A script
is read, not run: every import in its code (its functions' too) is found as gpar.apply finds
fn's, with its directory on the path.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from envpack.delta import WorkerFacts, select
from envpack.discover import manifest
from envpack.imports import Import, imports_in_source
from envpack.layers import build, layer_of
from envpack.records import Distribution, LocalModule, Manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="envpack", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="what the image of these modules holds and ships")
    show.add_argument("modules", nargs="*", help="modules to import first")
    show.add_argument("--address", help="a Ray cluster: show only what its workers lack")
    show.add_argument("--script", type=Path,
                      help="a Python script: add what its code imports (read, not run)")
    make = commands.add_parser("build", help="write the image's layers to a directory")
    make.add_argument("modules", nargs="*", help="modules to import first")
    make.add_argument("-o", "--output", required=True, type=Path, help="directory to write")
    args = parser.parse_args(argv)
    _import(args.modules)
    script = getattr(args, "script", None)
    image = manifest(imports=_script_imports(script) if script else ())
    if args.command == "show":
        facts = _cluster_facts(args.address) if args.address else _bare_workers(image)
        print(describe(image, select(image, facts, "auto"), args.address))
    else:
        print(write(image, args.output))
    return 0


def describe(image: Manifest, shipped: Sequence[Distribution | LocalModule],
             address: str | None = None) -> str:
    """The manifest as a table: each item, its version, size and why it is included."""
    target = f"the workers of {address}" if address else "workers that have only Ray"
    lines = [
        f"image {image.digest[:16]}: Python {image.python_version} ({image.implementation}, "
        f"{image.platform}), Ray {image.ray_version}",
        f"ships to {target}: {len(shipped)} layers, {_size(sum(i.size_bytes for i in shipped))}",
        f"  {'name':<24} {'version':<14} {'size':>9}  why",
    ]
    for item in shipped:
        if isinstance(item, Distribution):
            lines.append(f"  {item.name:<24} {item.version:<14} {_size(item.size_bytes):>9}  "
                         f"{item.why}")
        else:
            lines.append(f"  {item.name:<24} {'local':<14} {_size(item.size_bytes):>9}  "
                         f"local module: {item.path}")
    present = [d for d in image.distributions if d not in shipped]
    if present:
        lines.append("already on the workers: " + ", ".join(
            f"{d.name} {d.version}" for d in present))
    if image.unresolved:
        lines.append("imported but found nowhere here (the workers will lack them too): "
                     + ", ".join(f"{name} (by {where})" for name, where in image.unresolved))
    return "\n".join(lines)


def write(image: Manifest, directory: Path) -> str:
    """Build every layer into ``directory`` with the manifest beside them; say what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in (*image.distributions, *image.local_modules):
        path, built = build(layer_of(item), directory)
        lines.append(f"{'built' if built else 'cached'} {path.name}  {item.name} "
                     f"{_size(path.stat().st_size)}")
    (directory / "manifest.json").write_text(image.to_json())
    lines.append(f"wrote {directory / 'manifest.json'}")
    return "\n".join(lines)


def _import(modules: Sequence[str]) -> None:
    sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (name == exc.name or name.startswith(f"{exc.name}.")):
                raise  # the module is there; something it imports is not
            raise SystemExit(f"envpack: no module {name!r} here. Name modules as `import` "
                             "does (sklearn, not scikit-learn)") from None


def _script_imports(script: Path) -> tuple[Import, ...]:
    """What a script's code imports, its own directory first on the path (as when it runs)."""
    if not script.is_file():
        raise SystemExit(f"envpack: no such script: {script}")
    sys.path.insert(0, str(script.resolve().parent))
    return imports_in_source(str(script))


def _bare_workers(image: Manifest) -> WorkerFacts:
    """Workers with nothing but Python and Ray, on another host."""
    return WorkerFacts(image.ray_version, image.python_version, image.implementation,
                       image.platform, host="", executable="", distributions=())


def _cluster_facts(address: str) -> WorkerFacts:
    import logging

    import ray

    from envpack import stage

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        return stage.probe()
    finally:
        ray.shutdown()


def _size(size_bytes: int) -> str:
    for unit in ("B", "kB", "MB"):
        if size_bytes < 1000:
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1000
    return f"{size_bytes:.1f} GB"
