"""The Ray side of a job: the few operations the driver loop needs from a Ray cluster.

    RayBackend (raybackend.py) ──▶ RayTasks: put, submit, wait, cancel, alive_nodes, cpus
                                  in this process when it is attached to Ray, or in the
                                  local cluster's server for a script (server.py), reached
                                  through the same methods over its socket (client.py)

Streams are named by keys the caller chooses (batch numbers). What a stream yields comes back
as it is (a batch's Progress, run_all's values); a stream that breaks comes back as a
BatchLost, and is forgotten, as is one whose value says it was the ``last``. A batch's BatchLost
says where its worker was when it died, from the worker's note (notes.py), read here when the
batch ran on this node, else by a task pinned to its node: that needs Ray, so it is done here.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

from gpar import envcache
from gpar.records import BatchLost
from gpar.seam import Tasks

#: What a cancel starts in place of the worker it killed (force kills the process): a task
#: that only starts a worker of the same image and imports what a batch needs, so that the
#: next job finds one ready rather than waiting ~0.4 s for a process to start.
START_WORKER = "gpar.worker:warm"
_NO_ARGUMENTS = pickle.dumps(())

#: The longest a lost batch's note from another node is waited for (notes.py) before the
#: element is taken as unknown; a node that is gone fails the read at once once Ray knows.
NOTE_READ_S = 5.0


class RayTasks(Tasks):
    """Staged calls as Ray tasks of the cluster this process is attached to."""

    def __init__(self) -> None:
        import ray

        from envpack.stage import Attached

        self.ray = ray
        self.attached = Attached()
        self.connection_id = self.attached.connection_id
        self.streams: dict[Any, Any] = {}  # key -> its ObjectRefGenerator
        self.key_of: dict[Any, Any] = {}  # stream -> key
        self.single: set[Any] = set()  # keys whose stream yields one value
        self.notes: dict[Any, tuple[int, int, Any]] = {}  # key -> (job, batch, its reader)
        self.node_of: dict[Any, str] = {}  # key -> the node its stream said it runs on
        self.replacement: dict[Any, tuple[Any, dict[str, Any]]] = {}  # key -> what starts
        # a worker in place of its own, if it is killed: a StagedCall and its options
        self.own_node = ray.get_runtime_context().get_node_id()

    def probe(self) -> Any:
        return self.attached.probe()

    def put(self, data: Any) -> Any:
        return self.ray.put(data)

    def missing(self, digests: list[str]) -> list[str]:
        return envcache.cache_for(self.connection_id).missing(digests)

    def put_environment(self, stream: bytes, digests: list[str], given: dict[str, Any],
                        context: Any) -> Any:
        placed = envcache.cache_for(self.connection_id).placed(digests, given)
        return self.ray.put((stream, placed, context))

    def env_cache_status(self) -> dict[str, int]:
        return envcache.cache_for(self.connection_id).status()

    def caller_context(self) -> Any:
        """What a nested call's batches adopt: the script's context this worker runs in, if
        any (none on a driver attached to Ray: its workers inherit its own)."""
        from gpar.scriptcontext import adopted_context

        return adopted_context()

    def cpus(self) -> int:
        """CPUs of the cluster now: the default cap on tasks in flight."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def alive_nodes(self) -> set[str]:
        return {node["NodeID"] for node in self.ray.nodes()
                if node["Alive"] and node["Resources"].get("CPU")}

    def submit(self, key: Any, call: Any, options: dict[str, Any],
               placement: dict[str, Any] | None = None, single: bool = False,
               note: tuple[int, int, Any] | None = None) -> None:
        """Start ``call`` (an envpack StagedCall) as stream ``key``. ``note``: (job, batch,
        the StagedCall of notes.read_here for it): how to find where its worker died."""
        from envpack.stage import start

        stream = start(call, options, _ray_placement(placement))
        self.streams[key] = stream
        self.replacement[key] = (dataclasses.replace(
            call, target=START_WORKER, refs=(), raw=(), payload=_NO_ARGUMENTS), options)
        self.key_of[stream] = key
        if single:
            self.single.add(key)
        if note is not None:
            self.notes[key] = note

    def wait(self, timeout_s: float) -> list[tuple[Any, Any]]:
        """(key, value or BatchLost) of the streams that have news, waiting at most
        ``timeout_s`` for the first; [] at once when nothing runs."""
        from gpar.mainthread import blocking_call

        if not self.key_of:
            return []
        ready, _ = blocking_call(self.ray.wait, list(self.key_of), num_returns=1,
                                 timeout=timeout_s)
        return [self._read(self.key_of[stream]) for stream in ready]

    def cancel(self, key: Any) -> None:
        """Kill the stream's worker, and start another in its place; nothing more is
        heard from it."""
        from envpack.stage import start

        replacement = self.replacement.get(key)
        stream = self._forget(key)
        if stream is None:
            return
        try:
            self.ray.cancel(stream, force=True)
        except Exception:  # already finished, or its worker already gone
            return
        start(*replacement)

    def close(self) -> None:
        """Nothing to close: this process stays attached to its cluster."""

    def show_page(self, url: str) -> None:
        """Nothing lists a page here: the process serves its own."""

    def cancel_all(self) -> None:
        for key in list(self.streams):
            self.cancel(key)

    def _read(self, key: Any) -> tuple[Any, Any]:
        try:
            value = self.ray.get(next(self.streams[key]))
        except StopIteration:
            return self._lost(key, "BatchLost", "the batch ended without reporting every "
                              "element")
        except self.ray.exceptions.RayError as exc:
            return self._lost(key, type(exc).__qualname__, str(exc).strip())
        node = getattr(value, "node_id", None)
        if node:
            self.node_of[key] = node
        if key in self.single or getattr(value, "last", False):
            self._forget(key)
        return key, value

    def _lost(self, key: Any, exc_type: str, message: str) -> tuple[Any, BatchLost]:
        note, node = self.notes.get(key), self.node_of.get(key)
        self._forget(key)
        return key, BatchLost(exc_type, message, None if note is None else self._where(note, node))

    def _where(self, note: tuple[int, int, Any], node: str | None) -> int | None:
        """Where a lost batch's worker was (notes.py): read here if it ran on this node, else
        by a task pinned to its node, or to every node while it had not said which."""
        from gpar import notes

        job, batch, _ = note
        nodes = [node] if node else sorted(self.alive_nodes() | {self.own_node})
        if self.own_node in nodes:
            at = notes.read(job, batch)
            if at is not None:
                return at
            nodes.remove(self.own_node)
        return self._read_notes(note, nodes) if nodes else None

    def _read_notes(self, note: tuple[int, int, Any], nodes: list[str]) -> int | None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from envpack.stage import start
        from gpar.mainthread import blocking_call

        options = {"num_returns": "streaming", "max_retries": 0, "num_cpus": 0}
        streams = [start(note[2], options, {"scheduling_strategy":
                                            NodeAffinitySchedulingStrategy(node, soft=False)})
                   for node in nodes]
        ready, late = blocking_call(self.ray.wait, streams, num_returns=len(streams),
                                    timeout=NOTE_READ_S)
        for stream in late:
            self.ray.cancel(stream, force=True)
        for stream in ready:
            try:
                at = self.ray.get(next(stream))
            except (StopIteration, self.ray.exceptions.RayError):  # its node is gone
                continue
            if at is not None:
                return at
        return None

    def _forget(self, key: Any) -> Any:
        self.single.discard(key)
        self.notes.pop(key, None)
        self.node_of.pop(key, None)
        self.replacement.pop(key, None)
        stream = self.streams.pop(key, None)
        if stream is not None:
            del self.key_of[stream]
        return stream


def _ray_placement(placement: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's per-task options for a placement given as plain data (nodes to avoid)."""
    if not placement or not placement.get("avoid_nodes"):
        return {}
    from ray.util.scheduling_strategies import NodeLabelSchedulingStrategy, NotIn

    avoided = NotIn(*placement["avoid_nodes"])  # Ray labels each node with its id
    return {"scheduling_strategy": NodeLabelSchedulingStrategy(hard={"ray.io/node-id": avoided})}
