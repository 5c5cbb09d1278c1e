"""WADO-RS frames through the fast path (web/fastframes.py), read by dicomweb-client, against pydicom's pixels of
the same real multi-frame files; what the fast path leaves to the route still gets the route's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.pixels import pack_bits, pixel_array

from cubepacs.archive.web import multipart
from tests.archive.conftest import Server, compact_now, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SINGLES
from tests.pixeloracle import reference_decoders

FILES = [next(s for s in SINGLES if s.name == n) for n in
         ("rtdose_32bit_15f.dcm", "enhanced_mr_philips_64f.dcm", "jpeg_baseline_ybr422_us_cine_30f.dcm",
          "seg_1bit_liver.dcm")]



@pytest.fixture(autouse=True)
def _pydicoms_own_decoders() -> Iterator[None]:
    """The oracle decodes with pydicom's own plugins (Pillow for lossy JPEG), not the project's ones that
    importing cubepacs installs (tests/pixeloracle.py)."""
    with reference_decoders():
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("frames")
    dimse, http = free_port(), free_port()
    config = write_config(root / "c.toml", root / "data", dimse, http, quiet_seconds=600.0)  # compacted on demand
    srv = start_server(root / "data", config, dimse, http)
    body, ctype = multipart.encode([p.read_bytes() for p in FILES], "application/dicom")
    r = httpx.post(f"{srv.url}/studies", content=body, headers={**srv.headers(), "Content-Type": ctype}, timeout=60)
    assert r.status_code == 200, r.text
    for p in FILES:  # indexed (STOW answers when the instances are stored and queued)
        url = "{}/studies/{}/series/{}/instances/{}".format(srv.url, *_ids(pydicom.dcmread(p, stop_before_pixels=True)))
        wait_until(lambda url=url: httpx.get(url + "/metadata", headers=srv.headers()).status_code == 200)
    yield srv
    stop_server(srv)


def _ids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_frames_in_the_asked_order_equal_pydicoms(server: Server) -> None:
    _check_files(server)


def _check_files(server: Server) -> None:
    """``FILES``' frames, asked in an odd order, equal pydicom's stored values in the layout their metadata says."""
    client = DICOMwebClient(server.url, headers=server.headers())
    for path, numbers in zip(FILES, ([15, 1, 7], [64, 2], [30, 1], [1]), strict=True):
        ds = pydicom.dcmread(path)
        pixels = pixel_array(path, raw=True)  # stored values: YBR stays YBR, as the frames are served
        if int(ds.get("NumberOfFrames", 1) or 1) == 1:
            pixels = pixels[None]
        got = client.retrieve_instance_frames(*_ids(ds), frame_numbers=numbers)
        assert len(got) == len(numbers)
        for n, value in zip(numbers, got, strict=True):
            expected = pixels[n - 1]
            if ds.PhotometricInterpretation == "YBR_FULL_422":  # served as its metadata says: Y1 Y2 Cb Cr pairs
                _assert_422(value, ds, expected, f"{path.name} frame {n}")
                continue
            if ds.BitsAllocated == 1:  # packed, as the metadata's Bits Allocated says (PS3.5 8.1.1)
                assert value == pack_bits(expected, pad=False) == ds.PixelData[: len(value)], path.name
                continue
            arr = np.frombuffer(value, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape)
            np.testing.assert_array_equal(arr, expected, err_msg=f"{path.name} frame {n}")


def _as_native_422(value: bytes, ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's reading of ``value`` as one native (Explicit VR Little Endian) YBR_FULL_422 frame of ``ds``'s
    size: rows × cols × 3, each pair's chroma repeated."""
    frame = pydicom.Dataset()
    frame.file_meta = pydicom.dataset.FileMetaDataset()
    frame.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(frame, k, ds[k].value)
    frame.PhotometricInterpretation, frame.PlanarConfiguration = "YBR_FULL_422", 0
    frame.add_new(0x7FE00010, "OB", bytes(value))
    return np.asarray(pixel_array(frame, raw=True))


def _assert_422(value: bytes, ds: pydicom.Dataset, decoded: np.ndarray, name: str) -> None:
    """A YBR_FULL_422 frame as PS3.3 C.7.6.3.1.2 lays it out natively (2 bytes a pixel), read back by pydicom:
    luminance exactly pydicom's decoded one; chroma within what one value standing for a pair can differ from a
    JPEG decoder's two interpolated ones (libjpeg's upsampling mixes a quarter of the neighbour's chroma in)."""
    assert len(value) == ds.Rows * ds.Columns * 2, name
    back = _as_native_422(value, ds)
    np.testing.assert_array_equal(back[..., 0], decoded[..., 0], err_msg=name)
    chroma = np.abs(back[..., 1:].astype(np.int16) - decoded[..., 1:])
    assert chroma.max() <= 8 and chroma.mean() < 0.5, (name, chroma.max(), chroma.mean())


def test_what_the_fast_path_cannot_answer_gets_the_routes_errors(server: Server) -> None:
    ds = pydicom.dcmread(FILES[0], stop_before_pixels=True)
    url = "{}/studies/{}/series/{}/instances/{}/frames/".format(server.url, *_ids(ds))
    no_key = httpx.get(url + "1")
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert "API key" in no_key.json()["detail"]
    other_tenant = httpx.get(url + "1", headers=server.headers("beta"))
    assert other_tenant.status_code == 404  # tenants isolated: another tenant's instance does not exist
    assert httpx.get(url + "16", headers=server.headers()).status_code == 404
    assert httpx.get(url + "0", headers=server.headers()).status_code == 400
    bad_uid = httpx.get(f"{server.url}/studies/1.2/series/1.2.3/instances/1.2.x/frames/1", headers=server.headers())
    assert bad_uid.status_code == 400 and "detail" in bad_uid.json()


def test_fast_path_requests_are_in_the_access_log(server: Server) -> None:
    ds = pydicom.dcmread(FILES[1], stop_before_pixels=True)
    path = "/dicom-web/studies/{}/series/{}/instances/{}/frames/3".format(*_ids(ds))
    r = httpx.get(server.url.removesuffix("/dicom-web") + path, headers=server.headers())
    assert r.status_code == 200 and r.headers["x-request-id"]
    assert int(r.headers["content-length"]) == len(r.content) > 64 * 64 * 2
    spool = server.data_dir / "logs" / ".spool" / "access"
    table = server.data_dir / "logs" / "access"

    def logged() -> bool:
        rows = [json.loads(line) for f in spool.glob("*.jsonl") for line in f.read_text().splitlines()]
        if (table / "_delta_log").exists():
            from deltalake import DeltaTable

            rows += DeltaTable(str(table)).to_pyarrow_table().to_pylist()
        return any(r["request_id"] == r_id and r["status"] == 200 and r["tenant"] == "alpha" and r["path"] == path
                   for r in rows)

    r_id = r.headers["x-request-id"]
    wait_until(logged, timeout=30)


def test_a_frame_kept_hot_is_the_same_and_a_deletion_is_seen_at_once(server: Server) -> None:
    """The second request of a frame is answered from the index row and the decoded frame kept in memory
    (``hot_frame_pieces``); deleting the instance through /api removes its file, whose mark the kept row no
    longer matches, so the next request is a 404.
    A copy of a real file with new UIDs (synthetic only in its UIDs) is stored for this test."""
    ds = pydicom.dcmread(FILES[1])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    body, ctype = multipart.encode([buffer.getvalue()], "application/dicom")
    assert httpx.post(f"{server.url}/studies", content=body,
                      headers={**server.headers(), "Content-Type": ctype}, timeout=60).status_code == 200
    url = "{}/studies/{}/series/{}/instances/{}".format(server.url, *_ids(ds))
    wait_until(lambda: httpx.get(url + "/metadata", headers=server.headers()).status_code == 200)
    client = DICOMwebClient(server.url, headers=server.headers())
    first, again = (client.retrieve_instance_frames(*_ids(ds), frame_numbers=[5, 2]) for _ in range(2))
    assert first == again and len(first[0]) == ds.Rows * ds.Columns * ds.BitsAllocated // 8
    assert httpx.get(url + "/frames/5", headers=server.headers("beta")).status_code == 404  # not the row of alpha
    study_api = server.url.removesuffix("/dicom-web") + f"/api/studies/{ds.StudyInstanceUID}"
    assert httpx.delete(study_api, headers=server.headers()).json() == {"deleted": 1}
    gone = httpx.get(url + "/frames/5", headers=server.headers())
    assert gone.status_code == 404, gone.status_code


def test_hot_rows_expire_and_are_bounded() -> None:
    import time

    from cubepacs.archive.web.hot import HotRows

    rows = HotRows(max_items=2, max_age=0.2)
    rows.put(("b", "1"), {"k": 2}, ("m",))
    assert rows.get(("b", "1")) == ({"k": 2}, ("m",))
    time.sleep(0.3)
    assert rows.get(("b", "1")) is None  # older than max_age: asked of the index again
    for n in range(3):
        rows.put(("c", str(n)), {"k": n}, None)
    assert rows.get(("c", "0")) is None and rows.get(("c", "2")) == ({"k": 2}, None)  # bounded


# --- Frames follow their metadata: Planar Configuration (PS3.3 C.7.6.3.1.3, PS3.5 8.2, PS3.18 8.7.3) ----------
PLANAR_REAL = next(s for s in SINGLES if s.name == "rgb_us_big_endian.dcm")  # a real file with Planar Config. 1
RGB_LE = next(s for s in SINGLES if s.name == "rgb_us_ge_uncompressed.dcm")
RLE = next(s for s in SINGLES if s.name == "rle_rgb_sc.dcm")
CINE = next(s for s in SINGLES if s.name == "jpeg_baseline_ybr422_us_cine_30f.dcm")  # JPEG, YBR_FULL_422
COLOUR = [PLANAR_REAL, RGB_LE, RLE] + [next(s for s in SINGLES if s.name == n) for n in
                                       ("ybr_full_uncompressed_sc.dcm", "jpeg_baseline_rgb_dcmtk_sc.dcm",
                                        "j2k_lossless_ybr_rct_us.dcm")]
PLAIN = 'multipart/related; type="application/octet-stream"'


def _recoded(path: Path, planar_values: bool) -> bytes:
    """A copy of a real file with new UIDs and Planar Configuration 1 (crafted here: the only real planar file
    of the data set is 8-bit big endian). ``planar_values``: the native values are rewritten colour-by-plane;
    otherwise (RLE) only the attribute changes — an RLE codestream is colour-by-plane whatever it says (PS3.5
    G.2), and DCMTK's RLE encoder writes 1."""
    ds = pydicom.dcmread(path)
    if planar_values:
        ds.PixelData = np.ascontiguousarray(ds.pixel_array.transpose(2, 0, 1)).tobytes()
    ds.PlanarConfiguration = 1
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return bytes(out.getvalue())


def _native_422() -> bytes:
    """A native (Explicit VR Little Endian) YBR_FULL_422 instance made here from the cine's first two decoded
    frames, each pair's chroma averaged (no real file of the data set stores YBR_FULL_422 uncompressed)."""
    ds = pydicom.dcmread(CINE)
    ybr = pixel_array(CINE, raw=True)[:2].astype(np.uint16)
    pairs = ybr.reshape(2, ds.Rows, ds.Columns // 2, 2, 3)
    native = np.concatenate([pairs[..., 0], (pairs[..., 1:].sum(axis=3) + 1) // 2], axis=-1).astype(np.uint8)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.PixelData, ds.NumberOfFrames, ds.LossyImageCompression = native.tobytes(), 2, "01"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return bytes(out.getvalue())


def test_frames_are_served_in_the_layout_their_metadata_says(server: Server) -> None:
    """Every colour single (and crafted copies): ``/metadata``'s Planar Configuration and Photometric
    Interpretation describe the bytes ``/frames`` sends (uncompressed, PS3.18's default), from the stored file
    and again from the series' cube. Oracle: pydicom's stored values laid out as that Planar Configuration says,
    and for native data the file's own Pixel Data bytes (PS3.5 8.2: the frame exactly as the instance encodes
    it); YBR_FULL_422 read back by pydicom as a native 422 frame (``_assert_422``). JPEG 2000's YBR_RCT arrives
    as RGB from every decoder (PS3.5 8.2.4: the codestream's colour transform), as pydicom's raw values are."""
    datas = [p.read_bytes() for p in COLOUR] + [_recoded(RGB_LE, True), _recoded(RLE, False)]
    datas += [_native_422()]  # the cine itself is stored by the module's fixture (FILES)
    body, ctype = multipart.encode(datas, "application/dicom")
    assert httpx.post(f"{server.url}/studies", content=body, headers={**server.headers(), "Content-Type": ctype},
                      timeout=60).status_code == 200
    datas.append(CINE.read_bytes())
    dss = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(d)) for d in datas]
    assert [int(ds.PlanarConfiguration) for ds in dss] == [1, 0, 0, 0, 0, 0, 1, 1, 0, 0]

    def check(where: str) -> None:
        for ds, data in zip(dss, datas, strict=True):
            url = "{}/studies/{}/series/{}/instances/{}".format(server.url, *_ids(ds))
            wait_until(lambda url=url: httpx.get(url + "/metadata", headers=server.headers()).status_code == 200)
            meta = httpx.get(url + "/metadata", headers=server.headers()).json()[0]
            planar = meta["00280006"]["Value"][0]
            r = httpx.get(url + "/frames/1", headers={**server.headers(), "Accept": PLAIN})
            assert r.status_code == 200, r.text
            (got,) = multipart.parse(r.content, r.headers["content-type"])
            values = pixel_array(pydicom.filebase.DicomBytesIO(data), index=0, raw=True)  # rows × cols × 3
            photometric = meta["00280004"]["Value"][0]
            name = f"{where}: {ds.file_meta.TransferSyntaxUID.name} {photometric} planar {planar} {ds.SOPInstanceUID}"
            size = ds.Rows * ds.Columns * (2 if photometric == "YBR_FULL_422" else 3)
            if not ds.file_meta.TransferSyntaxUID.is_compressed:  # 8-bit native: the file's bytes as they are
                assert got == ds.PixelData[:size], name
            if photometric == "YBR_FULL_422":
                _assert_422(got, ds, values, name)
                continue
            want = values.transpose(2, 0, 1) if planar == 1 else values
            assert got == np.ascontiguousarray(want).tobytes(), name

    check("file")
    compact_now(server)
    check("cube")
    _check_files(server)  # the multi-frame, 1-bit and 422 files of the module, now from their cubes too
