"""DuckDB reading S3 outputs itself, through its httpfs extension, when it can load it.

Through httpfs a query reads an object store the way it reads local files (in parallel, row
groups skipped by their statistics), and the bytes read stay in DuckDB's external file cache,
shared by the Datasets of the process (a committed file is never rewritten), so a query
repeated in a new Dataset reads memory, not the network. Without it, dataset.py scans the files
through pyarrow's S3 filesystem instead: slower, but it needs nothing more, and it finds
credentials where pyarrow does (the AWS default chain) when the environment names no keys.

httpfs is loaded from DuckDB's own extension directory (``INSTALL httpfs`` once, any DuckDB), or
from the ``duckdb-extension-httpfs`` wheel built for the installed DuckDB (``gpar[s3]``): never
downloaded while a query runs. DuckDB checks the extension's signature as it loads it.

The credentials of an output's Location become a DuckDB secret scoped to that output's root: the
newest for a root serves every Dataset of the process reading it (as credentials rotate).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from pathlib import Path
from typing import Any

from reduce_sql.store import Location

_lock = threading.Lock()
_UNTRIED = "untried"
_loader: str | None = _UNTRIED  # the LOAD statement that works in this process, or None


def reads(connection: Any, location: Location) -> bool:
    """Make ``connection``'s DuckDB able to read ``location``'s files as s3:// URLs; whether
    it could (no httpfs, or no keys to give it: the caller reads them through pyarrow)."""
    options = dict(location.s3_options)
    if "access_key" not in options or not _load(connection):
        return False  # no keys: pyarrow resolves the AWS default chain, DuckDB cannot
    connection.execute(_secret(f"s3://{location.root}/", options))
    return True


def _load(connection: Any) -> bool:
    """Load httpfs into the connection's database; the way that works is found once."""
    global _loader
    import duckdb

    with _lock:
        tries = _candidates() if _loader is _UNTRIED else [_loader] if _loader else []
        _loader = None
        for statement in tries:
            try:
                connection.execute(statement)
            except duckdb.Error:
                continue
            _loader = statement
            break
        return _loader is not None


@functools.cache
def _candidates() -> tuple[str, ...]:
    """LOAD statements to try: DuckDB's own installed httpfs, then the wheel's file for the
    DuckDB in use (its files are named by the DuckDB version they were built for)."""
    import duckdb

    found = ["LOAD httpfs"]
    try:
        import duckdb_extension_httpfs
    except ImportError:
        return tuple(found)
    path = (Path(duckdb_extension_httpfs.__file__).parent / "extensions" /
            f"v{duckdb.__version__}" / "httpfs.duckdb_extension")
    if path.is_file():
        found.append(f"LOAD {_quoted(str(path))}")
    return tuple(found)


def _secret(scope: str, options: dict[str, str]) -> str:
    """CREATE OR REPLACE SECRET for the S3 files under ``scope``, from pyarrow-style options."""
    fields = {"KEY_ID": options["access_key"], "SECRET": options.get("secret_key", "")}
    if "session_token" in options:
        fields["SESSION_TOKEN"] = options["session_token"]
    if "region" in options:
        fields["REGION"] = options["region"]
    scheme, _, host = options.get("endpoint_override", "").rstrip("/").rpartition("://")
    if host:  # pyarrow addresses a custom endpoint by path, so DuckDB does too
        fields |= {"ENDPOINT": host, "URL_STYLE": "path"}
    body = ", ".join(f"{key} {_quoted(value)}" for key, value in fields.items())
    use_ssl = "false" if scheme == "http" else "true"
    name = "gpar_" + hashlib.sha256(scope.encode()).hexdigest()[:16]
    return (f"CREATE OR REPLACE SECRET {name} (TYPE s3, {body}, USE_SSL {use_ssl}, "
            f"SCOPE {_quoted(scope)})")


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
