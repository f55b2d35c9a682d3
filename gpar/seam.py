"""What a job asks of the cluster it runs on: one interface, two sides.

    Tasks ◀── RayTasks (raytasks.py): where Ray is attached: this process, or the local
          │    cluster's server
          ◀── ServerTasks (client.py): a script's stand-in, each request sent over a socket
               to a Session of the server (server.py), which asks its RayTasks the same

A reference the server holds for a script crosses as a ``Held``: the Session keeps the Ray
reference under its number, turns a Ray reference it answers with into one, and one in a
request back into the Ray reference. Adding a request is adding a method here, on RayTasks
and on ServerTasks (a type checker finds the side that lacks it); the Session forwards every
name in ``REQUESTS``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from gpar.records import CallerContext


class Held(NamedTuple):
    """A reference the local cluster's server holds for a script, by its number."""

    number: int


class Tasks(Protocol):
    """The cluster as a job's backend (raybackend.RayBackend) and envpack's staging see it."""

    connection_id: str  # references live as long as this connection

    def probe(self) -> Any:
        """What the cluster's workers have (envpack's WorkerFacts); once per connection."""
        ...

    def put(self, data: Any) -> Any:
        """Store ``data`` in the cluster's object store; a reference to pass in a call."""
        ...

    def missing(self, digests: list[str]) -> list[str]:
        """Which of a call's buffers (by content digest) the cluster does not hold."""
        ...

    def put_environment(self, stream: bytes, digests: list[str], given: dict[str, Any],
                        context: CallerContext | None) -> Any:
        """Store a call's environment: its stream, its buffers by digest (``given``: those
        the cluster lacked) and the caller's context; envcache.NotHeld if one was evicted."""
        ...

    def caller_context(self) -> CallerContext | None:
        """What a batch adopts: the script's context, if the driver is not the script."""
        ...

    def cpus(self) -> int:
        """CPUs of the cluster now: the default cap on tasks in flight."""
        ...

    def alive_nodes(self) -> set[str]:
        """The nodes that can run tasks now."""
        ...

    def submit(self, key: Any, call: Any, options: dict[str, Any],
               placement: dict[str, Any] | None = None, single: bool = False,
               note: tuple[int, int, Any] | None = None) -> None:
        """Start ``call`` (an envpack StagedCall) as stream ``key``."""
        ...

    def wait(self, timeout_s: float) -> list[tuple[Any, Any]]:
        """(key, value or BatchLost) of the streams that have news."""
        ...

    def cancel(self, key: Any) -> None:
        """Kill the stream's worker; nothing more is heard from it."""
        ...

    def close(self) -> None:
        """This job is done with the connection."""
        ...

    def show_page(self, url: str) -> None:
        """The job's page is at ``url`` (the local cluster lists the pages of its jobs)."""
        ...


#: The requests a Session forwards to its RayTasks, by method name.
REQUESTS = frozenset({"probe", "put", "missing", "put_environment", "cpus", "alive_nodes",
                      "submit", "wait", "cancel"})

#: Requests that answer nothing: a script sends them without waiting for the server (a
#: launch no longer waits a round trip, 1-5 ms here); the first that raised has its exception
#: raised by the job loop's next wait, before the server waits for anything (another
#: thread's request, a page's, is answered as usual).
ONE_WAY = frozenset({"submit"})
