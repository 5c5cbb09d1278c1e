"""The byte layout of a ``.dcbs`` file (version 1.0); docs/format.md is the full description.

::

    offset 0   header (96 bytes, little endian, see HEADER)
               meta block   zstd( u32 json_length | JSON | binary arrays )
               frame index  FRAME_DTYPE records, one per stored blob
               frame data   concatenated encoded blobs

Example
-------
>>> h = Header(meta_offset=96, meta_length=10, meta_raw_length=20, meta_checksum=1, index_offset=106,
...            index_length=0, index_checksum=2, data_offset=106, data_length=0)
>>> Header.unpack(h.pack(), "x").meta_raw_length
20
"""

from __future__ import annotations

import json
import struct
from dataclasses import astuple, dataclass
from typing import Any

import imagecodecs
import numpy as np
import xxhash

from cubepacs.errors import InvalidCubeError

MAGIC = b"DCBS\x00\r\n\x1a"
VERSION = (1, 0)
HEADER = struct.Struct("<8sHHI" + "Q" * 10)  # magic, major, minor, flags, 9 fields, header checksum
HEADER_SIZE = HEADER.size  # 96

FRAME_DTYPE = np.dtype(
    [("offset", "<u8"), ("length", "<u8"), ("checksum", "<u8"), ("raw_checksum", "<u8"),
     ("instance", "<u4"), ("frame", "<u4"), ("codec", "u1")]
)
WHOLE_VALUE = 0xFFFFFFFF  # FRAME_DTYPE.frame of a blob that holds an instance's whole pixel value

_ic: Any = imagecodecs  # imagecodecs' stubs do not admit memoryview, which every codec accepts


def checksum(data: bytes | memoryview) -> int:
    """xxHash3 64-bit of ``data``: the checksum of every block and frame."""
    return int(xxhash.xxh3_64_intdigest(data))


@dataclass(frozen=True)
class Header:
    """The fixed 96-byte header: where each block is and its checksum."""

    meta_offset: int
    meta_length: int
    meta_raw_length: int
    meta_checksum: int
    index_offset: int
    index_length: int
    index_checksum: int
    data_offset: int
    data_length: int

    def pack(self) -> bytes:
        """Encode the header, with its own checksum in the last 8 bytes."""
        body = HEADER.pack(MAGIC, *VERSION, 0, *astuple(self), 0)[:-8]
        return body + struct.pack("<Q", checksum(body))

    @classmethod
    def unpack(cls, data: bytes, source: str) -> Header:
        """Decode and check a header; raises :class:`InvalidCubeError` naming ``source``."""
        if len(data) < HEADER_SIZE:
            raise InvalidCubeError(source, "header", f"file is {len(data)} bytes, shorter than the header")
        magic, major, _minor, _flags, *fields, check = HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC:
            raise InvalidCubeError(source, "header", "not a .dcbs file (bad magic)")
        if major != VERSION[0]:
            raise InvalidCubeError(source, "header", f"format version {major} is not supported (this reader: 1)")
        if checksum(data[: HEADER_SIZE - 8]) != check:
            raise InvalidCubeError(source, "header", "checksum mismatch")
        return cls(*fields)


class BlobWriter:
    """Collect numpy arrays and bytes into one binary area, returning JSON-ready section descriptors."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, arr: np.ndarray | bytes) -> list[Any]:
        """Append ``arr``; return ``[offset, length, dtype, shape]`` (dtype/shape ``None`` for bytes)."""
        if isinstance(arr, bytes):
            data, dtype, shape = arr, None, None
        else:
            a = np.ascontiguousarray(arr)
            data, dtype, shape = a.tobytes(), a.dtype.str, list(a.shape)
        pad = (-self.size) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        sect = [self.size, len(data), dtype, shape]
        self.parts.append(data)
        self.size += len(data)
        return sect


def encode_meta(doc: dict[str, Any], blobs: BlobWriter) -> tuple[bytes, int]:
    """Encode the meta block: (stored bytes, raw length)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    pad = (-(4 + len(text))) % 8
    raw = struct.pack("<I", len(text) + pad) + text + b" " * pad + b"".join(blobs.parts)
    return bytes(_ic.zstd_encode(raw, level=9)), len(raw)


def decode_meta(stored: bytes | memoryview, raw_length: int, source: str) -> tuple[dict[str, Any], memoryview]:
    """Decode the meta block into (JSON document, binary area)."""
    try:
        raw = _ic.zstd_decode(stored)
    except Exception as exc:
        raise InvalidCubeError(source, "meta", f"cannot decompress: {exc}") from exc
    if len(raw) != raw_length:
        raise InvalidCubeError(source, "meta", f"decompressed to {len(raw)} bytes, expected {raw_length}")
    (n,) = struct.unpack_from("<I", raw, 0)
    try:
        doc = json.loads(raw[4 : 4 + n])
    except ValueError as exc:
        raise InvalidCubeError(source, "meta", f"bad JSON: {exc}") from exc
    return doc, memoryview(raw)[4 + n :]


def section(area: memoryview, sect: list[Any]) -> Any:
    """Return the numpy array (or bytes view) a section descriptor points at."""
    off, length, dtype, shape = sect
    view = area[off : off + length]
    if dtype is None:
        return view
    return np.frombuffer(view, dtype=np.dtype(dtype)).reshape(shape)
