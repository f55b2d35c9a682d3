"""Every error envpack raises, as one tree.

    EnvpackError
    ├── EnvironmentMismatch   a worker lacks a distribution at the caller's version, or runs
    │                         another Python or platform than compiled code was built for
    └── LayerTooLarge         one distribution or local package is too large to ship

    UnresolvedImportWarning   the caller's code imports a module nothing here provides
"""

from __future__ import annotations

from collections.abc import Sequence


class EnvpackError(Exception):
    """Base class of every error envpack raises."""


class EnvironmentMismatch(EnvpackError):
    """The worker's environment differs from the caller's in a way fn would trip over.
    ``problems``: (what, caller's, worker's) for each difference, as the worker found them.
    Both are its ``args``: a copy made from them (gpar's class of it) keeps the problems."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str, str]] = ()):
        super().__init__(message, tuple(problems))
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return self.args[0]


class LayerTooLarge(EnvpackError):
    """A layer is larger than Ray will carry in one piece."""


class UnresolvedImportWarning(UserWarning):
    """The caller's code imports a module that nothing installed or local here provides, so
    the image cannot hold it: the workers will lack it unless they have it already."""
