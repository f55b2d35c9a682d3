"""Ray's token authentication as gpar uses it: the token found where Ray keeps it, kept private,
and checked against a cluster before connecting to it.

Ray 2.60 turns token authentication on for the clusters it starts on this machine (``ray start``
when a token exists, ``ray.init``), but a driver that connects *by address* sends its token only
with RAY_AUTH_MODE=token in its environment; without it Ray retries for ~20 s, logging each
refusal, then raises a ConnectionError. So before connecting by address:

* the token is looked up where Ray looks, in Ray's order (RAY_AUTH_TOKEN, the file named by
  RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); if there is one, token mode is turned on for this
  process (a cluster without authentication ignores the token);
* one call to the cluster's GCS (~10 ms) shows whether it accepts this process; if not, one
  ClusterConnectionError says what to do, with the GCS client's own warning kept off stderr.

Ray writes ~/.ray/auth_token readable by everyone (0644); where the home directory is open to
others, any local account could read it and run code as the user. So gpar writes that file
itself, owner-only, before Ray would, and makes an existing one owner-only: Ray's processes run
as its owner, so neither Ray nor a running ``ray start`` cluster notices. A file named by
RAY_AUTH_TOKEN_PATH is the user's own choice and is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from gpar.errors import ClusterConnectionError

#: Seconds to wait for a cluster's port and its GCS's answer before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0

_WHERE_TOKENS_GO = (
    "put that cluster's token (`ray get-auth-token` prints it on its head node) in "
    "~/.ray/auth_token, or set RAY_AUTH_TOKEN to it, or RAY_AUTH_TOKEN_PATH to a file holding it"
)


def default_token_path() -> Path:
    """Where Ray keeps the token it generates: ~/.ray/auth_token."""
    return Path.home() / ".ray" / "auth_token"


def token_source() -> str | None:
    """Where Ray will read this process's token from, in Ray's order; None: nowhere.

    A RAY_AUTH_TOKEN_PATH that names no readable, non-empty file is an error here: Ray treats
    it as fatal (and may abort the process) rather than look further.
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        try:
            readable = bool(Path(named).expanduser().read_text().strip())
        except OSError:
            readable = False
        if not readable:
            raise ClusterConnectionError(
                f"RAY_AUTH_TOKEN_PATH={named} names no readable, non-empty file; point it at "
                "the file holding the cluster's token, or unset it")
        return f"RAY_AUTH_TOKEN_PATH={named}"
    path = default_token_path()
    try:
        return str(path) if path.read_text().strip() else None
    except OSError:
        return None


def private_default_token() -> None:
    """Make ~/.ray/auth_token exist, readable by its owner only, unless the token comes from the
    environment. A new token is written whole under its final name (a hard link of a private
    temporary), so no process ever reads a half-written one, nor can two both write one."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip() or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = default_token_path()
    if not path.exists():
        _write_new_token(path)
    _make_owner_only(path)


def prepare_to_connect(address: str) -> None:
    """Make this process's Ray authentication match the cluster at ``address`` and check that
    the cluster accepts it; else raise ClusterConnectionError.

    Token mode goes on only for a cluster that requires it: a driver in token mode also refuses
    calls without a token, and the workers of a cluster without authentication send none (its
    streamed results never arrive). RAY_AUTH_MODE set in the environment is left as it is.
    """
    source = token_source()
    if source == str(default_token_path()):
        _make_owner_only(default_token_path())
    if ":" not in address or "://" in address:  # "auto", "local", ray://: Ray's to resolve
        return
    _check_reachable(address)
    if _gcs_accepts(address):
        return
    if os.environ.get("RAY_AUTH_MODE") is None and source is not None:
        _turn_token_mode_on()
        if _gcs_accepts(address):
            return
    raise ClusterConnectionError(_refusal(address, source))


def _write_new_token(path: Path) -> None:
    import secrets
    import tempfile

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".auth_token-")  # 0600
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_hex(32))  # what Ray itself generates: 256 bits
        with contextlib.suppress(FileExistsError):  # another process wrote one first
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    _forget_cached_token()


def _make_owner_only(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)


def _turn_token_mode_on() -> None:
    """What Ray does for a cluster it finds on its own: RAY_AUTH_MODE=token in this process
    (and its children), and Ray's cached configuration read again."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    _forget_cached_token()


def _forget_cached_token() -> None:
    """Ray's token loader caches what it found; a token written since must be read again."""
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def _check_reachable(address: str) -> None:
    """Something listens at ``address``: else Ray's client would wait much longer to say so."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise ClusterConnectionError(
            f"no Ray cluster answers at {address} ({exc}); is it running, and is that its "
            "address (host:port, as `ray start --head` printed it)?") from None


def _gcs_accepts(address: str) -> bool:
    """Whether the cluster's GCS answers this process, as its authentication is now; a
    failure other than a refusal is a ClusterConnectionError."""
    from ray._raylet import InnerGcsClient
    from ray.exceptions import AuthenticationError, RayError

    try:
        with _native_stderr_discarded():
            InnerGcsClient.standalone(address, None, int(CONNECT_TIMEOUT_S * 1000))
    except AuthenticationError:
        return False
    except RayError as exc:
        raise ClusterConnectionError(
            f"the Ray cluster at {address} did not answer: {exc}") from None
    return True


def _refusal(address: str, source: str | None) -> str:
    """Why the cluster refused this process, and what to do about it."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return (f"the Ray cluster at {address} requires token authentication, and "
                "RAY_AUTH_MODE=disabled in this process's environment keeps the token from it: "
                "unset RAY_AUTH_MODE")
    if source is None:
        return (f"the Ray cluster at {address} requires a token, and this process has none: "
                f"{_WHERE_TOKENS_GO}")
    return (f"the Ray cluster at {address} refused the token from {source}: it is not that "
            f"cluster's token. {_WHERE_TOKENS_GO[0].upper()}{_WHERE_TOKENS_GO[1:]}")


@contextlib.contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """File descriptor 2 to /dev/null within the block: Ray's C++ GCS client logs a refusal
    there before raising it, and the ClusterConnectionError says all of it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
