"""``gpar cluster start|stop|status``: the user's local cluster of this Python environment."""

from __future__ import annotations

import argparse
import datetime
import sys

from gpar import client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpar", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="group", required=True)
    cluster = commands.add_parser("cluster", help="the local cluster scripts share")
    actions = cluster.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start it now (scripts start it when needed)")
    start.add_argument("--idle-s", type=float, default=None,
                       help=f"stop after this many seconds without a job (default: GPAR_IDLE_S, "
                            f"else {client.IDLE_S:.0f})")
    start.add_argument("--num-cpus", type=int, default=None, help="CPUs it offers (default: all)")
    actions.add_parser("stop", help="stop it, and any it replaced, with every task they run")
    actions.add_parser("status", help="what runs, since when, its key, its memory")
    options = parser.parse_args(argv)

    if options.action == "start":
        state = client.start(options.idle_s, options.num_cpus)
        print(f"running: pid {state.pid}, {state.num_cpus} CPUs, stops after "
              f"{state.idle_s:.0f} s without a job")
    elif options.action == "stop":
        stopped = client.stop_all()
        print("\n".join(f"stopped: pid {state.pid}, with the jobs it ran" for state in stopped)
              or "not running")
    else:
        print(describe(client.status(), client.retired()))
    return 0


def describe(status: dict | None, retired: list[client.ServerState]) -> str:
    replaced = [f"retired: pid {state.pid} since {_time(state.started)}, replaced by another "
                "version; it ends once the jobs it runs have ended" for state in retired]
    if status is None:
        return "\n".join([f"not running (state directory {client.state_dir()})", *replaced])
    since = _time(status["started"])
    memory = status["memory_bytes"]
    lines = [
        f"running: pid {status['pid']} since {since}, {status['num_cpus']} CPUs",
        f"key: {status['slot']} (this Python environment), stamp {status['stamp']}"
        + ("" if status["current"] else " (stale: the next script replaces it)"),
        f"jobs: {status['connections']} running, {status['jobs_served']} served",
        f"memory: {memory / 2**20:.0f} MiB resident (server and Ray's processes)"
        if memory is not None else "memory: unknown",
        f"environments held: {status['env_cache_buffers']} buffers, "
        f"{status['env_cache_bytes'] / 2**20:.0f} of {status['env_cache_bound_bytes'] / 2**20:.0f}"
        " MiB (GPAR_ENV_CACHE_BYTES)",
        f"idle stop: after {status['idle_s']:.0f} s without a job",
        *(f"job page: {url}" for url in status["pages"]),
        *([f"jobs' pages: {status['index']}"] if status["index"] else []),
        *replaced,
    ]
    return "\n".join(lines)


def _time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
