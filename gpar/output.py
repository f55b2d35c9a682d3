"""apply(output=...): claim the output, give each launched batch its Sink, commit what was accepted.

The policy accepts exactly one attempt per element (first finisher wins); the values it accepts
are reduce_sql Parts, and only those are committed. A re-run of the same job (same xs, fn, args
and kwargs) skips the elements an earlier run committed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pickle
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from gpar.records import Launch
from gpar.results import TaskFailure


@dataclass(frozen=True)
class OutputJob:
    """One job's claim on an output: which elements still run, and where they write."""

    location: Any  # reduce_sql.store.Location
    job: str
    previous: Any  # the reduce_sql Manifest an earlier run of this job committed, or None
    pending: list[int]  # elements of xs to run, in order
    checkpoints: bool  # False while replacing an output (overwrite=True): it stays readable
    lease: Any  # reduce_sql.lease.Lease: this driver writes the output until release()
    cluster_by: tuple[str, ...] = ()

    def sink(self, launch: Launch) -> Any:
        from reduce_sql.parts import Sink

        tasks = self.pending[launch.indices.start:launch.indices.stop]
        return Sink(self.location, self.job, launch.attempt, tasks, self.cluster_by)

    def in_input_order(self, values: list[Any], elements: int) -> list[Any]:
        """The sub-run's values placed at their elements of xs; committed earlier: None."""
        placed: list[Any] = [None] * elements
        for position, value in zip(self.pending, values, strict=True):
            if isinstance(value, TaskFailure):
                value = dataclasses.replace(value, index=position)
            placed[position] = value
        return placed

    def checkpoint(self, values: list[Any]) -> None:
        """Commit the Parts accepted so far, marked unfinished (reduce_sql.commit.checkpoint).
        Best effort: one that fails (a storage error, a schema conflict) is skipped and the job
        goes on; its commit runs the same steps and reports what fails."""
        from reduce_sql.commit import checkpoint

        if not self.checkpoints:
            return
        try:
            parts = _parts(values)
            if parts:
                checkpoint(self.location, self.job, parts, self.previous, self.lease)
        except Exception:
            pass

    def commit(self, values: list[Any], image: Any = None) -> Any:
        """Commit the accepted Parts; merges of small files run on the cluster through the
        job's envpack ``image`` (on the driver when there is no cluster or one merge).

        A task the commit could not take (its file also held another attempt's winner, which
        the workers prevent) becomes a TaskFailure in ``values``: the next run writes it.
        """
        from reduce_sql.commit import commit
        from reduce_sql.parts import Part

        run_all = None if image is None else functools.partial(_on_the_cluster, image)
        parts = _parts(values)
        manifest = commit(self.location, self.job, parts, self.previous, run_all, self.lease,
                          self.cluster_by)
        committed = manifest.tasks
        for position, value in enumerate(values):
            if isinstance(value, Part) and value.task not in committed:
                values[position] = TaskFailure(
                    position, "OutputNotCommitted",
                    "its rows shared a file with an attempt that lost a race, so that file "
                    "was not committed; run the same job again to write this task", "", 1,
                    "system")
        return manifest

    def release(self) -> None:
        self.lease.release()


def _parts(values: list[Any]) -> list[Any]:
    """The accepted reduce_sql Parts among the values (the others: failures, and None where an
    earlier run committed). Anything else is an error, not a task silently left out."""
    from reduce_sql.parts import Part

    strays = [value for value in values
              if not isinstance(value, Part | TaskFailure) and value is not None]
    if strays:
        raise TypeError(
            f"a task's output came back as {type(strays[0]).__module__}."
            f"{type(strays[0]).__qualname__}, not a reduce_sql Part: the workers run another "
            "reduce_sql than this process (an edited source checkout?); run the job again")
    return [value for value in values if isinstance(value, Part)]


def _on_the_cluster(image: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` as Ray tasks started through the job's image (the workers
    may lack gpar and reduce_sql): the commit's merges run beside the data, in parallel."""
    from envpack.stage import bootstrap
    from gpar.worker import blocking_call

    if len(items) <= 1:
        return [fn(item) for item in items]
    remote = bootstrap(num_returns="streaming", max_retries=2)
    streams = [image.submit(remote, "gpar.output:call", [], (fn, item)) for item in items]
    return blocking_call(_first_values, streams)


def call(fn: Callable[[Any], Any], item: Any) -> Iterator[Any]:
    """Yield ``fn(item)``: what a merge task runs (staged tasks stream what they return)."""
    yield fn(item)


def _first_values(streams: list[Any]) -> list[Any]:
    import ray

    return [ray.get(next(stream)) for stream in streams]


def begin(output: Any, items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict,
          overwrite: bool, cluster_by: Sequence[str] = ()) -> OutputJob:
    """Claim ``output`` for this job (its lease too: call release() when the job ends)."""
    from reduce_sql.commit import begin as claim
    from reduce_sql.store import locate

    location = locate(output)
    job = job_digest(items, fn, args, kwargs)
    previous, replacing, lease = claim(location, job, overwrite)
    done = previous.tasks if previous else set()
    return OutputJob(location, job, previous, [i for i in range(len(items)) if i not in done],
                     checkpoints=not replacing, lease=lease, cluster_by=tuple(cluster_by))


def job_digest(items: Sequence[Any], fn: Callable, args: tuple, kwargs: dict) -> str:
    """What makes two runs the same job, in any process: xs, fn's code and the extra arguments.
    Values fn reads from globals are not included.

    Plain pickle where it can: it names classes and functions (a dataclass in __main__ too),
    while cloudpickle's by-value copies carry ids that differ from one process to the next.
    """
    digest = hashlib.sha256()
    digest.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    code = getattr(fn, "__code__", None)
    digest.update(_code_fingerprint(code) if code is not None else _stable_pickle(fn))
    digest.update(_stable_pickle((args, kwargs)))
    digest.update(_stable_pickle(list(items)))
    return digest.hexdigest()


def _code_fingerprint(code: Any) -> bytes:
    """The code's instructions, names and constants (nested functions' too); not marshal's
    bytes, which depend on reference counts."""
    consts = [_code_fingerprint(c) if hasattr(c, "co_code")
              else repr(sorted(map(repr, c))).encode() if isinstance(c, frozenset)  # `in {..}`
              else repr(c).encode() for c in code.co_consts]
    return b"|".join([code.co_code, repr(code.co_names).encode(), *consts])


def _stable_pickle(value: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _SortedSetPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # lambdas, local classes: by value, stable within one process only
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.getvalue()


class _SortedSetPickler(pickle.Pickler):
    """Pickles a set as its elements' pickles, sorted: a set of strings iterates in an order
    set by string hashes, which differ from one process to the next. (persistent_id, because
    the pickler is asked it for every object, sets included; the bytes are never unpickled.)"""

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) not in (set, frozenset):
            return None
        expanding = _expanding.ids
        if id(obj) in expanding:  # an element refers back to an enclosing set: say which
            return "cycle", len(expanding) - expanding.index(id(obj))
        expanding.append(id(obj))
        try:
            return type(obj).__name__, sorted(map(_stable_pickle, obj))
        finally:
            expanding.pop()


class _Expanding(threading.local):
    """The sets this thread is pickling element by element, outermost first."""

    def __init__(self) -> None:
        self.ids: list[int] = []


_expanding = _Expanding()
