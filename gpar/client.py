"""A script's way to the user's local cluster: find the server, start it if needed, talk to it.

    script (never imports Ray)                 server (server.py: a Ray driver that outlives
    apply ─▶ attach(): state file ─▶ socket ──▶ scripts, one per user and Python environment)
           ServerTasks.put/submit/wait/... ───▶ RayTasks on the embedded cluster

Why a server: a script that is itself a Ray driver pays Ray's start (~3.5 s), or at least its
import and connection and a new job's worker start (~2.5 s), on every run; one that hands its
batches to a driver that is already attached, with workers already warm, pays a socket (see
README, "The local cluster").

The server is found through a state file readable by its owner only (the socket's path, a
key that authenticates both ends of every connection, its pid and start time, and the stamp of
what it runs): like jupyter's connection files. A server whose stamp differs (another version
of Python, Ray, cloudpickle or gpar, or packages installed since) is replaced, never used; a
dead one is replaced without an error; a lock makes scripts that start at once share one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import signal
import site
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from gpar import seam
from gpar.errors import ClusterConnectionError
from gpar.records import CallerContext
from gpar.seam import Tasks

#: How long a server may take to start (Ray's start is ~3.5 s on 2 idle cores).
START_TIMEOUT_S = 120.0
#: How long a server asked to stop has before it is sent SIGTERM, then SIGKILL.
STOP_PATIENCE_S = 10.0
#: Default idle time after which the server stops itself (GPAR_IDLE_S overrides it).
IDLE_S = 300.0

#: This script run: batches of another session drop the local modules this one loaded.
SESSION = uuid.uuid4().hex


@dataclass(frozen=True)
class ServerState:
    """What the state file says of a running server."""

    pid: int
    started: float  # time.time() at its start
    process_start: str  # the kernel's start time of ``pid``: a reused pid has another
    socket: str
    key: str  # hex; both ends of a connection prove they know it
    stamp: str
    slot: str
    private_dir: str  # the socket and Ray's session files, the user's alone
    idle_s: float
    num_cpus: int


def state_dir() -> Path:
    """Where state files live: GPAR_STATE_DIR, else the user's cache directory."""
    named = os.environ.get("GPAR_STATE_DIR")
    if named:
        return Path(named)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "gpar" / "clusters"


def slot() -> str:
    """This Python environment's name among the user's servers: the interpreter its
    executable resolves to (``python``, ``python3`` and ``python3.11`` are one), its prefix,
    and the host (a home directory shared by several hosts holds one state file for each)."""
    where = f"{os.path.realpath(sys.executable)}\0{sys.prefix}\0{socket.gethostname()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def private_state_dir() -> Path:
    """The state directory, made if need be, refused unless it is this user's alone: a state
    file names a socket to send the script's environment to and processes to stop, so one
    another account could write would be theirs to use."""
    directory = state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(directory)
    except OSError as exc:
        raise ClusterConnectionError(
            f"cannot use {directory} for the local cluster's state ({exc}): set GPAR_STATE_DIR "
            'to a directory of your own, or run with address="local"') from exc
    if (stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077):
        raise ClusterConnectionError(
            f"{directory} holds the local cluster's state but is not yours alone (a link, "
            "another owner, or open to others): chmod 700 it if it is yours, or set "
            "GPAR_STATE_DIR to a directory of your own")
    return directory


def stamp() -> str:
    """What a server must share with the script to run its code as the script would: Python,
    cloudpickle, gpar's own source files, and the site-packages directories (installing,
    upgrading or removing a package, Ray included, changes their modification time)."""
    parts = [_own_code()]
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        if os.path.isdir(entry):  # the interpreter's own: the same whatever a script adds
            parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@functools.cache
def _own_code() -> str:
    """Python, cloudpickle and gpar's source files, once per process (~70 stat calls, ~1 ms):
    a process runs the gpar it loaded, whatever is edited later."""
    import cloudpickle

    import gpar

    parts = [sys.version, cloudpickle.__version__]
    source_roots = [Path(gpar.__file__).parent.parent / name
                    for name in ("gpar", "envpack", "reduce_sql")]
    for root in source_roots:
        for path in sorted(root.glob("*.py")):
            info = path.stat()
            parts.append(f"{path}:{info.st_mtime_ns}:{info.st_size}")
    return "\n".join(parts)


def paths() -> tuple[Path, Path, Path]:
    """This environment's state file, start lock and server log."""
    directory = private_state_dir()
    name = slot()
    return directory / f"{name}.json", directory / f"{name}.lock", directory / f"{name}.log"


def retired_files() -> list[Path]:
    """The state files of this environment's retired servers (see retire)."""
    state_file = paths()[0]
    return sorted(state_file.parent.glob(f"{state_file.stem}.retired-*.json"))


def read_state(state_file: Path | None = None) -> ServerState | None:
    """The server of ``state_file`` (default: this environment's); None without one, or with
    one this user did not write alone (another owner, open to others, a link)."""
    state_file = paths()[0] if state_file is None else state_file
    try:
        descriptor = os.open(state_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor) as handle:
        info = os.fstat(descriptor)
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        try:
            return ServerState(**json.loads(handle.read()))
        except (OSError, ValueError, TypeError):
            return None


def process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (None if there is none): with the pid, it
    names one process, where a pid alone may have been reused."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(state: ServerState) -> bool:
    return process_start(state.pid) == state.process_start


def attach() -> ServerTasks:
    """A connection for one job to this environment's server, started if none runs."""
    state = read_state()
    tasks = _connect(state) if state is not None and state.stamp == stamp() else None
    if tasks is None:
        state = start()
        tasks = _connect(state)
    if tasks is None:
        raise ClusterConnectionError(f"the local gpar cluster started (pid {state.pid}) but "
                                     f"does not answer; its log: {paths()[2]}")
    return tasks


def _connect(state: ServerState) -> ServerTasks | None:
    if not alive(state):
        return None
    try:
        return ServerTasks(state)
    except (OSError, EOFError, AuthenticationError):  # gone, stopping, or not ours
        return None


@contextlib.contextmanager
def _start_lock():
    """Held while a server is checked and started: scripts that start at once share one."""
    import fcntl

    _, lock_file, _ = paths()
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start_server(idle_s: float | None = None, num_cpus: int | None = None) -> ServerState:
    """Start this environment's server, detached from the script (its own session: a Ctrl-C
    in the script's terminal does not reach it), and wait until it answers."""
    state_file, _, log_file = paths()
    if idle_s is None:
        try:
            idle_s = float(os.environ.get("GPAR_IDLE_S", IDLE_S))
        except ValueError:
            raise ClusterConnectionError(
                f"GPAR_IDLE_S={os.environ['GPAR_IDLE_S']!r}: give the idle time in seconds, "
                "e.g. GPAR_IDLE_S=600") from None
    command = [sys.executable, "-m", "gpar.server", "--state", str(state_file),
               "--stamp", stamp(), "--idle-s", str(idle_s)]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    with open(log_file, "w") as log:
        os.chmod(log_file, 0o600)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True, close_fds=True,
                                   cwd=state_file.parent)  # Ray puts it on workers' sys.path
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state()
        if state is not None and state.pid == process.pid:
            # reaped by a thread once it ends (it outlives most scripts, not every notebook):
            # neither a zombie nor a Popen dropped while it runs (a ResourceWarning)
            threading.Thread(target=process.wait, name="gpar-server-reaper", daemon=True).start()
            return state
        if process.poll() is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    tail = log_file.read_text(errors="replace")[-2000:]
    raise ClusterConnectionError(
        f"the local gpar cluster did not start (exit code {process.poll()}); the end of its "
        f"log {log_file}:\n{tail}")


def start(idle_s: float | None = None, num_cpus: int | None = None) -> ServerState:
    """Start this environment's server unless one of this stamp runs; its state."""
    with _start_lock():
        state = read_state()
        if state is not None and state.stamp == stamp():
            tasks = _connect(state)
            if tasks is not None:
                tasks.close()
                return state
        if state is not None:
            retire(state)
        return _start_server(idle_s, num_cpus)


def retire(state: ServerState) -> None:
    """A server of another stamp (gpar or a package changed since it started) takes no new
    job and ends once its running jobs have ended, rather than have them killed; its state
    file moves aside, where ``gpar cluster status`` and ``stop`` still find it."""
    state_file = paths()[0]
    aside = state_file.with_name(f"{state_file.stem}.retired-{state.pid}.json")
    with contextlib.suppress(OSError):
        os.replace(state_file, aside)
    try:
        with contextlib.closing(ServerTasks(state)) as tasks:
            tasks._call("retire", str(aside))
    except Exception:  # it cannot be asked (gone, or a version without retire): stopped
        stop(state, aside)


def stop_all() -> list[ServerState]:
    """Stop this environment's server and its retired ones (their jobs are killed); those
    that were running."""
    stopped = []
    for state_file in [paths()[0], *retired_files()]:
        state = read_state(state_file)
        if state is not None and stop(state, state_file):
            stopped.append(state)
    return stopped


def stop(state: ServerState | None = None, state_file: Path | None = None) -> bool:
    """Stop a server (this environment's, by default; ``state_file``: where its state is):
    asked first, then by its own pid and process group, SIGTERM then SIGKILL. Whether it
    was running."""
    state = state or read_state(state_file)
    if state is None:
        return False
    running = alive(state)
    if running:
        with contextlib.suppress(OSError, EOFError, AuthenticationError,
                                 ClusterConnectionError):
            ServerTasks(state)._call("stop")
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and alive(state):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(state.pid, sig)
            if _exited(state, STOP_PATIENCE_S):
                break
    _remove_state(state, state_file)
    return running


def _exited(state: ServerState, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while alive(state):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _remove_state(state: ServerState, state_file: Path | None = None) -> None:
    """Remove the state file if it is still this server's, and what it left behind."""
    import shutil

    state_file = paths()[0] if state_file is None else state_file
    if read_state(state_file) == state:
        with contextlib.suppress(OSError):
            state_file.unlink()
    shutil.rmtree(state.private_dir, ignore_errors=True)


def retired() -> list[ServerState]:
    """This environment's retired servers still running (their jobs have not all ended)."""
    states = [read_state(state_file) for state_file in retired_files()]
    return [state for state in states if state is not None and alive(state)]


def status() -> dict[str, Any] | None:
    """What the server says of itself (None when none runs for this environment)."""
    state = read_state()
    if state is None or not alive(state):
        return None
    try:
        answer = ServerTasks(state)._call("status")
    except (OSError, EOFError, AuthenticationError, ClusterConnectionError):
        return None
    return {**answer, "current": state.stamp == stamp()}


class ServerTasks(Tasks):
    """A script's seam.Tasks: each request answered by the server's RayTasks on one
    connection (one job); the server cancels whatever the connection started when it closes,
    a script that dies included."""

    def __init__(self, state: ServerState):
        self.conn = Client(state.socket, family="AF_UNIX", authkey=bytes.fromhex(state.key))
        self.connection_id = f"{state.socket}/{uuid.uuid4().hex}"
        self.broken = False
        self.calling = threading.Lock()  # one request and its answer at a time: a Job's
        # thread and the caller's may both ask

    def _call(self, method: str, *args: Any) -> Any:
        with self.calling:
            ok, value = self._request(method, args)
        if not ok:
            raise value
        return value

    def _request(self, method: str, args: tuple) -> tuple[bool, Any]:
        if self.broken:
            raise ClusterConnectionError("the connection to the local gpar cluster was cut "
                                         "off mid-call")
        self.broken = True  # until the answer is read whole
        try:
            self.conn.send((method, args))
            answer = (True, None) if method in seam.ONE_WAY else self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ClusterConnectionError(
                "the local gpar cluster stopped while this script was using it (stopped by "
                "`gpar cluster stop` or gpar.shutdown() elsewhere, or killed); run the script "
                "again to start a new one") from exc
        self.broken = False
        return answer

    def probe(self) -> Any:
        """The workers' facts, seen from this script: its batches adopt its sys.path."""
        facts = self._call("probe")
        search_path = tuple(os.path.abspath(entry or os.getcwd()) for entry in sys.path)
        return dataclasses.replace(facts, search_path=search_path)

    def put(self, data: Any) -> Any:
        return self._call("put", data)

    def missing(self, digests: list[str]) -> list[str]:
        return self._call("missing", digests)

    def put_environment(self, stream: bytes, digests: list[str], given: dict[str, Any],
                        context: Any) -> Any:
        return self._call("put_environment", stream, digests, given, context)

    def caller_context(self) -> CallerContext:
        return CallerContext(SESSION, tuple(os.path.abspath(entry or os.getcwd())
                                            for entry in sys.path),
                             os.getcwd(), dict(os.environ))

    def cpus(self) -> int:
        return self._call("cpus")

    def alive_nodes(self) -> set[str]:
        return self._call("alive_nodes")

    def submit(self, key: Any, call: Any, options: dict[str, Any],
               placement: dict[str, Any] | None = None, single: bool = False,
               note: tuple[int, int, Any] | None = None) -> None:
        self._call("submit", key, call, options, placement, single, note)

    def wait(self, timeout_s: float) -> list[tuple[Any, Any]]:
        return self._call("wait", timeout_s)

    def cancel(self, key: Any) -> None:
        if not self.broken:  # else the server cancels it as the connection closes
            self._call("cancel", key)

    def show_page(self, url: str) -> None:
        self._call("show_page", url)

    def close(self) -> None:
        self.conn.close()
