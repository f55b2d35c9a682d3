"""Run every bench/bench_*.py as a script and rewrite BENCHMARKS.md from what they print.

Each benchmark runs in its own interpreter (its own embedded Ray), measures gpar and its peers
side by side in that one run, and prints a Markdown section.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["ray", "cloudpickle", "numpy", "joblib"]


def main() -> None:
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    sections = []
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        completed = subprocess.run([sys.executable, str(script)], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, check=True)
        sections.append(completed.stdout.strip())
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    header = (
        "# Benchmarks\n\n"
        "Written by `make bench` (`python bench/run.py`); every number below comes from that one "
        "run, gpar and its peers measured side by side on the same machine.\n\n"
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {versions}; "
        f"{datetime.date.today().isoformat()}.\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(header + "\n" + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
