"""Ray in a Jupyter kernel, kept quiet: at its import and at the kernel's shutdown.

Measured with nbclient + ipykernel 7 and Ray 2.60:

* ``import ray`` in a notebook logs ``Missing packages: ['ipywidgets']`` (Ray checks, at import,
  whether it can draw its own objects as widgets) and imports ``tqdm.auto``, which warns
  (``TqdmWarning: IProgress not found`` without ipywidgets, a TqdmExperimentalWarning with
  it): nothing of gpar's, so both are kept out of the cell when gpar first imports Ray.
* At shutdown ipykernel SIGTERMs every process of its group, the embedded cluster's too, and
  waits for them; jupyter_client SIGTERMs the kernel itself 2.5 s after asking it to stop, and
  Ray's crash handler in the kernel prints a stack dump on SIGTERM. So the cluster is stopped
  as the kernel is asked to stop (before ipykernel's round of signals), and SIGTERM is given
  back to the kernel's own handler once Ray is started: a late one ends the kernel silently,
  as it would without Ray.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (a notebook, JupyterLab, VS Code, Colab)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


@contextlib.contextmanager
def quiet_ray_import() -> Iterator[None]:
    """Around ``import ray``: keep Ray's notes about its own notebook widgets, and tqdm's
    warnings at the ``tqdm.auto`` Ray imports, out of the user's cell."""
    if not in_kernel():
        yield
        return
    from tqdm.std import TqdmWarning

    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        yield


@contextlib.contextmanager
def ray_started_quietly() -> Any:
    """Around ``ray.init`` in a kernel: afterwards SIGTERM does what it did before, and the
    kernel's shutdown stops Ray first."""
    if not in_kernel():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    yield
    with contextlib.suppress(ValueError, TypeError):  # not the main thread; not from Python
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)
    _on_kernel_exit(_stop_ray)


_observed: set[int] = set()  # shells already told to call _stop_ray


def _on_kernel_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` when the kernel is asked to stop or restart (ipykernel sets the
    shell's ``exit_now`` then, before it signals the kernel's child processes); once."""
    shell = sys.modules["IPython"].get_ipython()
    if id(shell) not in _observed:
        _observed.add(id(shell))
        shell.observe(lambda change: change["new"] and callback(), names="exit_now")


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
