"""New associations go to the DIMSE worker process with the fewest open, not wherever a hash sends them.

Why: with ``SO_REUSEPORT`` the kernel picks a worker's socket by a hash of the connection's addresses, so the load
is spread at random. Four associations on two workers were split 2 + 2 in only 16 of 40 trials, 3 + 1 in 19 and
4 + 0 in 5 — and then one process's GIL serves three or four storing associations while the other core idles.
Instead the workers share one listening socket, bound by the parent before they start (a busy port is one error,
never two servers sharing it), and each keeps a count of its open associations in memory the workers share
(:class:`Balance`). A worker whose count is above the smallest leaves a pending connection to the least loaded one
for up to ``GRACE`` seconds (one busy with something else, or dead, still gets it taken then — a worker is not
restarted, so a dead one with the smallest count costs each connection those 20 ms); among equals, whichever
accepts first has it (the others' ``accept`` finds nothing: non-blocking).

Example
-------
>>> import multiprocessing
>>> counts = multiprocessing.get_context("fork").RawArray("i", 2)
>>> a, b = Balance(counts, 0), Balance(counts, 1)
>>> a.enter(); a.busier(), b.busier()
(True, False)
>>> a.leave(); a.busier()
False
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from cubepacs.archive.dimse.lean import _Server

GRACE = 0.02  # how long a busier worker leaves a connection to the least loaded one


class Balance:
    """This worker's slot (``k``) in the open-association counts all workers share (``counts``: a RawArray)."""

    def __init__(self, counts: Any, k: int) -> None:
        self.counts = counts
        self.k = k
        self._lock = threading.Lock()  # only this process writes its slot, from several threads

    def enter(self) -> None:
        """One more association open here."""
        with self._lock:
            self.counts[self.k] += 1

    def leave(self) -> None:
        """One association fewer."""
        with self._lock:
            self.counts[self.k] = max(0, self.counts[self.k] - 1)

    def busier(self) -> bool:
        """Whether another worker has fewer open associations than this one."""
        mine = self.counts[self.k]
        return any(other < mine for other in self.counts)

    def wait_turn(self) -> None:
        """Return once this worker is among the least loaded, or after ``GRACE`` seconds."""
        deadline = time.monotonic() + GRACE
        while self.busier() and time.monotonic() < deadline:
            time.sleep(0.001)


@dataclass
class Shared:
    """The listening sockets (port → socket, bound and listening) the workers share, and this worker's slot."""

    sockets: dict[int, socket.socket]
    balance: Balance

    def server_class(self, port: int) -> type[_Server]:
        """A server class (for ``ae.make_server``) listening on the shared socket of ``port``, taking connections
        as the balance says."""
        return type("SharedServer", (_SharedServer,), {"shared": self.sockets[port], "balance": self.balance})


class _SharedServer(_Server):
    shared: socket.socket
    balance: Balance

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.close()  # the one socketserver made: never bound
        self.socket = self.shared
        self.socket.setblocking(False)  # several processes are woken for one connection; one of them gets it
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening (the parent did it)."""

    def server_close(self) -> None:
        """Close this process's descriptor only: a ``shutdown()`` of a shared listening socket would stop it for
        every worker."""
        if self.socket is not None:
            self.socket.close()

    def get_request(self) -> tuple[Any, Any]:
        self.balance.wait_turn()
        client, address = super().get_request()  # BlockingIOError when another worker took it: socketserver skips
        self.balance.enter()
        return client, address
