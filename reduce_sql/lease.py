"""One writer per output: a lease with an expiry, kept in the store beside the table.

    begin ─▶ Lease.acquire: refused (OutputBusyError) while another driver's lease runs
          ─▶ renewed every LEASE_S / 4 while the job runs (a daemon thread)
          ─▶ check() before each commit: a driver that lost its lease commits nothing
          ─▶ release() when the job ends, however it ends

A driver killed outright leaves its lease to expire after LEASE_S; one whose process is gone from
this host is taken over at once. On a local disk the lease is created with link(2), which fails
if one exists, so two drivers starting together cannot both take it. An object store offers no
such create here: two drivers starting within the same instant may both begin, and then the one
that wrote its lease first is refused at its first checkpoint or commit, before it writes one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from reduce_sql.errors import OutputBusyError
from reduce_sql.store import Location

LEASE = "_gpar_lease.json"

#: Seconds a lease lasts without renewal: how long a driver killed outright (SIGKILL, power)
#: blocks the next run of an output on another host.
LEASE_S = 60.0


@dataclass
class Lease:
    """This driver's lease on ``location``."""

    location: Location
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _renewer: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def acquire(cls, location: Location) -> Lease:
        """Take the output's lease, or raise OutputBusyError naming the driver that holds it."""
        lease = cls(location)
        current = lease._read()
        if current is not None and _in_force(current):
            raise OutputBusyError(
                f"{location.uri} is being written by another driver ({current['host']}, pid "
                f"{current['pid']}) until {time.ctime(current['expires_at'])} unless it renews; "
                "wait for its job to end, or write to another output")
        lease._write(exclusive=current is None)
        if lease._read_holder() != lease.holder:
            raise OutputBusyError(f"{location.uri}: another driver took the lease at the same "
                                  "time; wait for its job to end, or write to another output")
        lease._renewer = threading.Thread(target=lease._renew, name="gpar-lease", daemon=True)
        lease._renewer.start()
        return lease

    def check(self) -> None:
        """Raise OutputBusyError if the lease is no longer this driver's."""
        if self._read_holder() != self.holder:
            raise OutputBusyError(
                f"{self.location.uri}: this driver lost its lease (it went unrenewed for "
                f"{LEASE_S:.0f} s) and another driver now writes the output; nothing more was "
                "committed by this job")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:  # a renewal under way must not write after the delete
            self._renewer.join(timeout=LEASE_S / 4)
        if self._read_holder() == self.holder:
            self.location.delete([LEASE])

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                if self._read_holder() != self.holder:
                    return  # taken over: check() refuses the next commit
                self._write(exclusive=False)
            except OSError:  # the store is unreachable for now: the next renewal may succeed
                pass

    def _write(self, exclusive: bool) -> None:
        content = json.dumps({"holder": self.holder, "host": socket.gethostname(),
                              "pid": os.getpid(), "expires_at": time.time() + LEASE_S}).encode()
        if not (exclusive and not self.location.is_s3):
            self.location.write_atomically(LEASE, content)
            return
        temporary = self.location.path(f"{LEASE}.{self.holder}.tmp")
        os.makedirs(self.location.root, exist_ok=True)
        with open(temporary, "wb") as stream:
            stream.write(content)
        try:
            os.link(temporary, self.location.path(LEASE))  # fails if a lease exists
        except FileExistsError:
            pass  # another driver's: _read_holder() tells
        finally:
            os.unlink(temporary)

    def _read(self) -> dict | None:
        content = self.location.read_bytes(LEASE)
        try:
            return None if content is None else json.loads(content)
        except ValueError:  # not a lease reduce_sql wrote: treat it as none
            return None

    def _read_holder(self) -> str | None:
        current = self._read()
        return None if current is None else current.get("holder")


def _in_force(lease: dict) -> bool:
    """Whether ``lease`` still holds: unexpired, and its driver alive if it ran on this host."""
    if lease.get("expires_at", 0) <= time.time():
        return False
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return False
        except (OSError, KeyError, TypeError):
            pass
    return True
