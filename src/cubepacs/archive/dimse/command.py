"""C-STORE requests read from their command bytes, without a pydicom Dataset.

Why (pynetdicom 3.0, profiled under 4 storing associations): every received DIMSE message has its command set
decoded into a pydicom Dataset, and ``message_to_primitive`` then walks that Dataset element by element (keyword
lookups, value conversion) — about a tenth of the archive's CPU per stored instance. A command set is a handful of
implicit-VR little-endian elements; for the C-STORE-RQ, the one message an archive receives thousands of times,
they are read here straight from the bytes into the same ``C_STORE`` primitive pynetdicom would build (its
setters still validate every value). Any other message, or a command set this reader does not take, goes
pynetdicom's way unchanged. The other way, the usual C-STORE-RSP (a status, nothing else) and the P-DATA-TF
carrying it are encoded from bytes (:func:`store_response`, :func:`pdata_tf`).

Example
-------
>>> from pynetdicom.dimse_primitives import C_STORE
>>> from pynetdicom.dimse_messages import C_STORE_RQ
>>> from pynetdicom.dsutils import encode
>>> req = C_STORE()
>>> req.MessageID, req.AffectedSOPClassUID, req.Priority = 7, "1.2.840.10008.5.1.4.1.1.2", 2
>>> req.AffectedSOPInstanceUID = "1.2.3"
>>> msg = C_STORE_RQ()
>>> msg.primitive_to_message(req)
>>> fields = command_fields(bytes(encode(msg.command_set, True, True)))
>>> store_request(fields).MessageID, str(store_request(fields).AffectedSOPInstanceUID)
(7, '1.2.3')
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config, evt
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

_HEADER = struct.Struct("<HHI").unpack_from
_US = struct.Struct("<H").unpack_from
_KNOWN = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})


def command_fields(data: bytes) -> dict[int, bytes] | None:
    """The elements (element number -> value bytes) of an implicit VR little endian command set of group 0000,
    or None when it holds anything else (then pynetdicom decodes it)."""
    fields: dict[int, bytes] = {}
    pos, size = 0, len(data)
    while pos < size:
        if pos + 8 > size:
            return None
        group, elem, length = _HEADER(data, pos)
        end = pos + 8 + length
        if group != 0 or elem not in _KNOWN or end > size:
            return None
        fields[elem] = data[pos + 8 : end]
        pos = end
    return fields


def _text(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii")


def store_request(fields: dict[int, bytes]) -> C_STORE:
    """The C-STORE primitive of a C-STORE-RQ command set (as ``C_STORE_RQ.message_to_primitive`` builds it)."""
    req = C_STORE()
    req.MessageID = _US(fields[0x0110])[0]
    req.AffectedSOPClassUID = _text(fields[0x0002])
    req.AffectedSOPInstanceUID = _text(fields[0x1000])
    req.Priority = _US(fields[0x0700])[0]
    if fields.get(0x1030):
        req.MoveOriginatorApplicationEntityTitle = fields[0x1030].decode("ascii").strip()
    if fields.get(0x1031):
        req.MoveOriginatorMessageID = _US(fields[0x1031])[0]
    return req


def _is_store_request(fields: dict[int, bytes] | None) -> bool:
    if fields is None or not all(len(fields.get(e, b"")) == 2 for e in (0x0100, 0x0110, 0x0700, 0x0800)):
        return False
    return (_US(fields[0x0100])[0] == 0x0001 and _US(fields[0x0800])[0] != 0x0101
            and bool(fields.get(0x0002)) and bool(fields.get(0x1000)))


class LeanMessage(DIMSEMessage):
    """A received DIMSE message: a C-STORE-RQ becomes a ``LeanStoreRequest``, anything else pynetdicom's class."""

    def decode_msg(self, primitive: P_DATA, assoc: Any = None) -> bool:
        """pynetdicom's ``decode_msg`` (no chunked-to-file receiving) with the C-STORE-RQ command read by hand."""
        if primitive.__class__ != P_DATA or primitive is None:
            return False
        for context_id, data in primitive.presentation_data_value_list:
            header = data[0]
            if header & 1:
                command = self.encoded_command_set
                command.write(data[1:])
                if header & 2:
                    self.context_id = context_id
                    fields = command_fields(command.getvalue())
                    if _is_store_request(fields):
                        self.__class__ = LeanStoreRequest
                        self.fields = fields
                        continue
                    self.command_set = decode(command, True, True)
                    self.__class__ = _MESSAGE_TYPES[int(self.command_set.CommandField)][1]  # type: ignore[assignment]
                    if self.command_set.CommandDataSetType == 0x0101:
                        return True
            else:
                self.data_set.write(data[1:])  # type: ignore[union-attr]
                if header & 2:
                    return True
        return False


class LeanStoreRequest(LeanMessage, C_STORE_RQ):
    """A C-STORE-RQ whose command set was read from its bytes (``command_set`` is built only if asked for)."""

    fields: dict[int, bytes]

    def message_to_primitive(self) -> C_STORE:
        req = store_request(self.fields)
        req.DataSet = self.data_set
        req._context_id = self.context_id
        req._dataset_path = None
        req._dataset_file = None
        return req

    @property
    def command_set(self) -> Dataset:  # type: ignore[override]
        """pynetdicom's Dataset of the command, decoded only if something asks for it."""
        return decode(BytesIO(b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in self.fields.items())),
                      True, True)


def new_message() -> DIMSEMessage:
    """An empty received message that reads a C-STORE-RQ by hand (pynetdicom's ``DIMSEMessage`` set up, then
    given this module's ``decode_msg``)."""
    message = DIMSEMessage()
    message.__class__ = LeanMessage
    return message


def usable(assoc: Any) -> bool:
    """True when nothing expects pynetdicom's own message objects: no DIMSE-level event handler bound, pynetdicom
    not logging at DEBUG, datasets not received chunked to files."""
    return (_config.LOG_HANDLER_LEVEL == "none" and not _config.STORE_RECV_CHUNKED_DATASET
            and not assoc.get_handlers(evt.EVT_DIMSE_RECV))


def _element(group_element: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian command element (the command set's encoding, PS3.7 6.3.1)."""
    return struct.pack("<HHI", group_element >> 16, group_element & 0xFFFF, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" * (len(raw) % 2)


def store_response(message_id: int, sop_class: str, sop_instance: str, status: int) -> bytes:
    """The encoded command set of a C-STORE-RSP that carries only a status (the common answer), built from
    bytes rather than through a pydicom Dataset.

    Example
    -------
    >>> rsp = store_response(7, "1.2", "1.2.3", 0)
    >>> len(rsp), rsp[:12].hex()  # (0000,0000) Command Group Length: 66 bytes follow
    (78, '000000000400000042000000')
    """
    body = b"".join((_element(0x00000002, _uid(sop_class)), _element(0x00000100, b"\x01\x80"),
                     _element(0x00000120, struct.pack("<H", message_id)), _element(0x00000800, b"\x01\x01"),
                     _element(0x00000900, struct.pack("<H", status)), _element(0x00001000, _uid(sop_instance))))
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def pdata_tf(context_id: int, value: bytes) -> bytes:
    """A P-DATA-TF PDU holding one presentation data value item (``value``: control header and fragment).

    >>> pdata_tf(1, b"\\x03ab").hex()  # type 04, length 8; item length 4, context 1, header 03, "ab"
    '0400000000080000000401036162'
    """
    item = struct.pack(">IB", len(value) + 1, context_id) + value
    return b"\x04\x00" + struct.pack(">I", len(item)) + item
