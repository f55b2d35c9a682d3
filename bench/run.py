"""Run bench/bench_*.py scripts and rewrite BENCHMARKS.md from what they print.

Each benchmark runs in its own interpreter (its own embedded Ray), measures gpar and its peers
side by side in that one run, and prints a Markdown section that names its script.
``python bench/run.py apply demo`` re-runs bench_apply.py and bench_demo.py only and keeps the
other sections as they were; with no names, every benchmark runs.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["ray", "cloudpickle", "numpy", "joblib", "duckdb", "deltalake", "pyarrow", "polars"]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # polars comes with the bench extra only
        return "not installed"


def main(names: list[str]) -> None:
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    chosen = [s for s in scripts if not names or s.stem.removeprefix("bench_") in names]
    sections = _sections_on_file()
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    stamp = (f"_{datetime.date.today().isoformat()}; {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, {versions}._")
    # This checkout's gpar, not the one installed in the venv (a git worktree shares it).
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    for script in chosen:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        completed = subprocess.run([sys.executable, str(script)], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, check=True, env=env)
        sections[script.name] = completed.stdout.strip() + "\n\n" + stamp
    header = (
        "# Benchmarks\n\n"
        "Written by `make bench` (`python bench/run.py [name ...]`). Each section comes from one "
        "run of its script, gpar and its peers measured side by side on the same machine in that "
        "run; the line under it says when and with what.\n"
    )
    body = [sections[s.name] for s in scripts if s.name in sections]
    (ROOT / "BENCHMARKS.md").write_text(header + "\n" + "\n\n".join(body) + "\n")


def _sections_on_file() -> dict[str, str]:
    """The sections BENCHMARKS.md holds now, by the script each names in its heading."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else ""
    found = {}
    for section in re.split(r"\n(?=## )", text)[1:]:
        script = re.search(r"`bench/(bench_\w+\.py)`", section.splitlines()[0])
        if script:
            found[script.group(1)] = section.strip()
    return found


if __name__ == "__main__":
    main(sys.argv[1:])
