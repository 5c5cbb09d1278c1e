"""Association set-up cached per distinct A-ASSOCIATE-RQ (archive/dimse/handshake.py): the same request bytes get
the same answer, from DCMTK's storescu as from pynetdicom, and requests carrying a user identity are never cached."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from cubepacs.archive.dimse import handshake, lean
from tests.conftest import SERIES, dicom_files

CT = dicom_files(next(s for s in SERIES if s.name.startswith("ct_")))[:2]


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, int, list[str]]]:
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")  # as the archive's SCP runs (dimse/scp.py)
    ae = AE(ae_title="CACHED")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_pdu_size = 0
    stored: list[str] = []

    def on_store(event: Any) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    srv = lean.start_server(ae, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], None)
    try:
        yield ae, srv.server_address[1], stored
    finally:
        srv.shutdown()


def _associate(port: int, **kw: Any) -> tuple[list[tuple[str, str]], int]:
    client = AE(ae_title="SAMEAGAIN")
    client.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    client.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.4.70")
    client.add_requested_context("1.2.3.4.5.6")  # not a storage class: rejected
    assoc = client.associate("127.0.0.1", port, ae_title="CACHED", **kw)
    assert assoc.is_established
    accepted = sorted((str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts)
    rejected = len(assoc.rejected_contexts)
    assoc.release()
    return accepted, rejected


def test_same_request_same_answer_from_the_cache(server: tuple[Any, int, list[str]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, port, _ = server
    sent: list[bool] = []
    send = lean.LeanDUL.send_cached_accept

    def counted(dul: lean.LeanDUL) -> bool:
        sent.append(send(dul))
        return sent[-1]

    monkeypatch.setattr(lean.LeanDUL, "send_cached_accept", counted)
    before = len(handshake._REQUESTS)
    first = _associate(port)
    assert len(handshake._REQUESTS) == before + 1  # decoded once and kept
    again = [_associate(port) for _ in range(3)]
    assert len(handshake._REQUESTS) == before + 1  # served from the cache
    assert all(a == first for a in again)
    assert sent == [False, True, True, True]  # AE-7: encoded the first time, then sent as kept
    # the acceptor's preference (Implicit VR first); JPEG lossless is not offered by pynetdicom's defaults
    assert first == ([("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2")], 2)


def test_user_identity_requests_are_not_cached(server: tuple[Any, int, list[str]]) -> None:
    _, port, _ = server
    before = len(handshake._REQUESTS)
    uid = UserIdentityNegotiation()
    uid.user_identity_type = 1
    uid.primary_field = b"someone"
    for _ in range(2):
        _associate(port, ext_neg=[uid])
    assert len(handshake._REQUESTS) == before


def test_storescu_twice_both_stored(server: tuple[Any, int, list[str]]) -> None:
    """DCMTK's storescu proposes 128 contexts: the second association is answered from the cache and works."""
    _, port, stored = server
    env = {**os.environ, "TCP_NODELAY": "1"}
    for path in CT:
        out = subprocess.run(["storescu", "-aec", "CACHED", "127.0.0.1", str(port), str(path)], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
    assert len(stored) == 2 and len(set(stored)) == 2
    assert any(len(r.primitive.presentation_context_definition_list) == 128 for r in handshake._REQUESTS.values())


def test_accept_bytes_equal_a_fresh_encoding(server: tuple[Any, int, list[str]]) -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
    )
    from pynetdicom.presentation import negotiate_as_acceptor

    ae, port, _ = server
    _associate(port)
    _associate(port)
    kept = [r for r in handshake._REQUESTS.values() if r.accept_for(ae) is not None]
    assert kept
    for request in kept:
        rq = request.primitive
        result, _ = negotiate_as_acceptor(rq.presentation_context_definition_list, ae.supported_contexts, {})
        fresh = A_ASSOCIATE()
        fresh.application_context_name = rq.application_context_name
        fresh.calling_ae_title, fresh.called_ae_title = rq.calling_ae_title, rq.called_ae_title
        fresh.result, fresh.result_source = 0x00, 0x01
        fresh.presentation_context_definition_results_list = result
        user: list[Any] = []
        item = MaximumLengthNotification()
        item.maximum_length_received = 0
        user.append(item)
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = ae.implementation_class_uid
        user.append(impl)
        if ae.implementation_version_name:
            ver = ImplementationVersionNameNotification()
            ver.implementation_version_name = ae.implementation_version_name
            user.append(ver)
        fresh.user_information = user
        assert request.accept_for(ae) == A_ASSOCIATE_AC(fresh).encode()


def test_listener_backlog_holds_a_burst_of_senders(server: tuple[Any, int, list[str]]) -> None:
    """The kernel's listen queue (``ss`` shows it as Send-Q of a listening socket) takes 128 pending connections,
    not socketserver's 5: a burst of 32 storescu is not dropped into SYN retries."""
    _, port, _ = server
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert int(out.split()[2]) == 128, out
