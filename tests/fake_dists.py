"""Installed distributions made up for tests: a site-packages directory written by hand."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path


def install(site: Path, name: str, version: str, requires: tuple[str, ...] = (),
            source: str = "", pure: bool = True, modules: dict[str, str] | None = None) -> None:
    """Write ``name``'s module (or ``modules``: path -> source) and .dist-info (METADATA,
    WHEEL, RECORD) into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    files = {
        **(modules or {f"{module}.py": source or f"VERSION = {version!r}\n"}),
        f"{info.name}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info.name}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: {str(pure).lower()}\n",
    }
    rows = []
    for relative, text in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        rows.append(f"{relative},sha256={digest.decode()},{len(text.encode())}")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
