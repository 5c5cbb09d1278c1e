"""Issue 27's per-frame bounds (docs/security.md, "Fourth round"): a frame of an instance kept whole is decoded or
refused within 4 × its declared size of memory (traced allocations) — crafted inconsistent cubes included — and
the frames decoded are pydicom's (``pixel_array``, raw) for the files they came from. Every crafted input is made
here from a real file of ../shared/data."""

from __future__ import annotations

import io
import sys
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from cubepacs.cube.reader import CubeReader
from cubepacs.errors import CodecError, InvalidCubeError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import mutants

JPEG_LOSSLESS = mutants.SINGLE / "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm"
HTJ2K_RGB = mutants.SINGLE / "htj2k_lossless_rgb_sc.dcm"


def _declared(reader: CubeReader, i: int = 0) -> int:
    d = reader.desc(i)
    assert d is not None
    return d.rows * d.cols * d.spp * max(d.bits, 8) // 8


def _peak(call: Callable[[], Any]) -> tuple[Any, int]:
    """(what ``call`` returned or raised, its peak of traced allocations over what was traced before)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        try:
            result: Any = call()
        except Exception as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _seg_frames(n: int) -> bytes:
    """The real 1-bit SEG (512 × 512, one frame) made an ``n``-frame SEG: frame k its mask shifted 7k columns,
    the frames packed without gaps (PS3.5 8.1.1) — a value the cube keeps as one opaque zstd block."""
    ds = pydicom.dcmread(mutants.SEG)
    mask = ds.pixel_array
    frames = np.stack([np.roll(mask, 7 * k, axis=1) for k in range(n)])
    ds.NumberOfFrames = n
    ds.PixelData = np.packbits(frames.ravel(), bitorder="little").tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_a_frame_of_a_multiframe_opaque_value_costs_one_frame_not_the_value() -> None:
    """48 frames of 512 × 512 1-bit (256 KiB declared a frame; the value 1.5 MiB): each frame is read alone from
    the value decompressed as it is read — equal to pydicom's frame of the file, peak ≤ 4 × the frame (the value
    rebuilt and parsed by pydicom took 13 ×), and pydicom never parses the instance."""
    from unittest import mock

    data = _seg_frames(48)
    cube = mutants.cube_of(data)
    reader = CubeReader(cube)
    assert reader.desc(0).mode == "opaque" and reader.num_frames == 48  # type: ignore[union-attr]
    size = _declared(reader)
    reader.frame(0)  # first use: pyarrow's import is not the frame's cost
    for k in (1, 24, 47):
        with mock.patch("pydicom.dcmread", side_effect=AssertionError("parsed")):
            got, peak = _peak(lambda k=k: CubeReader(cube).frame(k))
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, pixel_array(io.BytesIO(data), index=k, raw=True))
        assert peak <= 4 * size, (k, peak / size)


def test_the_real_opaque_file_decodes_to_pydicoms_frame() -> None:
    got = CubeReader(mutants.cube_of(mutants.SEG)).frame(0)
    np.testing.assert_array_equal(got, pixel_array(str(mutants.SEG), index=0, raw=True))


def _described(cube: bytes, **changes: Any) -> bytes:
    def edit(doc: dict[str, Any]) -> None:
        doc["pixel_descs"][0].update(changes)

    return mutants.edit_meta(cube, edit)


@pytest.mark.parametrize(("path", "mode", "codec"), [(JPEG_LOSSLESS, "opaque", 0), (mutants.SEG, "encapsulated", 1)])
def test_a_value_stored_otherwise_than_its_mode_says_is_refused_before_it_is_read(
    path: Path, mode: str, codec: int
) -> None:
    """Issue 27's 4.27 × decoded frame: the real JPEG Lossless MR's description changed from ``encapsulated`` to
    ``opaque`` sent it down pydicom's parsing path (the instance rebuilt, parsed, its value copied). A value stored
    raw is encapsulated, one stored zstd opaque (format.md): anything else is refused, naming the instance, before
    the value is read; the untouched cube still gives pydicom's frame."""
    cube = mutants.cube_of(path)
    reader = CubeReader(cube)
    np.testing.assert_array_equal(reader.frame(0), pixel_array(str(path), index=0, raw=True))
    crafted = CubeReader(_described(cube, mode=mode))
    err, peak = _peak(lambda: crafted.frame(0))
    assert isinstance(err, InvalidCubeError), err
    assert f"frame 0 of {crafted.meta.names[0]}" in str(err) and f"stored with codec {codec}" in str(err)
    assert peak <= 4 * _declared(crafted)


def test_a_codestream_whose_header_disagrees_is_refused_before_it_is_copied() -> None:
    """Issue 27's 6.1 × refused frame: the real HTJ2K RGB (480 × 640 × 3) described as 480 × 63 — its codestream
    is under the size bound of the smaller frame (4 × 90,720 + 64 KiB) and was copied whole by pydicom before the
    plugin read its header. The header is now read on a view of the stored value: refused, naming the instance and
    frame, within 4 × the declared frame. The untouched cube gives pydicom's frame."""
    cube = mutants.cube_of(HTJ2K_RGB)
    reader = CubeReader(cube)
    np.testing.assert_array_equal(reader.frame(0), pixel_array(str(HTJ2K_RGB), index=0, raw=True))
    crafted = CubeReader(_described(cube, cols=63))
    size = _declared(crafted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        err, peak = _peak(lambda: crafted.frame(0))
    assert isinstance(err, CodecError), err
    assert f"{crafted.meta.names[0]}: frame 0 cannot be decoded: codestream is 480 × 640 × 3" in str(err)
    assert len(crafted._blob(crafted._row(0, 0))) <= 4 * size + 65536  # under the size bound: the header refuses it
    assert peak <= 4 * size, peak / size


def _ow_big_endian(frames: int) -> bytes:
    """The real big endian RGB (8-bit, OB) as ``frames`` frames (the first repeated, each shifted) with its Pixel
    Data encoded OW: 8-bit OW big endian, bytes swapped in pairs (pydicom's ``be_swap_ow``) — an opaque value."""
    ds = pydicom.dcmread(mutants.SINGLE / "rgb_us_big_endian.dcm")
    value = bytes(ds.PixelData)
    ds.PixelData = b"".join(value[k:] + value[:k] for k in range(frames))
    ds["PixelData"].VR = "OW"
    ds.NumberOfFrames = frames
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _ybr_422(frames: int) -> bytes:
    """The real YBR_FULL 8-bit secondary capture made YBR_FULL_422 (each pair of pixels Y₁ Y₂ Cb Cr, the pair's
    first chroma kept), ``frames`` frames each rolled a row — a subsampled value the cube keeps opaque."""
    ds = pydicom.dcmread(mutants.SINGLE / "ybr_full_uncompressed_sc.dcm")
    pixels = ds.pixel_array  # rows × cols × 3 (raw YBR)
    parts = []
    for k in range(frames):
        pairs = np.roll(pixels, k, axis=0).reshape(ds.Rows, ds.Columns // 2, 2, 3)
        parts.append(np.concatenate([pairs[..., 0], pairs[:, :, 0, 1:]], axis=2).tobytes())
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(parts)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize("make", [_ow_big_endian, _ybr_422, _seg_frames], ids=["ow-be", "ybr422", "1bit"])
def test_every_frame_of_an_opaque_value_is_pydicoms(make: Callable[[int], bytes]) -> None:
    """Each opaque layout the cube keeps (8-bit OW big endian, YBR_FULL_422, 1-bit), crafted multi-frame from a
    real file: every frame read from the streamed value equals pydicom's ``pixel_array(raw=True)`` of the file."""
    data = make(5)
    reader = CubeReader(mutants.cube_of(data))
    assert reader.desc(0).mode == "opaque" and reader.num_frames == 5  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in (3, 0, 4, 1):  # backwards too: the stream starts over
            np.testing.assert_array_equal(reader.frame(k), pixel_array(io.BytesIO(data), index=k, raw=True))


@pytest.mark.parametrize("name", ["ts_j2k_lossless_siemens_mr.dcm", "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm"])
def test_a_codestream_padded_past_its_end_marker_is_refused_before_it_is_copied(name: str) -> None:
    """The real J2K and JPEG Lossless MRs, their one frame's codestream followed by zeros up to the size bound
    (4 × the frame + 64 KiB): a consistent header, and a decoder that stops at the end marker. pydicom copied the
    stream and the plugin copied it again — 9.8 × (J2K) and 6.2 × (JPEG Lossless) the frame to decode it. A stream
    larger than its frame must end with its end marker: refused, naming the instance and frame, within 4 × the
    frame; the untouched stream decodes to pydicom's frame."""
    from pydicom.encaps import encapsulate, get_frame

    path = mutants.SINGLE / name
    reader = CubeReader(mutants.cube_of(path))
    np.testing.assert_array_equal(reader.frame(0), pixel_array(str(path), index=0, raw=True))
    ds = pydicom.dcmread(path)
    size = _declared(reader)
    stream = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
    ds.PixelData = encapsulate([stream + bytes((4 * size + 65536 - len(stream)) & ~1)])
    out = io.BytesIO()
    ds.save_as(out)
    crafted = CubeReader(mutants.cube_of(out.getvalue()))
    err, peak = _peak(lambda: crafted.frame(0))
    assert isinstance(err, CodecError), err
    assert f"{crafted.meta.names[0]}: frame 0 cannot be decoded:" in str(err) and "end marker" in str(err)
    assert peak <= 4 * size, peak / size


ENCAPSULATED = sorted(
    p.name for p in mutants.SINGLE.glob("*.dcm")
    if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    and pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.5"
)  # fmt: skip


def _comments(stream: bytes, room: int) -> bytes:
    """``stream`` with comment segments of 65,000 bytes filling about ``room`` bytes, put before its first scan
    (JPEG, JPEG-LS: COM, ``FF FE``) or tile (J2K: COM, ``FF 64``, in the main header) — a stream that decodes."""
    j2k = stream.startswith(b"\xff\x4f")
    marker, at = (b"\xff\x64", stream.find(b"\xff\x90")) if j2k else (b"\xff\xfe", stream.find(b"\xff\xda"))
    com = marker + (65000).to_bytes(2, "big") + (b"\x00\x01" if j2k else b"") + bytes(64996 if j2k else 64998)
    return stream[:at] + com * (room // len(com)) + stream[at:]


@pytest.mark.parametrize("padding", ["zeros", "comments"])
@pytest.mark.parametrize("name", ENCAPSULATED)
def test_a_codestream_padded_inside_before_its_end_marker_decodes_within_the_bound(name: str, padding: str) -> None:
    """Every JPEG, JPEG-LS, J2K and HTJ2K file of ../shared/data, its first frame's codestream padded *inside* up
    to the size bound (4 × the frame + 64 KiB): zeros put before its end marker (decoders that skip them decode it,
    the others refuse it), or comment segments before its first scan or tile (every decoder decodes it) — a
    consistent header and an end marker at the end. pydicom copied the stream out of the value and the J2K plugin
    copied it again: 9.8 × (J2K) and 6.2 × (JPEG Lossless) the frame. The frame's codestream is now handed to the
    decoder as a view of the stored value: decoded (to what pydicom's own plugins make of the crafted file) or
    refused (a ``CodecError`` naming the instance and frame; never when padded with comments), within 4 × the frame
    either way."""
    from pydicom.encaps import encapsulate, generate_frames

    from tests.pixeloracle import reference_decoders, same_pixels

    path = mutants.SINGLE / name
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    streams = list(generate_frames(ds.PixelData, number_of_frames=frames))
    first = streams[0]
    end = first.rfind(b"\xff\xd9")  # EOI / EOC
    assert end > 0, name
    size = _declared(CubeReader(mutants.cube_of(path)))
    pad = (4 * size + 65536 - len(first)) & ~1
    streams[0] = first[:end] + bytes(pad - 16) + first[end:] if padding == "zeros" else _comments(first, pad)
    ds.PixelData = encapsulate(streams)
    out = io.BytesIO()
    ds.save_as(out)
    crafted = CubeReader(mutants.cube_of(out.getvalue()))
    got, peak = _peak(lambda: crafted.frame(0))
    assert peak <= 4 * size, (peak / size, got)
    if isinstance(got, Exception):
        assert isinstance(got, CodecError) and f"{crafted.meta.names[0]}: frame 0 cannot be decoded:" in str(got)
        assert padding == "zeros", got
        return
    assert len(streams[0]) > 3 * size, len(streams[0]) / size
    with reference_decoders(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pixel_array(io.BytesIO(out.getvalue()), index=0, raw=True)
    assert same_pixels(got, want, str(ds.file_meta.TransferSyntaxUID))
