"""The local cluster scripts share: scripts run as a user runs them, in fresh processes with no
address, against a server of their own state directory (GPAR_STATE_DIR), stopped by its test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import faults
import pytest
from faults import alive, pids, wait_until

import gpar
from gpar import client

pytestmark = pytest.mark.slow

#: Bounds for polls: a server start is ~4 s on idle cores, far more on a loaded machine.
BOUND_S = 180


def _as_in_a_terminal() -> None:
    """A script started from a terminal takes Ctrl-C; one started by a test run that was itself
    started in the background (``make test &``) would inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Scripts:
    """Runs scripts in fresh interpreters with one state directory; stops its server."""

    def __init__(self, directory: Path, **env: str):
        self.directory = directory
        self.state_dir = directory / "state"
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("RAY_ADDRESS", "GPAR_CLUSTER")}
        self.env.update(GPAR_STATE_DIR=str(self.state_dir), **env)

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(textwrap.dedent(text))
        return path

    def start(self, source: str, python: str = sys.executable, **env: str) -> subprocess.Popen:
        script = self.write("script.py", source) if "\n" in source else self.directory / source
        return subprocess.Popen([python, str(script)], cwd=self.directory,
                                env={**self.env, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)

    def run(self, source: str, **kwargs) -> str:
        process = self.start(source, **kwargs)
        out, err = process.communicate(timeout=BOUND_S)
        assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
        return out

    def gpar(self, *args: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "gpar.cli", *args], env=self.env,
                                   capture_output=True, text=True, timeout=BOUND_S)
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    def state(self) -> dict | list | None:
        files = list(self.state_dir.glob("*.json"))
        states = [json.loads(path.read_text()) for path in files]
        return states[0] if len(states) == 1 else None if not states else states

    def stop(self) -> None:
        self.gpar("cluster", "stop")


@pytest.fixture
def scripts(tmp_path):
    """A local cluster of the test's own, for tests that stop, kill or replace it."""
    runner = Scripts(tmp_path)
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One local cluster for the tests that leave it running, as a user's is."""
    runner = Scripts(tmp_path_factory.mktemp("shared"))
    try:
        yield runner
    finally:
        runner.stop()


SHOW = """
    import os, sys, gpar
    from gpar import client
    pids = gpar.apply(range(4), lambda x: os.getpid(), progress=False)
    print(client.read_state().pid, "ray" in sys.modules, sorted(set(pids)))
"""


def gone(pid: int) -> bool:
    deadline = time.monotonic() + BOUND_S
    while client.process_start(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_two_scripts_one_after_the_other_share_one_cluster_and_its_workers(shared):
    first = shared.run(SHOW).split(maxsplit=2)
    running = warm_workers(shared)  # the server's processes as the second script starts
    second = shared.run(SHOW).split(maxsplit=2)

    assert first[0] == second[0]  # one server
    assert first[1] == second[1] == "False"  # the script never became a Ray driver
    assert set(eval(second[2])) <= running  # workers already running: none started for it


def warm_workers(scripts: Scripts) -> set[int]:
    """The server's processes: Ray's below it, its workers among them."""
    from gpar.server import process_tree

    return set(process_tree(scripts.state()["pid"]))


HELPERS = """
    SEEN = []
    VALUE = {value}
    def note(x):
        SEEN.append(x)
        return VALUE, len(SEEN)
"""


#: Python as a user runs it, caching bytecode in __pycache__ (an empty value unsets it).
WRITING_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def test_each_script_sees_its_own_files_environment_and_module_state(shared):
    helpers = shared.write("helpers.py", HELPERS.format(value=1))
    source = """
        import os, gpar
        from gpar import client
        from helpers import note
        def fn(x):
            return (note(x), os.environ.get("GREETING"), os.environ.get("RAY_GREETING"),
                    "RAY_RAYLET_PID" in os.environ, open("data.txt").read(), os.getcwd())
        print((gpar.apply([0], fn, progress=False)[0], client.read_state().pid))
    """
    (shared.directory / "data.txt").write_text("first")
    first, _ = eval(shared.run(source, GREETING="hello", **WRITING_BYTECODE))
    # A quick edit: the same size, within the same second, so the bytecode the first script
    # cached still passes Python's check (whole-second mtime and size). The workers must run
    # the file as it now is, as a cluster that is shipped its source does.
    written_ns = helpers.stat().st_mtime_ns
    shared.write("helpers.py", HELPERS.format(value=2))
    os.utime(helpers, ns=(written_ns, same_second(written_ns)))
    (shared.directory / "data.txt").write_text("second")
    # No GREETING now: the first script's must not linger. The script's RAY_* stay its own:
    # the worker keeps the cluster's (Ray's RAYLET_PID, and the environment of whichever
    # script started the server: normally none of RAY_GREETING).
    second, server = eval(shared.run(source, RAY_GREETING="bonjour", **WRITING_BYTECODE))
    clusters_own = environ_of(server).get("RAY_GREETING")

    assert first == ((1, 1), "hello", None, True, "first", str(shared.directory))
    assert second == ((2, 1), None, clusters_own, True, "second", str(shared.directory))


def environ_of(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def same_second(ns: int) -> int:
    """Another time in the same whole second as ``ns``."""
    return ns + 1 if (ns + 1) // 10**9 == ns // 10**9 else ns - 1


def test_module_state_of_one_script_does_not_reach_the_next_even_unedited(shared):
    shared.write("tokens.py", """
        SEEN = set()
        def seen(x, token):
            SEEN.add(token)
            return sorted(SEEN)
    """)
    source = """
        import os, gpar
        from tokens import seen
        print(os.getpid(), gpar.apply(range(8), seen, os.getpid(), progress=False))
    """
    for _ in range(2):
        token, results = shared.run(source).split(maxsplit=1)
        assert all(result == [int(token)] for result in eval(results))


def test_a_script_of_another_python_environment_gets_its_own_cluster(scripts, tmp_path):
    other = other_environment(tmp_path / "venv2")
    here = scripts.run(SHOW).split()[0]
    there = scripts.run(SHOW, python=str(other)).split()[0]

    assert here != there
    states = list(scripts.state_dir.glob("*.json"))
    assert len(states) == 2
    stop_other = subprocess.run([str(other), "-m", "gpar.cli", "cluster", "stop"],
                                env=scripts.env, capture_output=True, text=True,
                                timeout=BOUND_S)
    assert stop_other.stdout.startswith(f"stopped: pid {there}"), stop_other.stderr
    assert gone(int(there))


def other_environment(path: Path) -> Path:
    """A second virtualenv that sees this one's packages (a .pth file): another interpreter
    path and prefix, the same code."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=BOUND_S)
    import site

    purelib = next(Path(path).glob("lib/python*/site-packages"))
    source_root = Path(__file__).parent.parent
    (purelib / "here.pth").write_text("\n".join([*site.getsitepackages(), str(source_root)]))
    return path / "bin" / "python"


def test_scripts_started_at_once_end_up_on_one_cluster(scripts):
    processes = [scripts.start(SHOW) for _ in range(3)]
    outs = [process.communicate(timeout=BOUND_S) for process in processes]

    assert all(process.returncode == 0 for process in processes), outs
    assert len({out.split()[0] for out, _ in outs}) == 1
    assert isinstance(scripts.state(), dict)  # one state file


def test_a_cluster_whose_processes_were_killed_is_replaced(scripts):
    first = int(scripts.run(SHOW).split()[0])
    os.killpg(first, signal.SIGKILL)  # the server and Ray's processes: its own group
    assert gone(first)

    second = int(scripts.run(SHOW).split()[0])
    assert second != first


def test_a_stale_state_file_is_replaced_without_an_error(scripts):
    scripts.run(SHOW)
    state_file = next(scripts.state_dir.glob("*.json"))
    state = json.loads(state_file.read_text())
    scripts.stop()
    state_file.write_text(json.dumps(state))  # left behind, as by a reboot

    assert int(scripts.run(SHOW).split()[0]) != state["pid"]


def test_a_cluster_started_from_the_shell_offers_its_cpus_and_stops_by_itself_when_idle(
        tmp_path):
    # --idle-s wins over the environment's GPAR_IDLE_S; the CPUs are what Ray counts.
    scripts = Scripts(tmp_path, GPAR_IDLE_S="600")
    cpus = 1 if (os.cpu_count() or 1) > 1 else 2  # not what Ray would offer by default
    try:
        out = scripts.gpar("cluster", "start", "--idle-s", "1", "--num-cpus", str(cpus))
        pid = int(out.split()[2].rstrip(","))  # it may have stopped already: not its state
        assert out == f"running: pid {pid}, {cpus} CPUs, stops after 1 s without a job\n"
        assert gone(pid)  # no job came: it stopped by itself
        assert scripts.state() is None
    finally:
        scripts.stop()


def test_cluster_status_and_stop_from_the_shell(scripts):
    assert scripts.gpar("cluster", "status").startswith("not running")
    pid = int(scripts.run(SHOW, GPAR_IDLE_S="600").split()[0])
    status = scripts.gpar("cluster", "status")
    assert f"running: pid {pid} since" in status
    assert "MiB resident" in status and "key: " in status
    assert "idle stop: after 600 s" in status  # from the environment of the script that started it
    members = warm_workers(scripts)

    assert scripts.gpar("cluster", "stop").strip() == f"stopped: pid {pid}, with the jobs it ran"
    assert all(gone(member) for member in members)  # Ray's processes too
    assert scripts.gpar("cluster", "status").startswith("not running")


def test_a_second_script_loading_the_same_data_sends_nothing_large(scripts, tmp_path):
    """The cluster keeps what a script's environment shipped by content, for the next
    script of the user, within its bound (gpar cluster status shows it)."""
    import numpy as np

    np.save(tmp_path / "prices.npy", np.arange(5_000_000, dtype=np.float64))  # 40 MB
    load = f"""
        import numpy as np, gpar
        prices = np.load({str(tmp_path / "prices.npy")!r})
        results = gpar.apply(range(3), lambda i: float(prices[i] * 2), progress=False)
        print(results, results.report.environment_bytes_sent)
    """
    first = scripts.run(load).split("] ")
    second = scripts.run(load).split("] ")
    assert first[0] == second[0] == "[0.0, 2.0, 4.0"
    assert int(first[1]) >= 40_000_000 and int(second[1]) < 100_000
    status = scripts.gpar("cluster", "status")
    assert "environments held: 1 buffers, 38 of 2048 MiB" in status, status


def test_shutdown_in_a_script_detaches_it_and_leaves_the_cluster_to_other_scripts(shared):
    pid = shared.run(SHOW + "    gpar.shutdown()\n").split()[0]
    assert shared.run(SHOW).split()[0] == pid  # the same cluster, still running


def test_only_the_owner_can_reach_the_cluster(shared):
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    shared.run(SHOW)
    state_file = next(shared.state_dir.glob("*.json"))
    assert state_file.stat().st_mode & 0o077 == 0
    assert shared.state_dir.stat().st_mode & 0o077 == 0
    socket_path = shared.state()["socket"]
    assert Path(socket_path).parent.stat().st_mode & 0o077 == 0

    with pytest.raises(AuthenticationError):
        Client(socket_path, family="AF_UNIX", authkey=b"0" * 32)
    assert shared.run(SHOW)  # and the server goes on serving its owner


def test_ctrl_c_cancels_the_scripts_tasks_and_leaves_the_cluster_up(shared):
    pid_file = shared.directory / "worker.pid"
    process = shared.start(f"""
        import os, time, gpar
        def hang(x):
            with open({str(pid_file)!r}, "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(600)
        gpar.apply([1], hang, progress=False)
    """)
    deadline = time.monotonic() + BOUND_S
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=BOUND_S)

    assert "KeyboardInterrupt" in err
    assert gone(int(pid_file.read_text()))  # the task's worker was killed
    assert no_job_running(shared)


def no_job_running(scripts: Scripts) -> bool:
    """The cluster is up with no job: a connection's end is counted just after its tasks are
    cancelled, so this is waited for."""
    return wait_until(lambda: "jobs: 0 running" in scripts.gpar("cluster", "status"), BOUND_S,
                      poll_s=0.2)


def test_a_script_killed_mid_job_has_its_tasks_cancelled_and_leaves_the_cluster_up(shared,
                                                                                    tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    shutil.copy(faults.__file__, shared.directory)  # beside the script, as a user's helper
    process = shared.start(f"""
        import gpar
        from faults import faulty, hanging
        gpar.apply(range(2), faulty, hanging(range(2)), {str(markers)!r}, max_workers=2,
                   progress=False)
    """)
    try:
        assert wait_until(lambda: len(pids(markers)) == 2 or process.poll() is not None,
                          BOUND_S)
        assert process.poll() is None, process.communicate()  # both tasks run, the job waits
        process.kill()  # SIGKILL: the script cancels nothing itself
        process.communicate(timeout=BOUND_S)
        workers = pids(markers)
        assert wait_until(lambda: not any(map(alive, workers)), BOUND_S)
        assert no_job_running(shared)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=BOUND_S)


def test_a_cluster_of_the_process_alone_starts_in_the_script_and_ends_with_it(tmp_path):
    """GPAR_CLUSTER=process: Ray in the script itself, no local cluster, and none of Ray's
    processes outlives the script (each listed with its start time: a pid may be reused)."""
    scripts = Scripts(tmp_path)
    ray_tmpdir = tempfile.mkdtemp(prefix="gpar-proc-", dir="/tmp")  # Ray's socket paths: short
    try:
        out = scripts.run("""
            import os, sys, gpar
            from gpar.server import process_tree
            results = gpar.apply(range(4), abs, progress=False)
            print((results, sys.modules["ray"].is_initialized(),
                   {pid: fields[19] for pid, fields in process_tree(os.getpid()).items()
                    if pid != os.getpid()}))
        """, GPAR_CLUSTER="process", RAY_TMPDIR=ray_tmpdir)
        results, in_the_script, ray_processes = eval(out)
        assert results == [0, 1, 2, 3] and in_the_script and ray_processes
        assert scripts.state() is None  # no local cluster
        assert wait_until(lambda: all(client.process_start(pid) != start
                                      for pid, start in ray_processes.items()), BOUND_S)
    finally:
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
        if scripts.state() is not None:  # a local cluster started after all
            scripts.stop()


def test_a_nested_apply_runs_in_the_scripts_place_too(shared):
    shared.write("inner.py", """
        def square(x):
            return x * x
    """)
    out = shared.run("""
        import gpar
        from inner import square
        def outer(n):
            return sum(gpar.apply(range(n), square, progress=False))
        print(list(gpar.apply([3, 4], outer, progress=False)))
    """)
    assert out.strip() == "[5, 14]"


def test_an_output_written_through_the_local_cluster_resumes_there(shared):
    marker = shared.directory / "fail-once"
    marker.write_text("")
    source = f"""
        import os, gpar, reduce_sql
        def table(x):
            if x == 2 and os.path.exists({str(marker)!r}):
                raise ValueError("not yet")
            return {{"x": [x], "square": [x * x]}}
        gpar.apply(range(5), table, output="out", progress=False, errors="warn")
        print(reduce_sql.Dataset("out").sql("SELECT count(*) AS n FROM data").column("n")[0])
    """
    assert shared.run(source).strip() == "4"  # a relative path: the script's directory
    marker.unlink()
    assert shared.run(source).strip() == "5"  # the same job: only element 2 ran again


def test_a_state_directory_or_file_others_could_write_is_not_trusted(tmp_path, monkeypatch):
    """A state file names a socket the script sends its environment to and processes to stop:
    one another account could have written is refused, or ignored."""
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    monkeypatch.setenv("GPAR_STATE_DIR", str(open_dir))
    with pytest.raises(gpar.ClusterConnectionError, match="not yours alone"):
        client.attach()

    private = tmp_path / "private"
    monkeypatch.setenv("GPAR_STATE_DIR", str(private))
    state_file, _, _ = client.paths()
    state_file.write_text(json.dumps({"pid": os.getpid(), "started": 0.0,
                                      "process_start": client.process_start(os.getpid()),
                                      "socket": "/nowhere", "key": "00", "stamp": "s",
                                      "slot": "s", "private_dir": "/nowhere", "idle_s": 1.0,
                                      "num_cpus": 1}))
    state_file.chmod(0o644)  # as another process might leave it
    assert client.read_state() is None
    state_file.chmod(0o600)
    assert client.read_state().pid == os.getpid()


def test_a_cluster_of_another_stamp_retires_and_finishes_the_job_it_runs(scripts, tmp_path):
    """A script whose gpar is another, edited source tree (a checkout of another version)
    starts while a job runs on the user's cluster: it must not run on code it does not have,
    and the running job must not be killed. The old cluster retires: it finishes that job,
    listed by status meanwhile, then ends by itself."""
    gate = tmp_path / "go"
    waiting = scripts.start(f"""
        import os, time, gpar
        def held(x):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return x
        print(gpar.apply(range(2), held, progress=False), flush=True)
    """)
    try:
        assert wait_until(lambda: isinstance(scripts.state(), dict) and "jobs: 1 running"
                          in scripts.gpar("cluster", "status"), BOUND_S)
        old = scripts.state()["pid"]
        source = tmp_path / "source"
        root = Path(gpar.__file__).parent.parent
        for package in ("gpar", "envpack", "reduce_sql"):
            shutil.copytree(root / package, source / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        with open(source / "gpar" / "api.py", "a") as handle:
            handle.write("\n# edited\n")
        new = int(scripts.run(SHOW, PYTHONPATH=str(source)).split()[0])
        assert new != old and client.process_start(old) is not None  # still running
        assert f"retired: pid {old} since" in scripts.gpar("cluster", "status")
        gate.touch()
        out, err = waiting.communicate(timeout=BOUND_S)
        assert out.strip() == "[0, 1]", err
        assert gone(old)  # by itself, once its job had ended
        assert not list(scripts.state_dir.glob("*.retired-*"))
    finally:
        gate.touch()
        waiting.communicate(timeout=BOUND_S)


def test_the_script_that_starts_the_cluster_leaves_no_resource_warning(scripts):
    process = scripts.start("""
        import gc, gpar
        print(gpar.apply(range(2), abs, progress=False))
        gc.collect()
    """, PYTHONWARNINGS="always::ResourceWarning")
    out, err = process.communicate(timeout=BOUND_S)
    assert out.strip() == "[0, 1]" and "ResourceWarning: subprocess" not in err, err


def test_python_python3_and_the_gpar_command_find_one_cluster(scripts):
    bin_dir = Path(sys.executable).parent
    here = scripts.run(SHOW, python=str(bin_dir / "python")).split()[0]
    there = scripts.run(SHOW, python=str(bin_dir / "python3")).split()[0]
    assert here == there
    status = subprocess.run([str(bin_dir / "gpar"), "cluster", "status"], env=scripts.env,
                            capture_output=True, text=True, timeout=BOUND_S)
    assert f"running: pid {here} since" in status.stdout, status.stderr


def test_submit_and_imap_run_through_the_local_cluster_and_an_exit_mid_stream_cancels(
        shared, tmp_path):
    """A script that leaves while an imap runs neither hangs nor leaves its tasks running."""
    markers = tmp_path / "markers"
    markers.mkdir()
    shutil.copy(faults.__file__, shared.directory)
    out = shared.run(f"""
        import gpar
        from faults import faulty, hanging, pids, wait_until
        job = gpar.submit(range(6), abs, progress=False)
        stream = gpar.imap((x for x in range(8)), faulty, hanging([6, 7]), {str(markers)!r},
                           max_workers=2, backups=False, progress=False)
        first = [next(stream) for _ in range(6)]
        print(job.result(timeout=120), first, flush=True)
        assert wait_until(lambda: len(pids({str(markers)!r})) == 8, 120)  # 6 and 7 hang
    """)
    assert out.strip() == "[0, 1, 2, 3, 4, 5] [0, 1, 2, 3, 4, 5]"
    hung = [int((markers / f"{task}.0").read_text()) for task in (6, 7)]
    assert wait_until(lambda: not any(map(alive, hung)), BOUND_S)
    assert no_job_running(shared)


def test_one_connection_to_the_cluster_answers_requests_from_several_threads(shared):
    out = shared.run("""
        import threading
        from gpar import cluster
        tasks = cluster.connect()
        answers, errors = [], []
        def ask():
            try:
                for _ in range(50):
                    answers.append((tasks.cpus(), len(tasks.alive_nodes())))
            except Exception as error:
                errors.append(repr(error))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(sorted(set(answers)), len(answers), errors[:1])
    """)
    assert out.split("]", 1)[1].strip() == "400 []"
    assert len(eval(out.split("]", 1)[0] + "]")) == 1  # every thread got its own answer
