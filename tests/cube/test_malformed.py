"""Broken input: a clear error naming the file and the problem, or a lossless conversion."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cubepacs
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import CodecError, DicomReadError, InvalidCubeError
from tests.conftest import MALFORMED

# What each malformed file must give: an error mentioning these words, or None for a byte-exact conversion.
EXPECTED = {
    "truncated_dataset_rtplan.dcm": "truncated",
    "truncated_pixel_data_mr.dcm": "truncated",
    "j2k_stream_too_short.dcm": "truncated",
    "no_preamble_no_meta_ct.dcm": "not a DICOM file",
}


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_malformed_file_errors_clearly_or_round_trips(path: Path, tmp_path: Path) -> None:
    reason = EXPECTED.get(path.name)
    if reason is not None:
        with pytest.raises(DicomReadError) as err:
            cubepacs.load_from_dicom_folder([path])
        assert path.name in str(err.value) and reason in str(err.value)
        assert not list(tmp_path.iterdir())
        return
    cube = tmp_path / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder([path]), cube)
    out = tmp_path / "out"
    cubepacs.save_to_dicom_folder(cubepacs.load(cube), out)
    assert (out / path.name).read_bytes() == path.read_bytes()
    assert cubepacs.verify(cube) == []


def test_folder_with_a_broken_file_names_it(tmp_path: Path) -> None:
    bad = next(p for p in MALFORMED if p.name == "truncated_dataset_rtplan.dcm")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.dcm").write_bytes(bad.read_bytes())
    with pytest.raises(DicomReadError, match=r"broken\.dcm: element \(300A,00B0\) declares 976 bytes"):
        cubepacs.load_from_dicom_folder(tmp_path / "in")


def test_non_dicom_input_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        cubepacs.load_from_dicom_folder([b"hello world, this is not DICOM"], errors="raise")


# --- hostile input, second campaign (issue 27): crafted here from real files (fuzz/mutants.py says how) ---------

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import mutants  # noqa: E402


@pytest.fixture(scope="module")
def ct_cube() -> bytes:
    return mutants.cube_of(mutants.CT)


def test_a_rust_panic_in_a_decoder_is_a_codec_error(capfd: pytest.CaptureFixture[str]) -> None:
    """pylibjpeg-rle panics (``pyo3_runtime.PanicException``, a BaseException) on the crafted RLE stream: called
    through ``native_call`` the panic is a CodecError. No path of ours calls it any more (next test)."""
    import pydicom
    from pydicom.encaps import get_frame
    from rle.utils import decode_frame  # pylibjpeg-rle's Rust decoder

    from cubepacs.cube.codecs import native_call

    ds = pydicom.dcmread(io.BytesIO(mutants.rle_panic()))
    frame = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
    with pytest.raises(CodecError, match=r"pylibjpeg-rle: PanicException: index out of bounds"):
        native_call("pylibjpeg-rle", decode_frame, frame, ds.Rows * ds.Columns, ds.BitsAllocated, "<")
    assert "panicked" in capfd.readouterr().err  # Rust's own hook writes it to stderr: one more reason


def test_the_crafted_rle_stream_is_a_codec_error_from_our_decoder_without_a_panic(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The same stream as a cube frame and through pydicom (``ds.decompress()``, as transcoding calls it): RLE is
    decoded by ``cube/rle.py`` (imagecodecs' PackBits into a bounded plane) — a CodecError naming the file, the
    frame and the segment; pydicom's RuntimeError carries it in one line; nothing panics, nothing on stderr.
    Oracle: pydicom's own pure-Python RLE decoder refuses the stream too."""
    import logging
    import warnings

    import pydicom
    from pydicom.encaps import get_frame
    from pydicom.pixels.decoders.rle import _rle_decode_frame

    caplog.set_level(logging.INFO, logger="pydicom")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "panic.dcm").write_bytes(mutants.rle_panic())
    cube = tmp_path / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder(tmp_path / "in"), cube)
    with pytest.raises(
        CodecError,
        match=r"panic\.dcm: frame 0 cannot be decoded: RLE segment 1 decodes to \d+ "
        r"bytes; its plane of 384 × 384 holds 147456",
    ):
        cubepacs.load(cube).frame(0)
    ds = pydicom.dcmread(io.BytesIO(mutants.rle_panic()))
    with pytest.raises(ValueError), warnings.catch_warnings():  # pydicom's own decoder: the same segment is short
        warnings.simplefilter("ignore")  # (the other one, longer, is "non-conformant padding" to it)
        _rle_decode_frame(
            bytes(get_frame(ds.PixelData, 0, number_of_frames=1)),
            ds.Rows,
            ds.Columns,
            ds.SamplesPerPixel,
            ds.BitsAllocated,
        )
    with pytest.raises(RuntimeError, match="RLE segment 1 decodes to"):
        ds.decompress()
    plugins = [r for r in caplog.records if r.name == "pydicom.pixels.decoders.base"]
    assert plugins and all(r.exc_info is None and "\n" not in r.getMessage() for r in plugins)  # one line each
    assert "panicked" not in capfd.readouterr().err


def test_rle_frames_are_decoded_in_place_and_equal_pydicoms() -> None:
    """Every RLE file of the data set: the cube's frame (decoded from the stored value in place, cube/rle.py) and
    pydicom's (``pixel_array`` with pydicom's own pure-Python RLE decoder, the oracle) are equal, and the cube's
    never calls pydicom."""
    from unittest import mock

    import pydicom

    files = [
        p
        for p in sorted(mutants.SINGLE.glob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    ]
    assert len(files) >= 2
    for path in files:
        reader = CubeReader(mutants.cube_of(path))
        with mock.patch("cubepacs.cube.framedecode.decode_with_pydicom", side_effect=AssertionError("pydicom")):
            got = reader.frame(0)
        from pydicom.pixels.decoders.rle import _decode_frame as pure  # pydicom's own RLE decoder

        ref = pydicom.pixels.pixel_array(str(path), raw=True, decoding_plugin="cubepacs")
        np.testing.assert_array_equal(got, ref)
        ds = pydicom.dcmread(path)
        from pydicom.encaps import get_frame

        raw = pure(bytes(get_frame(ds.PixelData, 0, number_of_frames=1)), _Runner(ds))
        assert got.dtype == ref.dtype and bytes(raw) == _planar(got).tobytes()


class _Runner:
    """What pydicom's RLE decoder asks of its runner."""

    def __init__(self, ds: Any) -> None:
        self.rows, self.columns = ds.Rows, ds.Columns
        self.samples_per_pixel, self.bits_allocated = ds.SamplesPerPixel, ds.BitsAllocated

    def get_option(self, name: str, default: Any = None) -> Any:
        return default

    def set_option(self, name: str, value: Any) -> None:
        pass


def _planar(frame: np.ndarray) -> np.ndarray:
    """A frame in pydicom's RLE decoder's layout: colour by plane, little endian."""
    arr = frame.astype(frame.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr.transpose(2, 0, 1)) if arr.ndim == 3 else arr


def test_the_rle_header_is_checked_before_any_decoder() -> None:
    from cubepacs.cube.framedecode import decode_with_pydicom

    with pytest.raises(CodecError, match="RLE header: 15 segments, expected 2"):
        decode_with_pydicom(mutants.rle_bad_header(), 0, "bad.dcm")


def test_a_codestream_far_larger_than_its_frame_is_refused_before_decoding(ct_cube: bytes) -> None:
    import imagecodecs

    frame = np.zeros((128, 128), np.uint16)
    blob = bytes(imagecodecs.htj2k_encode(frame)) + bytes(200_000)  # a valid header, then far too many bytes
    with pytest.raises(CodecError, match="a lossless encoder never writes that much"):
        CubeReader(mutants.replace_blob(ct_cube, 0, blob)).frame(0)


def test_dtype_must_agree_with_bits_and_signedness(ct_cube: bytes) -> None:
    def wide(doc: dict[str, Any]) -> None:  # the case: 8 bits declared, 8-byte samples allocated
        doc["pixel_descs"][0].update(dtype="<u8", bits=8, signed=False)

    t0 = time.monotonic()
    with pytest.raises(InvalidCubeError, match="dtype <u8 for 8 bits"):
        CubeReader(mutants.edit_meta(ct_cube, wide))
    assert time.monotonic() - t0 < 1

    def unsigned(doc: dict[str, Any]) -> None:
        doc["pixel_descs"][0].update(signed=False)

    with pytest.raises(InvalidCubeError, match="dtype <i2 for 16 bits, unsigned"):
        CubeReader(mutants.edit_meta(ct_cube, unsigned))


def test_a_whole_value_decompresses_only_to_what_its_element_declares() -> None:
    import imagecodecs

    cube = mutants.cube_of(mutants.SEG)  # a 1-bit SEG: kept as one opaque zstd value
    reader = CubeReader(cube)
    assert reader.desc(0).mode == "opaque" and reader._value_length(0) == 32768  # type: ignore[union-attr]
    bomb = mutants.replace_blob(cube, 0, bytes(imagecodecs.zstd_encode(bytes(1 << 26))))  # 64 MiB of zeros, 2 KB
    t0 = time.monotonic()
    with pytest.raises(InvalidCubeError, match=r"whole pixel value of 67108864 bytes .*declares 32768"):
        CubeReader(bomb).frame(0)
    assert time.monotonic() - t0 < 1
    with pytest.raises(InvalidCubeError, match="at most 1000 expected"):  # the setting bounds it further
        CubeReader(cube, max_value_bytes=1000).frame(0)


def test_pool_keys_and_entries_are_checked_at_load(ct_cube: bytes) -> None:
    def huge_key(b: bytearray) -> None:  # a key ≥ 2³² (OverflowError in every accessor before)
        keys = np.frombuffer(b, "<i8").copy()
        keys[3] = 1 << 33
        b[:] = keys.tobytes()

    with pytest.raises(InvalidCubeError, match="neither a tag nor a special key"):
        cubepacs.load_meta(mutants.edit_area(ct_cube, "pool_keys", huge_key))

    def swapped(b: bytearray) -> None:  # two keys exchanged: entries that hold another element than their key
        keys = np.frombuffer(b, "<i8").copy()
        keys[[3, 4]] = keys[[4, 3]]
        b[:] = keys.tobytes()

    with pytest.raises(InvalidCubeError, match="does not hold the element its key"):
        cubepacs.load_meta(mutants.edit_area(ct_cube, "pool_keys", swapped))


def test_every_decoding_failure_of_an_accessor_is_invalid_cube(ct_cube: bytes) -> None:
    meta = cubepacs.load_meta(ct_cube)
    keys, offsets, _, _, _ = meta.pool_arrays()
    p = int(np.flatnonzero(keys == 0x00280010)[0])  # Rows (US, 2 bytes): its VR made FD (8 bytes a value)
    start = int(offsets[p])

    def wrong_vr(b: bytearray) -> None:
        b[start + 4 : start + 6] = b"FD"

    broken = cubepacs.load_meta(mutants.edit_area(ct_cube, "pool_data", wrong_vr))
    for call in (lambda: broken.get_values("Rows"), lambda: broken.dataset(0), lambda: broken.get_vr("Rows")):
        with pytest.raises(InvalidCubeError, match="<bytes>: invalid cube \\(meta\\)"):
            call()
    with pytest.raises(KeyError, match="not a DICOM tag"):  # the caller's error stays the caller's
        broken.get_values("NoSuchKeyword")


@pytest.mark.parametrize("column", ["missing", "shape"])
def test_columns_are_checked_at_load(ct_cube: bytes, column: str) -> None:
    def edit(doc: dict[str, Any]) -> None:
        if column == "missing":
            del doc["columns"]["SliceLocation"]
        else:
            doc["columns"]["PixelSpacing"]["sect"] = doc["columns"]["SliceLocation"]["sect"]

    with pytest.raises(InvalidCubeError, match="column"):
        cubepacs.load_meta(mutants.edit_meta(ct_cube, edit))


@pytest.mark.parametrize("name", ["a\0b.dcm", "../escape.dcm", "/abs.dcm", ""])
def test_instance_names_are_safe_file_names_at_load(ct_cube: bytes, name: str) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["names"][0] = name

    with pytest.raises(InvalidCubeError, match="is not a safe file name"):
        cubepacs.load(mutants.edit_meta(ct_cube, edit))


def test_the_builder_leaves_out_what_its_cube_cannot_hold_and_keeps_the_rest() -> None:
    from cubepacs.archive.services.compaction import compact

    good = [mutants.renamed(series="1.2.3.4") for _ in range(2)]
    files = [
        ("good0.dcm", good[0]),
        ("bits24.dcm", mutants.bits24(series="1.2.3.4")),
        ("good1.dcm", good[1]),
        ("junk.dcm", b"not DICOM at all"),
    ]
    cube, left = compact(files, "htj2k")
    assert [n for n, _ in left] == ["junk.dcm", "bits24.dcm"]
    assert "pixel description out of bounds" in dict(left)["bits24.dcm"]
    assert cube is not None
    reader = CubeReader(cube)
    assert reader.meta.names == ["good0.dcm", "good1.dcm"]
    assert [reader.instance_bytes(i) for i in range(2)] == good  # read back byte for byte


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cubepacs", *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_cli_info_and_export_of_damaged_cubes_are_one_line_errors(ct_cube: bytes, tmp_path: Path) -> None:
    from cubepacs.cube.format import HEADER, HEADER_SIZE

    index_offset = HEADER.unpack(ct_cube[:HEADER_SIZE])[8]
    flipped = bytearray(ct_cube)
    flipped[index_offset + 3] ^= 0x40  # one flipped byte in the frame index (read outside the try before)

    def shape(doc: dict[str, Any]) -> None:
        doc["columns"]["ImagePositionPatient"]["sect"] = doc["columns"]["SliceLocation"]["sect"]

    def nul(doc: dict[str, Any]) -> None:
        doc["names"][0] = "a\0b.dcm"

    cases = {
        "index": (bytes(flipped), "index"),
        "columns": (mutants.edit_meta(ct_cube, shape), "column"),
        "name": (mutants.edit_meta(ct_cube, nul), "safe file name"),
    }
    for name, (data, words) in cases.items():
        path = tmp_path / f"{name}.dcbs"
        path.write_bytes(data)
        for args in (("info", str(path)), ("export", str(path), "-o", str(tmp_path / name))):
            out = _cli(*args)
            assert out.returncode != 0 and "Traceback" not in out.stderr + out.stdout, (name, args, out.stderr)
            assert words in out.stderr + out.stdout and str(path) in out.stderr + out.stdout, (name, out.stderr)
            if args[0] == "export":
                assert not (tmp_path / name).exists() or not list((tmp_path / name).iterdir())


def test_a_failure_a_decoder_swallows_is_a_codec_error_not_half_a_frame(ct_cube: bytes) -> None:
    """Found by the cube harness: imagecodecs' HTJ2K decoder raises "ojph error" in a callback that cannot
    propagate it, prints a traceback and returns a half-decoded frame. Crafted: two bytes of the real CT's
    codestream changed (its header intact; the fuzzer's first mutation)."""
    reader = CubeReader(ct_cube)
    rec = reader.index[0]
    start, length = reader.header.data_offset + int(rec["offset"]), int(rec["length"])
    blob = bytearray(ct_cube[start : start + length])
    assert length == 14504  # OpenJPH's deterministic encoding of this file, which the offsets below are in
    blob[783], blob[8496] = 215, 132
    with pytest.raises(CodecError, match=r"htj2k decoder: RuntimeError: ojph error \(inside the decoder"):
        CubeReader(mutants.replace_blob(ct_cube, 0, bytes(blob))).frame(0)


_SWALLOWED_SCRIPT = """
import gc, random, sys, warnings
warnings.filterwarnings("ignore")  # as the decoding paths do (framedecode, transcoding): the leak needed it
import numpy as np, imagecodecs, pydicom
from cubepacs.cube.codecs import native_call
from cubepacs.errors import CodecError
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
frame = pydicom.dcmread(sys.argv[1]).pixel_array
stream, rng = bytes(imagecodecs.htj2k_encode(frame)), random.Random(1)
swallowed, base = 0, 0.0
for k in range(3200):
    bad = bytearray(stream)
    for _ in range(rng.randrange(1, 8)):  # past the header: what reaches the decoder
        bad[rng.randrange(len(bad) // 4, len(bad))] = rng.randrange(256)
    try:
        native_call("x", imagecodecs.htj2k_decode, bytes(bad))
    except CodecError as exc:
        swallowed += "inside the decoder" in str(exc)
    if k == 199:
        gc.collect(); base = rss()
gc.collect()
print((rss() - base) / 3, swallowed)
"""


def test_failures_a_decoder_swallows_do_not_grow_the_process() -> None:
    """Found by ``fuzz/rss.py --codec htj2k`` after the cube harness' RSS kept growing: the "ojph error" OpenJPH
    raises in its callback was kept as the exception object until ``native_call`` raised its ``CodecError`` — and
    the process grew by 64 MB per 1,000 such frames through ``native_call`` (warnings ignored, as the decoding
    paths have them; 2.6 MB in the cube reader, ``fuzz/rss.py``), never given back. Only its name and text are
    kept now. Crafted in a subprocess: 3,000 corrupted copies of the real RGB ultrasound's HTJ2K frame (after
    200): growth under 2 MB per 1,000, and most of them did go through the swallowed-failure path."""
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "single" / "rgb_us_ge_uncompressed.dcm"
    out = subprocess.run([sys.executable, "-c", _SWALLOWED_SCRIPT, str(path)], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    grown, swallowed = out.stdout.split()
    assert int(swallowed) > 1500, swallowed
    assert float(grown) < 2, f"{grown} MB per 1,000 corrupted HTJ2K frames"


def test_a_truncated_jpegls_stream_is_refused_at_once() -> None:
    """Found by the codestream harness: CharLS spent 4–8 s on a truncated JPEG-LS stream (no end marker) of a
    384 × 384 frame. Crafted: a real CT's frame in a JPEG-LS cube, and the real JPEG-LS MR's frame in its DICOM
    file, each cut in half."""
    import pydicom
    from pydicom.encaps import encapsulate, get_frame

    from cubepacs.cube.framedecode import decode_with_pydicom

    data = mutants.JPEGLS_MR.read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
    cube = mutants.cube_of(mutants.CT, codec="jpegls")
    reader = CubeReader(cube)
    codec, blob = reader.encoded(0)  # type: ignore[misc]
    assert codec == "jpegls"
    t0 = time.monotonic()
    with pytest.raises(CodecError, match="does not end with its end marker"):
        CubeReader(mutants.replace_blob(cube, 0, bytes(blob[: len(blob) // 2]))).frame(0)
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(CodecError, match="does not end with its end marker"):
        decode_with_pydicom(out.getvalue(), 0, "half.dcm")
    assert time.monotonic() - t0 < 1


def test_a_whole_value_out_of_its_place_is_refused_before_pydicom_parses_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 27's 36 s frame, crafted here from a real file (the SEG of ../shared/data, kept as one opaque value):
    its whole value a zero-filled 16 MiB region, its description 16,777,215 frames (so the value's size bound
    admits it), and the instance's element list referencing the value twice and its Pixel Data header not at all.
    pydicom parsed the rebuilt instance as millions of empty elements; now the reader refuses the element list
    before any value is decompressed or a byte reaches pydicom."""
    import imagecodecs
    import pydicom

    handed: list[int] = []  # bytes handed to pydicom.dcmread (the real one, called through)
    real = pydicom.dcmread

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(len(fp.getbuffer()))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    cube = mutants.cube_of(mutants.SEG)
    pydicom.dcmread(io.BytesIO(CubeReader(cube).instance_bytes(0)))  # the spy sees what is handed to pydicom
    assert len(handed) == 1 and handed[0] < 1 << 20

    def many_frames(doc: dict[str, Any]) -> None:
        doc["pixel_descs"][0]["frames"] = (1 << 24) - 1

    def value_twice_no_header(b: bytearray) -> None:
        refs = np.frombuffer(b, "<u4").copy()
        refs[-2] = refs[-1]  # the Pixel Data header's entry now the value's: referenced twice, headerless
        b[:] = refs.tobytes()

    zeros = mutants.replace_blob(cube, 0, bytes(imagecodecs.zstd_encode(bytes(1 << 24))))
    crafted = mutants.edit_area(mutants.edit_meta(zeros, many_frames), "refs", value_twice_no_header)
    reader = CubeReader(crafted)
    assert reader.desc(0).frames == (1 << 24) - 1  # type: ignore[union-attr]
    handed.clear()
    with pytest.raises(InvalidCubeError, match=r"instance 0.*references an entry more than once"):
        reader.frame(0)
    with pytest.raises(InvalidCubeError, match="references an entry more than once"):
        reader.instance_bytes(0)

    def header_elsewhere(b: bytearray) -> None:  # each entry once, the value after another element
        refs = np.frombuffer(b, "<u4").copy()
        refs[[-2, -3]] = refs[[-3, -2]]
        b[:] = refs.tobytes()

    with pytest.raises(InvalidCubeError, match="referenced 1 times, not once directly after its Pixel Data"):
        CubeReader(mutants.edit_area(zeros, "refs", header_elsewhere)).frame(0)
    assert handed == []  # nothing reached pydicom


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("NumberOfFrames", 3, r"Pixel Data holds 32768 bytes; 3 frames of 128 × 128 × 1, 16 bits need 98304"),
        ("SamplesPerPixel", 0, r"image geometry out of bounds: 128 × 128 × 0"),
    ],
)
def test_a_native_instance_whose_value_cannot_hold_its_frames_is_refused_before_pydicom(
    attr: str, value: int, message: str
) -> None:
    """The real CT declaring 3 frames (its value holds one) or 0 samples per pixel (invalid, not 1): the cube keeps
    it as an opaque value, and its frame is refused before pydicom decodes anything — frames × frame size must fit
    the Pixel Data value, Samples per Pixel must be 1–4."""
    import pydicom

    ds = pydicom.dcmread(mutants.CT)
    setattr(ds, attr, value)
    out = io.BytesIO()
    ds.save_as(out)
    reader = CubeReader(mutants.cube_of(out.getvalue()))
    assert reader.desc(0).mode == "opaque"  # type: ignore[union-attr]
    with pytest.raises(CodecError, match=message):
        reader.frame(0)


def test_a_deflate_bomb_is_refused_at_the_inflate_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real deflated file of the data set with 64 MiB of zeros added to its dataset (a private OB element),
    deflated again — about 64 KB more on the wire. With the inflate bound (``rawfile.MAX_INFLATED``, 1 GiB) set to
    4 MiB for the test, reading it is a DicomReadError naming the file, and memory stays near the bound (zlib's
    output buffer grows by doubling), far from the 64 MiB the body inflates to.
    Oracle: Python's zlib inflates the same body to the full dataset."""
    import struct
    import tracemalloc
    import zlib

    from cubepacs.dicom import rawfile

    data = (mutants.SINGLE / "deflated_explicit_le_sc_8bit.dcm").read_bytes()
    scan = rawfile.scan_file(data)
    head = data[: scan.tail]
    dataset = zlib.decompress(data[scan.tail :], -15) + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 64 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(dataset) + b"".join(c.compress(bytes(8 << 20)) for _ in range(8)) + c.flush()
    bomb = head + body
    assert len(body) < len(data) + 128 * 1024 and len(zlib.decompress(body, -15)) == len(dataset) + (64 << 20)
    monkeypatch.setattr(rawfile, "MAX_INFLATED", 4 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DicomReadError, match=r"bomb\.dcm: deflated dataset inflates to more than 4194304 bytes"):
            rawfile.split_file(bomb, "bomb.dcm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, peak
    with pytest.raises(DicomReadError, match="inflates to more than"):
        cubepacs.load_from_dicom_folder([bomb], errors="raise")
