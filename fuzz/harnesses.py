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


def preload() -> None:
    """Import every module the targets use (``run.py`` calls this inside atheris' instrumentation, so that coverage
    guides the fuzzer through them: imported lazily in a target, they would not be instrumented)."""
    import importlib

    for name in ("cubepacs.cube.reader", "cubepacs.cube.guard", "cubepacs.cube.codecs", "cubepacs.cube.validate",
                 "cubepacs.cube.rle", "cubepacs.cube.framedecode", "cubepacs.cube.pydicomview",
                 "cubepacs.cube.jpegplugin", "cubepacs.cube.jpegstream",
                 "cubepacs.cube.meta", "cubepacs.cube.image", "cubepacs.cube.sources", "cubepacs.dicom.rawfile",
                 "cubepacs.archive.ingest", "cubepacs.archive.metadata", "cubepacs.archive.web.multipart",
                 "cubepacs.archive.web.wado", "cubepacs.lake.reader", "pydicom.encaps",
                 "pydicom.pixels.decoders.base", "pydicom.pixels.decoders.rle", "pydicom.pixels.decoders.pylibjpeg"):
        importlib.import_module(name)


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


_INTERESTING = (0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 255, 256, 4095, 65535, 65536,
                (1 << 24) - 1, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, -1, -(1 << 63))
_DTYPES = ("<u1", "<i1", "<u2", "<i2", ">u2", "<u4", "<i4", "<f4", "<u8", "<i8", "<f8", "<i3", "|O", "<c8")


def _targeted(data: bytes, rng: random.Random, choice: int) -> bytes:
    """One structure-aware mutation, every checksum recomputed (``mutants``): 5 the element pool (keys, offsets,
    entry bytes, references), 6 a typed column (its bytes or its section), 7 a pixel description's dtype, bits,
    samples, geometry or mode, 8 a stored blob (a whole opaque value or a frame) replaced by a zstd or raw stream
    declaring another size."""
    import json

    import mutants

    if choice == 5:
        section = rng.choice(("pool_keys", "pool_offsets", "pool_data", "refs", "starts"))

        def poke(b: bytearray) -> None:
            if not b:
                return
            width = 8 if section != "pool_data" else rng.choice((1, 2, 4))
            at = rng.randrange(max(len(b) - width, 0) + 1)
            value = rng.choice(_INTERESTING) if rng.random() < 0.7 else rng.getrandbits(8 * width)
            b[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")[:len(b) - at]

        return mutants.edit_area(data, section, poke)
    if choice == 6:
        doc = json.loads(mutants._parts(data)[0])
        name = rng.choice(sorted(doc["columns"]))
        if rng.random() < 0.5:
            def swap(d: dict[str, Any]) -> None:
                d["columns"][name]["sect"] = d["columns"][rng.choice(sorted(d["columns"]))]["sect"]
            return mutants.edit_meta(data, swap)

        def scribble(b: bytearray) -> None:
            if b:
                at = rng.randrange(len(b))
                b[at] = rng.randrange(256)

        return mutants.edit_area(data, f"column {name}", scribble)
    if choice == 7:
        def desc(d: dict[str, Any]) -> None:
            target = rng.choice(d["pixel_descs"])
            field = rng.choice(("dtype", "bits", "spp", "rows", "cols", "frames", "mode", "signed", "stored"))
            target[field] = {"dtype": lambda: rng.choice(_DTYPES), "mode": lambda: rng.choice(
                ("native", "opaque", "encapsulated", "file", "x")), "signed": lambda: rng.choice((True, False, 2))
                             }.get(field, lambda: rng.choice(_INTERESTING))()
        return mutants.edit_meta(data, desc)
    recs = np.frombuffer(mutants._parts(data)[2], _frame_dtype())
    row = rng.randrange(len(recs))
    size = rng.choice((0, 1, 100, 1 << 16, 1 << 20, 1 << 24, 1 << 26))
    blob = _zeros(size) if rng.random() < 0.8 else bytes(min(size, 1 << 20))
    return mutants.replace_blob(data, row, blob)


def _frame_dtype() -> Any:
    from cubepacs.cube.format import FRAME_DTYPE

    return FRAME_DTYPE


_ZEROS: dict[int, bytes] = {}  # zstd streams of n zero bytes, made once each


def _zeros(n: int) -> bytes:
    import imagecodecs

    if n not in _ZEROS:
        _ZEROS[n] = bytes(imagecodecs.zstd_encode(bytes(n)))
    return _ZEROS[n]


def _cube_mutation(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris
    import imagecodecs

    from cubepacs.cube.format import FRAME_DTYPE, HEADER, HEADER_SIZE

    rng = random.Random(seed)
    choice = rng.randrange(9)
    if choice >= 5:
        try:
            return _targeted(data, rng, choice)
        except Exception:
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
    from cubepacs.archive.web.wado import parse_frames, wanted_syntaxes

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
    for step in (lambda: parse_frames(text), lambda: wanted_syntaxes(text)):
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


# --- codestreams: RLE and JPEG-LS through the codec layer ---------------------------------------------------------

_GEOMETRY: dict[int, tuple[str, dict[str, Any]]] = {}  # per path: syntax and decoder options of its seed file


def _SEEDS() -> dict[int, Any]:
    from seeds import CODESTREAM_SEEDS

    return CODESTREAM_SEEDS


def _path(path: int) -> tuple[str, dict[str, Any]]:
    if path not in _GEOMETRY:
        import pydicom
        from seeds import CODESTREAM_SEEDS

        seed = CODESTREAM_SEEDS[path]
        ds = pydicom.dcmread(seed, stop_before_pixels=True)
        _GEOMETRY[path] = (str(ds.file_meta.TransferSyntaxUID), {
            "rows": ds.Rows, "columns": ds.Columns, "samples_per_pixel": ds.SamplesPerPixel,
            "bits_allocated": ds.BitsAllocated, "bits_stored": ds.BitsStored,
            "pixel_representation": ds.PixelRepresentation, "number_of_frames": 1,
            "photometric_interpretation": ds.PhotometricInterpretation,
            "planar_configuration": int(ds.get("PlanarConfiguration", 0) or 0)})
    return _GEOMETRY[path]


def codestream(data: bytes) -> None:
    """One frame's codestream, its first byte picking the path (``seeds.CODESTREAM_SEEDS``): an RLE or JPEG-LS
    frame decoded by pydicom's plugins as the codec layer wraps them (header checked, panics made CodecError),
    (path 2) a JPEG-LS blob decoded as a cube frame (``guard.check`` then the ``jpegls`` codec), or (paths 4–7) a
    J2K, JPEG Lossless, HTJ2K or JPEG Baseline frame decoded as an encapsulated instance's frame of a cube (from a
    view of the value: ``framedecode.encapsulated_frame``) — each with the geometry of the real file its seed came
    from. Only CodecError (or pydicom's RuntimeError listing every plugin's
    CodecError) may come out."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    from cubepacs.cube import guard
    from cubepacs.cube.codecs import get_codec
    from cubepacs.errors import CodecError

    if len(data) < 2:
        return
    path, stream = data[0] % len(_SEEDS()), data[1:]
    syntax, opts = _path(path)
    try:
        if path >= 4:  # as a cube frame: the stream handed to the plugins as a view (cube/pydicomview.py)
            from cubepacs.cube import framedecode
            from cubepacs.cube.pixels import PixelDesc

            desc = PixelDesc("encapsulated", opts["rows"], opts["columns"], opts["samples_per_pixel"],
                             opts["bits_allocated"], bool(opts["pixel_representation"]),
                             opts["planar_configuration"], 1, f"<u{opts['bits_allocated'] // 8}",
                             opts["photometric_interpretation"], opts["bits_stored"])  # fmt: skip
            framedecode.encapsulated_frame(memoryview(encapsulate([stream])), desc, syntax, 0, "fuzz")
        elif path == 2:
            shape = (opts["rows"], opts["columns"])
            guard.check(3, stream, shape, 16)
            get_codec("jpegls").decode(stream, np.empty(shape, np.uint16))
        else:
            get_decoder(syntax).as_array(encapsulate([stream]), raw=True, **opts)
    except CodecError:
        pass
    except RuntimeError as exc:  # pydicom: "Unable to decode as exceptions were raised by all available plugins"
        if "all available plugins" not in str(exc):
            raise


TARGETS: dict[str, Callable[[bytes], None]] = {"cube": cube, "dicom": dicom, "stow": stow, "lake": lake,
                                               "codestream": codestream}
MUTATORS: dict[str, Any] = {"cube": cube_mutator}
