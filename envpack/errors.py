"""Every error envpack raises, as one tree.

    EnvpackError
    ├── EnvironmentMismatch   a worker lacks a distribution at the caller's version, or runs
    │                         another Python or platform than compiled code was built for
    └── LayerTooLarge         one distribution or local package is too large to ship
"""

from __future__ import annotations


class EnvpackError(Exception):
    """Base class of every error envpack raises."""


class EnvironmentMismatch(EnvpackError):
    """The worker's environment differs from the caller's in a way fn would trip over."""


class LayerTooLarge(EnvpackError):
    """A layer is larger than Ray will carry in one piece."""
