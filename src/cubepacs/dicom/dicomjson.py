"""Encoded DICOM dataset bytes → DICOM JSON (PS3.18 F), straight from the bytes, without building pydicom objects.

This is the lake's hot path (a few hundred elements per file, millions of files). It handles the common
character sets (default, ISO_IR 100, ISO_IR 192); anything else raises :class:`Unsupported` and the caller falls
back to pydicom. Values larger than ``bulk_threshold`` (binary VRs) are left out and reported.

Example
-------
>>> from pathlib import Path
>>> from cubepacs.dicom.rawfile import split_file
>>> raw = split_file(Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes())
>>> body = b"".join(c.data for c in raw.chunks if c.key >= 0 and c.key >> 16 not in (2, 0x7FE0))
>>> doc, bulk, end, pixel = dataset_to_json(body, implicit=False, little_endian=True)
>>> doc["00080060"], doc["00200013"]
({'vr': 'CS', 'Value': ['CT']}, {'vr': 'IS', 'Value': [1]})
"""

from __future__ import annotations

import base64
import functools
import struct
from typing import Any

from pydicom.datadict import dictionary_VR, private_dictionary_VR

from cubepacs.dicom.rawfile import MAX_DEPTH, PIXEL_TAGS, UNDEFINED, Cursor
from cubepacs.errors import DicomReadError

_NUMERIC = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_SINGLE_TEXT = frozenset({"LT", "ST", "UT", "UR"})
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


class Unsupported(Exception):
    """The dataset uses something this fast path does not decode (ISO 2022 character sets …)."""


class InvalidValue(ValueError):
    """A value that its VR does not allow (IS "1A"); the message names the tag."""


VR_CACHE_SIZE = 4096  # (tag, private creator) pairs whose dictionary VR is kept: the data chooses both


@functools.lru_cache(maxsize=VR_CACHE_SIZE)
def _cached_vr(tag: int, creator: str | None) -> str:
    """The dictionary VR of ``tag`` in the private block of ``creator``, the least recently used pairs dropped past
    :data:`VR_CACHE_SIZE` — a stream of instances with ever new private tags or creators (hostile or not) does not
    grow the process."""
    return _dictionary_vr(tag, {} if creator is None else {(tag >> 16, (tag & 0xFFFF) >> 8): creator})


def _vr_of(tag: int, vr: bytes | None, creators: dict[tuple[int, int], str]) -> str:
    if vr is not None:
        return vr.decode("ascii")
    creator = creators.get((tag >> 16, (tag & 0xFFFF) >> 8)) if (tag >> 16) & 1 else None
    return _cached_vr(tag, creator)


def _dictionary_vr(tag: int, creators: dict[tuple[int, int], str]) -> str:
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:  # private: the VR comes from the private dictionary of the block's creator
        if elem == 0:
            return "UN"
        if 0x0010 <= elem <= 0x00FF:
            return "LO"
        creator = creators.get((group, elem >> 8))
        if creator is None:
            return "UN"
        try:
            v = str(private_dictionary_VR(tag, creator))
        except KeyError:
            return "UN"
        return "UN" if "or" in v or v == "OB or OW" else v
    if elem == 0:
        return "UL"
    try:
        v = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if "or" in v:
        return "OW" if "OW" in v else v.split(" or ")[0]
    return v


def _strings(raw: bytes, enc: str, vr: str) -> list[Any]:
    text = raw.decode(enc)
    parts = [text] if vr in _SINGLE_TEXT else text.split("\\")
    out: list[Any] = []
    for part in parts:
        value = part.rstrip("\0 ")
        out.append(value if value != "" else None)
    return out


def _value(vr: str, raw: bytes, little: bool, enc: str) -> list[Any] | None:
    if vr in _NUMERIC:
        code = _NUMERIC[vr]
        n = len(raw) // struct.calcsize(code)
        return list(struct.unpack(("<" if little else ">") + code * n, raw[: n * struct.calcsize(code)])) or None
    if vr == "AT":
        fmt = "<HH" if little else ">HH"
        return [f"{g:04X}{e:04X}" for g, e in struct.iter_unpack(fmt, raw[: len(raw) // 4 * 4])] or None
    text = raw.decode(enc).rstrip("\0 ")
    if text.strip() == "":
        return None
    if vr == "PN":
        return [pn_groups(p) for p in text.split("\\")]
    if vr in ("IS", "DS"):
        return [None if s.strip() == "" else (int(s) if vr == "IS" else _ds(s)) for s in text.split("\\")]
    return _strings(raw, enc, vr)


PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def pn_string(value: dict[str, str] | None) -> str:
    """A DICOM JSON Person Name back to its DICOM string (``Alphabetic=Ideographic=Phonetic``, trailing empty
    groups left out, PS3.5 6.2.1.2).

    Example
    -------
    >>> pn_string({"Alphabetic": "Yamada^Tarou", "Phonetic": "やまだ^たろう"})
    'Yamada^Tarou==やまだ^たろう'
    """
    return "=".join((value or {}).get(g, "") for g in PN_GROUPS).rstrip("=")


def pn_groups(text: str) -> dict[str, str] | None:
    """A Person Name string as DICOM JSON: its component groups by name (None for an empty name).

    Example
    -------
    >>> pn_groups("Yamada^Tarou=山田^太郎"), pn_groups("==")
    ({'Alphabetic': 'Yamada^Tarou', 'Ideographic': '山田^太郎'}, None)
    """
    return {k: g for k, g in zip(PN_GROUPS, text.split("="), strict=False) if g} or None


def _ds(s: str) -> float:
    return float(s)


def _lenient(vr: str, raw: bytes, enc: str) -> list[Any] | None:
    """An IS/DS value that does not convert, kept as its original strings (PS3.18 F.2.3 lets a value that
    cannot be converted be carried as is)."""
    return _strings(raw, enc, vr) or None


class _Walker:
    def __init__(self, buf: bytes, implicit: bool, little: bool, bulk_threshold: int, stop_at_pixels: bool,
                 invalid: list[str] | None = None) -> None:
        self.invalid = invalid
        self.depth = 0
        self.stop_at_pixels = stop_at_pixels
        self.pixel: int | None = None
        self.buf = buf
        self.little = little
        self.implicit = implicit
        self.threshold = bulk_threshold
        self.enc = "latin-1"
        self.bulk: list[str] = []

    def dataset(self, pos: int, end: int | None, implicit: bool, path: str) -> tuple[dict[str, Any], int]:
        """Elements from ``pos`` to ``end`` (or to an Item Delimitation Item when ``end`` is None)."""
        cur = Cursor(self.buf, self.little, "")
        out: dict[str, Any] = {}
        creators: dict[tuple[int, int], str] = {}
        limit = len(self.buf) if end is None else end
        while pos < limit:
            tag, vr, length, hsize = cur.header(pos, implicit)
            if tag == 0xFFFEE00D:
                return out, pos + 8
            if self.stop_at_pixels and not path and tag in PIXEL_TAGS:
                self.pixel = tag
                return out, pos
            start = pos + hsize
            vr_s = _vr_of(tag, vr, creators)
            key = f"{tag:08X}"
            un = vr_s == "UN"
            if un and vr is not None:  # explicit UN of a known tag: its VR from the dictionary, as pydicom does
                vr_s = _vr_of(tag, None, creators)
            if length == UNDEFINED and tag in PIXEL_TAGS:  # encapsulated pixel data (an icon's, in an item)
                end = cur.skip_items(start, implicit, tag)
                self._binary(out, key, path, "OB", self.buf[start:end])
                pos = end
                continue
            if vr_s == "SQ" or length == UNDEFINED:
                items, pos = self.sequence(start, length, implicit or un, path + key + "/")
                out[key] = {"vr": "SQ", "Value": items}
                continue
            pos = start + length
            if pos > limit:
                raise DicomReadError("", f"element ({key[:4]},{key[4:]}) runs past the end of the data", start)
            value = self.buf[start:pos]
            if tag == 0x00080005:
                cs = value.decode("ascii", "replace").strip("\0 ").split("\\")[0].strip()
                if cs not in _CHARSETS or "\\" in value.decode("ascii", "replace").strip("\0 "):
                    raise Unsupported(f"character set {cs!r}")
                self.enc = _CHARSETS[cs]
            if vr_s in _BINARY:
                self._binary(out, key, path, vr_s, value)
                continue
            try:
                vals = _value(vr_s, value, self.little, self.enc)
            except (ValueError, UnicodeDecodeError) as exc:
                if self.invalid is None or vr_s not in ("IS", "DS"):
                    raise InvalidValue(f"invalid {vr_s} value {bytes(value[:32])!r} in ({key[:4]},{key[4:]}): "
                                       f"{exc}") from None
                self.invalid.append(path + key)
                vals = _lenient(vr_s, value, self.enc)
            if (tag >> 16) & 1 and 0x0010 <= (tag & 0xFFFF) <= 0x00FF and vals:
                creators[(tag >> 16, tag & 0xFFFF)] = str(vals[0])
            out[key] = {"vr": vr_s, "Value": vals} if vals else {"vr": vr_s}
        return out, pos

    def _binary(self, out: dict[str, Any], key: str, path: str, vr: str, value: bytes | memoryview) -> None:
        if len(value) > (self.threshold // 4) * 3:  # pydicom's rule: base64 is 4/3 of the raw length
            self.bulk.append(path + key)
            out[key] = {"vr": vr, "BulkDataURI": f"bulk:{path}{key}"}
        elif len(value):
            out[key] = {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
        else:
            out[key] = {"vr": vr}

    def sequence(self, pos: int, length: int, implicit: bool, path: str) -> tuple[list[Any], int]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DicomReadError("", f"sequences nested deeper than {MAX_DEPTH} levels", pos)
        try:
            return self._items(pos, length, implicit, path)
        finally:
            self.depth -= 1

    def _items(self, pos: int, length: int, implicit: bool, path: str) -> tuple[list[Any], int]:
        cur = Cursor(self.buf, self.little, "")
        end = None if length == UNDEFINED else pos + length
        items: list[Any] = []
        while end is None or pos < end:
            tag, _, ilen, _ = cur.header(pos, implicit)
            if tag == 0xFFFEE0DD:
                return items, pos + 8
            pos += 8
            item_path = f"{path}{len(items)}/"  # bulk paths: TAG/ITEM/TAG…, items counted from 0
            if ilen == UNDEFINED:
                item, pos = self.dataset(pos, None, implicit, item_path)
            else:
                if pos + ilen > len(self.buf):
                    raise DicomReadError("", "sequence item runs past the end of the data", pos)
                item, _ = self.dataset(pos, pos + ilen, implicit, item_path)
                pos += ilen
            items.append(item)
        return items, pos


def dataset_to_json(body: bytes, implicit: bool, little_endian: bool, bulk_threshold: int = 1024,
                    stop_at_pixels: bool = False, invalid: list[str] | None = None,
                    start: int = 0) -> tuple[dict[str, Any], list[str], int, int | None]:
    """DICOM JSON of an encoded dataset (no file meta) from ``start`` in ``body``: (JSON, tags of bulk values
    left out, where the walk ended, the Pixel Data tag the walk stopped at with ``stop_at_pixels``, else None).

    Raises :class:`Unsupported` for character sets other than the default, ISO_IR 100 and ISO_IR 192,
    :class:`InvalidValue` for values their VR forbids (unless ``invalid`` is a list: then an IS/DS value that
    does not convert is kept as its strings and its tag path appended there), and
    :class:`~cubepacs.errors.DicomReadError` when an element runs past the end of ``body`` or sequences nest
    deeper than :data:`MAX_DEPTH`.
    """
    walker = _Walker(body, implicit, little_endian, bulk_threshold, stop_at_pixels, invalid)
    doc, end = walker.dataset(start, len(body), implicit, "")
    return doc, walker.bulk, end, walker.pixel
