"""A node removed mid-job from a 3-node cluster: every result still comes back, once."""

import os
import shutil
import subprocess
import sys
import textwrap

import faults
import pytest

SCRIPT = """
    import sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    import gpar
    from faults import faulty, wait_until, attempts_of

    # Fast health checks: without them a dead node is noticed after ~14 s.
    head = dict(num_cpus=0, include_dashboard=False, _system_config={
        "health_check_period_ms": 500, "health_check_failure_threshold": 2,
        "health_check_timeout_ms": 500})
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    markers = sys.argv[1]

    def node_running(pid):  # the node whose raylet started the worker: its parent
        parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        return next(node for node in workers
                    if node.all_processes["raylet"][0].process.pid == parent)

    def remove_a_node_mid_job():  # the node that runs task 5, while it runs it
        marker = f"{markers}/5.0"  # holds the attempt's pid once claimed
        wait_until(lambda: attempts_of(markers, 5) > 0 and open(marker).read(), 60)
        pid = int(open(marker).read())
        cluster.remove_node(node_running(pid), allow_graceful=False)

    remover = threading.Thread(target=remove_a_node_mid_job)
    remover.start()
    started = time.monotonic()
    # task 5's first attempt runs until its node goes: the removal always finds it running
    results = gpar.apply(range(20), faulty, {(5, 0): "hang"}, markers, 1.0,
                         address=cluster.address, max_workers=2, progress=False, backups=False)
    remover.join()
    rows = results.report.attempts
    print("RESULT", results == list(range(20)))  # Ray writes to stdout too: mark our lines
    print("RESULT", sorted({a.outcome for a in rows}))
    print("RESULT", len({a.node for a in rows}))
    print("RESULT", sum(a.outcome == "ok" for a in rows))
    print("RESULT", [(a.task, a.error) for a in rows if a.outcome == "system"])
    print("job took", time.monotonic() - started, file=sys.stderr)
    gpar.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
def test_removing_a_node_mid_job_loses_and_duplicates_nothing(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    shutil.copy(faults.__file__, tmp_path)  # beside the script, like a helper module
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    completed = subprocess.run([sys.executable, "script.py", str(markers)], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line[len("RESULT "):] for line in completed.stdout.splitlines()
             if line.startswith("RESULT ")]
    equal, outcomes, nodes, oks, lost = lines
    assert equal == "True"
    assert outcomes == "['ok', 'system']"  # the lost attempts are in the report
    assert nodes == "2"
    assert oks == "20"  # each element accepted once
    # its note went with the node: the row says the element in fn is not known
    assert lost.startswith("[(5, ") and "which element was in fn is not known" in lost
