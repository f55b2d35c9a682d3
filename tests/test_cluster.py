"""The embedded cluster: reused by later calls, closed to processes without its token."""

import os
import subprocess
import sys
import textwrap

import pytest

import gpar

CONNECT_AND_RUN = textwrap.dedent("""
    import sys, ray
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        print("ran", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60))
    except Exception as error:
        print("refused", type(error).__name__, str(error)[:300])
""")


def connect_from_another_process(address: str, **env_overrides: str) -> tuple[str, str]:
    """What the process printed, and what Ray logged on its stderr."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env_overrides}
    completed = subprocess.run([sys.executable, "-c", CONNECT_AND_RUN, address], env=env,
                               capture_output=True, text=True, timeout=120)
    return completed.stdout.strip(), completed.stderr


def assert_refused_for_its_token(out: str, log: str) -> None:
    """Refused by the cluster's authentication: not for any other reason a connection fails."""
    assert out.startswith("refused ConnectionError"), out
    assert "Unauthenticated: RPC error: InvalidAuthToken" in log, log[-3000:]


def test_a_process_with_the_token_can_run_a_task(cluster):
    out, log = connect_from_another_process(cluster)
    assert out.startswith("ran 42") and "InvalidAuthToken" not in log, (out, log[-3000:])


def test_a_process_with_a_wrong_token_is_refused(cluster):
    # The same call as the test above, differing only in the token; Ray reports it as a
    # failure to connect.
    assert_refused_for_its_token(*connect_from_another_process(
        cluster, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32))


def test_a_process_without_authentication_is_refused(cluster):
    assert_refused_for_its_token(*connect_from_another_process(cluster,
                                                               RAY_AUTH_MODE="disabled"))


def test_later_calls_reuse_the_running_cluster(cluster):
    import ray

    node_before = ray.get_runtime_context().get_node_id()
    gpar.apply([1, 2], abs, progress=False)
    assert ray.get_runtime_context().get_node_id() == node_before


def test_another_clusters_address_is_refused_while_attached(cluster):
    host, port = cluster.rsplit(":", 1)
    other = f"{host}:{int(port) + 1}"
    with pytest.raises(gpar.ClusterConnectionError, match=f"not {other}: call gpar.shutdown"):
        gpar.apply([1], abs, address=other)
    assert gpar.apply([-1], abs, address=f"127.0.0.1:{port}", progress=False) == [1]
    with pytest.raises(TypeError, match="address takes"):
        gpar.apply([1], abs, address=int(port))


def test_shutdown_detaches_and_the_next_call_reconnects(run_script):
    completed = run_script("""
        import ray, gpar
        first = gpar.apply([1, 2], abs, progress=False)
        gpar.shutdown()
        print(ray.is_initialized(), first, gpar.apply([-3], abs, progress=False))
    """)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False [1, 2] [3]"


def test_embedded_start_refuses_to_switch_authentication_off(monkeypatch):
    import ray

    from gpar import cluster as gpar_cluster

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(gpar.GparError, match="without authentication"):
        gpar_cluster.connect()


def test_the_embedded_clusters_workers_run_at_the_callers_niceness(cluster):
    """Not Ray's 15 below it: any other busy process would starve the job."""
    def niceness(_):
        return os.nice(0)

    assert gpar.apply(range(2), niceness, progress=False) == [os.nice(0)] * 2
