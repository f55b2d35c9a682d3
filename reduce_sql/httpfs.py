"""DuckDB reading S3 outputs itself, through its httpfs extension, when it can load it.

Through httpfs a query reads an object store the way it reads local files (in parallel, row
groups skipped by their statistics), and the bytes read stay in DuckDB's external file cache,
shared by the Datasets of the process (a committed file is never rewritten), so a query
repeated in a new Dataset fetches no bytes again (one HEAD per file checks it is unchanged).
Without it, dataset.py scans the files through pyarrow's S3 filesystem instead: slower, but it
needs nothing more, and it finds credentials where pyarrow does (the AWS default chain) when
the environment names no keys.

httpfs is loaded from DuckDB's own extension directory (``INSTALL httpfs`` once, any DuckDB), or
from the ``duckdb-extension-httpfs`` wheel built for the installed DuckDB (``gpar[s3]``): never
downloaded while a query runs. DuckDB checks the extension's signature as it loads it.

An output's keys and endpoint become a DuckDB secret scoped to that output's root. In one
database the first keys given for a root hold it: a Dataset of that root with other keys or
another endpoint reads through pyarrow, so no Dataset's credentials ever reach another's files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from reduce_sql.store import Location

_lock = threading.Lock()
_UNTRIED = "untried"
_loader: str | None = _UNTRIED  # the LOAD statement that works in this process, or None


def _new_lock_after_fork() -> None:
    """A thread of the parent may have held the lock as it forked; none of the child's does."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)

#: Characters DuckDB reads as a glob or a URL's query in an s3:// path: a root holding one is
#: read through pyarrow, which takes paths literally.
_NOT_LITERAL = "*?[]{}"


def enable(connection: Any, location: Location, held: dict[str, tuple]) -> bool:
    """Let ``connection``'s DuckDB read ``location``'s files as s3:// URLs; whether it can.

    ``held`` is that database's roots and the S3 options holding each (its secrets): made
    with the database, so a private database starts with none. Not when httpfs cannot load,
    when no keys are given (pyarrow resolves the AWS default chain, DuckDB cannot), when the
    root is not a literal path to DuckDB, or when other options hold the root.
    """
    options = location.s3_options
    if (not any(name == "access_key" for name, _ in options)
            or any(character in location.root for character in _NOT_LITERAL)):
        return False
    scope = f"s3://{location.root}/"
    with _lock:  # one writer of the database's secrets at a time (DuckDB refuses two at once)
        if scope in held:  # httpfs is loaded there, and the root's secret made
            return held[scope] == options
        if not _load(connection):
            return False
        connection.execute(_secret(scope, dict(options)))
        held[scope] = options
    return True


def _load(connection: Any) -> bool:
    """Load httpfs into the connection's database (call with _lock held); the way that works
    is found once, and a process where none does stops trying."""
    global _loader
    import duckdb

    if _loader is None:
        return False
    for statement in _candidates() if _loader is _UNTRIED else [_loader]:
        try:
            connection.execute(statement)
        except duckdb.Error:
            continue
        _loader = statement
        return True
    if _loader is _UNTRIED:
        _loader = None
    return False


def _candidates() -> list[str]:
    """LOAD statements to try: DuckDB's own installed httpfs, then the wheel's file for the
    DuckDB in use (its files are named by the DuckDB version they were built for)."""
    import duckdb

    found = ["LOAD httpfs"]
    try:
        import duckdb_extension_httpfs
    except ImportError:
        return found
    path = (Path(duckdb_extension_httpfs.__file__).parent / "extensions" /
            f"v{duckdb.__version__}" / "httpfs.duckdb_extension")
    if path.is_file():
        found.append(f"LOAD {_quoted(str(path))}")
    return found


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
