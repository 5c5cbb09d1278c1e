"""How deep an encoded file's sequences nest, found by walking item and element headers only (no values).

Every reader of an instance walks its sequences, so a store refuses those nested deeper than ``MAX_DEPTH``
(``archive/ingest.py`` decides; this module only reads). Undefined-length sequences were walked to that depth by
:func:`cubepacs.dicom.rawfile.scan_file` already; this walks the structure of the defined-length ones too. Other
oddities inside a sequence are not this walk's business: it stops there, and the instance is served as it is.

Example
-------
>>> from pathlib import Path
>>> from cubepacs.dicom.rawfile import scan_file
>>> data = Path("../shared/data/single/sr_comprehensive_nested.dcm").read_bytes()
>>> too_deep(data, scan_file(data, "sr.dcm"), "sr.dcm") is None
True
"""

from __future__ import annotations

import functools

from cubepacs.dicom.dicomjson import _dictionary_vr
from cubepacs.dicom.rawfile import MAX_DEPTH, UNDEFINED, Cursor, Scan
from cubepacs.errors import DicomReadError

_SEQUENCE_VRS = frozenset({b"SQ", b"UN"})


class _TooDeep(Exception):
    pass


def too_deep(data: bytes, scan: Scan, source: str) -> tuple[int | None, str] | None:
    """``(offset, reason)`` of the first top-level sequence whose items nest deeper than ``MAX_DEPTH`` levels,
    else None. A deflated dataset is not walked (pydicom reads those; its failure is a refusal too).

    Example: see the module docstring.
    """
    if scan.deflated_body is not None:
        return None
    cur = Cursor(data, scan.little_endian, source)
    implicit = scan.implicit
    for tag, vr, start, hsize, end in scan.spans:
        if tag >> 16 == 2 or not _is_sequence(tag, vr, implicit):
            continue
        try:
            _walk_items(cur, start + hsize, end, implicit or vr == b"UN", 1)
        except _TooDeep:
            return start, f"sequences nested deeper than {MAX_DEPTH} levels in ({tag >> 16:04X},{tag & 0xFFFF:04X})"
        except DicomReadError as exc:  # an undefined-length sequence inside a defined-length one
            if "nested deeper" in exc.reason:
                return exc.offset, exc.reason
    return None


def _is_sequence(tag: int, vr: bytes | None, implicit: bool) -> bool:
    if vr is not None:
        return vr in _SEQUENCE_VRS
    return implicit and _implicit_sequence(tag)


@functools.lru_cache(maxsize=8192)
def _implicit_sequence(tag: int) -> bool:
    """Whether an implicit-VR element may hold items (its dictionary VR is SQ, or unknown)."""
    return _dictionary_vr(tag, {}) in ("SQ", "UN")


def _walk_items(cur: Cursor, pos: int, end: int, implicit: bool, depth: int) -> None:
    """Walk the items of a sequence value in ``[pos, end)`` down to its deepest level (_TooDeep past MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    while pos + 8 <= end:
        tag, _, length, _ = cur.header(pos, implicit)
        pos += 8
        if tag != 0xFFFEE000:
            return  # a delimiter, or not an item (an UN value that is not a sequence): nothing more to walk
        stop = end if length == UNDEFINED else min(end, pos + length)
        while pos + 8 <= stop:
            etag, evr, elen, ehsize = cur.header(pos, implicit)
            if etag == 0xFFFEE00D:
                pos += 8
                break
            eend = cur.end_of(pos, implicit, etag, evr, elen, ehsize, depth)
            if elen == UNDEFINED or _is_sequence(etag, evr, implicit):
                _walk_items(cur, pos + ehsize, eend, implicit or evr == b"UN", depth + 1)
            pos = eend
        if length != UNDEFINED:
            pos = stop
