"""What WADO-RS keeps hot between requests: index rows, parsed instances (where each frame lies), decoded frames.

A viewer asks for the frames of a series one by one, often twice (scrolling back). Without this, every request
read the whole file, parsed it and decoded its frame again (a JPEG-lossless CT frame: ≈ 30 ms). Both caches are
LRU and bounded by bytes (cachetools); an entry is keyed by what identifies the stored bytes (the storage key
and the file's size and modification time, or the cube's build time), so a replaced instance or rebuilt cube
is never served stale. Index rows (``HotRows``) let a frame asked again skip the index for ``ROW_SECONDS``, and
only while a mark of the instance's file and its series' cube taken before the row was read (``file_mark``) is
unchanged: a re-sent, replaced or deleted instance and a rebuilt or deleted cube are seen at the next request,
whichever process changed them; on object storage (no cheap mark) every request asks the index.

Example
-------
>>> import numpy as np
>>> hot = HotFrames(max_bytes=1 << 20)
>>> hot.frame(("file", "k", 1), 0, lambda: np.zeros((4, 4), np.uint16)).shape
(4, 4)
>>> hot.frame(("file", "k", 1), 0, lambda: 1 / 0).shape  # the second time: not decoded again
(4, 4)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cachetools import LRUCache

from cubepacs.cube.image import InstancePixels
from cubepacs.cube.sources import read_instance

ROW_SECONDS = 2.0  # how long an index row found for a frame request is trusted without asking the index again
ROWS = 10_000  # index rows kept
PARSED_BYTES = 64 * 1024 * 1024  # stored files kept parsed (their bytes and frame positions)
# decoded frames kept: 64 512² CT frames — the read-ahead needs 8 a scrolling viewer, a scroll back finds the
# last few dozen; 64 MiB made the server larger than Orthanc after bench/archive.py's frame phases (R13)
DECODED_BYTES = 32 * 1024 * 1024


class HotFrames:
    """Decoded frames, LRU, at most ``max_bytes`` of pixel values; thread-safe."""

    def __init__(self, max_bytes: int = DECODED_BYTES) -> None:
        self._frames: LRUCache[tuple[Any, int], np.ndarray] = LRUCache(max_bytes, getsizeof=lambda a: a.nbytes)
        self._lock = threading.Lock()

    def frame(self, source: Any, k: int, decode: Callable[[], np.ndarray] | None) -> np.ndarray | None:
        """Frame ``k`` of ``source`` (a hashable identity of the stored bytes), decoded once; ``decode=None``:
        only when hot (else None)."""
        with self._lock:
            hit = self._frames.get((source, k))
        if hit is not None or decode is None:
            return hit
        arr = decode()
        if arr.nbytes <= self._frames.maxsize:
            arr.flags.writeable = False  # shared between requests
            with self._lock:
                self._frames[(source, k)] = arr
        return arr


class HotInstances:
    """Stored instances kept parsed (``InstancePixels``), LRU, at most ``max_bytes`` of file bytes."""

    def __init__(self, max_bytes: int = PARSED_BYTES) -> None:
        self._parsed: LRUCache[Any, tuple[InstancePixels, int]] = LRUCache(max_bytes, getsizeof=lambda v: v[1])
        self._lock = threading.Lock()

    def pixels(self, storage: Any, row: dict[str, Any], read: bool = True) -> tuple[Any, InstancePixels | None]:
        """(identity, parsed pixels) of an index row's stored file; ``read=False``: pixels only when hot."""
        identity = version(storage, row)
        with self._lock:
            hit = self._parsed.get(identity)
        if hit is not None or not read:
            return identity, hit[0] if hit is not None else None
        data = storage.get(row["storage_key"])
        # the pixel value a view of the file's bytes: a second 512 KB copy (and its page faults) cost ≈ 1.8 ms
        # per 512² CT file here (read and split of 50 files: 2.3 ms each with the copy, 0.43 without)
        pixels = InstancePixels([read_instance(data, f"{row['sop_uid']}.dcm", pixel_view=True)])
        if len(data) <= self._parsed.maxsize:
            with self._lock:
                self._parsed[identity] = (pixels, len(data))
        return identity, pixels


class HotRows:
    """Index rows by request key, each with a ``mark`` of the stored files taken before the row was read (see
    ``file_mark``), trusted for ``max_age`` seconds at most; thread-safe.

    Example
    -------
    >>> rows = HotRows(); rows.put(("t", "1"), {"sop_uid": "1"}, ("m",)); rows.get(("t", "1"))
    ({'sop_uid': '1'}, ('m',))
    """

    def __init__(self, max_items: int = ROWS, max_age: float = ROW_SECONDS) -> None:
        self._rows: LRUCache[tuple[str, ...], tuple[float, dict[str, Any], Any]] = LRUCache(max_items)
        self._max_age = max_age
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> tuple[dict[str, Any], Any] | None:
        """(row, mark), or None (never found, or older than ``max_age``)."""
        with self._lock:
            hit = self._rows.get(key)
        return (hit[1], hit[2]) if hit is not None and time.monotonic() - hit[0] <= self._max_age else None

    def put(self, key: tuple[str, ...], row: dict[str, Any], mark: Any) -> None:
        """Keep ``row`` with ``mark``."""
        with self._lock:
            self._rows[key] = (time.monotonic(), row, mark)


def file_mark(storage: Any, keys: tuple[str, ...]) -> tuple[Any, ...] | None:
    """What identifies the stored files ``keys`` right now — inode, size and modification time of each (None for
    a missing one) — or None when the storage is not local (nothing cheap to compare). Taken before an index row
    is read, an equal mark later means neither file was written, replaced or deleted since, so the row still
    describes them.

    Example
    -------
    >>> file_mark(object(), ("a",)) is None
    True
    """
    local = getattr(storage, "local_path", None)
    if local is None:
        return None
    out: list[Any] = []
    for key in keys:
        try:
            st = os.stat(local(key))
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def version(storage: Any, row: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies the stored bytes of an instance: its key with the file's size and modification time (a
    local file), else with the size and transfer syntax the index recorded."""
    local = getattr(storage, "local_path", None)
    if local is not None:
        try:
            st = os.stat(local(row["storage_key"]))
            return ("file", row["storage_key"], st.st_size, st.st_mtime_ns)
        except OSError:
            pass
    return ("object", row["storage_key"], row.get("size"), row.get("transfer_syntax"))
