"""The image's description: what the caller runs, as frozen records with a digest.

The digest names the image: two callers with the same Python, platform, distributions (by their
RECORD, which lists every installed file with its hash) and local module contents get the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property


@dataclass(frozen=True)
class Distribution:
    """An installed distribution the caller uses; ``why`` says how it was reached."""

    name: str  # canonical (PEP 503)
    version: str
    record_sha256: str  # of its RECORD file: the identity of every installed file
    size_bytes: int
    pure: bool  # no compiled code: runs on any platform and Python 3 minor
    location: str  # its .dist-info directory
    top_levels: tuple[str, ...]  # import names it provides
    why: str


@dataclass(frozen=True)
class LocalModule:
    """A module or package of the caller's that is not installed: shipped as source."""

    name: str  # top-level import name
    path: str  # the file, or the package directory
    files: tuple[tuple[str, str, int], ...]  # (path relative to path's parent, sha256, bytes)

    @property
    def size_bytes(self) -> int:
        return sum(size for _, _, size in self.files)

    @property
    def content_sha256(self) -> str:
        return _sha256([list(entry[:2]) for entry in self.files])


@dataclass(frozen=True)
class Manifest:
    """What a worker needs to run the caller's code."""

    python_version: str  # "3.11.7"
    implementation: str  # "cpython"
    platform: str  # "linux-x86_64"
    distributions: tuple[Distribution, ...]
    local_modules: tuple[LocalModule, ...]
    ray_version: str
    #: (name, where) of each import found in the caller's code that nothing here provides:
    #: the workers will lack it too. Not part of the digest.
    unresolved: tuple[tuple[str, str], ...] = ()

    @cached_property
    def digest(self) -> str:
        return _sha256({
            "python": self.python_version,
            "implementation": self.implementation,
            "platform": self.platform,
            "ray": self.ray_version,
            "distributions": [[d.name, d.version, d.record_sha256] for d in self.distributions],
            "local": [[m.name, m.content_sha256] for m in self.local_modules],
        })

    @property
    def python_minor(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    def to_json(self) -> str:
        document = asdict(self)
        document["digest"] = self.digest
        return json.dumps(document, indent=1)


def _sha256(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
