"""Structure checks of a cube's meta block and frame index, before anything trusts them.

The checksums catch damage; these catch a crafted file whose checksums were recomputed: every section inside the
binary area with an allowed dtype, every pixel description bounded, every index record inside the frame data and
in instance order. Failures are :class:`~cubepacs.errors.InvalidCubeError` naming the block.

Example
-------
>>> check_section([0, 8, "<i4", [2]], 8, "x", "refs")
>>> check_section([0, 8, "|O", [1]], 8, "x", "refs")
Traceback (most recent call last):
...
cubepacs.errors.InvalidCubeError: x: invalid cube (meta): section refs: dtype '|O' not allowed
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cubepacs.dicom.rawfile import KEY_OPAQUE, KEY_PIXEL_VALUE, KEY_PREAMBLE, PIXEL_TAGS
from cubepacs.errors import InvalidCubeError

_DTYPES = {f"{o}{k}{n}" for o in "<>|" for k in "iuf" for n in (1, 2, 4, 8)} | {"|b1", "|u1", "|i1"}
_MODES = {"native", "encapsulated", "opaque", "file"}
MAX_FRAMES = 1 << 24
MAX_FRAME_BYTES = 1 << 28  # 256 MB per frame: larger native frames are refused (none is near it in practice)


def check_section(sect: Any, area_len: int, source: str, name: str) -> None:
    """A section descriptor ``[offset, length, dtype, shape]`` that lies inside the area and fits its shape."""
    if not (isinstance(sect, list) and len(sect) == 4):
        raise InvalidCubeError(source, "meta", f"section {name}: not [offset, length, dtype, shape]")
    off, length, dtype, shape = sect
    if not (isinstance(off, int) and isinstance(length, int) and 0 <= off and 0 <= length
            and off + length <= area_len):
        raise InvalidCubeError(source, "meta", f"section {name}: outside the metadata area")
    if dtype is None:
        return
    if dtype not in _DTYPES:
        raise InvalidCubeError(source, "meta", f"section {name}: dtype {dtype!r} not allowed")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape) and len(shape) <= 4):
        raise InvalidCubeError(source, "meta", f"section {name}: bad shape")
    if math.prod(shape) * np.dtype(dtype).itemsize != length:
        raise InvalidCubeError(source, "meta", f"section {name}: shape {shape} does not fill {length} bytes")


def check_doc(doc: Any, area_len: int, source: str) -> int:
    """The meta JSON document: required keys and types, every section in bounds. Returns the instance count."""
    if not isinstance(doc, dict):
        raise InvalidCubeError(source, "meta", "the metadata is not a JSON object")
    for key, kind in (("names", list), ("syntaxes", list), ("columns", dict), ("pixel_descs", list),
                      ("codec", str)):
        if not isinstance(doc.get(key), kind):
            raise InvalidCubeError(source, "meta", f"{key!r} missing or not a {kind.__name__}")
    n = len(doc["names"])
    if not all(isinstance(x, str) for x in doc["names"] + doc["syntaxes"]):
        raise InvalidCubeError(source, "meta", "names and syntaxes must be strings")
    check_names(doc["names"], source)
    qc = doc.get("qc")
    if not (isinstance(qc, dict) and isinstance(qc.get("ok"), bool) and isinstance(qc.get("issues"), list)
            and all(isinstance(x, str) for x in qc["issues"])):
        raise InvalidCubeError(source, "meta", "'qc' is not {ok: bool, issues: [str]}")
    for key in ("syntax", "pool_keys", "pool_offsets", "pool_data", "refs", "starts", "pixel_desc"):
        check_section(doc.get(key), area_len, source, key)
    for name, col in doc["columns"].items():
        if not isinstance(col, dict):
            raise InvalidCubeError(source, "meta", f"column {name!r} is not an object")
        check_section(col.get("sect"), area_len, source, f"column {name}")
    for key, count in (("syntax", n), ("pixel_desc", n), ("starts", n + 1)):
        shape = doc[key][3]
        if doc[key][2] is None or shape is None or shape[:1] != [count]:
            raise InvalidCubeError(source, "meta", f"section {key}: {shape} entries for {n} instances")
    return n


def check_descs(descs: list[Any], source: str) -> None:
    """Pixel descriptions with bounded geometry and a known mode."""
    for d in descs:
        native_bits = d.bits in (8, 16, 32, 64) and 1 <= d.spp <= 4 if d.mode == "native" else True
        if d.mode not in _MODES or not (native_bits and 0 <= d.rows <= 65535 and 0 <= d.cols <= 65535
                                        and 0 <= d.spp <= 65535 and 0 <= d.bits <= 64
                                        and 0 <= d.frames <= MAX_FRAMES and str(d.dtype) in _DTYPES
                                        and 0 <= d.stored <= d.bits):
            raise InvalidCubeError(source, "meta", f"pixel description out of bounds: {d}")
        if d.mode == "native" and d.rows * d.cols * d.spp * (d.bits // 8) > MAX_FRAME_BYTES:
            raise InvalidCubeError(source, "meta", f"a frame larger than {MAX_FRAME_BYTES} bytes")
        if d.mode == "native":  # the dtype sizes every buffer: it must be what bits and signedness say
            dt = np.dtype(d.dtype)
            if dt.itemsize * 8 != d.bits or (dt.kind != "f" and (dt.kind == "i") != bool(d.signed)):
                raise InvalidCubeError(source, "meta", f"pixel description: dtype {d.dtype} for {d.bits} bits, "
                                                       f"{'signed' if d.signed else 'unsigned'}")


def check_desc_index(idx: np.ndarray, descs: int, n: int, source: str) -> None:
    """The per-instance pixel description indices: -1 (no pixels) or a description."""
    if idx.dtype.kind not in "iu" or (len(idx) and (int(idx.min()) < -1 or int(idx.max()) >= descs)):
        raise InvalidCubeError(source, "meta", "pixel description index out of range")
    if len(idx) != n:
        raise InvalidCubeError(source, "meta", "one pixel description index per instance expected")


def check_index(index: np.ndarray, instances: int, data_length: int, source: str) -> None:
    """Frame index records: inside the frame data, in instance order, known codecs."""
    if not len(index):
        return
    inst = index["instance"]
    if int(inst.max()) >= instances or bool(np.any(np.diff(inst.astype(np.int64)) < 0)):
        raise InvalidCubeError(source, "index", "records out of instance order or beyond the instances")
    ends = index["offset"].astype(np.uint64) + index["length"].astype(np.uint64)
    if bool(np.any(ends > np.uint64(data_length))) or bool(np.any(ends < index["offset"])):
        raise InvalidCubeError(source, "index", "a frame lies outside the frame data")
    if int(index["codec"].max()) > 5:
        raise InvalidCubeError(source, "index", f"unknown codec id {int(index['codec'].max())}")


def check_pool(meta: Any, source: str) -> None:
    """The element pool and the per-instance references point inside each other."""
    keys, offsets, data, refs, starts = meta.pool_arrays()
    n, pool = len(meta.names), len(keys)

    def bad(what: str) -> InvalidCubeError:
        return InvalidCubeError(source, "meta", f"element pool: {what}")

    if len(offsets) != pool + 1 or (pool and (int(offsets[0]) != 0 or int(offsets[-1]) > len(data)
                                              or bool(np.any(np.diff(offsets.astype(np.int64)) < 0)))):
        raise bad("offsets out of order or beyond the pool data")
    if len(refs) and (int(refs.min()) < 0 or int(refs.max()) >= pool):
        raise bad("a reference beyond the pool")
    if len(starts) != n + 1 or int(starts[0]) != 0 or int(starts[-1]) != len(refs) or bool(
            np.any(np.diff(starts.astype(np.int64)) < 0)):
        raise bad("instance starts out of order")
    if len(meta.syntaxes) != n:
        raise bad("one transfer syntax per instance expected")


def check_names(names: list[str], source: str) -> None:
    """Instance names that are safe file names under the writer's rules (:func:`~cubepacs.cube.sources._safe_name`:
    relative, no ``..``, no empty or drive parts) and hold no NUL — an export writes a file of each name."""
    from cubepacs.cube.sources import _safe_name

    for k, name in enumerate(names):
        if not name or "\0" in name or _safe_name(name) != name or len(name.encode("utf-8", "replace")) > 4096:
            raise InvalidCubeError(source, "meta", f"instance {k}: name {name[:80]!r} is not a safe file name")


def check_meta(meta: Any, source: str) -> None:
    """What :class:`~cubepacs.cube.meta.DicomMeta` decodes on demand, checked once: pool keys that are tags
    (< 2³²) or the known special keys, each tag entry starting with its own tag (little or big endian) and long
    enough for an element header, and every typed column present with its dtype and one row per instance."""
    from cubepacs.cube.columns import COLUMNS

    keys, offsets, data, _refs, _starts = meta.pool_arrays()
    n = len(meta.names)
    if keys.dtype.kind not in "iu" or (len(keys) and (int(keys.min()) < -8 or int(keys.max()) >= 1 << 32)):
        raise InvalidCubeError(source, "meta", "element pool: a key that is neither a tag nor a special key")
    tagged = np.flatnonzero(keys.astype(np.int64) >= 0)
    if len(tagged):
        starts = offsets[tagged].astype(np.int64)
        lengths = offsets[tagged + 1].astype(np.int64) - starts
        if bool(np.any(lengths < 8)):
            raise InvalidCubeError(source, "meta", "element pool: an element shorter than its header")
        b = np.frombuffer(data, np.uint8)[starts[:, None] + np.arange(4)].astype(np.int64)
        little = (b[:, 1] << 24) | (b[:, 0] << 16) | (b[:, 3] << 8) | b[:, 2]
        big = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
        want = keys[tagged].astype(np.int64)
        wrong = (little != want) & (big != want)
        if bool(np.any(wrong)):
            p = int(tagged[np.argmax(wrong)])
            raise InvalidCubeError(source, "meta", f"element pool: entry {p} does not hold the element its key "
                                                   f"({int(keys[p]):08X}) names")
    columns = meta.columns()
    for name, (_, dtype, width) in COLUMNS.items():
        col = columns.get(name)
        shape = (n,) if width == 1 else (n, width)
        if col is None or col.dtype.kind != dtype[0] or col.dtype.itemsize != 8 or tuple(col.shape) != shape:
            raise InvalidCubeError(source, "meta", f"column {name}: missing, or not {dtype} × {shape}")


def check_element_list(refs: list[int], keys: list[int], source: str, i: int) -> None:
    """Refuse instance ``i``'s element list (pool entries ``refs``, their ``keys``) unless a file split by
    :func:`cubepacs.dicom.rawfile.split_file` could have it: no pool entry referenced twice, the preamble only
    first, the kept tail only last, the whole pixel value at most once and directly after the first Pixel Data
    element header (whose defined length the reader then compares with the value). Otherwise a small cube rebuilds
    a large instance (one entry, or a zero-filled value, repeated) that pydicom parses as millions of empty
    elements (issue 27). No file of ../shared/data repeats an element (tests/cube/test_roundtrip.py).

    Example
    -------
    >>> check_element_list([0, 1, 2, 3], [KEY_PREAMBLE, 0x00080018, 0x7FE00010, KEY_PIXEL_VALUE], "x", 0)
    >>> check_element_list([0, 1, 2, 1], [KEY_PREAMBLE, 0x00080018, 0x7FE00010, 0x00080018], "x", 0)
    Traceback (most recent call last):
    ...
    cubepacs.errors.InvalidCubeError: x: invalid cube (instance 0): its element list references an entry more \
than once (4 references, 3 entries)
    """
    def bad(what: str) -> InvalidCubeError:
        return InvalidCubeError(source, f"instance {i}", what)

    if len(set(refs)) != len(refs):
        raise bad(f"its element list references an entry more than once ({len(refs)} references, "
                  f"{len(set(refs))} entries)")
    if KEY_PREAMBLE in keys[1:] or KEY_OPAQUE in keys[:-1]:
        raise bad("its preamble is not first, or its kept tail not last")
    at = [n for n, k in enumerate(keys) if k == KEY_PIXEL_VALUE]
    heads = [n for n, k in enumerate(keys) if k in PIXEL_TAGS]
    if len(at) > 1 or (at and (not heads or at[0] != heads[0] + 1)):
        raise bad(f"its pixel value is referenced {len(at)} times, not once directly after its Pixel Data "
                  "element header")
