"""Encode the File Meta Information of a received instance directly (PS3.10 7.1), without pydicom objects.

Example
-------
>>> meta = encode_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1", "STORESCU")
>>> meta[128:132], len(meta) % 2
(b'DICM', 0)
"""

from __future__ import annotations

import struct

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1443.1.1"  # cubepacs, under a UID root for software
IMPLEMENTATION_VERSION = "CUBEPACS_010"


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr in (b"OB",):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and the group 0002 elements (with their group length)."""
    body = b"".join([
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", _text(sop_class, b"\0")),
        _element(0x00020003, b"UI", _text(sop_instance, b"\0")),
        _element(0x00020010, b"UI", _text(transfer_syntax, b"\0")),
        _element(0x00020012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\0")),
        _element(0x00020013, b"SH", _text(IMPLEMENTATION_VERSION, b" ")),
        _element(0x00020016, b"AE", _text(source_ae.strip()[:16] or "UNKNOWN", b" ")),
    ])
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body
