"""The Ray backend of the driver loop: batches as Ray streaming tasks.

    run_job ─▶ put(environment) once
            ─▶ JobLoop (loop.py) with RayBackend, over raytasks.RayTasks (here or in the
               local cluster's server):
                 submit ─▶ run_batch stream (a Ray streaming task, started through the job's
                           image: envpack stages what the worker lacks first)
                 wait   ─▶ ray.wait on the streams ─▶ the next Progress, or BatchLost
                 cancel ─▶ ray.cancel(force=True)
            ◀─ values in input order, a TaskFailure in each slot without one

Every decision (retries, budgets, deadline, quorum, backups, preemption, timeouts) is the
policy's; Ray's own retries are off for batches (RUN_BATCH_OPTIONS) so that every failure
reaches it. The merge tasks of an output's commit, which run nothing of the user's, keep two
(RUN_ALL_OPTIONS). Times are wall-clock seconds, the clock the workers stamp their progress
with.
"""

from __future__ import annotations

import pickle
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from gpar import envcache, pickled
from gpar.environment import CapturedEnvironment
from gpar.loop import JobLoop
from gpar.policy import MAX_WAIT_S, Policy
from gpar.records import BatchLost, Launch, Progress
from gpar.report import JobReport

if TYPE_CHECKING:
    from envpack.stage import StagedImage
    from gpar.feed import Feed
    from gpar.job import Control
    from gpar.output import OutputJob

#: How often a job with output= commits what it has accepted so far (a checkpoint): a driver
#: that dies loses at most about this much finished work. A checkpoint is a commit whose state
#: (the tasks each file holds) grows with the tasks (measured as a manifest file of that
#: state: 100k tasks ~3 s, 16 MB), while the loop waits: the next one
#: comes CHECKPOINT_SPACING times its own duration later, if that is longer. A bound on lost
#: work chosen by hand, not by a benchmark: the spacing keeps checkpoints under a tenth of the
#: loop's time.
CHECKPOINT_S = 60.0
CHECKPOINT_SPACING = 10


def run_job(
    items: Sequence[Any],
    environment: CapturedEnvironment,
    policy: Policy,
    progress: bool,
    report: JobReport,
    image: StagedImage,
    tasks: Any,
    output: OutputJob | None = None,
    control: Control | None = None,
    feed: Feed | None = None,
) -> list[Any]:
    """Run fn over ``items`` under ``policy`` on ``tasks`` (a raytasks.RayTasks, or the local
    cluster's server standing in for one); failed or unfinished slots hold TaskFailures.
    ``control``: the Job's lock and cancel flag (job.py); ``feed``: the input when it is
    read as the job goes (``items`` is its list, which grows).

    With ``output`` (apply(output=)), each launch writes its values where ``output.sink(launch)``
    says, and what was accepted is checkpointed every CHECKPOINT_S.
    """
    from gpar.progress import progress_bar

    backend = RayBackend(items, environment, image, tasks, output)
    report.environment_bytes_sent = backend.environment_sent
    checkpoint = None if output is None else _Checkpoints(output, policy)
    page = None if control is None else control.page
    with progress_bar(len(items) if feed is None else None, progress, page) as bar:
        loop = JobLoop(policy, report, backend, progress=bar.update, checkpoint=checkpoint,
                       control=control, feed=feed)
        return loop.run()


class RayBackend:
    """Batches as Ray streaming tasks of ``run_batch``; see loop.Backend."""

    def __init__(self, items: Sequence[Any], environment: CapturedEnvironment,
                 image: StagedImage, tasks: Any, output: OutputJob | None):
        self.items, self.image, self.tasks, self.output = items, image, tasks, output
        self.placement: dict[str, Any] = {}  # Ray options that keep batches off slow nodes
        self.unheard: dict[int, Launch] = {}  # batches that have not said anything yet
        self.running: set[int] = set()
        self.job = secrets.randbits(62)  # the batches' names in their workers' notes
        self.environment_ref, self.environment_sent = envcache.ship(
            tasks, environment.stream, environment.buffers, tasks.caller_context())

    def now(self) -> float:
        return time.time()

    def submit(self, launch: Launch) -> None:
        chunk = self.items[launch.indices.start:launch.indices.stop]
        sink = None if self.output is None else self.output.sink(launch)
        items, _ = pickled.dumps(chunk, (cloudpickle.Pickler,), pickle.HIGHEST_PROTOCOL)
        call = self.image.call(RUN_BATCH, [self.environment_ref],
                               (len(chunk), sink, self.image.check, launch.handoff_after_s,
                                (self.job, launch.batch)), raw=(items,))
        reader = self.image.call(READ_NOTE, [], (self.job, launch.batch))
        self.tasks.submit(launch.batch, call, RUN_BATCH_OPTIONS, self.placement,
                          note=(self.job, launch.batch, reader))
        self.running.add(launch.batch)
        self.unheard[launch.batch] = launch

    def cancel(self, batch: int) -> None:
        self._forget(batch)
        self.tasks.cancel(batch)

    def wait(self, timeout_s: float) -> list[tuple[int, Progress | BatchLost]]:
        if not self.running:
            time.sleep(timeout_s)  # nothing runs: the clock alone can change something
            return []
        news = self.tasks.wait(timeout_s)
        for batch, message in news:
            self.unheard.pop(batch, None)
            if isinstance(message, BatchLost) or message.last:
                self._forget(batch)
        return news

    def alive_nodes(self) -> set[str]:
        return self.tasks.alive_nodes()

    def avoid_nodes(self, nodes: set[str]) -> None:
        if not nodes:  # the nodes left may all have been avoided: place the waiting anew
            self.placement = {}
            for batch, launch in list(self.unheard.items()):
                self.cancel(batch)
                self.submit(launch)
            return
        self.placement = {"avoid_nodes": tuple(sorted(nodes))}

    def _forget(self, batch: int) -> None:
        self.unheard.pop(batch, None)
        self.running.discard(batch)


class _Checkpoints:
    """Commits what was accepted every CHECKPOINT_S, spaced by the last one's duration."""

    def __init__(self, output: OutputJob, policy: Policy):
        self.output, self.policy = output, policy
        self.due, self.final = time.time() + CHECKPOINT_S, 0

    def __call__(self, values: list[Any], now: float) -> None:
        if now < self.due or self.policy.ledger.final_count == self.final:
            return
        self.output.checkpoint(values)
        took = time.time() - now
        self.due, self.final = now + max(CHECKPOINT_S, CHECKPOINT_SPACING * took), \
            self.policy.ledger.final_count


def run_all(image: StagedImage, tasks: Any, fn: Callable[[Any], Any],
            items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` as tasks started through the job's image (the workers may
    lack gpar and reduce_sql): an output's commit merges files so, beside the data and in
    parallel. Ray's retries (2) are enough for these: nothing of the user's runs in them."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    for key, item in enumerate(items):
        tasks.submit(("run_all", key), image.call("gpar.raybackend:call", [], (fn, item)),
                     RUN_ALL_OPTIONS, single=True)
    values: dict[Any, Any] = {}
    while len(values) < len(items):
        for key, value in tasks.wait(MAX_WAIT_S):
            if isinstance(value, BatchLost):
                raise RuntimeError(f"a merge of the output's files failed: {value.message}")
            values[key] = value
    return [values[("run_all", key)] for key in range(len(items))]


def call(fn: Callable[[Any], Any], item: Any) -> Iterator[Any]:
    """Yield ``fn(item)``: what a task of run_all runs (staged tasks stream what they return)."""
    yield fn(item)


#: The task each batch runs, named rather than pickled: the worker imports it once the image's
#: layers are staged (gpar itself may be one of them).
RUN_BATCH = "gpar.worker:run_batch"
READ_NOTE = "gpar.notes:read_here"


#: Ray's own retries are off for batches: the policy owns them.
RUN_BATCH_OPTIONS = {"num_returns": "streaming", "max_retries": 0, "retry_exceptions": False}
RUN_ALL_OPTIONS = {"num_returns": "streaming", "max_retries": 2}
