"""Which Ray cluster apply() runs on: the one given, the user's local cluster (server.py, which
outlives scripts), or one of this process alone.

An embedded cluster (the local cluster's, or one of this process) is quiet (no dashboard, no
usage stats, no worker logs on the driver) and closed to strangers: Ray's servers listen on
every interface even when told to use loopback, so Ray's token authentication, on by default
for local clusters, is what keeps other processes and hosts out. It is never switched off
here, and its token file is the owner's alone (auth.py).
A cluster given by address gets this process's token, and is checked to accept it first.
In a Jupyter kernel, Ray is started and stopped without noise in the notebook (notebook.py).
Its workers run at the caller's niceness, not below it (WORKER_NICENESS).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from gpar import auth, notebook

#: Added to the caller's niceness for the embedded cluster's workers: none, so a job competes for
#: the CPUs as the caller's own processes (and joblib's, multiprocessing's) do. Ray's default of
#: 15 let any other busy process starve it: 200 items of 50 ms of CPU beside two busy processes
#: took 103 s at 15 and 10.5 s at 0 (5.2 s on an idle machine either way).
WORKER_NICENESS = 0


def connect(address: str | None = None, **local_options: Any) -> Any:
    """The cluster a job runs on, as a raytasks.RayTasks (or the local server's stand-in).

    In order: the cluster this process is attached to (inside a Ray task, a nested apply,
    that is its worker's); ``address``, else RAY_ADDRESS ("local": a cluster of this process
    alone, Ray's convention, as is GPAR_CLUSTER=process); else the user's local cluster, which
    outlives the script (client.py). ``local_options`` (tests: ``_temp_dir``, ``num_cpus``)
    start a cluster of this process alone with them.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        _refuse_another(address, ray.get_runtime_context())
        return _attached()
    address = address or os.environ.get("RAY_ADDRESS")
    per_process = (address == "local" or local_options
                   or os.environ.get("GPAR_CLUSTER", "").lower() == "process")
    if address and address != "local":
        with notebook.quiet_ray_import():
            import ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        auth.prepare_to_connect(address)
        with notebook.ray_started_quietly():
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        return _attached()
    if per_process:
        start_embedded(**local_options)
        return _attached()
    from gpar import client

    return client.attach()


def _attached() -> Any:
    from gpar.raytasks import RayTasks

    return RayTasks()


def start_embedded(**local_options: Any) -> None:
    """Start a local Ray cluster owned by this process: quiet, token-protected, its workers at
    this process's niceness. ``local_options`` go to ``ray.init``."""
    with notebook.quiet_ray_import():
        import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        from gpar.errors import ClusterConnectionError

        raise ClusterConnectionError(
            f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} would start the embedded Ray cluster "
            "without authentication, open to anyone who can reach this machine; unset it.")
    auth.private_default_token()
    system_config = {"worker_niceness": WORKER_NICENESS, **local_options.pop("_system_config", {})}
    with notebook.ray_started_quietly():
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _system_config=system_config,
            logging_level=logging.ERROR,
            log_to_driver=False,
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


def shutdown() -> None:
    """Stop the cluster of this process, or detach from the one given; the user's local
    cluster keeps running for other scripts (``gpar cluster stop`` stops it). The next
    apply() reconnects. Jobs of this process still running are cancelled first."""
    from gpar import job

    job.cancel_all()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
