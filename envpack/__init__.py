"""envpack: the worker image, built from the distributions and local modules the caller uses.

``manifest()`` describes what this process uses; ``envpack.stage.prepare`` ships what a
connected Ray cluster lacks; ``verify`` runs on the worker before the caller's code does.

Names load on first use (PEP 562): ``import envpack.errors`` or ``envpack.reach``, which
``import gpar`` does, loads neither importlib.metadata nor packaging.
"""

import importlib

# The functions manifest() and verify() share their names with submodules, and importing a
# submodule sets the package's attribute to it, once. So both are imported first (they are
# light), and their attributes dropped: from then on each name is the function, found by
# __getattr__.
import envpack.manifest  # noqa: F401
import envpack.verify  # noqa: F401

del envpack, manifest, verify  # noqa: F821 - bound by those imports

#: Public name -> the submodule that defines it.
_HOMES = {
    "WorkerFacts": "envpack.delta",
    "select": "envpack.delta",
    "manifest": "envpack.discover",
    "EnvironmentMismatch": "envpack.errors",
    "EnvpackError": "envpack.errors",
    "LayerTooLarge": "envpack.errors",
    "UnresolvedImportWarning": "envpack.errors",
    "MAX_LAYER_BYTES": "envpack.layers",
    "Layer": "envpack.layers",
    "build": "envpack.layers",
    "layer_of": "envpack.layers",
    "Distribution": "envpack.manifest",
    "LocalModule": "envpack.manifest",
    "Manifest": "envpack.manifest",
    "ImageCheck": "envpack.verify",
    "check_of": "envpack.verify",
    "verify": "envpack.verify",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
