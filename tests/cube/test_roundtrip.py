"""DICOM → cube → DICOM gives back every file byte for byte, on every real file of the data set."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

import cubepacs
from cubepacs.cube.codecs import CODEC_NAMES
from cubepacs.errors import CodecError
from tests.conftest import SERIES, SINGLES, dicom_files


def _roundtrip(src: Path | list[Path], tmp_path: Path, codec: str = "htj2k") -> tuple[cubepacs.DicomCubeImage, Path]:
    image = cubepacs.load_from_dicom_folder(src)
    cube = tmp_path / "x.dcbs"
    cubepacs.save(image, cube, codec=codec)
    out = tmp_path / "out"
    cubepacs.save_to_dicom_folder(cubepacs.load(cube), out)
    return image, out


@pytest.mark.parametrize("series", SERIES, ids=lambda p: p.name)
def test_series_roundtrip_is_byte_exact(series: Path, tmp_path: Path) -> None:
    _, out = _roundtrip(series, tmp_path)
    files = dicom_files(series)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("path", SINGLES, ids=lambda p: p.name)
def test_single_file_roundtrip_is_byte_exact(path: Path, tmp_path: Path) -> None:
    _, out = _roundtrip([path], tmp_path)
    assert (out / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_every_codec_is_bit_exact(codec: str, tmp_path: Path) -> None:
    series = next(s for s in SERIES if s.name.startswith("ct_philips"))
    image, out = _roundtrip(series, tmp_path, codec)
    for f in dicom_files(series):
        assert (out / f.name).read_bytes() == f.read_bytes()
    cube = cubepacs.load(tmp_path / "x.dcbs")
    assert cube.pixels.codec == codec  # type: ignore[attr-defined]
    np.testing.assert_array_equal(cube.raw_image, image.raw_image)


@pytest.mark.parametrize("series", SERIES, ids=lambda p: p.name)
def test_raw_image_matches_pydicom_stored_values(series: Path, tmp_path: Path) -> None:
    cube = tmp_path / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder(series), cube)
    image = cubepacs.load(cube)
    by_name = {n: k for k, n in enumerate(image.dicom_meta.names)}
    raw = image.raw_image
    for f in dicom_files(series)[::7]:
        expected = pydicom.dcmread(f).pixel_array  # stored values: pydicom never rescales pixel_array
        np.testing.assert_array_equal(raw[by_name[f.name]], expected)


@pytest.mark.parametrize("path", [p for p in SINGLES if "htj2k_lossy" not in p.name], ids=lambda p: p.name)
def test_single_file_frames_match_pydicom(path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            pytest.skip("no pixel data (SR, ECG, minimal dataset)")
        try:
            expected = pixel_array(ds, raw=True)
        except AttributeError:
            expected = None  # pydicom cannot decode it either (no Bits Allocated)
    cube = tmp_path / "x.dcbs"
    cubepacs.save(cubepacs.load_from_dicom_folder([path]), cube)
    image = cubepacs.load(cube)
    if expected is None:
        with pytest.raises(CodecError, match=path.name):
            image.frame(0)
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    assert image.num_frames == frames
    got = image.raw_image if frames > 1 else image.frame(0)
    np.testing.assert_array_equal(got, expected)


def test_random_frame_access_reads_one_frame(tmp_path: Path) -> None:
    series = SERIES[0]
    image = cubepacs.load_from_dicom_folder(series)
    cube = tmp_path / "x.dcbs"
    cubepacs.save(image, cube)
    loaded = cubepacs.load(cube)
    np.testing.assert_array_equal(loaded.frame(17), image.raw_image[17])
    np.testing.assert_array_equal(loaded.frames(20, 25), image.raw_image[20:25])
    with pytest.raises(IndexError, match="out of range"):
        loaded.frame(10_000)


def test_output_is_deterministic(tmp_path: Path) -> None:
    series = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
    cubepacs.save(cubepacs.load_from_dicom_folder(series), tmp_path / "a.dcbs")
    cubepacs.save(cubepacs.load_from_dicom_folder(series), tmp_path / "b.dcbs", threads=1)
    assert (tmp_path / "a.dcbs").read_bytes() == (tmp_path / "b.dcbs").read_bytes()


def test_cube_from_bytes_and_file_objects(tmp_path: Path) -> None:
    files = dicom_files(SERIES[1])[:5]
    image = cubepacs.load_from_dicom_folder([f.read_bytes() for f in files])
    assert image.num_frames == 5
    buf = tmp_path / "x.dcbs"
    with open(buf, "wb") as fh:
        cubepacs.save(image, fh)
    data = buf.read_bytes()
    with open(buf, "rb") as fh:
        from_file = cubepacs.load(fh).raw_image
    np.testing.assert_array_equal(cubepacs.load(data).raw_image, from_file)
    np.testing.assert_array_equal(cubepacs.load_meta(data).get_array("InstanceNumber"),
                                  image.dicom_meta.get_array("InstanceNumber"))


def test_dicomdir_in_a_series_folder_is_skipped_but_round_trips_alone(tmp_path: Path) -> None:
    series = next(s for s in SERIES if s.name.startswith("ct_philips"))
    dirfile = series / "DIRFILE"
    assert dirfile.name not in cubepacs.load_from_dicom_folder(series).dicom_meta.names
    image, out = _roundtrip([dirfile], tmp_path)
    assert image.num_frames == 0
    assert (out / "DIRFILE").read_bytes() == dirfile.read_bytes()


@pytest.mark.parametrize("path", SINGLES, ids=lambda p: p.name)
def test_pixel_view_is_the_same_split_without_the_copy(path: Path) -> None:
    """``split_file(…, pixel_view=True)`` (what WADO-RS keeps hot) gives the same chunks and the same pixel value,
    as a view of the file's bytes; the instance read from it gives the same frames."""
    from cubepacs.cube.image import InstancePixels
    from cubepacs.cube.sources import read_instance
    from cubepacs.dicom.rawfile import split_file
    from cubepacs.errors import DicomReadError

    data = path.read_bytes()
    try:
        copied = split_file(data, path.name)
    except DicomReadError:
        return  # not splittable either way (covered by the malformed-file tests)
    viewed = split_file(data, path.name, pixel_view=True)
    assert [c.data for c in viewed.chunks] == [c.data for c in copied.chunks]
    assert bytes(viewed.pixel_value) == bytes(copied.pixel_value)
    assert not viewed.pixel_value or isinstance(viewed.pixel_value, memoryview)
    a, b = (InstancePixels([read_instance(data, path.name, pixel_view=v)]) for v in (False, True))

    def frame(pixels: InstancePixels, k: int) -> np.ndarray | str:
        try:
            return pixels.frame(k)
        except Exception as exc:  # an undecodable instance must fail the same way either way
            return type(exc).__name__

    for k in range(min(a.num_frames, 3)):
        fa, fb = frame(a, k), frame(b, k)
        assert type(fa) is type(fb)
        np.testing.assert_array_equal(fa, fb)
