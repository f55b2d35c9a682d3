"""The Ray loop: turns the policy's decisions into Ray calls and Ray outcomes into its events.

    run_job ─▶ ray.put(environment) once
            ─▶ loop: policy.launches ─▶ run_batch streams (Ray streaming tasks, each started
                     through the job's image: envpack stages what the worker lacks first)
                     ray.wait on the streams ─▶ Progress ─▶ policy.on_reported / on_running
                     a stream that breaks ─▶ policy.on_lost
                     policy.tick ─▶ ray.cancel(force=True) of the batches it kills
            ◀─ values in input order, a TaskFailure in each slot without one

Every decision (retries, budgets, deadline, quorum, backups, timeouts) is the policy's; Ray's own
retries are off (max_retries=0) so that every failure reaches it. Times are wall-clock seconds,
the clock the workers stamp their progress with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from gpar.environment import CapturedEnvironment
from gpar.policy import Charge, Launch, Policy, SlowNodes
from gpar.report import AttemptBlock, JobReport
from gpar.worker import ElementError, PickledItems, Progress, blocking_call

if TYPE_CHECKING:
    from envpack.stage import StagedImage
    from gpar.output import OutputJob

#: Longest wait for progress before the loop looks at the clock again (Ctrl-C is handled
#: between waits).
WAIT_S = 1.0

#: How often a job with output= commits what it has accepted so far (a checkpoint): a driver
#: that dies loses at most about this much finished work. A checkpoint rewrites the manifest,
#: which grows with the tasks (100k tasks: ~3 s, 16 MB), while the loop waits: the next one
#: comes CHECKPOINT_SPACING times its own duration later, if that is longer.
CHECKPOINT_S = 60.0
CHECKPOINT_SPACING = 10


@dataclass
class _Stream:
    """A launched batch's stream and what it has told so far."""

    launch: Launch
    ref: Any
    submitted: float
    last_finished: float | None = None
    node: str = ""
    pid: int = 0


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
    return _Job(items, environment, policy, progress, report, output, image).run()


class _Job:
    def __init__(self, items, environment, policy, progress, report, output, image):
        import ray

        self.ray = ray
        self.image = image
        self.items = items
        self.policy = policy
        self.progress = progress
        self.report = report
        self.output = output
        self.checkpointed = (time.time() + CHECKPOINT_S, 0)  # next due, policy.final at the last
        self.values: list[Any] = [None] * len(items)
        self.streams: dict[int, _Stream] = {}
        self.remote = _remote_run_batch()
        self.slow_nodes: SlowNodes | None = None  # made at the first straggler
        self.placement: dict[str, Any] = {}  # Ray options that keep batches off slow nodes
        buffers = [_as_array(buffer) for buffer in environment.buffers]
        self.environment_ref = ray.put((environment.stream, buffers))

    def run(self) -> list[Any]:
        from gpar.progress import progress_bar

        with progress_bar(len(self.items), self.progress) as self.bar:
            try:
                self._loop()
            finally:
                self._cancel(list(self.streams))
        for index, failure in self.policy.failures.items():
            self.values[index] = failure
        return self.values

    def _loop(self) -> None:
        policy = self.policy
        while True:
            now = time.time()
            kills, charges = policy.tick(now)
            for charge in charges:
                self._record_charge(charge, self.streams[charge.batch])
            for batch in policy.take_stragglers():
                self._on_straggler(self.streams[batch].node)
            self._cancel(kills)
            if policy.finished:
                return
            self._checkpoint(now)
            for launch in policy.launches(policy.rules.max_workers):
                self._submit(launch, now)
            timeout = min(WAIT_S, policy.next_check(now))
            refs = {stream.ref: batch for batch, stream in self.streams.items()}
            ready, _ = blocking_call(self.ray.wait, list(refs), num_returns=1, timeout=timeout)
            for ref in ready:
                self._read(refs[ref])

    def _submit(self, launch: Launch, now: float) -> None:
        chunk = self.items[launch.indices.start:launch.indices.stop]
        sink = None if self.output is None else self.output.sink(launch)
        ref = self.image.submit(self.remote, RUN_BATCH, [self.environment_ref],
                                (PickledItems.of(chunk), sink, self.image.check),
                                **self.placement)
        self.streams[launch.batch] = _Stream(launch, ref, submitted=now)
        self.report.batches += 1

    def _checkpoint(self, now: float) -> None:
        due, final = self.checkpointed
        if self.output is None or now < due or self.policy.final == final:
            return
        self.output.checkpoint(self.values)
        took = time.time() - now
        self.checkpointed = (now + max(CHECKPOINT_S, CHECKPOINT_SPACING * took), self.policy.final)

    def _on_straggler(self, node: str) -> None:
        """Count a straggler against its node; launch nothing more on the nodes found slow."""
        if self.slow_nodes is None:
            workers = [n for n in self.ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
            self.slow_nodes = SlowNodes(nodes=len(workers))
        if self.slow_nodes.on_straggler(node):
            from ray.util.scheduling_strategies import NodeLabelSchedulingStrategy, NotIn

            avoided = NotIn(*self.slow_nodes.avoided)  # Ray labels each node with its id
            strategy = NodeLabelSchedulingStrategy(hard={"ray.io/node-id": avoided})
            self.placement = {"scheduling_strategy": strategy}

    def _read(self, batch: int) -> None:
        stream = self.streams[batch]
        try:
            message = self.ray.get(next(stream.ref))
        except StopIteration:
            self._lost(batch, "the batch ended without reporting every element")
        except self.ray.exceptions.RayError as exc:
            self._lost(batch, exc)
        else:
            self._take(batch, stream, message)

    def _take(self, batch: int, stream: _Stream, message: Progress) -> None:
        stream.node, stream.pid = message.node_id, message.pid
        if message.running is not None:
            self.policy.on_running(batch, *message.running)
        count = len(message.finished)
        if count:
            self._take_finished(batch, stream, message, count)
        if message.running is None:  # the batch is done
            self.streams.pop(batch, None)

    def _take_finished(self, batch: int, stream: _Stream, message: Progress, count: int) -> None:
        launch = stream.launch
        previous = stream.last_finished or message.elements_started
        stream.last_finished = message.finished[-1]
        values, errors = _unpickle_values(message, count)
        first = launch.indices[message.done_from]
        failed = {position - message.done_from: (error.kind, error.message)
                  for position, error in errors.items()}
        self.report.add_block(AttemptBlock(first, launch.attempt, launch.backup, stream.node,
                                           stream.pid, stream.submitted, previous,
                                           message.finished, failed))
        final_before = self.policy.final
        accepted = self.policy.on_reported(batch, message.done_from, count, errors,
                                           message.finished[-1] - previous, time.time())
        for indices in accepted:
            offset = indices.start - first
            self.values[indices.start:indices.stop] = values[offset:offset + len(indices)]
        self.bar.update(self.policy.final - final_before)

    def _lost(self, batch: int, cause: BaseException | str) -> None:
        """The batch's stream broke: its worker died, or Ray lost its node."""
        stream = self.streams.pop(batch)
        exc_type = type(cause).__qualname__ if isinstance(cause, BaseException) else "BatchLost"
        text = str(cause).strip()
        error = ElementError(exc_type, text.splitlines()[0] if text else exc_type, text, "system",
                             retryable=True)
        final_before = self.policy.final
        charge = self.policy.on_lost(batch, error)
        if charge is not None:
            self._record_charge(charge, stream)
        self.bar.update(self.policy.final - final_before)

    def _record_charge(self, charge: Charge, stream: _Stream) -> None:
        self.report.add_block(AttemptBlock(
            charge.index, charge.attempt, stream.launch.backup, stream.node, stream.pid,
            stream.submitted, charge.started_at or stream.submitted, [time.time()],
            {0: (charge.outcome, charge.message)}))

    def _cancel(self, batches: list[int]) -> None:
        for batch in batches:
            stream = self.streams.pop(batch, None)
            if stream is None:
                continue
            try:
                self.ray.cancel(stream.ref, force=True)
            except Exception:  # already finished, or its worker already gone
                pass


def _unpickle_values(message: Progress, count: int) -> tuple[list[Any], dict[int, ElementError]]:
    """The message's values and errors; values the driver cannot unpickle become errors."""
    try:
        return cloudpickle.loads(message.values), message.errors
    except Exception as exc:
        error = ElementError(
            type(exc).__qualname__,
            f"fn's result could not be unpickled on the driver: {exc}. Return objects whose "
            "classes the driver can import (builtins, numpy, pandas, installed modules).",
            "", "result", retryable=False)
        positions = range(message.done_from, message.done_from + count)
        return [None] * count, {position: message.errors.get(position, error)
                                for position in positions}


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
