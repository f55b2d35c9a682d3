"""Where outputs live: a local directory or an S3-compatible bucket, through pyarrow filesystems.

A ``Location`` is what crosses from the driver to the workers: the URI plus the filesystem
options the driver resolved from its own environment (AWS_ENDPOINT_URL, AWS_REGION, AWS keys), so
a worker writes where the driver reads even when its process environment differs. Every path
below the root is made here from names reduce_sql generates; nothing a task returns becomes a path.
"""

from __future__ import annotations

import functools
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

#: AWS environment variables a driver passes on to the workers' S3 filesystem.
S3_OPTIONS_FROM_ENV = {
    "endpoint_override": "AWS_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}


#: Reads of an S3 object replaced while it is read, before giving up (see read_bytes).
READ_ATTEMPTS = 5


@dataclass(frozen=True)
class Location:
    """The root of one output: ``uri`` as the user gave it, resolved once on the driver."""

    uri: str
    root: str  # the root path in the filesystem's own terms (no scheme)
    s3_options: tuple[tuple[str, str], ...] = ()  # empty for a local directory

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def filesystem(self) -> pafs.FileSystem:
        return _filesystem(self.s3_options) if self.is_s3 else pafs.LocalFileSystem()

    @property
    def is_file(self) -> bool:
        """Whether the root is a file (or an S3 object), which can be no output."""
        return self.filesystem.get_file_info(self.root).type == pafs.FileType.File

    def path(self, relative: str) -> str:
        """The full path of ``relative``, a name reduce_sql made, under the root."""
        return f"{self.root}/{relative}"

    def read_bytes(self, relative: str) -> bytes | None:
        """The file's content, or None when there is no such file.

        An S3 read learns the object's size when it opens, then asks for that many bytes: an
        object replaced in between (a lease renewed, a job marker rewritten) would come back cut
        at the old size. So a read whose length is not the object's size now is done again.
        """
        filesystem, path = self.filesystem, self.path(relative)
        for _ in range(READ_ATTEMPTS):
            try:
                with filesystem.open_input_stream(path) as stream:
                    content = stream.read()
            except FileNotFoundError:
                return None
            if not self.is_s3 or filesystem.get_file_info(path).size == len(content):
                return content
        raise OSError(f"{self.uri}: {relative} kept changing while it was read "
                      f"({READ_ATTEMPTS} attempts)")

    def write_atomically(self, relative: str, content: bytes) -> None:
        """Replace the file so readers see the old content or the new, never a part of either."""
        filesystem, final = self.filesystem, self.path(relative)
        if self.is_s3:  # an S3 object appears whole once its upload completes
            target = final
        else:  # a local file is written beside, then renamed: rename(2) is atomic
            filesystem.create_dir(self.root, recursive=True)
            target = f"{final}.{uuid.uuid4().hex}.tmp"
        with filesystem.open_output_stream(target) as stream:
            stream.write(content)
        if target != final:
            filesystem.move(target, final)

    def files(self, relative_dir: str = "") -> list[str]:
        """Names (relative to the root) of the files under ``relative_dir``, recursively."""
        base = self.path(relative_dir) if relative_dir else self.root
        selector = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        prefix = len(self.root) + 1
        return sorted(info.path[prefix:] for info in self.filesystem.get_file_info(selector)
                      if info.type == pafs.FileType.File)

    def delete(self, relatives: list[str]) -> None:
        filesystem = self.filesystem
        for relative in relatives:
            try:
                filesystem.delete_file(self.path(relative))
            except FileNotFoundError:
                pass


#: Characters delta-rs (deltalake 1.6) cannot address in a table's path: it crashes the
#: process, refuses it, or reads %XX and, in s3:// URIs, ? and # as URL syntax
#: (tests/test_reduce_sql.py tries each)
UNADDRESSABLE = {"local": "[]^|\\%", "s3": "[]^|\\%?#"}


def locate(uri: str | os.PathLike) -> Location:
    """The Location of ``uri``: a local path (relative to the working directory) or s3://."""
    text = os.fspath(uri) if isinstance(uri, str | os.PathLike) else None
    if not isinstance(text, str) or not text or "\0" in text:
        raise ValueError(f"an output is a directory path or an s3:// URI, got {uri!r}")
    if text.startswith("s3://"):
        bucket_and_prefix = text[len("s3://"):].strip("/")
        if not bucket_and_prefix:
            raise ValueError(f"{text!r} names no bucket: use s3://bucket/prefix")
        options = tuple((option, os.environ[variable])
                        for option, variable in S3_OPTIONS_FROM_ENV.items()
                        if os.environ.get(variable))
        return _addressable(Location(text, bucket_and_prefix, options))
    if "://" in text:
        raise ValueError(
            f"{text!r}: only local directories and s3:// URIs are supported as outputs")
    return _addressable(Location(text, Path(text).expanduser().resolve().as_posix()))


def _addressable(location: Location) -> Location:
    refused = sorted(set(location.root) & set(UNADDRESSABLE["s3" if location.is_s3 else
                                                            "local"]))
    if refused:
        raise ValueError(
            f"{location.root!r} holds {' '.join(refused)}, which the Delta Lake library that "
            "writes and reads outputs (deltalake) cannot address in a path: choose a path "
            "without them")
    return location


@functools.lru_cache(maxsize=8)
def _filesystem(s3_options: tuple[tuple[str, str], ...]) -> pafs.FileSystem:
    options = dict(s3_options)
    scheme, separator, host = options.get("endpoint_override", "").partition("://")
    if separator:  # AWS_ENDPOINT_URL is a URL; pyarrow wants the scheme apart
        options["scheme"], options["endpoint_override"] = scheme, host
    return pafs.S3FileSystem(**options)
