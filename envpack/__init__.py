"""envpack: the worker image, built from the distributions and local modules the caller uses.

``manifest()`` describes what this process uses; ``envpack.stage.prepare`` ships what a
connected Ray cluster lacks; ``verify`` runs on the worker before the caller's code does.
"""

from envpack.delta import WorkerFacts, select
from envpack.discover import manifest
from envpack.errors import (
    EnvironmentMismatch,
    EnvpackError,
    LayerTooLarge,
    UnresolvedImportWarning,
)
from envpack.layers import MAX_LAYER_BYTES, Layer, build, layer_of
from envpack.manifest import Distribution, LocalModule, Manifest
from envpack.verify import ImageCheck, check_of, verify

__all__ = [
    "MAX_LAYER_BYTES",
    "Distribution",
    "EnvironmentMismatch",
    "EnvpackError",
    "ImageCheck",
    "Layer",
    "LayerTooLarge",
    "LocalModule",
    "Manifest",
    "UnresolvedImportWarning",
    "WorkerFacts",
    "build",
    "check_of",
    "layer_of",
    "manifest",
    "select",
    "verify",
]
