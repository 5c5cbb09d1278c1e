"""The free-space watermark: below it (and on a full disk) new instances are refused, reads go on.

Like Orthanc's ``MaximumStorageSize`` or dcm4chee's storage thresholds, but on what is left rather than on what is
used: ``min_free_mb`` (default 1024; 0: only a full disk refuses) of free space must remain on every local folder
the archive writes — the ``file://`` storage root and ``data_dir`` (the index, the queue, the log spool). Below it:

* a C-STORE is answered 0xA700 (Out of Resources) and a STOW-RS 507 (Insufficient Storage), with the reason;
* ``/readyz`` is 503 and names the folder and its free space, ``/healthz`` stays 200, every read keeps working;
* ``cubepacs_disk_free_bytes{path}`` and ``cubepacs_disk_refusing`` say it, and one log line says so when it
  starts and one when it ends;
* it ends on its own once space returns (the free space is read again at most every ``interval`` seconds).

Example
-------
>>> import tempfile
>>> guard = DiskGuard([tempfile.gettempdir()], min_free_mb=0)
>>> guard.refusal() is None  # a disk with any space left
True
>>> DiskGuard([tempfile.gettempdir()], min_free_mb=1 << 40).refusal().startswith("disk full")
True
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from cubepacs.errors import StorageFullError

log = logging.getLogger("cubepacs.storage")


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


class DiskGuard:
    """Free space of ``paths`` against ``min_free_mb``; :meth:`check` raises :class:`StorageFullError` below it."""

    def __init__(self, paths: Sequence[str], min_free_mb: int, interval: float = 1.0) -> None:
        self.paths = list(dict.fromkeys(os.path.abspath(p) for p in paths))
        self.min_free = max(0, min_free_mb) * 1024**2
        self.interval = interval
        self._lock = threading.Lock()
        self._checked = -1e9
        self._reason: str | None = None

    @classmethod
    def attach(cls, storage: Any, data_dir: str, min_free_mb: int) -> DiskGuard:
        """A guard of ``data_dir`` and (for ``file://``) the storage root, set as ``storage.guard``.

        ``storage`` is any ``storage.base.Storage`` (not named here: base.py imports this module).
        """
        root = getattr(storage, "root", None)
        guard = cls([data_dir, *([str(root)] if root is not None else [])], min_free_mb)
        storage.guard = guard
        return guard

    def _existing(self, path: str) -> str:
        while not os.path.exists(path) and os.path.dirname(path) != path:  # a folder not made yet: its parent's disk
            path = os.path.dirname(path)
        return path

    def free(self) -> dict[str, int]:
        """Bytes free (to an unprivileged writer) on each folder's file system."""
        out = {}
        for path in self.paths:
            st = os.statvfs(self._existing(path))
            out[path] = st.f_bavail * st.f_frsize
        return out

    def refusal(self) -> str | None:
        """None while there is room, else the one-line reason new instances are refused (re-read at most every
        ``interval`` seconds; a change is logged once and published as metrics)."""
        now = time.monotonic()
        if now - self._checked < self.interval:
            return self._reason
        with self._lock:
            if now - self._checked < self.interval:
                return self._reason
            free = self.free()
            low = [(p, f) for p, f in free.items() if f <= self.min_free]
            reason = None
            if low:
                path, left = low[0]
                reason = (f"disk full: {path} has {_mb(left)} free, at or below min_free_mb "
                          f"{self.min_free // 1024**2}; new instances are refused until space is freed")
            self._publish(free, reason is not None)
            if (reason is None) != (self._reason is None):
                if reason is not None:
                    log.error("%s", reason)
                else:
                    log.warning("disk space back: %s; new instances are accepted again",
                                ", ".join(f"{p} has {_mb(f)} free" for p, f in free.items()))
            self._reason = reason
            self._checked = time.monotonic()
            return reason

    def check(self) -> None:
        """Raise :class:`StorageFullError` (its message: :meth:`refusal`) when new instances are refused."""
        reason = self.refusal()
        if reason is not None:
            raise StorageFullError(reason)

    @staticmethod
    def _publish(free: dict[str, int], refusing: bool) -> None:
        from cubepacs.archive.observability.metrics import DISK_FREE, DISK_REFUSING

        for path, left in free.items():
            DISK_FREE.labels(path=path).set(left)
        DISK_REFUSING.set(1 if refusing else 0)
