"""gpar in a Jupyter notebook, run by nbclient in a real ipykernel with default options: a
progress bar in the cell (text without ipywidgets, a widget with it), no warning noise, and a
kernel that shuts down without Ray's SIGTERM stack dump."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient

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


def run_notebook(cells: list[str], directory, ray_tmpdir: str):
    """Execute the cells in a new kernel, as a new user would (the embedded cluster); the
    executed notebook, and what the kernel process itself wrote to stdout and stderr."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RAY_") and key != "PYTHONPATH"}
    env["RAY_TMPDIR"] = ray_tmpdir
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
    assert "4/4" not in _stream(outputs, "stderr")  # the widget, not a text bar too
    assert_quiet(notebook, kernel_output)


def _stream(outputs, name: str) -> str:
    return "".join(output["text"] for output in outputs
                   if output["output_type"] == "stream" and output["name"] == name)
