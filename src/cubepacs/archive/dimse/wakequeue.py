"""The queues of a lean association (``lean.py``) that wake the thread consuming them, which sleeps elsewhere (in
``select()`` on its socket, on an event) rather than polling the queue.

* :class:`WakingQueue`: ``put`` also calls ``wake`` (the association's messages from its DUL);
* :class:`ServingQueue`: DIMSE's received messages, a plain C-STORE-RQ served by the thread that completed it;
* :class:`SendQueue`: the DUL's send queue, an item taken off it "in flight" until sent.

Example
-------
>>> woken = []
>>> q = WakingQueue(lambda: woken.append(True))
>>> q.put("A-RELEASE-RQ"); q.get(), woken
('A-RELEASE-RQ', [True])
>>> import threading
>>> sent = SendQueue(lambda: None, threading.Lock()); sent.put("P-DATA"); sent.get(False), sent.in_flight
('P-DATA', True)
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from cubepacs.archive.dimse import store


class WakingQueue(queue.Queue[Any]):
    """A queue whose ``put`` also calls ``wake`` (the consumer blocks elsewhere)."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class ServingQueue(WakingQueue):
    """DIMSE's queue of received messages: a plain C-STORE-RQ is served at once by the thread completing it when
    the association's thread is idle (``store.serve_on_reader``); anything else is queued and that thread woken."""

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc.poke)
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not store.serve_on_reader(self._assoc, item):
            super().put(item, block, timeout)


class SendQueue(WakingQueue):
    """The DUL's send queue: an item taken off it is "in flight" until the DUL has sent it (``lean.LeanDUL._send``),
    so that a direct send (``lean.LeanDUL.send_now``) never overtakes it."""

    def __init__(self, wake: Any, lock: threading.Lock) -> None:
        super().__init__(wake)
        self.lock = lock
        self.in_flight = False

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        with self.lock:
            item = super().get(False)
            self.in_flight = True
            return item
