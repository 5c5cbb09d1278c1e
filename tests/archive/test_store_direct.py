"""A plain C-STORE-RQ served without pynetdicom's service-class round (archive/dimse/store.py): the peer sees the
same statuses — success, a warning, the handler's exception as 0xC211, a status Dataset with its error comment."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, _config, evt

from cubepacs.archive.dimse import lean, store
from tests.conftest import SERIES, dicom_files

CT = dicom_files(next(s for s in SERIES if s.name.startswith("ct_")))[0]


def _answer(kind: str) -> Any:
    if kind == "raise":
        raise RuntimeError("the handler failed")
    if kind == "dataset":
        answer = Dataset()
        answer.Status = 0xA900
        answer.ErrorComment = "does not match SOP class"
        return answer
    return {"ok": 0x0000, "warning": 0xB000}[kind]


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str], list[bool]]]:
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the archive's SCP runs (dimse/scp.py)
    outcomes: list[bool] = []
    serve = store.serve

    def counted(assoc: Any, msg: Any, context_id: int) -> bool:
        outcomes.append(serve(assoc, msg, context_id))
        return outcomes[-1]

    monkeypatch.setattr(store, "serve", counted)
    ae = AE(ae_title="DIRECT")
    ae.supported_contexts = [*AllStoragePresentationContexts, *VerificationPresentationContexts]
    kinds: list[str] = []

    def on_store(event: Any) -> Any:
        return _answer(kinds.pop(0))

    srv = lean.start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], None)
    try:
        yield srv.server_address[1], kinds, outcomes
    finally:
        srv.shutdown()


def test_statuses_reach_the_peer_as_pynetdicom_sends_them(server: tuple[int, list[str], list[bool]]) -> None:
    port, kinds, outcomes = server
    ds = pydicom.dcmread(CT)
    client = AE(ae_title="SENDER")
    client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = client.associate("127.0.0.1", port, ae_title="DIRECT")
    assert assoc.is_established
    got = []
    for kind in ("ok", "warning", "raise", "dataset", "ok"):
        kinds.append(kind)
        rsp = assoc.send_c_store(ds)
        got.append((int(rsp.Status), rsp.get("ErrorComment")))
    assoc.release()
    assert got == [(0x0000, None), (0xB000, None), (0xC211, None), (0xA900, "does not match SOP class"), (0x0000, None)]
    assert outcomes == [True] * 5  # all served directly (the Dataset answer sent the way pynetdicom builds it)


def test_other_requests_go_pynetdicoms_way(server: tuple[int, list[str], list[bool]]) -> None:
    port, _, outcomes = server
    client = AE(ae_title="SENDER")
    client.add_requested_context("1.2.840.10008.1.1")
    assoc = client.associate("127.0.0.1", port, ae_title="DIRECT")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()
    assert outcomes == [False]


@pytest.mark.parametrize("marked", [True, False])
def test_a_reader_safe_handler_runs_on_the_reader_thread(monkeypatch: pytest.MonkeyPatch, marked: bool) -> None:
    """A handler marked reader_safe is run by the thread that completed the request (the DUL's) — no wake-up of the
    association's thread; an unmarked one by the association's thread, as pynetdicom does. Both answer alike."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    threads: list[str] = []

    def on_store(event: Any) -> int:
        threads.append("reader" if threading.current_thread() is event.assoc.dul else "association")
        return 0x0000

    handler = store.reader_safe(on_store) if marked else on_store
    ae = AE(ae_title="DIRECT")
    ae.supported_contexts = [*AllStoragePresentationContexts, *VerificationPresentationContexts]
    srv = lean.start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, handler)], None)
    try:
        ds = pydicom.dcmread(CT)
        client = AE(ae_title="SENDER")
        client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        client.add_requested_context("1.2.840.10008.1.1")
        assoc = client.associate("127.0.0.1", srv.server_address[1], ae_title="DIRECT")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(ds).Status) for _ in range(3)]
        statuses.append(int(assoc.send_c_echo().Status))  # C-ECHO still goes to the association's thread
        statuses.append(int(assoc.send_c_store(ds).Status))
        assoc.release()
    finally:
        store._READER_SAFE.discard(on_store)
        srv.shutdown()
    assert statuses == [0x0000] * 5
    assert threads == ["reader" if marked else "association"] * 4


def test_a_slow_handler_on_the_reader_is_not_cut_off_by_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the reader thread serves a request the association's thread must not take the quiet socket for an
    idle association (it waits for the reader's ``serving`` lock, and the idle timer is restarted before that
    lock is released): network_timeout 1 s, a handler taking 2.5 s — answered, not aborted."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")

    def slow(event: Any) -> int:
        time.sleep(2.5)
        return 0x0000

    handler = store.reader_safe(slow)
    ae = AE(ae_title="DIRECT")
    ae.network_timeout = 1
    ae.supported_contexts = [*AllStoragePresentationContexts]
    srv = lean.start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, handler)], None)
    try:
        ds = pydicom.dcmread(CT)
        client = AE(ae_title="SENDER")
        client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = client.associate("127.0.0.1", srv.server_address[1], ae_title="DIRECT")
        assert assoc.is_established
        rsp = assoc.send_c_store(ds)
        assert int(rsp.Status) == 0x0000
        assoc.release()
    finally:
        store._READER_SAFE.discard(slow)
        srv.shutdown()
