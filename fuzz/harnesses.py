"""atheris harnesses: the cube reader, the DICOM path, STOW-RS multipart parsing, the lake's ZIP/entry reader.

Each target takes bytes and lets only the project's declared errors (:class:`cubepacs.errors.CubepacsError` and,
for the web layer, FastAPI's HTTPException) pass; anything else escaping, a hang, a memory blow-up or a native
crash is a finding. ``fuzz/run.py`` runs them; ``tests/test_fuzz.py`` replays every input kept under
``fuzz/regressions/<target>/`` and runs each harness for a few seconds.

The cube harness is structure-aware: its mutator works on the decompressed metadata block, the frame index, one
frame's codestream or the whole file, and then recomputes every checksum, so that mutations get past the
integrity checks and reach the parsers and decoders.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from cubepacs.errors import CubepacsError


def _declared() -> tuple[type[BaseException], ...]:
    from fastapi import HTTPException

    return (CubepacsError, HTTPException)


# --- the cube -------------------------------------------------------------------------------------------------

def fix_checksums(data: bytes) -> bytes:
    """Recompute the header, meta, index and frame checksums of a (mutated) cube, where its layout allows."""
    from cubepacs.cube.format import FRAME_DTYPE, HEADER, HEADER_SIZE, MAGIC, Header, checksum

    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        return data
    _, major, minor, flags, mo, ml, mrl, _mc, io_, il, _ic, do, dl, _ = HEADER.unpack(data[:HEADER_SIZE])
    buf = bytearray(data)
    if io_ + il <= len(buf) and il % FRAME_DTYPE.itemsize == 0:
        index = np.frombuffer(bytes(buf[io_:io_ + il]), FRAME_DTYPE).copy()
        for rec in index:
            start, end = do + int(rec["offset"]), do + int(rec["offset"]) + int(rec["length"])
            if end <= len(buf) and int(rec["offset"]) < 1 << 62:
                rec["checksum"] = checksum(bytes(buf[start:end]))
        buf[io_:io_ + il] = index.tobytes()
    header = Header(mo, ml, mrl, checksum(bytes(buf[mo:mo + ml])), io_, il, checksum(bytes(buf[io_:io_ + il])),
                    do, dl).pack()
    body = header[:8] + struct.pack("<HHI", major, minor, flags) + header[16:HEADER_SIZE - 8]
    buf[:HEADER_SIZE] = body + struct.pack("<Q", checksum(body))
    return bytes(buf)


def _rebuild(data: bytes, meta_raw: bytes) -> bytes:
    """The cube with another (raw) metadata block, offsets moved, checksums recomputed."""
    import imagecodecs

    from cubepacs.cube.format import HEADER, HEADER_SIZE, Header

    _, _, _, _, _mo, _ml, _mrl, _mc, io_, il, _ic, do, dl, _ = HEADER.unpack(data[:HEADER_SIZE])
    meta = bytes(imagecodecs.zstd_encode(meta_raw, level=1))
    index, frames = data[io_:io_ + il], data[do:do + dl]
    new_io = HEADER_SIZE + len(meta)
    new_do = new_io + len(index)
    head = Header(HEADER_SIZE, len(meta), len(meta_raw), 0, new_io, len(index), 0, new_do, len(frames)).pack()
    return fix_checksums(head + meta + index + frames)


def cube_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Mutate one part of a cube (metadata, index, a frame, or anything), then fix its checksums."""
    import atheris

    out = _cube_mutation(data, max_size, seed)
    if len(out) > max_size:
        out = fix_checksums(atheris.Mutate(data, max_size))
    return out[:max_size]


def _cube_mutation(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris
    import imagecodecs

    from cubepacs.cube.format import FRAME_DTYPE, HEADER, HEADER_SIZE

    rng = random.Random(seed)
    choice = rng.randrange(5)
    try:
        _, _, _, _, mo, ml, _mrl, _mc, io_, il, _ic, do, _dl, _ = HEADER.unpack(data[:HEADER_SIZE])
        if choice <= 1:  # the metadata: JSON text or the binary arrays, decompressed
            from cubepacs.cube.guard import zstd_size

            if zstd_size(data[mo:mo + ml]) > 1 << 24:  # the mutator must not blow up memory itself
                raise ValueError("meta too large")
            raw = bytes(imagecodecs.zstd_decode(data[mo:mo + ml]))
            (n,) = struct.unpack_from("<I", raw)
            n = min(n, len(raw) - 4)  # a mutated length must not make the mutator allocate it
            if choice == 0:
                text = atheris.Mutate(raw[4:4 + n], n + 64)
                return _rebuild(data, struct.pack("<I", len(text)) + text + raw[4 + n:])
            area = atheris.Mutate(raw[4 + n:], len(raw) - 4 - n)
            return _rebuild(data, raw[:4 + n] + area)
        if choice == 2 and io_ + il <= len(data):  # the frame index (same length)
            index = atheris.Mutate(data[io_:io_ + il], il)[:il].ljust(il, b"\0")
            return fix_checksums(data[:io_] + index + data[io_ + il:])
        if choice == 3 and il >= FRAME_DTYPE.itemsize:  # one frame's codestream (same length)
            recs = np.frombuffer(data[io_:io_ + il], FRAME_DTYPE)
            rec = recs[rng.randrange(len(recs))]
            start, length = do + int(rec["offset"]), int(rec["length"])
            if start + length > len(data):
                raise ValueError("frame outside the file")
            blob = atheris.Mutate(data[start:start + length], length)[:length].ljust(length, b"\0")
            return fix_checksums(data[:start] + blob + data[start + length:])
    except Exception:
        pass
    return fix_checksums(atheris.Mutate(data, max_size))


def cube(data: bytes) -> None:
    """Open a cube from bytes, read its metadata, decode its frames, rebuild its files."""
    from cubepacs.cube.reader import CubeReader, load_meta_only

    try:
        reader = CubeReader(data)
        for k in range(min(reader.num_frames, 8)):
            reader.frame(k)
        reader.verify()
        for i in range(min(len(reader.meta), 4)):
            reader.instance_bytes(i)
            reader.header_bytes(i)
        load_meta_only(data)
    except _declared():
        pass


# --- the DICOM path ---------------------------------------------------------------------------------------------

def dicom(data: bytes) -> None:
    """What the archive does with received bytes: check, describe, metadata, read the instance, first frame."""
    from cubepacs.archive.ingest import describe
    from cubepacs.archive.metadata import instance_metadata
    from cubepacs.cube.image import InstancePixels
    from cubepacs.cube.sources import read_instance
    from cubepacs.dicom.rawfile import split_file

    for step in (lambda: split_file(data, "fuzz.dcm"), lambda: describe(data, "fuzz.dcm"),
                 lambda: instance_metadata(data, "/base", source="fuzz.dcm")):
        try:
            step()
        except _declared():
            pass
    try:
        pixels = InstancePixels([read_instance(data, "fuzz.dcm")])
        if pixels.num_frames:
            pixels.frame(0)
    except _declared():
        pass


# --- STOW-RS ----------------------------------------------------------------------------------------------------

def stow(data: bytes) -> None:
    """Multipart bodies, frame lists and Accept headers as the web layer parses them."""
    from cubepacs.archive.web import multipart
    from cubepacs.archive.web.wado import parse_frames, wanted_syntax

    cut = data.find(b"\n")
    ctype = data[:cut].decode("latin-1") if 0 <= cut < 200 else 'multipart/related; type="application/dicom"; ' \
                                                                   "boundary=b0undary"
    body = data[cut + 1:] if 0 <= cut < 200 else data
    try:
        for part in multipart.iter_parts(body, ctype):
            bytes(part)
    except _declared():
        pass
    text = data[:256].decode("latin-1")
    for step in (lambda: parse_frames(text), lambda: wanted_syntax(text)):
        try:
            step()
        except _declared():
            pass


# --- the lake ---------------------------------------------------------------------------------------------------

def lake(data: bytes) -> None:
    """The lake's readers never raise: a ZIP (and its entries, nested ZIPs included) and a plain entry."""
    from cubepacs.lake import reader

    if data[:2] == b"PK":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
            return  # read_item turns an unreadable ZIP into one error row
        with zf:
            for info in reader.zip_entries(zf)[:16]:
                list(reader._entry_rows(zf, info, "/fuzz.zip", "", "zip", 1024, (1 << 20, 1 << 22)))
        return
    row = reader._empty_row("/fuzz", "fuzz.dcm", "folder")
    list(reader._parsed_or_error(io.BytesIO(data), row, "fuzz.dcm", 1024, 1 << 20))


TARGETS: dict[str, Callable[[bytes], None]] = {"cube": cube, "dicom": dicom, "stow": stow, "lake": lake}
MUTATORS: dict[str, Any] = {"cube": cube_mutator}
