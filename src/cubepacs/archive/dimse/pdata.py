"""P-DATA-TF PDUs received on an established association, handed to DIMSE without pynetdicom's PDU objects.

Why (pynetdicom 3.0): DCMTK's storescu sends a 512² CT instance as six P-DATA-TF PDUs (measured: 30 for five
files). For each, pynetdicom's DUL copies the bytes into a new buffer, decodes a ``P_DATA_TF`` PDU object (a copy
of every value), queues an event, runs one state-machine step (Sta6 + Evt10 → DT-2 → Sta6: "send a P-DATA
indication to DIMSE"), and builds a ``P_DATA`` primitive from the PDU. :func:`receive` does what that step does —
hands DIMSE a ``P_DATA`` primitive — straight from the bytes read, its values views of them, when nothing else is
queued before the PDU and nothing looks at PDU objects or state-machine transitions. Anything else (another state,
another PDU type, items that do not add up) goes pynetdicom's way unchanged.

Example
-------
>>> body = bytes.fromhex("04 00 00000008 00000004 01 03 6162")  # one item: context 1, last command fragment "ab"
>>> [(cid, bytes(value)) for cid, value in values(bytearray(body))]
[(1, b'\\x03ab')]
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

from cubepacs.archive.dimse import command, handshake
from cubepacs.archive.dimse.bufsocket import BufferedSocket

LOGGER = logging.getLogger("pynetdicom.dul")
_LENGTH = struct.Struct(">I").unpack_from


def values(pdu: bytearray) -> list[tuple[int, memoryview]] | None:
    """The presentation data values of a P-DATA-TF (its 6-byte header included) as (context ID, control header and
    fragment) pairs, the fragments views of ``pdu``; None when the items do not fill the PDU exactly."""
    view = memoryview(pdu)
    pos, end = 6, len(pdu)
    out: list[tuple[int, memoryview]] = []
    while pos < end:
        if pos + 4 > end:
            return None
        length = _LENGTH(pdu, pos)[0]
        if length < 2 or pos + 4 + length > end:
            return None
        out.append((pdu[pos + 4], view[pos + 5 : pos + 4 + length]))
        pos += 4 + length
    return out or None


def _direct(dul: Any) -> bool:
    assoc = dul.assoc
    return (dul.state_machine.current_state == "Sta6" and dul.event_queue.empty() and handshake.usable(assoc)
            and command.usable(assoc) and not assoc.get_handlers(evt.EVT_FSM_TRANSITION))


def receive(dul: Any) -> bool:
    """Read a P-DATA-TF from the DUL's socket and give it to DIMSE, as DT-2 would; False when the next PDU is to
    go pynetdicom's way (nothing has been read then)."""
    sock = dul.socket
    if not isinstance(sock, BufferedSocket) or not _direct(dul):
        return False
    head = sock.peek(6)
    if len(head) < 6 or head[0] != 0x04:
        return False
    size = 6 + _LENGTH(head, 2)[0]
    pdu = sock.recv(size)
    if len(pdu) != size:
        LOGGER.error(f"The received PDU is shorter than expected ({len(pdu)} of {size} bytes received)")
        dul.event_queue.put("Evt17")
        return True
    found = values(pdu)
    if found is None:  # pynetdicom decodes it (and answers what it finds wrong)
        try:
            decoded, event = dul._decode_pdu(pdu)
        except Exception as exc:
            LOGGER.error("Unable to decode the received PDU data: %s: %s", type(exc).__name__, exc)
            dul.event_queue.put("Evt19")
            return True
        dul.event_queue.put(event)
        dul._recv_pdu.put(decoded)
        return True
    primitive = P_DATA()
    primitive._presentation_data_value_list = found  # type: ignore[assignment]  # DIMSE only slices, writes them
    dul.assoc.dimse.receive_primitive(primitive)
    return True
