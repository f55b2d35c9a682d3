"""gpar in a Jupyter notebook, run by nbclient in a real ipykernel with default options: a
progress bar in the cell (text without ipywidgets, a widget with it), no warning noise, and a
kernel that shuts down without Ray's SIGTERM stack dump, on the local cluster and on a cluster
of the kernel's own."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import nbformat
import pytest
from conftest import stop_local_clusters
from faults import wait_until
from nbclient import NotebookClient

from gpar import client

pytestmark = pytest.mark.slow

#: ipywidgets as if it were not installed, from the start (Ray and tqdm look for it at import).
WITHOUT_WIDGETS = "import sys\nsys.modules['ipywidgets'] = None"
CELLS = [
    "import gpar\n\ndef double(x):\n    return 2 * x",
    "print(list(gpar.apply(range(4), double)))",
]

NOISE = ("TqdmWarning", "IProgress", "Missing packages", "Warning", "Traceback")


@pytest.fixture
def ray_tmpdir():
    path = tempfile.mkdtemp(prefix="gpar-nb-", dir="/tmp")  # Ray's socket paths: keep short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_notebook(cells: list[str], directory, ray_tmpdir: str, **env_overrides: str):
    """Execute the cells in a new kernel, as a new user would (the local cluster, unless a
    cell asks for another); the executed notebook, and what the kernel process itself wrote
    to stdout and stderr."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RAY_") and key != "PYTHONPATH"}
    env.update(RAY_TMPDIR=ray_tmpdir, **env_overrides)
    kernel_log = directory / "kernel.log"
    with open(kernel_log, "w") as log:
        NotebookClient(notebook, kernel_name="python3", timeout=240).execute(
            cwd=str(directory), env=env, stdout=log, stderr=log)
    return notebook, kernel_log.read_text()


def assert_quiet(notebook, kernel_output: str) -> None:
    every_output = json.dumps([cell.outputs for cell in notebook.cells])
    for noise in NOISE:
        assert noise not in every_output
    assert "SIGTERM" not in kernel_output  # Ray's stack dump when the kernel is terminated


def test_a_notebook_without_ipywidgets_shows_a_text_bar_quietly(tmp_path, ray_tmpdir):
    notebook, kernel_output = run_notebook([WITHOUT_WIDGETS, *CELLS], tmp_path, ray_tmpdir)

    outputs = notebook.cells[-1].outputs
    assert _stream(outputs, "stdout") == "[0, 2, 4, 6]\n"
    assert "4/4" in _stream(outputs, "stderr") and "task" in _stream(outputs, "stderr")
    assert_quiet(notebook, kernel_output)


def test_a_notebook_with_ipywidgets_shows_a_widget_quietly(tmp_path, ray_tmpdir):
    notebook, kernel_output = run_notebook(CELLS, tmp_path, ray_tmpdir)

    outputs = notebook.cells[-1].outputs
    assert _stream(outputs, "stdout") == "[0, 2, 4, 6]\n"
    assert any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
               for output in outputs)
    links = [output["data"]["text/html"] for output in outputs
             if "text/html" in output.get("data", {})]  # the job's page, under the bar
    assert len(links) == 1 and "/jobs/" in links[0] and "token=" in links[0]
    assert "4/4" not in _stream(outputs, "stderr")  # the widget, not a text bar too
    assert_quiet(notebook, kernel_output)


def _stream(outputs, name: str) -> str:
    return "".join(output["text"] for output in outputs
                   if output["output_type"] == "stream" and output["name"] == name)


#: A cluster of the kernel's own: the kernel imports and starts Ray itself, where Ray's notes at
#: import and its stack dump at the kernel's SIGTERM would reach the user. The last cell lists
#: Ray's processes below the kernel (pid: start time, so a reused pid is not taken for one).
OWN_CLUSTER = [
    "import gpar\n\ndef double(x):\n    return 2 * x",
    'print(list(gpar.apply(range(4), double, address="local")))',
    "import os, sys\nfrom gpar.server import process_tree\n"
    "print(sys.modules['ray'].is_initialized(), {pid: fields[19] for pid, fields\n"
    "      in process_tree(os.getpid()).items() if pid != os.getpid()})",
]


def test_a_notebook_with_a_cluster_of_its_own_starts_and_stops_ray_quietly(tmp_path,
                                                                           ray_tmpdir):
    state_dir = tmp_path / "state"
    try:
        notebook, kernel_output = run_notebook([WITHOUT_WIDGETS, *OWN_CLUSTER], tmp_path,
                                               ray_tmpdir, GPAR_STATE_DIR=str(state_dir))
        local_clusters = list(state_dir.glob("*.json"))
    finally:  # a local cluster the kernel should not have started
        stop_local_clusters(state_dir)

    assert _stream(notebook.cells[-2].outputs, "stdout") == "[0, 2, 4, 6]\n"
    started, ray_processes = _stream(notebook.cells[-1].outputs, "stdout").split(maxsplit=1)
    ray_processes = eval(ray_processes)
    assert started == "True" and ray_processes  # Ray ran in the kernel itself
    assert not local_clusters  # and no local cluster served it
    assert_quiet(notebook, kernel_output)
    # Stopped with the kernel: none of Ray's processes outlives it.
    assert wait_until(lambda: all(client.process_start(pid) != start
                                  for pid, start in ray_processes.items()), timeout_s=120)
