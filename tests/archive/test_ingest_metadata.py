"""``metadata_at_ingest``: each instance's DICOM JSON kept in the index as it is stored, and a series' metadata
joined from those documents — the same bytes as converting the files, for every real file the archive accepts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from cubepacs.archive import metadata
from cubepacs.archive.index.store import Index
from cubepacs.archive.ingest import RejectedInstance, ingest
from cubepacs.archive.keys import WEB_ROOT
from cubepacs.archive.queue.embedded import EmbeddedQueue
from cubepacs.archive.services.indexer import Indexer
from cubepacs.archive.services.webworker import WebWorker
from cubepacs.archive.storage.file import FileStorage
from tests.archive.conftest import dcmtk, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import MALFORMED, SERIES, SINGLES, dicom_files

FMRI = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
CT = next(s for s in SERIES if s.name.startswith("ct_ge"))


def _archive(tmp_path: Path, files: list[Path]) -> tuple[FileStorage, Index, list[dict[str, Any]]]:
    """``files`` ingested with their metadata kept (the refused ones skipped) and indexed, in-process."""
    storage, queue = FileStorage(str(tmp_path / "s")), EmbeddedQueue(str(tmp_path / "q.db"))
    index = Index.from_url(f"sqlite:///{tmp_path}/i.db")
    events = []
    for path in files:
        try:
            events.append(ingest(path.read_bytes(), "t", storage, queue, source=path.name, metadata=True))
        except RejectedInstance:
            continue
    indexer = Indexer(queue, index)
    while indexer.run_once():
        pass
    return storage, index, events


def _series(index: Index, events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(ev["study_uid"], ev["series_uid"]) for ev in events}


def test_kept_documents_are_the_files_conversion(tmp_path: Path) -> None:
    storage, index, events = _archive(tmp_path, [*SINGLES, *MALFORMED, *dicom_files(FMRI)])
    assert len(events) > 150
    kept_any = 0
    for study, series in _series(index, events):
        rows = index.instances_of("t", study, series)
        kept = index.instance_docs("t", study, series)
        kept_any += len(kept)
        joined = metadata.series_json(rows, kept, lambda r: storage.get(r["storage_key"]), WEB_ROOT)
        converted = metadata.series_json(rows, {}, lambda r: storage.get(r["storage_key"]), WEB_ROOT)
        assert joined == converted, series
    assert kept_any == len({ev["sop_uid"] for ev in events})  # every accepted real file converts (two files
    # of the data set share a SOP Instance UID: the second is a duplicate)


def test_the_web_worker_builds_from_kept_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, index, events = _archive(tmp_path, dicom_files(CT))
    (study, series), = _series(index, events)
    row = {"tenant_id": "t", "study_uid": study, "series_uid": series}
    worker = WebWorker(index, storage, compact=False)
    rows = index.instances_of("t", study, series)
    expected = metadata.series_json(rows, {}, lambda r: storage.get(r["storage_key"]), WEB_ROOT)

    def no_conversion(*args: Any) -> Any:
        raise AssertionError("a file converted although its document was kept")

    monkeypatch.setattr(metadata, "safe_metadata", no_conversion)
    jkey, _, n = worker.build(row)
    assert n == 100 and storage.get(jkey) == expected


def test_a_document_too_large_for_a_queue_message_is_not_kept(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap lowered below a CT instance's document (1.6 KB compressed) stands for a header of megabytes: the
    instance is stored and indexed without one, and its series' metadata is converted from the file."""
    from cubepacs.archive import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "MAX_KEPT_METADATA", 1000)
    storage, index, events = _archive(tmp_path, dicom_files(CT)[:3])
    assert [ev.get("meta") for ev in events] == [None] * 3
    (study, series), = _series(index, events)
    assert index.instance_docs("t", study, series) == {}
    rows = index.instances_of("t", study, series)
    assert len(rows) == 3 and metadata.series_json(rows, {}, lambda r: storage.get(r["storage_key"]), WEB_ROOT)


@pytest.mark.dcmtk
def test_a_served_series_is_joined_from_kept_documents(tmp_path: Path) -> None:
    """DCMTK storescu and dicomweb-client's STOW-RS store; the series' /metadata before any build is the
    files' conversion, and the index holds one document per instance."""
    data = tmp_path / "data"
    data.mkdir()
    dimse, http = free_port(), free_port()
    config = write_config(tmp_path / "c.toml", data, dimse, http, metadata_at_ingest=True, quiet_seconds=3600.0)
    server = start_server(data, config, dimse, http)
    try:
        ok = dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, dicom_files(CT)))
        assert ok.returncode == 0, ok.stderr
        stow = next(s for s in SINGLES if s.name == "rgb_us_ge_uncompressed.dcm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DICOMwebClient(url=server.url, headers=server.headers()).store_instances([pydicom.dcmread(stow)])
        index = Index.from_url(f"sqlite:///{data}/index.db")
        try:
            wait_until(lambda: len(index.search_instances("alpha", {}, limit=1000)) == 101)
            for path in (dicom_files(CT)[0], stow):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
                rows = index.instances_of("alpha", study, series)
                assert len(index.instance_docs("alpha", study, series)) == len(rows)
                assert index.series_state("alpha", study, series)["json_status"] == 0  # not built yet
                r = httpx.get(f"{server.url}/studies/{study}/series/{series}/metadata", headers=server.headers())
                assert r.status_code == 200
                sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
                        for p in (dicom_files(CT) if path != stow else [stow])}
                expected = metadata.series_json(rows, {}, lambda row, sent=sent: sent[row["sop_uid"]],
                                                WEB_ROOT)
                host = f"http://127.0.0.1:{http}".encode()
                assert r.content.replace(b'"BulkDataURI":"' + host, b'"BulkDataURI":"') == expected
        finally:
            index.close()
    finally:
        stop_server(server)

