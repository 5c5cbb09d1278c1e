"""WADO-RS frames in their stored syntax when the Accept header allows it (web/asstored.py): a JPEG-lossless or
multi-frame JPEG file's codestreams, a compacted series' HTJ2K codestreams — checked against the uncompressed
answer, pydicom's decoding of the original file and an independent HTJ2K decoder; dicomweb-client as the client."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import get_frame

from cubepacs.archive.web import multipart
from cubepacs.archive.web.asstored import accepted
from tests.archive.conftest import Server, dcmtk, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, SINGLES, dicom_files

pytestmark = pytest.mark.dcmtk

CT = next(s for s in SERIES if s.name.startswith("ct_ge"))  # 16 bits stored of 16, signed: its cube frames go
PHILIPS = next(s for s in SERIES if s.name.startswith("ct_philips"))  # 12 of 16 bits, nothing above: they go too
MR12 = next(s for s in SINGLES if s.name == "mr_12bit_unsigned_siemens.dcm")  # 12 bits, values up to 4379: decoded
JLL = next(s for s in SINGLES if s.name == "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm")
CINE = next(s for s in SINGLES if s.name == "jpeg_baseline_ybr422_us_cine_30f.dcm")
ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
PLAIN = 'multipart/related; type="application/octet-stream"'


def test_accept_headers() -> None:
    assert accepted("multipart/related; type=application/octet-stream; transfer-syntax=*") == {"*"}  # OHIF's
    assert accepted('multipart/related; type="image/jphc"; transfer-syntax=1.2.840.10008.1.2.4.201') == {
        "1.2.840.10008.1.2.4.201"}
    assert accepted(PLAIN + ', multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70') == {
        "1.2.840.10008.1.2.4.70"}
    assert accepted(PLAIN) == accepted("*/*") == accepted("") == frozenset()
    assert accepted(PLAIN + "; transfer-syntax=1.2.840.10008.1.2.1") == frozenset()  # uncompressed: decoded
    assert accepted("application/dicom; transfer-syntax=*") == frozenset()  # not a frames media type
    # odd headers: nothing accepted, nothing raised
    assert accepted(";;,,=;") == accepted("multipart/related; transfer-syntax") == frozenset()
    assert accepted("multipart/related; transfer-syntax=1.2.3.4") == frozenset()  # not a syntax we send
    assert accepted("multipart/related;" + "x=y;" * 10_000) == frozenset()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("asstored")
    data = root / "data"
    dimse, http = free_port(), free_port()
    config = write_config(root / "c.toml", data, dimse, http, quiet_seconds=600.0)  # compacted when the test says
    server = start_server(data, config, dimse, http)
    for files, option in ((dicom_files(CT), "-xe"), (dicom_files(PHILIPS), "-xe"), ([JLL], "-xs"), ([CINE], "-xy"),
                          ([MR12], "-xe")):
        res = dcmtk("storescu", "-aec", "CUBEPACS", "-R", option, "127.0.0.1", str(dimse), *map(str, files))
        assert res.returncode == 0, res.stderr
    yield server
    stop_server(server)


def _url(server: Server, path: Path, frames: str = "1") -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/frames/{frames}")


def _get(server: Server, path: Path, accept: str, frames: str = "1") -> tuple[list[str], list[bytes]]:
    """(each part's Content-Type, each part's bytes) of a frames request."""
    url = _url(server, path, frames)
    wait_until(lambda: httpx.get(url, headers={**server.headers(), "Accept": PLAIN}).status_code == 200)
    r = httpx.get(url, headers={**server.headers(), "Accept": accept})
    assert r.status_code == 200, r.text
    body = r.content
    types = [line.split(b":", 1)[1].strip().decode().replace('"', "") for line in body.split(b"\r\n")
             if line.lower().startswith(b"content-type:")]
    return types, multipart.parse(body, r.headers["content-type"])


def _values(part: bytes, like: np.ndarray) -> np.ndarray:
    return np.frombuffer(part, like.dtype.newbyteorder("<")).reshape(like.shape)


def _compact(server: Server) -> None:
    """Make every series due now and wait for the web worker's builds (its pass runs each second)."""
    from cubepacs.archive.index.store import Index

    index = Index.from_url(f"sqlite:///{server.data_dir}/index.db")
    try:
        with index.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE dicom_json_meta SET flag_time = '2000-01-01 00:00:00.000000'")
        wait_until(lambda: len(list((server.data_dir / "storage").rglob("*.dcbs"))) == 5, timeout=120)
    finally:
        index.close()


def test_stored_files_as_stored_then_cubes(archive: Server) -> None:
    original = pydicom.dcmread(JLL)
    types, parts = _get(archive, JLL, ANY)
    assert types == ["image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"]
    assert parts[0] == get_frame(original.PixelData, 0, number_of_frames=1)  # the stored codestream, untouched
    types, plain = _get(archive, JLL, PLAIN)  # without the wildcard: decoded, as before
    assert types == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"]
    assert (_values(plain[0], original.pixel_array) == original.pixel_array).all()
    cine = pydicom.dcmread(CINE)
    types, parts = _get(archive, CINE, ANY, "2,30")
    assert types == ["image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"] * 2
    assert parts == [get_frame(cine.PixelData, k, number_of_frames=30) for k in (1, 29)]
    ct = dicom_files(CT)[7]
    types, _ = _get(archive, ct, ANY)  # an uncompressed file: its values, whatever is accepted
    assert types == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"]

    _compact(archive)
    ds = pydicom.dcmread(ct)
    types, parts = _get(archive, ct, ANY)
    assert types == ["image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201"]
    assert parts[0][:4] == b"\xff\x4f\xff\x51"  # a bare J2K codestream (SOC, SIZ), as DICOM encapsulates it
    decoded = imagecodecs.htj2k_decode(parts[0])  # OpenJPH, as OHIF's decoder
    assert decoded.dtype == np.int16 and (decoded == ds.pixel_array).all()  # signed, every value exact
    _, plain = _get(archive, ct, PLAIN)
    assert (_values(plain[0], ds.pixel_array) == decoded).all()
    named = 'multipart/related; type="image/jphc"; transfer-syntax=1.2.840.10008.1.2.4.201'
    assert _get(archive, ct, named)[1] == parts
    philips = dicom_files(PHILIPS)[3]  # 12 bits stored in 16, nothing above them: the codestream is the values
    types, parts = _get(archive, philips, ANY)
    assert types == ["image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201"]
    p = pydicom.dcmread(philips)
    assert (imagecodecs.htj2k_decode(parts[0]) == p.pixel_array).all()
    mr = pydicom.dcmread(MR12)  # values above Bits Stored in the file: decoded and masked, as pydicom reads it
    types, parts = _get(archive, MR12, ANY)
    assert types == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"]
    assert (_values(parts[0], mr.pixel_array) == mr.pixel_array).all() and mr.pixel_array.max() < 4096
    types, parts = _get(archive, JLL, ANY)  # compacted, its codestream kept in the cube: still as stored
    assert types == ["image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"]
    assert parts[0] == get_frame(original.PixelData, 0, number_of_frames=1)


def test_dicomweb_client_takes_frames_as_stored(archive: Server) -> None:
    _compact(archive)
    client = DICOMwebClient(url=archive.url, headers=archive.headers())
    ct = pydicom.dcmread(dicom_files(CT)[20])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames: list[Any] = client.retrieve_instance_frames(
            ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1],
            media_types=(("application/octet-stream", "*"),))
        plain = client.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1])
    assert (imagecodecs.htj2k_decode(frames[0]) == _values(plain[0], ct.pixel_array)).all()
