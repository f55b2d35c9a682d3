"""A running job's page, in a real browser: Chromium from the system, driven by playwright
(its own browser download needs the internet). Where no Chromium is found these tests skip,
saying how to install it; with GPAR_REQUIRE_BROWSER=1 (.ci/run) they fail instead."""

import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
from faults import alive, faulty, hanging, pids, wait_until

import gpar

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BOUND_S = 120


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "no Chromium: apt-get install -y chromium"
        if os.environ.get("GPAR_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"])  # root in CI
        try:
            yield chromium
        finally:
            chromium.close()


def paused_job(markers, gate):
    """Element 0 finishes, 1 fails, 2 and 3 wait in fn for ``gate``: a job that holds still
    (two slots, nothing queued: no straggler is preempted, no backup launched)."""
    table = {(1, 0): "raise", (2, 0): ("wait_for", str(gate)), (3, 0): ("wait_for", str(gate))}
    return table, dict(max_workers=2, task_retries=0, backups=False, progress=False)


def status_of(url, method="GET"):
    """The HTTP status a request gets, its connection closed (an open one warns later)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


def text_of(page, selector):
    return page.locator(selector).inner_text()


def shows_numbers(page, finished, failed, running):
    return (text_of(page, "#finished"), text_of(page, "#failed"),
            text_of(page, "#running")) == (str(finished), str(failed), str(running))


@pytest.mark.usefixtures("cluster")
def test_the_page_shows_the_jobs_report_and_a_failure_while_it_runs(browser, tmp_path):
    gate = tmp_path / "go"
    table, options = paused_job(tmp_path, gate)
    job = gpar.submit(range(4), faulty, table, str(tmp_path), **options)
    try:
        assert wait_until(lambda: (job.progress.finished, job.progress.failed,
                                   job.progress.running) == (1, 1, 2), BOUND_S)
        page = browser.new_page()
        page.goto(job.url)
        assert wait_until(lambda: shows_numbers(page, 1, 1, 2), 30)  # the job holds still
        report = job.report
        assert text_of(page, "#total") == "4" and not job.done()
        assert "task 1 failed on attempt 0 as the table says" in text_of(page, "#failures")
        assert "Traceback" in text_of(page, "#failures")  # the worker's, while the job runs
        counts = dict(row.split("\t") for row in text_of(page, "#counts-table").splitlines())
        assert counts["failed_attempts"] == str(report.failed_attempts)
        assert counts["batches"] == str(report.batches)
        table1 = text_of(page, "#table1")
        assert f"run\t{report.table1().loc['run', 'mean_s']:.4f}".rstrip("0") in table1
        running = text_of(page, "#running-table")
        assert all(f"\n{index}\t" in "\n" + running for index in (2, 3))
    finally:
        gate.touch()
    with pytest.warns(gpar.TaskFailedWarning):
        job.result(timeout=BOUND_S)
    assert wait_until(lambda: text_of(page, "#state") == "finished", 30)
    assert wait_until(lambda: shows_numbers(page, 3, 1, 0), 30)  # its last state stays


@pytest.mark.usefixtures("cluster")
def test_the_cancel_button_asks_first_then_stops_the_jobs_tasks(browser, tmp_path):
    job = gpar.submit(range(4), faulty, hanging(range(4)), str(tmp_path), max_workers=2,
                      progress=False)
    assert wait_until(lambda: len(pids(tmp_path)) == 2, BOUND_S)
    running = pids(tmp_path)
    page = browser.new_page()
    page.goto(job.url)
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#cancel")
    assert wait_until(lambda: asked, 30) and not job.done()  # dismissed: nothing happens
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    assert wait_until(job.done, 60)
    assert wait_until(lambda: not any(alive(pid) for pid in running), 30)
    assert wait_until(lambda: text_of(page, "#state") == "ended: cancelled", 30)
    with pytest.warns(gpar.IncompleteResultsWarning):
        job.result()


@pytest.mark.usefixtures("cluster")
def test_a_wrong_or_missing_token_is_refused_and_only_loopback_listens(tmp_path):
    import psutil

    job = gpar.submit(range(2), abs, progress=False)
    url = job.url
    page, token = url.split("?token=")
    assert status_of(url) == 200
    for wrong in (page, f"{page}?token=x{token}", f"{page}/state?token=", f"{page}/state"):
        assert status_of(wrong) == 403
    assert status_of(f"{page}/cancel", method="POST") == 403
    port = int(page.split(":")[2].split("/")[0])
    listening = [connection.laddr for connection in psutil.Process().net_connections("inet")
                 if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port]
    assert [address.ip for address in listening] == ["127.0.0.1"]
    job.result(timeout=BOUND_S)


@pytest.mark.parametrize("setting", ["", "off"])
def test_a_script_prints_the_page_of_a_job_that_runs_a_while_unless_told_not_to(
        run_script, tmp_path, setting):
    gate = tmp_path / "go"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time, gpar
        from gpar import job as gpar_job
        def waits(x):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            return x
        job = gpar.submit(range(2), waits, progress=False)
        time.sleep(gpar_job.ANNOUNCE_PAGE_AFTER_S + 1)  # past it, the job still running
        print("still running", not job.done(), file=sys.stderr, flush=True)
        open({str(gate)!r}, "w").close()
        print(job.result())
    """))
    env = {**os.environ, "RAY_ADDRESS": run_script.address, "GPAR_JOB_PAGE": setting}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=BOUND_S)
    assert done.stdout.strip() == "[0, 1]" and "still running True" in done.stderr
    printed = [line for line in done.stderr.splitlines() if "job's page: http://127.0.0.1:" in line]
    assert len(printed) == (0 if setting == "off" else 1), done.stderr


def test_a_scripts_job_on_the_local_cluster_prints_its_page_which_shows_it(browser, tmp_path):
    """A script through the local cluster: the URL comes on stderr once the job has run a
    few seconds; the page, served by the script, shows the job and its failure."""
    import faults

    shutil.copy(faults.__file__, tmp_path)
    gate, markers = tmp_path / "go", tmp_path / "markers"
    markers.mkdir()
    table, options = paused_job(markers, gate)
    (tmp_path / "script.py").write_text(textwrap.dedent(f"""
        import gpar
        from faults import faulty
        values = gpar.apply(range(4), faulty, {table!r}, {str(markers)!r}, **{options!r})
        print(values[0], values[2], values[3])
    """))
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "GPAR_CLUSTER")}
    env["GPAR_STATE_DIR"] = str(tmp_path / "state")
    script = subprocess.Popen([sys.executable, "script.py"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "job's page" not in line:
            line = script.stderr.readline()
            assert line, "the script ended without printing its job's page"
        url = line.split("job's page: ")[1].strip()
        page = browser.new_page()
        page.goto(url)
        assert wait_until(lambda: shows_numbers(page, 1, 1, 2), 60)
        assert "as the table says" in text_of(page, "#failures")
        status = subprocess.run([sys.executable, "-m", "gpar.cli", "cluster", "status"],
                                env=env, capture_output=True, text=True,
                                timeout=BOUND_S).stdout  # the cluster lists the page
        assert f"job page: {url}" in status, status
        index = status.split("jobs' pages: ")[1].split()[0]
        assert status_of(index.split("?")[0]) == 403
        page.goto(index)
        assert page.locator(f'a[href="{url}"]').count() == 1
        gate.touch()
        out, err = script.communicate(timeout=BOUND_S)
        assert out.split() == ["0", "2", "3"], err
    finally:
        gate.touch()
        if script.poll() is None:
            script.kill()
        script.communicate()
        subprocess.run([sys.executable, "-m", "gpar.cli", "cluster", "stop"], env=env,
                       capture_output=True, timeout=BOUND_S)
