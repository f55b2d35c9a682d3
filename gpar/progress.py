"""A job's progress bar: on stderr in a terminal, in the cell in a Jupyter notebook.

Not ``tqdm.auto``: in a notebook without ipywidgets it warns (``TqdmWarning: IProgress not
found``) at import, in the user's cell. Here the choice is made explicitly: a widget where
ipywidgets is installed, tqdm's text bar otherwise (Jupyter shows stderr in the cell and honours
its carriage returns).
"""

from __future__ import annotations

import html
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from gpar.notebook import in_kernel


def shown_by_default() -> bool:
    """A bar when someone watches: stderr is a terminal, or this is a notebook's kernel."""
    return sys.stderr.isatty() or in_kernel()


def progress_bar(total: int | None, enabled: bool,
                 page: Callable[[], str] | None = None) -> Any:
    """A tqdm bar over ``total`` tasks (None: not known, it counts), disabled unless
    ``enabled``; a widget in a notebook that can show one, with a link to the job's page
    (``page()``: its URL) under it."""
    if enabled and in_kernel() and _widgets_installed():
        from tqdm import notebook

        if notebook.IProgress is not None:  # None: an ipywidgets too old for tqdm
            bar = notebook.tqdm(total=total, unit="task")
            if page is not None:
                from IPython.display import HTML, display

                display(HTML(f'<a href="{html.escape(page())}" target="_blank">the job\'s '
                             "page</a>"))
            return bar
    from tqdm.std import tqdm

    return tqdm(total=total, disable=not enabled, unit="task", file=sys.stderr,
                dynamic_ncols=True)


def _widgets_installed() -> bool:
    try:
        return importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):
        return False
