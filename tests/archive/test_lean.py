"""The lean acceptor's byte-level pieces agree with pynetdicom's own encoding."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from cubepacs.archive.dimse.command import store_response


@pytest.mark.parametrize(("sop_class", "sop_instance", "status", "message_id"), [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", 0x0000, 1),  # odd-length UID: padded with NUL
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.8.498.12", 0xC000, 65535),
    ("1.2.840.10008.5.1.4.1.1.7", "2.25.1", 0xA700, 300),
])
def test_store_response_equals_pynetdicom_encoding(sop_class: str, sop_instance: str, status: int,
                                                   message_id: int) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    assert store_response(message_id, sop_class, sop_instance, status) == encode(msg.command_set, True, True)


@pytest.mark.parametrize("originator", [None, ("MOVER", 17)])
def test_store_request_read_from_bytes_equals_pynetdicom(originator: tuple[str, int] | None) -> None:
    """A C-STORE-RQ command set read by ``command`` gives the primitive pynetdicom's Dataset route gives."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.pdu_primitives import P_DATA

    from cubepacs.archive.dimse.command import LeanStoreRequest, new_message

    req = C_STORE()
    req.MessageID, req.Priority = 300, 1
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.8.498.1"
    if originator:
        req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = originator
    req.DataSet = BytesIO(b"\x08\x00\x16\x00")
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[5, b"\x03" + bytes(encode(msg.command_set, True, True))],
                                          [5, b"\x02" + b"\x08\x00\x16\x00"]]
    lean, plain = new_message(), new_message()
    assert lean.decode_msg(pdata)
    assert type(lean) is LeanStoreRequest
    theirs = C_STORE_RQ()
    theirs.command_set, theirs.data_set, theirs.context_id = msg.command_set, BytesIO(b"\x08\x00\x16\x00"), 5
    mine, expected = lean.message_to_primitive(), theirs.message_to_primitive()
    for name in ("MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(mine, name) == getattr(expected, name), name
    assert mine._context_id == 5 and mine.DataSet.getvalue() == b"\x08\x00\x16\x00"
    assert lean.command_set.AffectedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    # anything but a C-STORE-RQ goes pynetdicom's way
    echo = P_DATA()
    from pynetdicom.dimse_messages import C_ECHO_RQ
    from pynetdicom.dimse_primitives import C_ECHO

    e = C_ECHO()
    e.MessageID = 1
    em = C_ECHO_RQ()
    em.primitive_to_message(e)
    echo.presentation_data_value_list = [[1, b"\x03" + bytes(encode(em.command_set, True, True))]]
    assert plain.decode_msg(echo) and type(plain) is C_ECHO_RQ


@pytest.mark.parametrize(("context_id", "value"), [(1, b"\x03" + b"\x00" * 77),
                                                  (255, b"\x02" + bytes(range(256)) * 40)])
def test_direct_pdata_equals_pynetdicom_encoding(context_id: int, value: bytes) -> None:
    """The P-DATA-TF a C-STORE-RSP is sent in directly (``LeanDUL.send_now``) is pynetdicom's own encoding."""
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from cubepacs.archive.dimse.command import pdata_tf

    primitive = P_DATA()
    primitive.presentation_data_value_list.append([context_id, value])
    assert pdata_tf(context_id, value) == P_DATA_TF(primitive).encode()


def test_buffered_socket_reads_ahead_and_serves_exact_pieces() -> None:
    import queue
    import socket
    from types import SimpleNamespace

    from cubepacs.archive.dimse.bufsocket import BufferedSocket

    ours, peer = socket.socketpair()
    owner = SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue()))  # what AssociationSocket reads
    sock = BufferedSocket(owner, client_socket=ours)  # type: ignore[arg-type]
    assert owner.dul.event_queue.get_nowait() == "Evt5" and not sock.ready
    pdus = [bytes([4, 0]) + len(body).to_bytes(4, "big") + body for body in (b"a" * 16384, b"b" * 10, b"c" * 70000)]
    peer.sendall(b"".join(pdus))
    got = []
    for _ in pdus:
        head = sock.recv(6)
        got.append(bytes(head + sock.recv(int.from_bytes(head[2:], "big"))))
        assert sock.ready == (len(got) < len(pdus))  # all was sent: readable until all is read, buffered or not
    assert got == pdus and not sock.buffered()
    peer.sendall(b"xyz")
    peer.close()
    assert bytes(sock.recv(10)) == b"xyz"  # the peer closed: what there is, as pynetdicom's recv
    ours.close()


def test_buffered_socket_never_asks_for_what_a_header_claims() -> None:
    """A PDU header may claim 4 GB (crafted here): recv() allocates what it is asked for, so reads stay at
    READ_SIZE whatever the DUL asks."""
    import queue
    import socket
    from types import SimpleNamespace

    from cubepacs.archive.dimse.bufsocket import READ_SIZE, BufferedSocket

    class Asked:  # the real socket, with the sizes asked of it noted
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.sizes = sock, []

        def recv(self, n: int) -> bytes:
            self.sizes.append(n)
            return self.sock.recv(n)

    ours, peer = socket.socketpair()
    sock = BufferedSocket(SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue())),  # type: ignore[arg-type]
                          client_socket=ours)
    asked = Asked(ours)
    sock.socket = asked  # type: ignore[assignment]
    import threading

    def send() -> None:  # more than the socket pair buffers: from another thread
        peer.sendall(b"\x04\x00\xff\xff\xff\xf0" + b"x" * 300_000)
        peer.close()

    sender = threading.Thread(target=send)
    sender.start()
    head = sock.recv(6)
    assert len(sock.recv(int.from_bytes(head[2:], "big"))) == 300_000  # short: the peer closed
    assert max(asked.sizes) == READ_SIZE
    sender.join()
    ours.close()


def test_an_association_sleeps_until_its_idle_timeout_is_due() -> None:
    """The reactor's sleep (``_tick``): short while associating, else until the idle timeout, within bounds."""
    from types import SimpleNamespace

    from pynetdicom.timer import Timer

    from cubepacs.archive.dimse.lean import _LONG_TICK, _TICK, _tick

    def assoc(established: bool, timeout: float | None, started: bool = True) -> object:
        timer = Timer(timeout)
        if started:
            timer.start()
        return SimpleNamespace(is_established=established, dul=SimpleNamespace(_idle_timer=timer))

    assert _tick(assoc(False, 60)) == _TICK  # associating or releasing: ARTIM and the like are looked at often
    assert _tick(assoc(True, 60)) == _LONG_TICK
    assert _tick(assoc(True, None)) == _LONG_TICK  # no idle timeout at all
    assert _TICK <= _tick(assoc(True, 0.3)) <= 0.3  # due soon: woken when it is
    assert _tick(assoc(True, 0.001)) == _TICK  # due (or past): never a busy loop
    assert _tick(assoc(True, 5, started=False)) == _LONG_TICK
