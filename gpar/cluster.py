"""Which Ray cluster apply() runs on: the one given, or an embedded local one started once.

The embedded cluster is quiet (no dashboard, no usage stats, no worker logs on the driver) and
closed to strangers: Ray's servers listen on every interface even when told to use loopback, so
Ray's token authentication, on by default for local clusters, is what keeps other processes and
hosts out. It is never switched off here, and its token file is the owner's alone (auth.py).
A cluster given by address gets this process's token, and is checked to accept it first.
In a Jupyter kernel, Ray is started and stopped without noise in the notebook (notebook.py).
Its workers run at the caller's niceness, not below it (WORKER_NICENESS).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gpar import auth, notebook

#: Added to the caller's niceness for the embedded cluster's workers: none, so a job competes for
#: the CPUs as the caller's own processes (and joblib's, multiprocessing's) do. Ray's default of
#: 15 let any other busy process starve it: 200 items of 50 ms of CPU beside two busy processes
#: took 103 s at 15 and 10.5 s at 0 (5.2 s on an idle machine either way).
WORKER_NICENESS = 0


def connect(address: str | None = None, **local_options: Any) -> None:
    """Attach this process to Ray: ``address``, else RAY_ADDRESS, else an embedded cluster.

    Inside a Ray task (a nested apply) the worker is already attached, and that is the cluster.
    ``local_options`` go to ``ray.init`` when the embedded cluster is started (tests pass
    ``_temp_dir``, ``num_cpus``).
    """
    with notebook.quiet_ray_import():
        import ray

    if ray.is_initialized():
        _refuse_another(address, ray.get_runtime_context())
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        auth.prepare_to_connect(address)
        with notebook.ray_started_quietly():
            ray.init(address=address, **quiet)
        return
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        from gpar.errors import GparError

        raise GparError(
            f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} would start the embedded Ray cluster "
            "without authentication, open to anyone who can reach this machine; unset it."
        )
    auth.private_default_token()
    system_config = {"worker_niceness": WORKER_NICENESS, **local_options.pop("_system_config", {})}
    with notebook.ray_started_quietly():
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _system_config=system_config,
            **quiet,
            **local_options,
        )


def _refuse_another(address: str | None, context: Any) -> None:
    """A driver already attached to one cluster was given another's ``host:port``: say so
    rather than run there. Ports tell clusters apart (hosts have several names); a nested
    apply runs on its worker's cluster, whatever it is given."""
    import ray

    if not address or context.worker.mode == ray.WORKER_MODE or address.count(":") != 1:
        return
    current = context.gcs_address
    if address.rsplit(":", 1)[1] != current.rsplit(":", 1)[1]:
        from gpar.errors import ClusterConnectionError

        raise ClusterConnectionError(
            f"this process is attached to the Ray cluster at {current}, not {address}: call "
            "gpar.shutdown() first to use another")


def cpu_slots() -> int:
    """CPUs of the cluster now: the default cap on tasks in flight."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def shutdown() -> None:
    """Stop the embedded cluster, or detach from the one given; the next apply() reconnects."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
