"""Group commit: many threads that each need a durable write share one flush.

A thread hands its item to :meth:`GroupCommit.run` and returns once a flush that included it has completed (or
raises that flush's error). While one flush runs, items arriving meanwhile queue up and the next flush takes them
all: under one writer nothing changes, under many each pays a fraction of an fsync.

Example
-------
>>> batches = []
>>> g = GroupCommit(batches.append)
>>> g.run(1); g.run(2); batches
[[1], [2]]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Slot:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Leader/follower batching of ``flush(items)`` calls across threads."""

    def __init__(self, flush: Callable[[list[T]], None]) -> None:
        self._flush = flush
        self._cond = threading.Condition()
        self._pending: list[tuple[T, _Slot]] = []
        self._busy = False

    def run(self, item: T) -> None:
        """Return once ``item`` has been flushed (by this thread or by another one's flush)."""
        slot = _Slot()
        with self._cond:
            self._pending.append((item, slot))
            while self._busy and not slot.done:
                self._cond.wait()
            if not slot.done:  # no flush running: lead one, for everything waiting
                self._busy = True
                batch, self._pending = self._pending, []
        if not slot.done:
            error: BaseException | None = None
            try:
                self._flush([i for i, _ in batch])
            except BaseException as exc:
                error = exc
            with self._cond:
                for _, s in batch:
                    s.done, s.error = True, error
                self._busy = False
                self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
