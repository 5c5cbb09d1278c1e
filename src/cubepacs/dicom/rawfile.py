"""Split a DICOM Part 10 file into its encoded top-level elements, byte for byte.

The cube keeps each instance as the list of its encoded top-level elements (tag, VR, length and value bytes
exactly as they were), so that writing them back in order gives the original file. This module finds the element
boundaries; it never decodes values (pydicom does that, on demand).

Example
-------
>>> from pathlib import Path
>>> from cubepacs.dicom.rawfile import split_file, KEY_PIXEL_VALUE
>>> path = Path("../shared/data/single/ct_ge_small_signed.dcm")
>>> raw = split_file(path.read_bytes(), str(path))
>>> rebuilt = b"".join(raw.pixel_value if c.key == KEY_PIXEL_VALUE else c.data for c in raw.chunks)
>>> rebuilt == path.read_bytes(), raw.transfer_syntax, len(raw.pixel_value)
(True, '1.2.840.10008.1.2.1', 32768)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from cubepacs.errors import DicomReadError

# Chunk keys that are not tags (tags are 0..0xFFFFFFFF).
KEY_PREAMBLE = -1  # 128-byte preamble + b"DICM"
KEY_PIXEL_VALUE = -2  # the value of the top-level Pixel Data element, stored as frames
KEY_OPAQUE = -3  # bytes kept as they are (a deflated dataset body)

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float Pixel Data, Double Float Pixel Data

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
     b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 64  # sequence nesting deeper than this is refused (real files nest a handful of levels)
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
MAX_INFLATED = 1 << 30  # a deflated dataset inflating to more than this (1 GiB) is refused, not inflated on


@dataclass(frozen=True)
class Chunk:
    """One piece of an encoded file: a top-level element (``key`` = tag) or a special piece (negative key)."""

    key: int
    data: bytes


@dataclass
class RawFile:
    """A DICOM file split into chunks.

    ``chunks`` joined in order give the file, with the chunk of key ``KEY_PIXEL_VALUE`` standing for
    ``pixel_value`` (the Pixel Data element's value bytes, kept apart so it can be stored as frames).
    """

    source: str
    transfer_syntax: str
    implicit: bool
    little_endian: bool
    chunks: list[Chunk] = field(default_factory=list)
    pixel_tag: int | None = None
    pixel_vr: str | None = None
    pixel_value: bytes | memoryview = b""
    encapsulated: bool = False
    deflated_body: bytes | None = None  # inflated dataset, for deflated transfer syntaxes

    def dataset_bytes(self) -> bytes:
        """The encoded dataset (no preamble, no file meta) with pixel data included, for pydicom."""
        if self.deflated_body is not None:
            return self.deflated_body
        parts = []
        for c in self.chunks:
            if c.key == KEY_PIXEL_VALUE:
                parts.append(self.pixel_value)
            elif c.key >= 0 and (c.key >> 16) != 0x0002:
                parts.append(c.data)
        return b"".join(parts)


_LE = (struct.Struct("<HH").unpack_from, struct.Struct("<I").unpack_from, struct.Struct("<H").unpack_from)
_BE = (struct.Struct(">HH").unpack_from, struct.Struct(">I").unpack_from, struct.Struct(">H").unpack_from)
_SHORT_LE = struct.Struct("<HH2sH").unpack_from
_SHORT_BE = struct.Struct(">HH2sH").unpack_from
_PLAIN_LE = struct.Struct("<HHI").unpack_from
_PLAIN_BE = struct.Struct(">HHI").unpack_from


class Cursor:
    """Reads element headers and finds element ends in encoded bytes, failing with ``DicomReadError`` (naming
    ``source`` and the offset) on anything malformed — the one reader every walk over encoded bytes uses.

    Example
    -------
    >>> cur = Cursor(bytes.fromhex("10001000") + b"PN" + (4).to_bytes(2, "little") + b"DOE^", True, "x.dcm")
    >>> cur.header(0, implicit=False)  # tag, VR, value length, header size
    (1048592, b'PN', 4, 8)
    """

    __slots__ = ("_tag", "_u16", "_u32", "buf", "little", "source")

    def __init__(self, buf: bytes | memoryview, little: bool, source: str) -> None:
        self.buf = buf
        self.little = little
        self.source = source
        self._tag, self._u32, self._u16 = _LE if little else _BE

    def fail(self, reason: str, offset: int) -> DicomReadError:
        return DicomReadError(self.source, reason, offset)

    def header(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """Read an element header at ``pos``: (tag, vr or None, value length, header size)."""
        buf = self.buf
        if pos + 8 > len(buf):
            raise self.fail(f"truncated element header ({len(buf) - pos} bytes left, need 8)", pos)
        group, elem = self._tag(buf, pos)
        tag = (group << 16) | elem
        if group != 0xFFFE and not implicit:  # items and delimiters never carry a VR
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in _SHORT_VRS:
                return tag, vr, self._u16(buf, pos + 6)[0], 8
            if vr in _LONG_VRS:
                if pos + 12 > len(buf):
                    raise self.fail(f"truncated header of element {_fmt_tag(tag)}", pos)
                return tag, vr, self._u32(buf, pos + 8)[0], 12
        # Implicit VR, or an implicit-encoded element inside an explicit file (seen in real files).
        return tag, None, self._u32(buf, pos + 4)[0], 8

    def skip_element(self, pos: int, implicit: bool, depth: int = 0) -> int:
        """Return the offset just past the element starting at ``pos``."""
        return self.end_of(pos, implicit, *self.header(pos, implicit), depth=depth)

    def end_of(self, pos: int, implicit: bool, tag: int, vr: bytes | None, length: int, hsize: int,
               depth: int = 0) -> int:
        """The offset just past an element whose header (already read) starts at ``pos``."""
        start = pos + hsize
        if length != UNDEFINED:
            end = start + length
            if end > len(self.buf):
                raise self.fail(
                    f"element {_fmt_tag(tag)} declares {length} bytes but only {len(self.buf) - start} remain "
                    "(file truncated)",
                    pos,
                )
            return end
        # Undefined length: a sequence (or UN holding one, which is implicit VR LE inside) or encapsulated data.
        inner_implicit = implicit or vr == b"UN"
        return self.skip_items(start, inner_implicit, tag, depth + 1)

    def skip_items(self, pos: int, implicit: bool, owner: int, depth: int = 1) -> int:
        """Walk items of an undefined-length value until its Sequence Delimitation Item."""
        if depth > MAX_DEPTH:
            raise self.fail(f"sequences nested deeper than {MAX_DEPTH} levels in {_fmt_tag(owner)}", pos)
        buf = self.buf
        while True:
            if pos + 8 > len(buf):
                raise self.fail(f"sequence {_fmt_tag(owner)} has no Sequence Delimitation Item (truncated)", pos)
            tag, _, length, _ = self.header(pos, implicit)
            if tag == 0xFFFEE0DD:
                return pos + 8
            if tag != 0xFFFEE000:
                raise self.fail(f"expected an item in {_fmt_tag(owner)}, found {_fmt_tag(tag)}", pos)
            pos += 8
            if length != UNDEFINED:
                if pos + length > len(buf):
                    raise self.fail(f"item of {_fmt_tag(owner)} runs past the end of the file", pos)
                pos += length
                continue
            while True:  # undefined-length item: elements until Item Delimitation Item
                if pos + 8 > len(buf):
                    raise self.fail(f"item of {_fmt_tag(owner)} has no Item Delimitation Item (truncated)", pos)
                tag, _, _, _ = self.header(pos, implicit)
                if tag == 0xFFFEE00D:
                    pos += 8
                    break
                pos = self.skip_element(pos, implicit, depth)


def _fmt_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def guess_encoding(buf: bytes, pos: int) -> tuple[bool, bool]:
    """Guess (implicit, little_endian) of a dataset with no file meta, from its first element.

    Example
    -------
    >>> guess_encoding(bytes.fromhex("08001600") + b"UI" + bytes(2), 0)
    (False, True)
    """
    if len(buf) - pos < 8:
        return True, True
    vr = buf[pos + 4 : pos + 6]
    explicit = vr in _LONG_VRS or vr in _SHORT_VRS
    group_le = struct.unpack_from("<H", buf, pos)[0]
    group_be = struct.unpack_from(">H", buf, pos)[0]
    little = group_le <= group_be
    return (not explicit), little


def encoding_of(ts: str) -> tuple[bool, bool]:
    """(implicit, little_endian) of a transfer syntax's dataset (every syntax not named here is explicit LE).

    Example
    -------
    >>> encoding_of("1.2.840.10008.1.2"), encoding_of("1.2.840.10008.1.2.2")
    ((True, True), (False, False))
    """
    if ts == IMPLICIT_LE:
        return True, True
    if ts == EXPLICIT_BE:
        return False, False
    return False, True


@dataclass
class Scan:
    """Where the top-level elements of an encoded file are, found without copying any of them.

    ``spans`` holds ``(tag, vr or None, start, header size, end)`` of every element in file order, the file meta
    elements first; ``tail`` is the offset of trailing zero padding (``len(buf)`` when there is none). For a
    deflated transfer syntax the spans stop after the file meta and ``deflated_body`` holds the inflated dataset.
    """

    transfer_syntax: str
    implicit: bool
    little_endian: bool
    has_preamble: bool
    has_transfer_syntax: bool
    spans: list[tuple[int, bytes | None, int, int, int]]
    tail: int
    deflated_body: bytes | None = None


def read_meta(buf: bytes, source: str = "<bytes>") -> tuple[Scan, int]:
    """The preamble and file meta of an encoded file (a :class:`Scan` holding only their spans) and where the
    dataset starts; what :func:`scan_file` reads first.

    >>> from pathlib import Path
    >>> scan, start = read_meta(Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes())
    >>> scan.transfer_syntax, start > 132
    ('1.2.840.10008.1.2.1', True)
    """
    pos = 0
    has_preamble = len(buf) >= 132 and buf[128:132] == b"DICM"
    if has_preamble:
        pos = 132
    elif len(buf) < 8 or not plausible_start(buf):
        raise DicomReadError(source, "not a DICOM file (no DICM prefix, and no element at the start)")
    spans: list[tuple[int, bytes | None, int, int, int]] = []
    # File meta group (always explicit VR little endian).
    meta = Cursor(buf, True, source)
    ts: str | None = None
    while pos + 6 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        tag, vr, length, hsize = meta.header(pos, False)
        end = meta.end_of(pos, False, tag, vr, length, hsize)
        if tag == 0x00020010:
            ts = buf[pos + hsize : pos + hsize + length].rstrip(b"\0 ").decode("ascii", "replace")
        spans.append((tag, vr, pos, hsize, end))
        pos = end
    has_ts = ts is not None
    if ts is None:
        implicit, little = guess_encoding(buf, pos)
        ts = IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)
    else:
        implicit, little = encoding_of(ts)
    return Scan(ts, implicit, little, has_preamble, has_ts, spans, len(buf)), pos


def scan_spans(buf: bytes, pos: int, implicit: bool, little: bool, source: str,
               spans: list[tuple[int, bytes | None, int, int, int]]) -> int:
    """Append to ``spans`` the (tag, VR, start, header size, end) of the dataset's elements from ``pos`` to the end
    of ``buf`` (every element checked, DicomReadError when one runs past the end); return where trailing zero
    padding starts (``len(buf)`` when there is none).

    >>> spans = []; scan_spans(bytes.fromhex("0800 6000 4353 0200 4354") + bytes(4), 0, False, True, "x", spans)
    10
    >>> [(hex(tag), vr, end) for tag, vr, _, _, end in spans]
    [('0x80060', b'CS', 10)]
    """
    cur = Cursor(buf, little, source)
    header, end_of, size = cur.header, cur.end_of, len(buf)
    # the common cases read in one unpack: tag, VR, 16-bit length (explicit) or tag, 32-bit length (implicit)
    short, plain = (_SHORT_LE, _PLAIN_LE) if little else (_SHORT_BE, _PLAIN_BE)
    while pos < size:
        if size - pos < 8:
            if buf[pos:].strip(b"\0") == b"":
                return pos  # trailing zero padding after the last element
        elif not implicit:
            group, elem, vr, length = short(buf, pos)
            if vr in _SHORT_VRS and group != 0xFFFE:
                end = pos + 8 + length
                if end <= size:
                    spans.append(((group << 16) | elem, vr, pos, 8, end))
                    pos = end
                    continue
        else:
            group, elem, length = plain(buf, pos)
            end = pos + 8 + length
            if length != UNDEFINED and group != 0xFFFE and end <= size:
                spans.append(((group << 16) | elem, None, pos, 8, end))
                pos = end
                continue
        tag, vr2, length, hsize = header(pos, implicit)
        end = end_of(pos, implicit, tag, vr2, length, hsize)
        spans.append((tag, vr2, pos, hsize, end))
        pos = end
    return size


def inflate(body: bytes | memoryview, source: str = "<bytes>", offset: int = 0, limit: int | None = None) -> bytes:
    """A deflated dataset's body inflated, at most ``limit`` bytes of it: deflate reaches about 1000:1, so a 4 MB
    body of zeros would otherwise become 4 GB in memory (``limit`` None: ``MAX_INFLATED``, 1 GiB).
    :class:`DicomReadError` when it is not deflate data or inflates to more.

    Example
    -------
    >>> import zlib
    >>> bomb = zlib.compress(bytes(1 << 20), 9)[2:-4]  # raw deflate, 1 MiB of zeros in ~1 KB
    >>> len(inflate(bomb))
    1048576
    >>> inflate(bomb, "bomb.dcm", 132, limit=1000)
    Traceback (most recent call last):
    ...
    cubepacs.errors.DicomReadError: bomb.dcm: deflated dataset inflates to more than 1000 bytes at byte 132
    """
    limit = MAX_INFLATED if limit is None else limit
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DicomReadError(source, f"deflated dataset cannot be inflated: {exc}", offset) from exc
    if len(out) > limit or d.unconsumed_tail:
        raise DicomReadError(source, f"deflated dataset inflates to more than {limit} bytes", offset)
    return out


def scan_file(buf: bytes, source: str = "<bytes>") -> Scan:
    """Find the element boundaries of an encoded DICOM file (every element checked, nothing copied).

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> scan = scan_file(data)
    >>> scan.transfer_syntax, [hex(t) for t, *_ in scan.spans[-2:]], scan.spans[-1][4] == len(data)
    ('1.2.840.10008.1.2.1', ['0x7fe00010', '0xfffcfffc'], True)
    """
    scan, pos = read_meta(buf, source)
    ts, implicit, little, spans = scan.transfer_syntax, scan.implicit, scan.little_endian, scan.spans
    if ts in DEFLATED:
        scan.deflated_body = inflate(buf[pos:], source, pos)
        scan.tail = pos
        return scan
    scan.tail = scan_spans(buf, pos, implicit, little, source, spans)
    return scan


def split_file(buf: bytes, source: str = "<bytes>", pixel_view: bool = False) -> RawFile:
    """Split an encoded DICOM file into chunks (see :class:`RawFile`); ``pixel_view``: the pixel value a view of
    ``buf``, not a copy (a memory-mapped file served as it is stored).

    Raises
    ------
    DicomReadError
        When the bytes are not DICOM, or an element runs past the end of the file.

    Example
    -------
    >>> split_file(b"not dicom at all", "x.dcm")
    Traceback (most recent call last):
    ...
    cubepacs.errors.DicomReadError: x.dcm: not a DICOM file (no DICM prefix, and no element at the start)
    """
    scan = scan_file(buf, source)
    chunks: list[Chunk] = [Chunk(KEY_PREAMBLE, buf[:132])] if scan.has_preamble else []
    raw = RawFile(source=source, transfer_syntax=scan.transfer_syntax, implicit=scan.implicit,
                  little_endian=scan.little_endian, chunks=chunks)
    for tag, vr, pos, hsize, end in scan.spans:
        if tag in PIXEL_TAGS and raw.pixel_tag is None:
            raw.pixel_tag = tag
            raw.pixel_vr = vr.decode("ascii") if vr else None
            raw.encapsulated = Cursor(buf, scan.little_endian, source).header(pos, scan.implicit)[2] == UNDEFINED
            chunks.append(Chunk(tag, buf[pos : pos + hsize]))
            chunks.append(Chunk(KEY_PIXEL_VALUE, b""))
            raw.pixel_value = memoryview(buf)[pos + hsize : end] if pixel_view else buf[pos + hsize : end]
            continue
        chunks.append(Chunk(tag, buf[pos:end]))
    raw.deflated_body = scan.deflated_body
    if scan.tail < len(buf):  # trailing padding, or the deflated dataset as it was
        chunks.append(Chunk(KEY_OPAQUE, buf[scan.tail:]))
    return raw


def plausible_start(buf: bytes) -> bool:
    """True when the bytes start like a raw dataset (group 0x0002 or 0x0008 in either byte order).

    Example
    -------
    >>> plausible_start(bytes.fromhex("08000500")), plausible_start(b"%PDF")
    (True, False)
    """
    g_le, g_be = struct.unpack_from("<H", buf, 0)[0], struct.unpack_from(">H", buf, 0)[0]
    return g_le in (0x0002, 0x0008) or g_be in (0x0002, 0x0008)
