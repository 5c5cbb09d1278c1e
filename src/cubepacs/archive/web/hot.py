"""What WADO-RS keeps hot between requests: parsed instances (where each frame lies) and decoded frames.

A viewer asks for the frames of a series one by one, often twice (scrolling back). Without this, every request
read the whole file, parsed it and decoded its frame again (a JPEG-lossless CT frame: ≈ 30 ms). Both caches are
LRU and bounded by bytes (cachetools); an entry is keyed by what identifies the stored bytes (the storage key
and the file's size and modification time, or the cube's build time), so a replaced instance or rebuilt cube
is never served stale.

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
from collections.abc import Callable
from typing import Any

import numpy as np
from cachetools import LRUCache

from cubepacs.cube.image import InstancePixels
from cubepacs.cube.sources import read_instance

PARSED_BYTES = 64 * 1024 * 1024  # stored files kept parsed (their bytes and frame positions)
DECODED_BYTES = 64 * 1024 * 1024  # decoded frames kept


class HotFrames:
    """Decoded frames, LRU, at most ``max_bytes`` of pixel values; thread-safe."""

    def __init__(self, max_bytes: int = DECODED_BYTES) -> None:
        self._frames: LRUCache[tuple[Any, int], np.ndarray] = LRUCache(max_bytes, getsizeof=lambda a: a.nbytes)
        self._lock = threading.Lock()

    def frame(self, source: Any, k: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """Frame ``k`` of ``source`` (a hashable identity of the stored bytes), decoded once."""
        with self._lock:
            hit = self._frames.get((source, k))
        if hit is not None:
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

    def pixels(self, storage: Any, row: dict[str, Any]) -> tuple[Any, InstancePixels]:
        """(identity, parsed pixels) of an index row's stored file."""
        identity = version(storage, row)
        with self._lock:
            hit = self._parsed.get(identity)
        if hit is not None:
            return identity, hit[0]
        data = storage.get(row["storage_key"])
        pixels = InstancePixels([read_instance(data, f"{row['sop_uid']}.dcm")])
        if len(data) <= self._parsed.maxsize:
            with self._lock:
                self._parsed[identity] = (pixels, len(data))
        return identity, pixels


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
