"""apply(output=...): claim the output, give each launched batch its Sink, commit what was accepted.

The policy accepts exactly one attempt per element (first finisher wins); the values it accepts
are reduce_sql Parts, and only those are committed. A re-run of the same job (same xs, fn, args
and kwargs: jobid.py) skips the elements an earlier run committed. reduce_sql knows nothing of
Ray: the commit is handed the Ray backend's run_all to merge small files on the cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpar.errors import EnvironmentMismatch
from gpar.jobid import job_digest
from gpar.records import Launch
from gpar.results import Results, TaskFailure

if TYPE_CHECKING:
    from reduce_sql.commit import RunAll


@dataclass(frozen=True)
class OutputJob:
    """One job's claim on an output: which elements still run, and where they write."""

    location: Any  # reduce_sql.store.Location
    job: str
    previous: Any  # the reduce_sql Manifest an earlier run of this job committed, or None
    pending: list[int]  # elements of xs to run, in order
    checkpoints: bool  # False while replacing an output (overwrite=True): it stays readable
    lease: Any  # reduce_sql.lease.Lease: this driver writes the output until the job ends
    elements: int  # of xs
    cluster_by: tuple[str, ...] = ()

    def sink(self, launch: Launch) -> Any:
        from reduce_sql.parts import Sink

        tasks = self.pending[launch.indices.start:launch.indices.stop]
        return Sink(self.location, self.job, launch.attempt, tasks, self.cluster_by)

    def in_input_order(self, results: Results) -> Results:
        """The sub-run's results placed at their elements of xs; committed earlier: None."""
        placed: list[Any] = [None] * self.elements
        for position, value in zip(self.pending, results, strict=True):
            if isinstance(value, TaskFailure):
                value = dataclasses.replace(value, index=position)
            placed[position] = value
        results.report.task_numbers = self.pending
        return Results(placed, results.report)

    def checkpoint(self, values: list[Any]) -> None:
        """Commit the Parts accepted so far, marked unfinished (reduce_sql.commit.checkpoint).
        Best effort: one that fails (a storage error, a schema conflict) is logged and the
        job goes on; its commit runs the same steps and raises what fails."""
        from reduce_sql.commit import checkpoint

        if not self.checkpoints:
            return
        try:
            parts = _parts(values)
            if parts:
                checkpoint(self.location, self.job, parts, self.previous, self.lease,
                           self.elements)
        except Exception:
            logging.getLogger(__name__).warning(
                "a checkpoint of the output at %s failed; the job goes on, and its final "
                "commit tries again", self.location.uri, exc_info=True)

    def commit(self, values: list[Any], run_all: RunAll | None = None) -> Any:
        """Commit the accepted Parts; merges of small files run through ``run_all`` (the
        cluster's, raybackend.run_all; on the driver without one, or for one merge).

        A task the commit could not take (its file also held another attempt's winner, which
        the workers prevent) becomes a TaskFailure in ``values``: the next run writes it.
        """
        from reduce_sql.commit import commit
        from reduce_sql.parts import Part

        parts = _parts(values)
        manifest = commit(self.location, self.job, parts, self.previous, run_all, self.lease,
                          self.cluster_by, self.elements)
        committed = manifest.tasks
        for position, value in enumerate(values):
            if isinstance(value, Part) and value.task not in committed:
                values[position] = TaskFailure(
                    position, "OutputNotCommitted",
                    "its rows shared a file with an attempt that lost a race, so that file "
                    "was not committed; run the same job again to write this task", "", 1,
                    "system")
        return manifest

    def __enter__(self) -> OutputJob:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.lease.release()


def _parts(values: list[Any]) -> list[Any]:
    """The accepted reduce_sql Parts among the values (the others: failures, and None where an
    earlier run committed). Anything else is an error, not a task silently left out."""
    from reduce_sql.parts import Part

    strays = [value for value in values
              if not isinstance(value, Part | TaskFailure) and value is not None]
    if strays:
        raise EnvironmentMismatch(
            f"a task's output came back as {type(strays[0]).__module__}."
            f"{type(strays[0]).__qualname__}, not a reduce_sql Part: the workers run another "
            "reduce_sql than this process (an edited source checkout?); run the job again")
    return [value for value in values if isinstance(value, Part)]


@dataclass(frozen=True)
class Target:
    """Where a job writes and which job it is (jobid.py's digest), found before anything is
    connected or claimed. ``whole``: an earlier run of this job committed every element and
    ended, and no file is left to clean up, so a re-run has nothing to run, merge or delete:
    it answers without a cluster."""

    location: Any  # reduce_sql.store.Location
    job: str
    elements: int  # of xs
    whole: bool


def target(output: Any, items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict,
           overwrite: bool) -> Target:
    """The job's target; read-only (overwrite=True replaces even a whole output)."""
    from reduce_sql.commit import leftovers, read_manifest
    from reduce_sql.store import locate

    location = locate(output)
    job = job_digest(items, fn, args, kwargs)
    manifest = None if overwrite or location.is_file else read_manifest(location)
    whole = (manifest is not None and manifest.job == job and manifest.finished
             and len(manifest.tasks) == len(items)
             and not leftovers(location, manifest, time.time()))
    return Target(location, job, len(items), whole)


def begin(target: Target, overwrite: bool, cluster_by: Sequence[str] = ()) -> OutputJob:
    """Claim the target's output for its job, the lease too: use it as a context manager,
    which releases the lease when the job ends."""
    from reduce_sql.commit import begin as claim

    previous, replacing, lease = claim(target.location, target.job, overwrite)
    done = previous.tasks if previous else set()
    return OutputJob(target.location, target.job, previous,
                     [i for i in range(target.elements) if i not in done],
                     checkpoints=not replacing, lease=lease, elements=target.elements,
                     cluster_by=tuple(cluster_by))
