"""The lean acceptor's byte-level pieces agree with pynetdicom's own encoding."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from cubepacs.archive.dimse.lean import store_response


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
