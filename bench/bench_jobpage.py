"""What a job's page costs the job: 2,000 elements of 60 ms on 2 workers (a minute), with no
page asked for, with its page made but no one looking, and with the page open in Chromium
(updating itself each second), rounds interleaving the three; a cluster of this process.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

import gpar
from gpar import cluster

ROUNDS = 3
ELEMENTS, ELEMENT_S = 2_000, 0.06


def element(x):
    time.sleep(ELEMENT_S)
    return x


def job_s(watch) -> float:
    """Seconds from submit to the results, ``watch`` looking on meanwhile."""
    os.environ["GPAR_JOB_PAGE"] = "off" if watch.quiet else ""
    started = time.perf_counter()
    job = gpar.submit(range(ELEMENTS), element, progress=False)
    watcher = watch(job)
    job.result()
    elapsed = time.perf_counter() - started
    watcher.close()
    return elapsed


class _Nothing:
    """No page: none asked for, none printed (GPAR_JOB_PAGE=off while the job starts)."""

    quiet = True

    def __init__(self, job):
        pass

    def close(self):
        return None


class _PageMade(_Nothing):
    quiet = False

    def __init__(self, job):
        job.url  # noqa: B018  (the page server runs; no one asks it anything)


def main() -> None:
    from playwright.sync_api import sync_playwright

    cluster.connect("local")
    gpar.apply(range(100), abs, progress=False)  # warm workers
    chromium_path = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path,
                                             args=["--no-sandbox"])

        class _PageOpen(_Nothing):
            quiet = False

            def __init__(self, job):
                self.page = browser.new_page()
                self.page.goto(job.url)

            def close(self):
                self.page.close()

        methods = {"no page": _Nothing, "page made, not open": _PageMade,
                   "page open in Chromium": _PageOpen}
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(ROUNDS):
            for name, watch in methods.items():
                times[name].append(job_s(watch))
        browser.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["no page"]
    lines = [
        "## What a job's page costs the job (`bench/bench_jobpage.py`)",
        "",
        f"{ELEMENTS:,} elements of {ELEMENT_S * 1e3:.0f} ms on a cluster of the process "
        f"(2 CPUs), medians of {ROUNDS} rounds interleaving the three; the page updates "
        "itself each second while open.",
        "",
        "| job | seconds | × no page |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {seconds:.2f} | {seconds / base:.3f} |"
              for name, seconds in medians.items()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
