"""Hostile inputs made from real files of ../shared/data, shared by the harnesses and the regression tests.

Synthetic by necessity: no real file has an RLE segment offset 64 bytes early (a Rust panic in pylibjpeg-rle),
Bits Allocated 24, a Specific Character Set encoded as US, or a cube whose metadata was edited and its checksums
recomputed. Each function says what it changes.

DICOM mutants (bytes of a Part 10 file): :func:`rle_panic`, :func:`bits24`, :func:`bad_charset`, :func:`renamed`.
Cube mutants (bytes of a ``.dcbs``, every checksum recomputed): :func:`edit_meta` (the JSON document),
:func:`edit_area` (the binary arrays), :func:`replace_blob` (one stored frame or whole value, any length).
"""

from __future__ import annotations

import io
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SINGLE = DATA / "single"
CT = SINGLE / "ct_ge_small_signed.dcm"
RLE_MR = SINGLE / "ts_rle_siemens_mr.dcm"
SEG = SINGLE / "seg_1bit_liver.dcm"
JPEGLS_MR = SINGLE / "ts_jpegls_lossless_siemens_mr.dcm"


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository root: the tests' crafted helpers are shared
    sys.path.insert(0, str(ROOT))
from tests.archive.crafted import _save, renamed  # noqa: E402


def rle_panic(study: str | None = None, series: str | None = None) -> bytes:
    """The real RLE MR with its second segment's offset moved 64 bytes early: the header stays in order, and
    pylibjpeg-rle's decoder panics (``index out of bounds``) instead of raising."""
    import pydicom
    from pydicom.encaps import encapsulate, get_frame

    ds = pydicom.dcmread(io.BytesIO(renamed(RLE_MR, study, series)))
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    second = struct.unpack_from("<I", frame, 8)[0]
    struct.pack_into("<I", frame, 8, second - 64)
    ds.PixelData = encapsulate([bytes(frame)])
    return _save(ds)


def rle_bad_header(study: str | None = None, series: str | None = None) -> bytes:
    """The real RLE MR whose header declares 15 segments (Bits Allocated 16 × 1 sample needs 2)."""
    import pydicom
    from pydicom.encaps import encapsulate, get_frame

    ds = pydicom.dcmread(io.BytesIO(renamed(RLE_MR, study, series)))
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    struct.pack_into("<I", frame, 0, 15)
    ds.PixelData = encapsulate([bytes(frame)])
    return _save(ds)


def bits24(path: Path = CT, study: str | None = None, series: str | None = None) -> bytes:
    """A real CT declaring Bits Allocated 24 (its pixel value unchanged): the cube writer keeps it as an opaque
    value with a dtype (``<i3``) its reader refuses."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(renamed(path, study, series)))
    ds.BitsAllocated = 24
    return _save(ds)


def bad_charset(path: Path = CT, study: str | None = None, series: str | None = None) -> bytes:
    """A real CT whose Specific Character Set ("ISO_IR 100", 10 bytes) is encoded with VR FD (8 bytes a value):
    pydicom's ``BytesLengthException`` on reading it; the archive's own header reader takes it."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(renamed(path, study, series)))
    ds.SpecificCharacterSet = "ISO_IR 100"
    data = _save(ds)
    old = struct.pack("<HH", 8, 5) + b"CS" + struct.pack("<H", 10) + b"ISO_IR 100"
    assert data.count(old) == 1
    return data.replace(old, struct.pack("<HH", 8, 5) + b"FD" + struct.pack("<H", 10) + b"ISO_IR 100")


# --- cubes ------------------------------------------------------------------------------------------------------

def _parts(cube: bytes) -> tuple[bytes, bytes, bytes, bytes, int]:
    """(raw meta JSON text, raw binary area, index bytes, frame data, padding after the JSON length word)."""
    import imagecodecs

    from cubepacs.cube.format import HEADER, HEADER_SIZE

    _, _, _, _, mo, ml, _mrl, _mc, io_, il, _ic, do, dl, _ = HEADER.unpack(cube[:HEADER_SIZE])
    raw = bytes(imagecodecs.zstd_decode(cube[mo:mo + ml]))
    (n,) = struct.unpack_from("<I", raw)
    return raw[4:4 + n], raw[4 + n:], cube[io_:io_ + il], cube[do:do + dl], n


def assemble(text: bytes, area: bytes, index: bytes, frames: bytes) -> bytes:
    """A cube from its parts, with every offset and checksum computed (the writer's layout)."""
    import imagecodecs

    from cubepacs.cube.format import HEADER_SIZE, Header, checksum

    pad = (-(4 + len(text))) % 8
    raw = struct.pack("<I", len(text) + pad) + text + b" " * pad + area
    meta = bytes(imagecodecs.zstd_encode(raw, level=1))
    io_ = HEADER_SIZE + len(meta)
    do = io_ + len(index)
    head = Header(HEADER_SIZE, len(meta), len(raw), checksum(meta), io_, len(index), checksum(index), do,
                  len(frames)).pack()
    return head + meta + index + frames


def edit_meta(cube: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The cube with its metadata JSON document changed by ``edit`` (in place), checksums recomputed."""
    text, area, index, frames, _ = _parts(cube)
    doc = json.loads(text)
    edit(doc)
    return assemble(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), area, index, frames)


def edit_area(cube: bytes, section: str, edit: Callable[[bytearray], None]) -> bytes:
    """The cube with the bytes of one binary section (``pool_keys``, ``pool_offsets``, ``pool_data``, ``refs``,
    ``starts``, ``column <name>``…) changed in place by ``edit``, checksums recomputed."""
    text, area, index, frames, _ = _parts(cube)
    doc = json.loads(text)
    sect = doc["columns"][section[7:]]["sect"] if section.startswith("column ") else doc[section]
    buf = bytearray(area)
    part = bytearray(buf[sect[0]:sect[0] + sect[1]])
    edit(part)
    buf[sect[0]:sect[0] + sect[1]] = part[:sect[1]].ljust(sect[1], b"\0")
    return assemble(text, bytes(buf), index, frames)


def replace_blob(cube: bytes, row: int, blob: bytes) -> bytes:
    """The cube with stored blob ``row`` (a frame or a whole value) replaced by ``blob`` — any length: the frame
    data is rebuilt and every offset and checksum recomputed."""
    import numpy as np

    from cubepacs.cube.format import FRAME_DTYPE, checksum

    text, area, index, frames, _ = _parts(cube)
    recs = np.frombuffer(index, FRAME_DTYPE).copy()
    blobs = [frames[int(r["offset"]):int(r["offset"]) + int(r["length"])] for r in recs]
    blobs[row] = blob
    data = b""
    for r, b in zip(recs, blobs, strict=True):
        r["offset"], r["length"], r["checksum"] = len(data), len(b), checksum(b)
        data += b
    return assemble(text, area, recs.tobytes(), data)


def cube_of(*files: bytes | Path, codec: str = "htj2k") -> bytes:
    """A cube (bytes) of the given DICOM files."""
    from cubepacs.cube.sources import read_instance
    from cubepacs.cube.writer import write_cube

    out = io.BytesIO()
    instances = [read_instance(f.read_bytes() if isinstance(f, Path) else f, f"{k}.dcm")
                 for k, f in enumerate(files)]
    write_cube(instances, out, codec=codec)
    return out.getvalue()
