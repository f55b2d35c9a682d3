"""The user's local cluster: a Ray driver that outlives scripts (``python -m gpar.server``).

    start ─▶ embedded Ray (cluster.start_embedded), workers warmed
          ─▶ socket in a private directory; state file written last (client.py reads it)
    each connection (one job of a script) ─▶ a thread with its own raytasks.RayTasks:
          put / submit / wait / cancel / ... ; closed ─▶ what it started is cancelled
    no connection for idle_s, "stop", or SIGTERM ─▶ Ray shut down, state removed, exit

Started by client.attach() on a script's first apply; see client.py for how it is found.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import asdict, replace
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from envpack.stage import StagedCall
from gpar import client, cluster, seam
from gpar.raytasks import RayTasks
from gpar.seam import Held

#: How often the accept loop looks at the idle clock and the stop flag.
TICK_S = 0.5


class Server:
    """Connections in, RayTasks out; counts what runs to know when it is idle."""

    def __init__(self, state: client.ServerState, state_file: Path,
                 stopping: threading.Event):
        self.state, self.state_file = state, state_file  # the file moves aside at retire
        self.stopping = stopping
        self.retiring = threading.Event()  # no new job: end once the running ones have
        self.sessions: set[Session] = set()  # one per job running here
        self.index: str | None = None  # the URL of the page listing the jobs' pages
        self.lock = threading.Lock()
        self.connections = 0
        self.jobs = 0
        self.last_active = time.time()

    def serve(self, listener: socket.socket) -> None:
        listener.settimeout(TICK_S)
        while not self.stopping.is_set():
            with self.lock:
                idle = self.connections == 0 and (
                    self.retiring.is_set() or time.time() - self.last_active > self.state.idle_s)
            if idle:
                return
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            if self.retiring.is_set():  # refused at once: the script goes to the new server
                connection.close()
                continue
            with self.lock:  # counted at once: the idle clock must not stop a job starting
                self.connections += 1
            connection.settimeout(None)
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, sock: socket.socket) -> None:
        conn = Connection(sock.detach())
        key = bytes.fromhex(self.state.key)
        try:
            deliver_challenge(conn, key)
            answer_challenge(conn, key)
        except Exception:  # not one of ours: a wrong key, or not a gpar client at all
            conn.close()
            self._ended()
            return
        with self.lock:
            self.jobs += 1
        session = Session(self)
        self.sessions.add(session)
        try:
            session.run(conn)
        finally:
            self.sessions.discard(session)
            session.tasks.cancel_all()
            conn.close()
            self._ended()

    def pages(self) -> list[str]:
        """The pages of the jobs running here now, those that have one."""
        return sorted(session.page for session in list(self.sessions) if session.page)

    def _ended(self) -> None:
        with self.lock:
            self.connections -= 1
            self.last_active = time.time()

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"pid": self.state.pid, "started": self.state.started,
                    "slot": self.state.slot, "stamp": self.state.stamp,
                    "idle_s": self.state.idle_s, "num_cpus": self.state.num_cpus,
                    "connections": self.connections - 1,  # not the one asking
                    "jobs_served": self.jobs - 1, "last_active": self.last_active,
                    "retiring": self.retiring.is_set(),
                    "pages": self.pages(), "index": self.index,
                    "memory_bytes": tree_memory(os.getpid())}


class Session:
    """One connection: a job's RayTasks, and the object references it holds for the
    script, by number."""

    def __init__(self, server: Server):
        self.server = server
        self.tasks = RayTasks()
        self.refs: dict[int, Any] = {}
        self.numbers = itertools.count()
        self.page: str | None = None  # the job's page, served by its script
        self.unanswered: Exception | None = None  # what a one-way request raised

    def run(self, conn: Connection) -> None:
        while True:
            try:
                method, args = conn.recv()
            except (EOFError, OSError):
                return
            if method == "wait" and self.unanswered is not None:  # the job's loop: in place
                answer, self.unanswered = (False, self.unanswered), None  # of its news
            else:
                try:
                    answer = (True, self._answer(method, args))
                except Exception as exc:
                    answer = (False, exc)
            if method in seam.ONE_WAY:
                if not answer[0] and self.unanswered is None:  # the first: what stops the job
                    self.unanswered = answer[1]
                continue
            try:
                conn.send(answer)
            except Exception as exc:  # the exception itself would not pickle
                conn.send((False, RuntimeError(f"{type(answer[1]).__qualname__}: {exc}")))
            if method == "stop":
                self.server.stopping.set()

    def _answer(self, method: str, args: tuple) -> Any:
        """A request of seam.REQUESTS asked of this session's RayTasks, with the script's
        Held references resolved and a Ray reference answered held; else one of the
        server's own (do_*)."""
        if method in seam.REQUESTS:
            return self._held(getattr(self.tasks, method)(*map(self._resolved, args)))
        return getattr(self, f"do_{method}")(*args)

    def _resolved(self, value: Any) -> Any:
        """``value`` with this session's Ray references where the script holds them."""
        if isinstance(value, Held):
            return self.refs[value.number]
        if isinstance(value, StagedCall):
            return replace(value, layers=tuple((digest, self._resolved(ref))
                                               for digest, ref in value.layers),
                           refs=tuple(map(self._resolved, value.refs)))
        if isinstance(value, tuple):  # a batch's note: (job, batch, the StagedCall reading it)
            return tuple(map(self._resolved, value))
        return value

    def _held(self, value: Any) -> Any:
        """A Ray reference as the script holds it: by its number here."""
        import ray

        if not isinstance(value, ray.ObjectRef):
            return value
        number = next(self.numbers)
        self.refs[number] = value
        return Held(number)

    def do_status(self) -> dict[str, Any]:
        return {**self.server.status(), **self.tasks.env_cache_status()}

    def do_stop(self) -> None:
        return None

    def do_show_page(self, url: str) -> None:
        """The job's page: listed by status and by the cluster's own index page."""
        self.page = url
        with self.server.lock:
            if self.server.index is None:
                from gpar import jobpage

                self.server.index = jobpage.index_page(self.server.pages)

    def do_retire(self, state_file: str) -> None:
        """Another stamp's server takes over: end once the jobs running here have ended;
        ``state_file``: where this one's state was moved."""
        self.server.state_file = Path(state_file)
        self.server.retiring.set()


def process_tree(pid: int) -> dict[int, list[str]]:
    """``pid`` and every process below it (Ray's), each with the fields of its /proc stat
    after the command name; empty when ``pid`` is not running."""
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, stack = {}, [pid] if pid in stats else []
    while stack:
        each = stack.pop()
        tree[each] = stats[each]
        stack.extend(child for child in children.get(each, []) if child in stats)
    return tree


def tree_memory(pid: int) -> int | None:
    """Resident bytes of ``pid`` and every process below it, or None when it is not running."""
    tree = process_tree(pid)
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(int(fields[21]) * page for fields in tree.values()) if tree else None


def warm_up(tasks: RayTasks) -> None:
    """Run a trivial batch on each CPU, so a script's first batch finds workers that have
    imported what a batch needs."""
    import cloudpickle

    from gpar.raybackend import RUN_ALL_OPTIONS

    count = tasks.cpus()
    for key in range(count):
        tasks.submit(key, StagedCall((), None, "gpar.worker:warm", (), (),
                                     cloudpickle.dumps(())), RUN_ALL_OPTIONS, single=True)
    answered = 0
    while answered < count:
        answered += len(tasks.wait(1.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpar.server")
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--stamp", required=True)
    parser.add_argument("--idle-s", type=float, default=client.IDLE_S)
    parser.add_argument("--num-cpus", type=int)
    options = parser.parse_args(argv)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    private = tempfile.mkdtemp(prefix="gpar-")  # 0700: the socket and Ray's session files
    try:
        serve(options, private, stopping)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def serve(options: argparse.Namespace, private: str, stopping: threading.Event) -> None:
    """Start Ray, answer on a socket in ``private`` until stopped or idle, then stop Ray."""
    os.environ.pop("RAY_ADDRESS", None)
    ray_options = {"_temp_dir": os.path.join(private, "ray")}
    if options.num_cpus:
        ray_options["num_cpus"] = options.num_cpus
    cluster.start_embedded(**ray_options)
    tasks = RayTasks()
    threading.Thread(target=warm_up, args=(tasks,), daemon=True).start()
    socket_path = os.path.join(private, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    state = client.ServerState(
        pid=os.getpid(), started=time.time(), process_start=client.process_start(os.getpid()),
        socket=socket_path, key=secrets.token_hex(32), stamp=options.stamp,
        slot=options.state.stem, private_dir=private, idle_s=options.idle_s,
        num_cpus=tasks.cpus())
    _write_private(options.state, json.dumps(asdict(state)))
    server = Server(state, options.state, stopping)
    try:
        server.serve(listener)
    finally:
        listener.close()
        _remove_state_file(server.state_file, state)
        import ray

        ray.shutdown()


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` whole, readable by its owner only, under its final name at once."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _remove_state_file(path: Path, state: client.ServerState) -> None:
    """Remove the state file if it still names this server (a replacement may have written
    its own)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == state.pid:
            path.unlink()


if __name__ == "__main__":
    main()
