"""The archive end to end: DCMTK clients and dicomweb-client against ``cubepacs serve``, two tenants."""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLossless

from tests.archive.conftest import Server, dcmtk, wait_until
from tests.conftest import MALFORMED, SERIES, SINGLES, dicom_files

pytestmark = pytest.mark.dcmtk

FMRI = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
ALL = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLossless, JPEG2000Lossless, JPEG2000]
# storescu option proposing each transfer syntax of the data set
PROPOSE = {"1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.2": "-xb", "1.2.840.10008.1.2.1.99": "-xd",
           "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
           "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
           "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr"}


def client(server: Server, tenant: str = "alpha") -> DICOMwebClient:
    return DICOMwebClient(url=server.url, headers=server.headers(tenant))


def _count_instances(server: Server, tenant: str = "alpha") -> int:
    r = httpx.get(f"{server.url}/instances", headers=server.headers(tenant), params={"limit": 10000})
    return 0 if r.status_code == 204 else len(r.json())


@pytest.fixture(scope="module")
def stored(server: Server) -> Server:
    """The fMRI series and every single file, sent by DCMTK storescu to tenant alpha."""
    ok = dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(server.dimse_port), *map(str, dicom_files(FMRI)))
    assert ok.returncode == 0, ok.stderr
    # Archivable: files with SOP, Study and Series Instance UIDs (the two HTJ2K samples and the nested-sequence
    # sample are minimal datasets without them: STOW refuses them, tested below). One file goes by STOW-RS with
    # dicomweb-client, the others by DCMTK storescu.
    storable = [s for s in SINGLES if all(k in pydicom.dcmread(s, stop_before_pixels=True)
                                          for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))]
    by_stow = [s for s in storable if s.name == "rgb_us_ge_uncompressed.dcm"]
    by_dimse = [s for s in storable if s not in by_stow]
    for single in by_dimse:  # one association each, proposing the file's own transfer syntax
        ts = str(pydicom.dcmread(single, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        res = dcmtk("storescu", "-aec", "CUBEPACS", "-R", PROPOSE.get(ts, "-xe"), "127.0.0.1", str(server.dimse_port),
                    str(single))
        assert res.returncode == 0, (single.name, res.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client(server).store_instances([pydicom.dcmread(s) for s in by_stow])
    expected = 150 + len({pydicom.dcmread(s, stop_before_pixels=True).SOPInstanceUID for s in storable})
    wait_until(lambda: _count_instances(server) == expected)
    return server


def test_echo_and_unknown_called_ae(server: Server) -> None:
    assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(server.dimse_port)).returncode == 0
    assert dcmtk("echoscu", "-aec", "STRANGER", "127.0.0.1", str(server.dimse_port)).returncode != 0


def test_requests_without_a_tenant_are_refused(server: Server) -> None:
    assert httpx.get(f"{server.url}/studies").status_code == 401
    assert httpx.get(f"{server.url}/studies", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_qido_and_wado_with_dicomweb_client(stored: Server) -> None:
    dw = client(stored)
    studies = dw.search_for_studies(search_filters={"PatientID": "DEV"})
    assert len(studies) == 1
    study = studies[0]["0020000D"]["Value"][0]
    series = dw.search_for_series(study_instance_uid=study)
    assert series[0]["00201209"]["Value"] == [150]
    first = dicom_files(FMRI)[0]
    ds = pydicom.dcmread(first)
    got = dw.retrieve_instance(study, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    raw = httpx.get(f"{stored.url}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                    headers=stored.headers())
    # C-STORE carries the dataset (the file meta is the receiver's): the dataset bytes are kept as sent
    from cubepacs.dicom.rawfile import split_file

    assert split_file(first.read_bytes()).dataset_bytes() in raw.content
    meta = dw.retrieve_series_metadata(study, ds.SeriesInstanceUID)
    assert len(meta) == 150
    frames = dw.retrieve_instance_frames(study, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1])
    arr = np.frombuffer(frames[0], dtype=ds.pixel_array.dtype).reshape(ds.pixel_array.shape)
    np.testing.assert_array_equal(arr, ds.pixel_array)
    assert len(dw.search_for_instances(study, ds.SeriesInstanceUID, search_filters={"InstanceNumber": "5"})) == 1
    fuzzy = dw.search_for_studies(search_filters={"PatientName": "test^regr*"}, fuzzymatching=True)
    assert len(fuzzy) == 1
    assert len(dw.search_for_studies(search_filters={"StudyDate": "20180901-20180930", "PatientID": "DEV"})) == 1
    assert not dw.search_for_studies(search_filters={"StudyDate": "-20100101", "PatientID": "DEV"})
    assert len(dw.search_for_studies(search_filters={"StudyInstanceUID": f"{study},1.2.3"})) == 1
    rendered = httpx.get(f"{stored.url}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/"
                         f"{ds.SOPInstanceUID}/rendered", headers=stored.headers())
    assert rendered.status_code == 200 and rendered.content[:2] == b"\xff\xd8"


def test_findscu_levels(stored: Server, tmp_path: Path) -> None:
    port = str(stored.dimse_port)
    res = dcmtk("findscu", "-aec", "CUBEPACS", "-S", "-X", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=DEV",
                "-k", "StudyInstanceUID", "127.0.0.1", port, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(list(tmp_path.glob("rsp*.dcm"))) == 1
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    dcmtk("findscu", "-aec", "CUBEPACS", "-S", "-X", "-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=MR",
          "-k", "SeriesInstanceUID", "127.0.0.1", port, cwd=series_dir)
    assert len(list(series_dir.glob("rsp*.dcm"))) >= 2
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    ds = pydicom.dcmread(dicom_files(FMRI)[0], stop_before_pixels=True)
    dcmtk("findscu", "-aec", "CUBEPACS", "-S", "-X", "-k", "QueryRetrieveLevel=IMAGE",
          "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
          "-k", "SOPInstanceUID", "127.0.0.1", port, cwd=image_dir)
    assert len(list(image_dir.glob("rsp*.dcm"))) == 150
    patient_dir = tmp_path / "patient"
    patient_dir.mkdir()
    dcmtk("findscu", "-aec", "CUBEPACS", "-P", "-X", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=D*",
          "127.0.0.1", port, cwd=patient_dir)
    assert len(list(patient_dir.glob("rsp*.dcm"))) == 1


def test_tenants_are_isolated(stored: Server, tmp_path: Path) -> None:
    beta = client(stored, "beta")
    assert beta.search_for_studies() == []
    ds = pydicom.dcmread(dicom_files(FMRI)[0], stop_before_pixels=True)
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010"):
        r = httpx.get(stored.url + path + suffix, headers=stored.headers("beta"))
        assert r.status_code == 404, suffix
        assert httpx.get(stored.url + path + suffix, headers=stored.headers()).status_code in (200, 404), suffix
    for other in (f"/studies/{ds.StudyInstanceUID}", f"/studies/{ds.StudyInstanceUID}/metadata",
                  f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"):
        assert httpx.get(stored.url + other, headers=stored.headers("beta")).status_code == 404, other
        assert httpx.get(stored.url + other, headers=stored.headers()).status_code == 200, other
    for qido in ("/studies", "/series", "/instances", f"/studies/{ds.StudyInstanceUID}/series",
                 f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances"):
        assert httpx.get(stored.url + qido, headers=stored.headers("beta")).status_code == 204, qido
    assert httpx.get(f"{stored.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata",
                     headers=stored.headers("beta")).status_code == 404
    res = dcmtk("findscu", "-aec", "BETAPACS", "-S", "-X", "-k", "QueryRetrieveLevel=STUDY", "-k",
                "StudyInstanceUID", "127.0.0.1", str(stored.dimse_port), cwd=tmp_path)
    assert res.returncode == 0 and not list(tmp_path.glob("rsp*.dcm"))
    # the archive's own API and pages (docs/viewer.md): another tenant's study is not there, its deletion
    # deletes nothing, its audit rows are not shown (beta's key is admin: roles are not what refuses it here)
    site = stored.url.removesuffix("/dicom-web")
    for page in (f"/ui/studies/{ds.StudyInstanceUID}", f"/ui/studies/{ds.StudyInstanceUID}/zip",
                 f"/ui/studies/{ds.StudyInstanceUID}/delete", f"/ui{path}",
                 f"/ui/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"):
        assert httpx.get(site + page, headers=stored.headers("beta")).status_code == 404, page
        assert httpx.get(site + page, headers=stored.headers()).status_code == 200, page
    gone = httpx.delete(f"{site}/api/studies/{ds.StudyInstanceUID}", headers=stored.headers("beta"))
    assert gone.json() == {"deleted": 0}
    audit = httpx.get(f"{site}/api/audit", headers=stored.headers("beta"), params={"limit": 1000}).json()
    beta = httpx.get(f"{site}/api/me", headers=stored.headers("beta")).json()["who"]
    assert audit and {r["who"] for r in audit} <= {beta, "ae:FINDSCU"}  # its own attempts only (and findscu's)
    mine = httpx.get(f"{site}/api/audit", headers=stored.headers(), params={"study": ds.StudyInstanceUID}).json()
    assert {"download", "view"} <= {r["action"] for r in mine}
    assert len(httpx.get(f"{site}/api/keys", headers=stored.headers("beta")).json()) == 1  # its own only


def test_no_path_traversal_through_uids(stored: Server) -> None:
    for bad in ("..", "1.2.3%2F..%2F..", "1.2.3;DROP"):
        r = httpx.get(f"{stored.url}/studies/{bad}/series/1.2/instances/1.2.3", headers=stored.headers())
        assert r.status_code in (400, 404), bad
    r = httpx.get(f"{stored.url}/studies/1.2.3/series/1.2/instances/..%2F..%2Fetc", headers=stored.headers())
    assert r.status_code in (400, 404)


def test_stow_stores_and_reports_failures(stored: Server) -> None:
    single = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")
    bad = [m for m in MALFORMED if m.name in ("truncated_dataset_rtplan.dcm", "no_preamble_no_meta_ct.dcm")]
    bad += [s for s in SINGLES if s.name == "htj2k_lossless_rgb_sc.dcm"]  # no Study/Series Instance UID
    from cubepacs.archive.web import multipart

    body, ctype = multipart.encode([single.read_bytes(), *(b.read_bytes() for b in bad)], "application/dicom")
    r = httpx.post(f"{stored.url}/studies", content=body, headers={**stored.headers("beta"), "Content-Type": ctype})
    assert r.status_code == 202
    doc = r.json()
    assert len(doc["00081199"]["Value"]) == 1 and len(doc["00081198"]["Value"]) == 3
    assert "truncated" in r.headers["warning"] and "StudyInstanceUID" in r.headers["warning"]
    wait_until(lambda: _count_instances(stored, "beta") == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored_ds = client(stored, "beta").search_for_instances()
    assert len(stored_ds) == 1
    all_bad, ctype = multipart.encode([m.read_bytes() for m in bad], "application/dicom")
    r = httpx.post(f"{stored.url}/studies", content=all_bad, headers={**stored.headers(), "Content-Type": ctype})
    assert r.status_code == 409
    assert httpx.post(f"{stored.url}/studies", content=b"x", headers={**stored.headers(),
                      "Content-Type": "application/json"}).status_code == 415


def test_web_worker_compacts_and_serves_frames_from_the_cube(stored: Server) -> None:
    ds = pydicom.dcmread(dicom_files(FMRI)[3])
    cube = (stored.data_dir / "storage" / "alpha" / ds.StudyInstanceUID / f"{ds.SeriesInstanceUID}.dcbs")
    wait_until(cube.exists)
    import cubepacs

    image = cubepacs.load(cube)
    assert image.num_frames == 150 and cubepacs.verify(cube) == []
    frames = client(stored).retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                                      frame_numbers=[1])
    np.testing.assert_array_equal(np.frombuffer(frames[0], ds.pixel_array.dtype).reshape(ds.pixel_array.shape),
                                  ds.pixel_array)
    meta = httpx.get(f"{stored.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata",
                     headers=stored.headers())
    assert meta.status_code == 200 and len(meta.json()) == 150


# Malformed files that cannot be archived as they are; the others are real-world oddities that are complete
# and are stored byte for byte (the cube keeps them losslessly).
REFUSED = {"truncated_dataset_rtplan.dcm", "truncated_pixel_data_mr.dcm", "j2k_stream_too_short.dcm",
           "no_preamble_no_meta_ct.dcm", "no_preamble_no_meta_explicit_le.dcm", "no_preamble_no_meta_explicit_be.dcm",
           "meta_missing_transfer_syntax.dcm"}


def test_malformed_files_by_c_store_fail_and_the_server_keeps_serving(stored: Server) -> None:
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="TESTSCU")
    for cx in StoragePresentationContexts:
        ae.add_requested_context(cx.abstract_syntax, ALL)
    refused = set()
    for bad in MALFORMED:
        try:
            ds = pydicom.dcmread(bad, stop_before_pixels=True, force=True)
            sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        except Exception:
            sop_class = None
        if not sop_class:
            refused.add(bad.name)  # nothing says what it is: no SCU can even propose it
            continue
        ae.requested_contexts = []
        ae.add_requested_context(sop_class, ALL)
        assoc = ae.associate("127.0.0.1", stored.dimse_port, ae_title="CUBEPACS")
        assert assoc.is_established
        status = None
        try:
            status = assoc.send_c_store(bad)  # the file's encoded dataset, sent without decoding
            code = status.Status if status else -1
        except Exception:
            code = -1  # pynetdicom cannot read the file's meta either
        finally:
            assoc.release()
        if code != 0:
            refused.add(bad.name)
            if status is not None and code != -1:
                assert code == 0xC000 and status.get("ErrorComment"), (bad.name, hex(code))
    assert refused >= REFUSED - {"meta_missing_transfer_syntax.dcm"}, refused
    assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(stored.dimse_port)).returncode == 0
    truncated = next(m for m in MALFORMED if m.name == "truncated_dataset_rtplan.dcm")
    body, ctype = __import__("cubepacs.archive.web.multipart", fromlist=["x"]).encode(
        [truncated.read_bytes()], "application/dicom")
    r = httpx.post(f"{stored.url}/studies", content=body, headers={**stored.headers(), "Content-Type": ctype})
    assert r.status_code == 409 and "truncated" in r.headers["warning"]


def test_c_get_and_c_move(stored: Server, tmp_path: Path) -> None:
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from tests.archive.conftest import DEST_PORT

    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(event.dataset.SOPInstanceUID)  # type: ignore[attr-defined]
        return 0

    dest = AE(ae_title="DEST")
    for cx in AllStoragePresentationContexts:
        dest.add_supported_context(cx.abstract_syntax, ALL)
    server = dest.start_server(("127.0.0.1", DEST_PORT), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        ds = pydicom.dcmread(dicom_files(FMRI)[0], stop_before_pixels=True)
        keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}"]
        res = dcmtk("movescu", "-aec", "CUBEPACS", "-aem", "DEST", "-S", *keys, "127.0.0.1", str(stored.dimse_port))
        assert res.returncode == 0, res.stderr
        assert len(set(received)) == 150
        received.clear()
        dcmtk("movescu", "-aec", "BETAPACS", "-aem", "DEST", "-S", *keys, "127.0.0.1", str(stored.dimse_port))
        assert received == []  # tenant beta has no such series
        unknown = dcmtk("movescu", "-aec", "CUBEPACS", "-aem", "NOWHERE", "-S", *keys, "127.0.0.1",
                        str(stored.dimse_port))
        assert "A801" in (unknown.stdout + unknown.stderr).upper() or unknown.returncode != 0
    finally:
        server.shutdown()
    out = tmp_path / "get"
    out.mkdir()
    res = dcmtk("getscu", "-aec", "CUBEPACS", "-S", "-k", "QueryRetrieveLevel=IMAGE",
                "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "-od", str(out), "127.0.0.1", str(stored.dimse_port))
    assert res.returncode == 0, res.stderr
    (got,) = list(out.iterdir())
    original = pydicom.dcmread(dicom_files(FMRI)[0])
    np.testing.assert_array_equal(pydicom.dcmread(got).pixel_array, original.pixel_array)
    beta_out = tmp_path / "beta"
    beta_out.mkdir()
    dcmtk("getscu", "-aec", "BETAPACS", "-S", "-k", "QueryRetrieveLevel=IMAGE",
          "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
          "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "-od", str(beta_out), "127.0.0.1", str(stored.dimse_port))
    assert list(beta_out.iterdir()) == []


def test_bulkdata_and_transfer_syntax_negotiation(stored: Server) -> None:
    from cubepacs.archive.web import multipart

    ecg = next(s for s in SINGLES if s.name == "ecg_waveform_mortara.dcm")
    ds = pydicom.dcmread(ecg)
    base = f"{stored.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    meta = httpx.get(base + "/metadata", headers=stored.headers()).json()[0]
    uri = meta["54000100"]["Value"][1]["54001010"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/54000100/1/54001010")
    assert uri.startswith(f"http://127.0.0.1:{stored.http_port}/dicom-web/")  # absolute, as PS3.18 asks
    r = httpx.get(uri, headers=stored.headers())
    assert r.status_code == 200
    (value,) = multipart.parse(r.content, r.headers["content-type"])
    assert value == ds.WaveformSequence[1].WaveformData
    assert httpx.get(base + "/bulkdata/00991099", headers=stored.headers()).status_code == 404

    jpeg = next(s for s in SINGLES if s.name == "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm")
    src = pydicom.dcmread(jpeg)
    url = (f"{stored.url}/studies/{src.StudyInstanceUID}/series/{src.SeriesInstanceUID}/instances/"
           f"{src.SOPInstanceUID}")
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    r = httpx.get(url, headers={**stored.headers(), "Accept": accept})
    assert r.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1" in r.content[:300]  # the part header
    (part,) = multipart.parse(r.content, r.headers["content-type"])
    out = pydicom.dcmread(__import__("io").BytesIO(part))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(out.pixel_array, src.pixel_array)
    mpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.100'
    assert httpx.get(url, headers={**stored.headers(), "Accept": mpeg}).status_code == 406


def test_new_instance_after_compaction_recompacts(stored: Server) -> None:
    import cubepacs

    files = dicom_files(FMRI)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    cube = stored.data_dir / "storage" / "alpha" / ds.StudyInstanceUID / f"{ds.SeriesInstanceUID}.dcbs"
    wait_until(cube.exists)
    wait_until(lambda: cubepacs.load_meta(cube).num_instances == 150)

    def series_count() -> int:  # a QIDO answer the server caches until the tenant changes
        r = httpx.get(f"{stored.url}/studies/{ds.StudyInstanceUID}/series", headers=stored.headers(),
                      params={"SeriesInstanceUID": ds.SeriesInstanceUID})
        return int(r.json()[0]["00201209"]["Value"][0])

    assert series_count() == series_count() == 150
    extra = pydicom.dcmread(files[0])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    extra.InstanceNumber = 151
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client(stored).store_instances([extra])
    wait_until(lambda: series_count() == 151)  # the indexer's invalidation reached the cached answer
    wait_until(lambda: cubepacs.load_meta(cube).num_instances == 151, timeout=60)
    assert cubepacs.verify(cube) == []


def test_access_log_rows(stored: Server) -> None:
    from deltalake import DeltaTable

    httpx.get(f"{stored.url}/studies", headers=stored.headers("beta"))
    httpx.get(f"{stored.url}/studies")
    table = stored.data_dir / "logs" / "access"
    wait_until(lambda: (table / "_delta_log").exists() and DeltaTable(str(table)).to_pyarrow_table().num_rows > 2,
               timeout=30)
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    assert {"alpha", "beta"} <= {r["tenant"] for r in rows}
    assert any(r["status"] == 401 and r["tenant"] is None for r in rows)
    # the module's other tests call /api and /ui too: every row holds a path (never a query string or a URL)
    assert all(r["duration_ms"] >= 0 and r["path"].startswith("/") and "?" not in r["path"] for r in rows)
    assert any(r["path"] == "/dicom-web/studies" and r["tenant"] == "beta" for r in rows)


def test_storage_commitment(stored: Server) -> None:
    import queue

    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    from tests.archive.conftest import COMMIT_PORT

    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: object) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))  # type: ignore[attr-defined]
        return 0, None

    ae = AE(ae_title="COMMITSCU")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    ae.add_requested_context(StorageCommitmentPushModel)
    listener = ae.start_server(("127.0.0.1", COMMIT_PORT), block=False,
                               evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        held = pydicom.dcmread(dicom_files(FMRI)[0], stop_before_pixels=True)
        request = Dataset()
        request.TransactionUID = pydicom.uid.generate_uid()
        items = []
        for sop in (held.SOPInstanceUID, "1.2.3.4.5.6.7.8.9"):
            item = Dataset()
            item.ReferencedSOPClassUID = held.SOPClassUID
            item.ReferencedSOPInstanceUID = sop
            items.append(item)
        request.ReferencedSOPSequence = items
        assoc = ae.associate("127.0.0.1", stored.dimse_port, ae_title="CUBEPACS")
        assert assoc.is_established
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assoc.release()
        assert status.Status == 0
        event_type, report = reports.get(timeout=30)
        assert event_type == 2  # some failed
        assert report.TransactionUID == request.TransactionUID
        assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [held.SOPInstanceUID]
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [
            ("1.2.3.4.5.6.7.8.9", 0x0112)]
    finally:
        listener.shutdown()


def test_object_and_image_log_tables(stored: Server) -> None:
    import duckdb
    from deltalake import DeltaTable

    root = stored.data_dir / "logs"
    wait_until((root / "dicom_image_meta" / "_delta_log").exists, timeout=30)
    wait_until(lambda: DeltaTable(str(root / "dicom_object_meta")).to_pyarrow_table().num_rows >= 150, timeout=30)
    files = DeltaTable(str(root / "dicom_image_meta")).file_uris()
    ((n, mr),) = duckdb.sql(f"select count(*), count(*) filter (where modality = 'MR') "
                            f"from read_parquet({files!r})").fetchall()
    assert n >= 150 and mr >= 150
