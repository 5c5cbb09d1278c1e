"""/rendered and /thumbnail against pydicom's own LUT and colour functions on the same real files."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space

from cubepacs.archive.web import multipart
from tests.archive.conftest import Server, start_server, stop_server
from tests.conftest import DATA, SINGLES

CT = DATA / "single" / "ct_ge_small_signed.dcm"
FILES = {
    "ct": sorted((DATA / "series" / "ct_ge_lightspeedvct_chest_100sl").iterdir())[0],  # own window -700/1500
    "mr": next(s for s in SINGLES if s.name == "mr_siemens_csa_private_overlays.dcm"),
    "ct_small": CT,
    "us_ybr": next(s for s in SINGLES if s.name == "jpeg_baseline_ybr422_us_cine_30f.dcm"),
    "palette": next(s for s in SINGLES if s.name == "palette_color_us_philips_8bit.dcm"),
    "ybr_full": next(s for s in SINGLES if s.name == "ybr_full_uncompressed_sc.dcm"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("render") / "data")
    datas = [p.read_bytes() for p in FILES.values()]
    body, ctype = multipart.encode(datas, "application/dicom")
    r = httpx.post(f"{srv.url}/studies", content=body, headers={**srv.headers(), "Content-Type": ctype}, timeout=60)
    assert r.status_code == 200, r.text
    yield srv
    stop_server(srv)


def _url(server: Server, ds: pydicom.Dataset, suffix: str) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/{suffix}")


def _get(server: Server, ds: pydicom.Dataset, suffix: str, **params: str) -> np.ndarray:
    import time

    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(_url(server, ds, suffix), params=params, headers={**server.headers(), "Accept": "image/png"})
        if r.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # not indexed yet
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(imagecodecs.png_decode(r.content))


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.round((values.astype(np.float64) - low) / (high - low) * 255), 0, 255)


def test_grayscale_with_the_instance_window(server: Server) -> None:
    ds = pydicom.dcmread(FILES["ct"])
    assert ds.WindowCenter == -700 and ds.RescaleIntercept == -1024
    got = _get(server, ds, "rendered").astype(np.float64)
    bits = int(ds.BitsStored)
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation else (0.0, 2.0 ** bits - 1)
    want = _scaled(apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds), low, high)
    assert np.abs(got - want).max() <= 1


def test_window_parameter_in_output_units(server: Server) -> None:
    ds = pydicom.dcmread(CT)
    got = _get(server, ds, "rendered", window="40,400").astype(np.float64)
    hu = apply_modality_lut(ds.pixel_array, ds)
    ref = pydicom.dcmread(CT)
    ref.WindowCenter, ref.WindowWidth = 40, 400
    bits = int(ds.BitsStored)
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation else (0.0, 2.0 ** bits - 1)
    want = _scaled(apply_voi_lut(hu, ref), low, high)
    assert np.abs(got - want).max() <= 1
    for bad in ("abc", "40", "40,0", "40,400,cubic"):
        r = httpx.get(_url(server, ds, "rendered"), params={"window": bad}, headers=server.headers())
        assert r.status_code == 400 and "window" in r.json()["detail"]


def test_monochrome1_is_inverted(server: Server, tmp_path: object) -> None:
    ds = pydicom.dcmread(CT)
    ds.PhotometricInterpretation = "MONOCHROME1"  # made here: no MONOCHROME1 CR is in the data set
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out)
    body, ctype = multipart.encode([out.getvalue()], "application/dicom")
    assert httpx.post(f"{server.url}/studies", content=body,
                      headers={**server.headers(), "Content-Type": ctype}).status_code == 200
    mono1 = _get(server, ds, "rendered", window="40,400").astype(np.int16)
    mono2 = _get(server, pydicom.dcmread(CT), "rendered", window="40,400").astype(np.int16)
    assert np.abs((255 - mono2) - mono1).max() <= 1


def test_ybr_jpeg_ultrasound_is_rgb_and_frames_are_chosen(server: Server) -> None:
    ds = pydicom.dcmread(FILES["us_ybr"])
    want_all = ds.pixel_array  # pydicom converts YBR_FULL_422 JPEG to RGB
    for frame in (1, 17):
        got = _get(server, ds, f"frames/{frame}/rendered").astype(np.int16)
        assert got.shape == want_all[frame - 1].shape
        assert np.abs(got - want_all[frame - 1].astype(np.int16)).mean() < 2  # JPEG decoders differ by ±1
    first = _get(server, ds, "rendered").astype(np.int16)
    assert np.abs(first - want_all[0].astype(np.int16)).mean() < 2


def test_palette_and_ybr_full(server: Server) -> None:
    ds = pydicom.dcmread(FILES["palette"])
    rgb = apply_color_lut(ds.pixel_array, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    want = rgb >> (bits - 8) if bits > 8 else rgb
    assert np.abs(_get(server, ds, "rendered").astype(np.int16) - want.astype(np.int16)).max() <= 1
    ds = pydicom.dcmread(FILES["ybr_full"])
    ds.pixel_array_options(as_rgb=False)
    want = convert_color_space(ds.pixel_array, "YBR_FULL", "RGB")  # from the stored YBR_FULL values
    assert np.abs(_get(server, ds, "rendered").astype(np.int16) - want.astype(np.int16)).max() <= 1


def test_thumbnail_is_small(server: Server) -> None:
    ds = pydicom.dcmread(FILES["us_ybr"])
    assert max(_get(server, ds, "thumbnail").shape[:2]) <= 160


def test_bulkdata_uris_are_absolute(server: Server) -> None:
    ds = pydicom.dcmread(FILES["ct"])
    r = httpx.get(_url(server, ds, "metadata"), headers=server.headers())
    uri = r.json()[0]["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"http://127.0.0.1:{server.http_port}/dicom-web/studies/")
    # forwarded headers from an untrusted client are ignored
    r = httpx.get(_url(server, ds, "metadata"), headers={**server.headers(), "X-Forwarded-Proto": "https",
                                                         "X-Forwarded-Host": "evil.example"})
    assert "evil.example" not in r.text
