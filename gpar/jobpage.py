"""A live page per job (``Job.url``), served by the process that drives the job, as Spark's
driver serves its UI.

    Job.url ─▶ PageServer (one per process, started at the first url asked): aiohttp on
               127.0.0.1, a port of the system's choosing, in a thread of its own
        GET  /jobs/<id>?token=…              the page: HTML and a script, nothing fetched
                                             from elsewhere; it asks for the state each second
        GET  /jobs/<id>/state?token=…        state_of(job) as JSON
        GET  /jobs/<id>/figure8.svg?token=…  the paper's Figure 8 from the attempts so far
        POST /jobs/<id>/cancel?token=…       Job.cancel()

A request without this process's token (a secret in the URL, Jupyter's pattern) is refused.
The local cluster's server serves an index of the pages of the jobs it runs (``index_page``),
with a token of its own: ``gpar cluster status`` prints it. Nothing is computed for a job no
one looks at: the state is taken when the page asks, copied
under the loop's lock, and summed up outside it. A job whose page was asked for keeps it,
with its last state, until the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import io
import itertools
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from gpar.records import Counts

#: Outcomes of attempts that count against a node as failures, and as straggles.
_FAILED = frozenset({"error", "input", "result", "output", "environment", "system", "timeout"})
_STRAGGLED = frozenset({"preempted", "timeout"})

#: Failed attempts the page lists, the latest.
RECENT_FAILURES = 50

#: Figure 8 is drawn again at most this often while attempts come in (matplotlib: ~0.1 s).
FIGURE_EVERY_S = 5.0


def state_of(job: Any) -> dict[str, Any]:
    """What the page shows of ``job`` now: copies taken under its loop's lock."""
    control, now = job._control, time.time()
    with control.lock:
        progress = job.progress
        policy, loop = control.policy, control.loop
        report = None if control.report is None else control.report.snapshot()
        running = [] if policy is None else _running(policy, loop, now)
        failures = [] if policy is None else [
            {"index": failure.index, "type": failure.exc_type, "message": failure.message,
             "traceback": failure.traceback, "attempts": failure.attempts,
             "reason": failure.reason}
            for _, failure in sorted(policy.ledger.failures.items())]
        rules = None if policy is None else policy.rules
        stop = None if policy is None else policy.stop
        avoided = set() if loop is None or loop.slow_nodes is None else set(
            loop.slow_nodes.avoided)
    return {
        "state": _how(job, stop),
        "progress": {"total": progress.total, "finished": progress.finished,
                     "failed": progress.failed, "running": progress.running,
                     "waiting": progress.waiting},
        "running": running,
        "failures": failures,
        "failed_attempts": [] if report is None else _failed_attempts(report),
        "counts": {} if report is None else {field.name: getattr(report, field.name)
                                             for field in fields(Counts)},
        "table1": [] if report is None else _table1(report),
        "options": {} if rules is None else _options(rules, now),
        "nodes": [] if report is None else _nodes(report, avoided),
    }


def _how(job: Any, stop: str | None) -> str:
    if not job.done():
        return "running" if stop is None else f"stopping ({stop})"
    if job._error is not None:
        return f"failed: {type(job._error).__name__}"
    return {None: "finished", "raise": "stopped at a failure (errors='raise')",
            "budget": "stopped: the failure budget was crossed"}.get(stop, f"ended: {stop}")


def _running(policy: Any, loop: Any, now: float) -> list[dict[str, Any]]:
    """The elements in fn now, the longest first."""
    rows = []
    for number, batch in policy.flight.batches.items():
        if batch.running is None:
            continue
        position, started = batch.running
        stream = None if loop is None else loop.streams.get(number)
        rows.append({"index": batch.indices[position], "attempt": batch.attempt,
                     "backup": batch.backup, "node": "" if stream is None else stream.node,
                     "pid": 0 if stream is None else stream.pid,
                     "seconds": None if started is None else round(now - started, 1),
                     "straggling": batch.straggling})
    rows.sort(key=lambda row: -(row["seconds"] or 0.0))
    return rows


def _failed_attempts(report: Any) -> list[dict[str, Any]]:
    """The latest attempts that did not end ok, each with its message."""
    rows = []
    for block in report.blocks:
        for offset, (outcome, message) in block.failed.items():
            if outcome in _FAILED:
                rows.append({"index": block.first_task + offset, "attempt": block.attempt,
                             "node": block.node, "outcome": outcome, "message": message,
                             "at": block.finished[offset]})
    rows.sort(key=lambda row: row["at"] if row["at"] == row["at"] else 0.0)
    return rows[-RECENT_FAILURES:]


def _table1(report: Any) -> list[dict[str, Any]]:
    frame = report.table1()
    return [{"measure": name, "mean_s": _number(row["mean_s"]), "p95_s": _number(row["p95_s"]),
             "n": int(row["n"])} for name, row in frame.iterrows()]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _options(rules: Any, now: float) -> dict[str, Any]:
    return {"max_workers": rules.max_workers, "task_retries": rules.task_retries,
            "max_failures": rules.max_failures, "quorum": rules.quorum,
            "backups": rules.backups, "task_timeout_s": rules.task_timeout_s,
            "errors": rules.errors,
            "deadline_left_s": None if rules.deadline_at is None
            else round(max(0.0, rules.deadline_at - now), 1)}


def _nodes(report: Any, avoided: set[str]) -> list[dict[str, Any]]:
    attempts, failures, straggles = Counter(), Counter(), Counter()
    for block in report.blocks:
        attempts[block.node] += len(block.finished)
        for outcome, _ in block.failed.values():
            failures[block.node] += outcome in _FAILED
            straggles[block.node] += outcome in _STRAGGLED
    return [{"node": node, "attempts": attempts[node], "failures": failures[node],
             "straggles": straggles[node], "avoided": node in avoided}
            for node in sorted(set(attempts) | avoided)]


@dataclass
class _Figure:
    """A job's last Figure 8 and what it was drawn from."""

    svg: bytes = b""
    attempts: int = -1
    drawn_at: float = 0.0


class PageServer:
    """The pages of this process's jobs, on 127.0.0.1 (start() once)."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(32)
        self.jobs: dict[str, Any] = {}
        self.figures: dict[str, _Figure] = {}
        self.port = 0
        self.pages: Callable[[], list[str]] = list  # an index's pages (none: no index)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/jobs/{job}", self._page)
        app.router.add_get("/jobs/{job}/state", self._state)
        app.router.add_get("/jobs/{job}/figure8.svg", self._figure)
        app.router.add_post("/jobs/{job}/cancel", self._cancel)
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            loop.run_until_complete(serve())
            loop.run_forever()

        threading.Thread(target=run, name="gpar-job-pages", daemon=True).start()
        ready.wait()

    def url(self, job: Any) -> str:
        """The page of ``job``, which the server keeps from now on; the first time, the
        cluster it runs on is told (the local cluster lists it)."""
        with self._lock:
            name = getattr(job, "_page_name", None)
            new = name is None
            if new:
                name = job._page_name = str(next(self._numbers))
                self.jobs[name] = job
        url = f"http://127.0.0.1:{self.port}/jobs/{name}?token={self.token}"
        tasks = job._control.tasks
        if new and tasks is not None:
            with contextlib.suppress(Exception):  # the job has ended, its connection closed
                tasks.show_page(url)
        return url

    def index(self, pages: Callable[[], list[str]]) -> str:
        """Serve a page listing ``pages()`` (the local cluster's jobs' pages); its URL."""
        self.pages = pages
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def _check(self, request: Any) -> None:
        """Refuse a request without this process's token."""
        from aiohttp import web

        token = request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise web.HTTPForbidden(text="gpar job page: a token is needed (the URL gpar "
                                         "printed, Job.url, or gpar cluster status)")

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        self._check(request)
        links = "".join(f'<li><a href="{html.escape(url)}">{html.escape(url.split("?")[0])}'
                        "</a></li>" for url in self.pages())
        return web.Response(text=f"<!doctype html><title>gpar jobs</title><h1>Jobs running "
                                 f"on the local cluster</h1><ul>{links or '<li>none</li>'}</ul>",
                            content_type="text/html")

    def _job(self, request: Any) -> Any:
        """The job a request names, if it carries the token; else the refusal raised."""
        from aiohttp import web

        self._check(request)
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise web.HTTPNotFound(text="no such job in this process")
        return job

    async def _page(self, request: Any) -> Any:
        from aiohttp import web

        self._job(request)
        return web.Response(text=_PAGE, content_type="text/html")

    async def _state(self, request: Any) -> Any:
        from aiohttp import web

        job = self._job(request)
        state = await asyncio.get_running_loop().run_in_executor(None, state_of, job)
        return web.json_response(state)

    async def _figure(self, request: Any) -> Any:
        from aiohttp import web

        job = self._job(request)
        svg = await asyncio.get_running_loop().run_in_executor(
            None, self._figure_of, request.match_info["job"], job)
        return web.Response(body=svg, content_type="image/svg+xml")

    def _figure_of(self, name: str, job: Any) -> bytes:
        """Figure 8, drawn again when attempts came in since, at most every FIGURE_EVERY_S."""
        figure = self.figures.setdefault(name, _Figure())
        report = job.report
        attempts = sum(len(block.finished) for block in report.blocks)
        if attempts != figure.attempts and (
                time.monotonic() - figure.drawn_at >= FIGURE_EVERY_S or job.done()
                or not figure.svg):
            out = io.BytesIO()
            report.plot_cdf(out, format="svg")
            figure.svg, figure.attempts, figure.drawn_at = (out.getvalue(), attempts,
                                                            time.monotonic())
        return figure.svg

    async def _cancel(self, request: Any) -> Any:
        from aiohttp import web

        job = self._job(request)
        return web.json_response({"cancelled": job.cancel()})


_server: PageServer | None = None
_server_lock = threading.Lock()


def url_of(job: Any) -> str:
    """``job``'s page, the process's page server started if need be."""
    return _page_server().url(job)


def index_page(pages: Callable[[], list[str]]) -> str:
    """The URL of a page listing ``pages()``, served by this process (the local cluster's)."""
    return _page_server().index(pages)


def _page_server() -> PageServer:
    global _server
    with _server_lock:
        if _server is None:
            server = PageServer()
            server.start()
            _server = server
        return _server


_PAGE = resources.files("gpar").joinpath("jobpage.html").read_text()
