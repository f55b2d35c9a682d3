"""envpack: the worker image, built from the distributions and local modules the caller uses.

``manifest()`` describes what this process uses; ``envpack.stage.prepare`` ships what a
connected Ray cluster lacks; ``verify`` runs on the worker before the caller's code does.

Names load on first use (PEP 562): ``import envpack.errors`` or ``envpack.reach``, which
``import gpar`` does, loads neither importlib.metadata nor packaging.
"""

import importlib

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
    "Distribution": "envpack.records",
    "LocalModule": "envpack.records",
    "Manifest": "envpack.records",
    "ImageCheck": "envpack.checks",
    "check_of": "envpack.checks",
    "verify": "envpack.checks",
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
