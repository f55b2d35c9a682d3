"""Deterministic faults: a table says what each task does on each of its attempts.

    FAULTS = {(task, attempt): action}
    action: "exit" | "raise" | "hang" | ("sleep", s) | ("raise_after", s) | ("wait_for", path)

A task learns its attempt number by claiming the next marker file in a shared directory
(a link fails if the name exists, so concurrent attempts of one task, e.g. a backup, get
different numbers). The marker holds the attempt's pid, so a test can kill it or check that
it is gone.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def claim_attempt(marker_dir: str, task: int) -> int:
    """The next attempt number of ``task``. Its marker appears with the pid already in it
    (written aside, then linked into place), so a test never reads one empty."""
    staged = Path(marker_dir) / f"staging-{task}-{os.getpid()}-{threading.get_ident()}"
    staged.write_text(str(os.getpid()))
    attempt = 0
    while True:
        try:
            os.link(staged, Path(marker_dir) / f"{task}.{attempt}")  # fails if it exists
        except FileExistsError:
            attempt += 1
            continue
        staged.unlink()
        return attempt


def pids(marker_dir: str) -> list[int]:
    return [int(p.read_text()) for p in Path(marker_dir).glob("*.*")]


def attempts_of(marker_dir: str, task: int) -> int:
    return len(list(Path(marker_dir).glob(f"{task}.*")))


def faulty(task: int, table: dict, marker_dir: str, work_s: float = 0.0) -> int:
    """Run task ``task`` as ``table`` says for this attempt; return the task number."""
    attempt = claim_attempt(marker_dir, task)
    perform(table.get((task, attempt)), task, attempt)
    time.sleep(work_s)
    return task


def perform(action, task: int, attempt: int) -> None:
    """Do what one entry of a fault table says (None: nothing)."""
    if action == "exit":
        os._exit(1)
    if action == "raise":
        raise RuntimeError(f"task {task} failed on attempt {attempt} as the table says")
    if action == "hang":
        time.sleep(3600)
    if isinstance(action, tuple) and action[0] == "wait_for":  # until the test says go
        wait_until(lambda: Path(action[1]).exists(), HANG_S)
    elif isinstance(action, tuple):
        time.sleep(action[1])
        if action[0] == "raise_after":
            raise RuntimeError(f"task {task} failed on attempt {attempt} as the table says")


#: How long a hung element sleeps: far longer than any job here may take, however loaded the
#: machine (a worker started after a preemption took 15 s under load), so a job that ends
#: sooner did not wait for it.
HANG_S = 600


def hanging(tasks) -> dict:
    """A table in which ``tasks`` hang whenever they run. Every attempt, not the first few:
    waiting elements preempt hung ones in turn, and backups are attempts too, so a job re-runs
    each of them every few seconds."""
    return {(task, attempt): ("sleep", HANG_S) for task in tasks for attempt in range(100)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:  # gone meanwhile: the file, or the process as the file is read
        return False


def wait_until(condition, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()
