"""The Ray backend of the driver loop: batches as Ray streaming tasks.

    run_job ─▶ ray.put(environment) once
            ─▶ JobLoop (loop.py) with RayBackend:
                 submit ─▶ run_batch stream (a Ray streaming task, started through the job's
                           image: envpack stages what the worker lacks first)
                 wait   ─▶ ray.wait on the streams ─▶ the next Progress, or BatchLost
                 cancel ─▶ ray.cancel(force=True)
            ◀─ values in input order, a TaskFailure in each slot without one

Every decision (retries, budgets, deadline, quorum, backups, preemption, timeouts) is the
policy's; Ray's own retries are off (max_retries=0) so that every failure reaches it. Times are
wall-clock seconds, the clock the workers stamp their progress with.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from gpar import pickled
from gpar.environment import CapturedEnvironment
from gpar.loop import JobLoop
from gpar.policy import Policy
from gpar.records import BatchLost, Launch, Progress
from gpar.report import JobReport
from gpar.worker import blocking_call

if TYPE_CHECKING:
    from envpack.stage import StagedImage
    from gpar.output import OutputJob

#: How often a job with output= commits what it has accepted so far (a checkpoint): a driver
#: that dies loses at most about this much finished work. A checkpoint rewrites the manifest,
#: which grows with the tasks (100k tasks: ~3 s, 16 MB), while the loop waits: the next one
#: comes CHECKPOINT_SPACING times its own duration later, if that is longer.
CHECKPOINT_S = 60.0
CHECKPOINT_SPACING = 10


def run_job(
    items: Sequence[Any],
    environment: CapturedEnvironment,
    policy: Policy,
    progress: bool,
    report: JobReport,
    image: StagedImage,
    output: OutputJob | None = None,
) -> list[Any]:
    """Run fn over ``items`` under ``policy``; failed or unfinished slots hold TaskFailures.

    With ``output`` (apply(output=)), each launch writes its values where ``output.sink(launch)``
    says, and what was accepted is checkpointed every CHECKPOINT_S.
    """
    from gpar.progress import progress_bar

    backend = RayBackend(items, environment, image, output)
    checkpoint = None if output is None else _Checkpoints(output, policy)
    with progress_bar(len(items), progress) as bar:
        loop = JobLoop(policy, report, backend, progress=bar.update, checkpoint=checkpoint)
        return loop.run()


class RayBackend:
    """Batches as Ray streaming tasks of ``run_batch``; see loop.Backend."""

    def __init__(self, items: Sequence[Any], environment: CapturedEnvironment,
                 image: StagedImage, output: OutputJob | None):
        import ray

        self.ray = ray
        self.items, self.image, self.output = items, image, output
        self.remote = _remote_run_batch()
        self.placement: dict[str, Any] = {}  # Ray options that keep batches off slow nodes
        self.streams: dict[int, Any] = {}  # batch -> its ObjectRefGenerator
        self.batch_of: dict[Any, int] = {}
        self.unheard: dict[int, Launch] = {}  # batches that have not said anything yet
        buffers = [_as_array(buffer) for buffer in environment.buffers]
        self.environment_ref = ray.put((environment.stream, buffers))

    def now(self) -> float:
        return time.time()

    def submit(self, launch: Launch) -> None:
        chunk = self.items[launch.indices.start:launch.indices.stop]
        sink = None if self.output is None else self.output.sink(launch)
        items, _ = pickled.dumps(chunk, (cloudpickle.Pickler,), pickle.HIGHEST_PROTOCOL)
        ref = self.image.submit(
            self.remote, RUN_BATCH, [self.environment_ref],
            (len(chunk), sink, self.image.check, launch.handoff_after_s), raw=(items,),
            **self.placement)
        self.streams[launch.batch] = ref
        self.batch_of[ref] = launch.batch
        self.unheard[launch.batch] = launch

    def cancel(self, batch: int) -> None:
        ref = self._forget(batch)
        if ref is None:
            return
        try:
            self.ray.cancel(ref, force=True)
        except Exception:  # already finished, or its worker already gone
            pass

    def wait(self, timeout_s: float) -> list[tuple[int, Progress | BatchLost]]:
        if not self.streams:
            time.sleep(timeout_s)  # nothing runs: the clock alone can change something
            return []
        ready, _ = blocking_call(self.ray.wait, list(self.batch_of), num_returns=1,
                                 timeout=timeout_s)
        return [self._read(self.batch_of[ref]) for ref in ready]

    def alive_nodes(self) -> set[str]:
        return {node["NodeID"] for node in self.ray.nodes()
                if node["Alive"] and node["Resources"].get("CPU")}

    def avoid_nodes(self, nodes: set[str]) -> None:
        from ray.util.scheduling_strategies import NodeLabelSchedulingStrategy, NotIn

        if not nodes:  # the nodes left may all have been avoided: place the waiting anew
            self.placement = {}
            for batch, launch in list(self.unheard.items()):
                self.cancel(batch)
                self.submit(launch)
            return
        avoided = NotIn(*nodes)  # Ray labels each node with its id
        strategy = NodeLabelSchedulingStrategy(hard={"ray.io/node-id": avoided})
        self.placement = {"scheduling_strategy": strategy}

    def _read(self, batch: int) -> tuple[int, Progress | BatchLost]:
        try:
            message = self.ray.get(next(self.streams[batch]))
        except StopIteration:
            self._forget(batch)
            return batch, BatchLost("BatchLost", "the batch ended without reporting every "
                                    "element")
        except self.ray.exceptions.RayError as exc:
            self._forget(batch)
            return batch, BatchLost(type(exc).__qualname__, str(exc).strip())
        self.unheard.pop(batch, None)
        if message.last:
            self._forget(batch)
        return batch, message

    def _forget(self, batch: int) -> Any:
        self.unheard.pop(batch, None)
        ref = self.streams.pop(batch, None)
        if ref is not None:
            del self.batch_of[ref]
        return ref


class _Checkpoints:
    """Commits what was accepted every CHECKPOINT_S, spaced by the last one's duration."""

    def __init__(self, output: OutputJob, policy: Policy):
        self.output, self.policy = output, policy
        self.due, self.final = time.time() + CHECKPOINT_S, 0

    def __call__(self, values: list[Any], now: float) -> None:
        if now < self.due or self.policy.final == self.final:
            return
        self.output.checkpoint(values)
        took = time.time() - now
        self.due, self.final = now + max(CHECKPOINT_S, CHECKPOINT_SPACING * took), \
            self.policy.final


def run_each(image: StagedImage, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` as Ray tasks started through the job's image (the workers
    may lack gpar and reduce_sql): an output's commit merges files so, beside the data and in
    parallel."""
    from envpack.stage import bootstrap

    if len(items) <= 1:
        return [fn(item) for item in items]
    remote = bootstrap(num_returns="streaming", max_retries=2)
    streams = [image.submit(remote, "gpar.scheduler:call", [], (fn, item)) for item in items]
    return blocking_call(_first_values, streams)


def call(fn: Callable[[Any], Any], item: Any) -> Iterator[Any]:
    """Yield ``fn(item)``: what a task of run_each runs (staged tasks stream what they return)."""
    yield fn(item)


def _first_values(streams: list[Any]) -> list[Any]:
    import ray

    return [ray.get(next(stream)) for stream in streams]


#: The task each batch runs, named rather than pickled: the worker imports it once the image's
#: layers are staged (gpar itself may be one of them).
RUN_BATCH = "gpar.worker:run_batch"


def _remote_run_batch() -> Any:
    """run_batch as a Ray streaming task, with Ray's retries off (the policy owns retries)."""
    from envpack.stage import bootstrap

    return bootstrap(num_returns="streaming", max_retries=0, retry_exceptions=False)


def _as_array(buffer: Any) -> Any:
    """A pickle buffer as a uint8 array, which Ray stores once and maps read-only on workers."""
    import numpy as np

    return np.frombuffer(buffer.raw(), dtype=np.uint8)
