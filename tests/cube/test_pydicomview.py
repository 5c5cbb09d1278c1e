"""Frames decoded from a view of the stored value (``cube/pydicomview.py``, issue #27): the J2K/HTJ2K and JPEG-LS
plugins that read the codestream in place give what pydicom's own plugins give.

Oracle: pydicom with its own plugins (pylibjpeg-openjpeg for J2K and HTJ2K, pyjpegls for JPEG-LS, put back by
``tests/pixeloracle.reference_decoders``) decoding the file. Every J2K, HTJ2K and JPEG-LS file of ../shared/data is
found by its Transfer Syntax UID; the colour JPEG-LS frames (no file of the data set has one) are made here from
the real RGB ultrasound, one per interleave mode."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders.base import DecodeRunner, get_decoder

from cubepacs.cube import guard, pydicomview
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import CubepacsError
from tests.pixeloracle import reference_decoders

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import mutants


def _files(syntaxes: tuple[str, ...]) -> list[Path]:
    out = []
    for path in sorted(mutants.DATA.rglob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            continue
        if str(ds.file_meta.get("TransferSyntaxUID", "")) in syntaxes and "Rows" in ds:
            out.append(path)
    return out


IN_PLACE = _files(guard.J2K + guard.JPEG_LS)


def _theirs(data: bytes | Path, index: int) -> np.ndarray:
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with reference_decoders(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(src, index=index, raw=True)


def test_the_plugins_are_ours_and_pydicom_decodes_in_place() -> None:
    assert IN_PLACE, "no J2K or JPEG-LS file in ../shared/data"
    for syntax in guard.J2K[:2] + guard.J2K[4:]:  # pydicom has no decoder for JPEG 2000 Part 2 (.92, .93)
        assert list(get_decoder(syntax)._available) == ["cubepacs-j2k"], syntax
    for syntax in guard.JPEG_LS:
        assert list(get_decoder(syntax)._available) == ["cubepacs-jpegls"], syntax
    assert DecodeRunner.decode.__name__ == "decode_in_place"


@pytest.mark.parametrize("path", IN_PLACE, ids=lambda p: p.name)
def test_every_frame_read_in_place_is_pydicoms(path: Path) -> None:
    """Each frame of the cube of a J2K / HTJ2K / JPEG-LS file (decoded from a view of the stored value) and of the
    file itself through pydicom (our plugins) equals pydicom's own plugins' frame; a malformed file they refuse
    is refused with a declared error."""
    try:
        want0 = _theirs(path, 0)
    except Exception:  # a malformed file pydicom's own plugins refuse: refused by the cube too, as a declared error
        with pytest.raises(CubepacsError):
            CubeReader(mutants.cube_of(path)).frame(0)
        return
    try:
        reader: CubeReader | None = CubeReader(mutants.cube_of(path))
    except CubepacsError:  # a file the cube writer refuses (truncated Pixel Data): pydicom's path alone
        reader = None
    head = pydicom.dcmread(path, stop_before_pixels=True)
    frames = reader.num_frames if reader else int(head.get("NumberOfFrames", 1) or 1)
    for k in range(frames):
        want = _theirs(path, k) if k else want0
        if reader:
            np.testing.assert_array_equal(reader.frame(k), want, err_msg=f"{path.name} frame {k}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(pixel_array(str(path), index=k, raw=True), want)


@pytest.mark.parametrize(("interleave", "crop"), [(0, None), (1, None), (2, None), (1, 3), (2, 3)])
def test_colour_jpeg_ls_of_every_interleave_mode_is_pyjpegls(interleave: int, crop: int | None) -> None:
    """The real RGB ultrasound (whole, and its top-left 3 × 3: as many rows as columns as samples, where a
    guess from the decoded array's shape would be wrong) recoded here as JPEG-LS with interleave mode 0 (colour by
    plane), 1 (by line) and 2 (by sample): the frame, read in place from the cube, must equal pydicom's pyjpegls
    plugin's and the original pixels (JPEG-LS lossless). (pyjpegls cannot encode a 3 × 3 frame by plane.)"""
    import jpeg_ls

    ds = pydicom.dcmread(mutants.SINGLE / "rgb_us_ge_uncompressed.dcm")
    rgb = np.ascontiguousarray(ds.pixel_array[:crop, :crop])
    ds.Rows, ds.Columns = rgb.shape[:2]
    src = np.ascontiguousarray(rgb.transpose(2, 0, 1)) if interleave == 0 else rgb  # pyjpegls: planes for mode 0
    ds.PixelData = encapsulate([bytes(jpeg_ls.encode_array(src, interleave_mode=interleave))])
    ds.file_meta.TransferSyntaxUID = guard.JPEG_LS[0]
    ds.PlanarConfiguration = 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    reader = CubeReader(mutants.cube_of(out.getvalue()))
    np.testing.assert_array_equal(reader.frame(0), _theirs(out.getvalue(), 0))
    np.testing.assert_array_equal(reader.frame(0), rgb)


def test_a_frame_view_reads_at_most_its_limit() -> None:
    """OpenJPEG is given at most ``CHUNK`` bytes a read (it asks for 1 MiB and reads on when given less)."""
    view = pydicomview.FrameView(memoryview(bytes(range(256)) * 1000), most=100)
    assert len(view.read(5000)) == 100 and view.tell() == 100
    assert len(pydicomview.FrameView(memoryview(b"x" * 5000)).read(5000)) == 5000


def _file_with(path: Path, streams: list[bytes], **attrs: object) -> bytes:
    """The file at ``path`` with its frames' codestreams replaced by ``streams`` (and attributes set)."""
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate(streams)
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _same_as_theirs(data: bytes, frames: int = 1) -> None:
    reader = CubeReader(mutants.cube_of(data))
    for k in range(frames):
        np.testing.assert_array_equal(reader.frame(k), _theirs(data, k), err_msg=f"frame {k}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(pixel_array(io.BytesIO(data), index=k, raw=True), _theirs(data, k))


def test_a_j2k_stream_in_a_jp2_file_is_decoded_as_pydicom_does() -> None:
    """The real J2K MR's pixels re-encoded here by OpenJPEG as a JP2 file (not DICOM-conformant, PS3.5 A.4.4,
    but pydicom decodes it): decoded from the view like a bare codestream, equal to pydicom's own plugin."""
    import imagecodecs

    path = mutants.SINGLE / "ts_j2k_lossless_siemens_mr.dcm"
    jp2 = imagecodecs.jpeg2k_encode(pydicom.dcmread(path).pixel_array, level=0, codecformat="JP2")
    _same_as_theirs(_file_with(path, [bytes(jp2)]))


def test_sos_bytes_outside_the_scans_are_not_scans() -> None:
    """The real baseline RGB's stream with ``FF DA`` where it is no scan — an APP1 segment holding a JPEG
    thumbnail (its own SOS), a comment holding ``FF DA`` — is one scan a component: decoded, equal to pydicom's
    own plugins."""
    from pydicom.encaps import generate_frames

    path = mutants.SINGLE / "jpeg_baseline_rgb_dcmtk_sc.dcm"
    stream = bytes(next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1)))
    app1 = b"Exif\0\0" + stream  # stands for an EXIF APP1 whose IFD1 holds a JPEG thumbnail
    cases = [stream[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + stream[2:],
             stream[:2] + b"\xff\xfe\x00\x06ab\xff\xda" + stream[2:]]  # fmt: skip
    for crafted in cases:
        _same_as_theirs(_file_with(path, [crafted]))


def test_a_basic_offset_table_out_of_order_is_followed() -> None:
    """Two frames of the real JPEG cine whose Basic Offset Table lists them the other way round: frame k is the
    one the table points at, as pydicom takes it (not the k-th fragment)."""
    import struct

    from pydicom.encaps import generate_frames

    path = mutants.SINGLE / "jpeg_baseline_ybr422_us_cine_30f.dcm"
    frames = [bytes(f) for f in list(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=30))[:2]]
    frames = [f + b"\0" * (len(f) & 1) for f in frames]

    def item(b: bytes) -> bytes:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(b)) + b

    table = struct.pack("<II", 8 + len(frames[0]), 0)
    ds = pydicom.dcmread(path)
    ds.PixelData = item(table) + item(frames[0]) + item(frames[1]) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    ds.NumberOfFrames = 2
    out = io.BytesIO()
    ds.save_as(out)
    _same_as_theirs(out.getvalue(), 2)
    assert not np.array_equal(_theirs(out.getvalue(), 0), _theirs(out.getvalue(), 1))
