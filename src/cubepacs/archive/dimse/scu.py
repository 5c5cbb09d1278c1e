"""C-STORE SCU: send stored instances to a peer unchanged, decompressing only when the peer needs it.

Used by ``cubepacs send``, the archive's ``/api/send`` endpoint, C-MOVE and C-GET. For each (SOP class, stored
transfer syntax) one presentation context is proposed with the stored syntax alone, and per SOP class one more
with the uncompressed syntaxes (Explicit, then Implicit VR Little Endian). When the peer accepted the stored
syntax, the stored dataset bytes (everything after the file meta) go out as they are: no group length dropped,
no VR changed, no padding lost. Otherwise the instance is decoded with pydicom and sent uncompressed. More than
128 contexts are spread over several associations.

pynetdicom's ``Association.send_c_store`` always re-encodes a pydicom Dataset; :func:`store_encoded` is the small
part of it that sends an already encoded dataset (the same steps, with our bytes as the primitive's data set).

Example
-------
>>> rows = [{"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax": "1.2.840.10008.1.2.4.70"},
...         {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax": "1.2.840.10008.1.2.1"}]
>>> [(len(cxs), len(part)) for cxs, part in plan(rows)]
[(3, 2)]
"""

from __future__ import annotations

import functools
import logging
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext

from cubepacs.errors import CubepacsError

log = logging.getLogger("cubepacs.dimse")

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class SendError(CubepacsError, ConnectionError):
    """A peer that cannot be reached or that accepted no usable presentation context."""


@dataclass
class SendResult:
    """What happened to one instance: the peer's C-STORE status and how it was sent."""

    sop_uid: str
    status: int | None  # None: never sent (no context, unreadable, no association)
    sent_as: str  # "as stored (<ts>)", "decoded to <ts>" or the reason it was not sent

    @property
    def ok(self) -> bool:
        """Success (0x0000) or a warning (0xB000-0xB00F, 0x0107, 0x0116)."""
        return self.status is not None and (self.status == 0 or self.status in (0x0107, 0x0116)
                                            or 0xB000 <= self.status <= 0xB00F)


class StoredInstance(Dataset):
    """A stored instance as pynetdicom's C-GET/C-MOVE machinery wants it (a Dataset with SOP Class/Instance UID
    and a file meta Transfer Syntax UID), whose bytes are read only when it is sent."""

    def __init__(self, row: dict[str, Any], load: Callable[[], bytes]) -> None:
        super().__init__()
        self.SOPClassUID = row.get("sop_class_uid") or SECONDARY_CAPTURE
        self.SOPInstanceUID = row["sop_uid"]
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = row.get("transfer_syntax") or ExplicitVRLittleEndian
        self._cp_load = load
        self._cp_fallback: Callable[[StoredInstance], tuple[Dataset, str]] | None = None
        self._cp_results: list[SendResult] | None = None

    def load(self) -> bytes:
        """The stored Part 10 bytes."""
        return self._cp_load()


def _syntax(row: dict[str, Any]) -> str:
    return str(row.get("transfer_syntax") or ExplicitVRLittleEndian)


def _contexts_of(sop: str, syntaxes: list[str]) -> list[PresentationContext]:
    # each stored syntax alone (an acceptor picks by its own preference within a context: alone, the stored one
    # is taken whenever the peer knows it), then the uncompressed ones for the peers that know none of them
    # (a deflated dataset goes out inflated: peers were seen to time out on a stored deflate stream)
    out = [build_context(sop, [ts]) for ts in syntaxes if ts not in DEFLATED]
    out.append(build_context(sop, list(UNCOMPRESSED)))
    return out


def plan(rows: Iterable[dict[str, Any]]) -> list[tuple[list[PresentationContext], list[dict[str, Any]]]]:
    """Group instance rows into associations: each group's contexts (stored syntax alone per SOP class and
    syntax, plus the uncompressed ones per SOP class) fit in 128."""
    by_sop: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        by_sop.setdefault(r.get("sop_class_uid") or SECONDARY_CAPTURE, {}).setdefault(_syntax(r), []).append(r)
    groups: list[tuple[list[PresentationContext], list[dict[str, Any]]]] = []
    contexts: list[PresentationContext] = []
    members: list[dict[str, Any]] = []
    for sop, per_ts in by_sop.items():
        cxs = _contexts_of(sop, list(per_ts))
        if len(cxs) > MAX_CONTEXTS:  # more than 127 compressed syntaxes of one class cannot happen
            cxs = cxs[-MAX_CONTEXTS:]
        if contexts and len(contexts) + len(cxs) > MAX_CONTEXTS:
            groups.append((contexts, members))
            contexts, members = [], []
        contexts.extend(cxs)
        for part in per_ts.values():
            members.extend(part)
    if members:
        groups.append((contexts, members))
    return groups


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts in a Part 10 file (after preamble and group 0002, always Explicit VR LE)."""
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data):
        group, _ = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def inflate(data: bytes) -> bytes:
    """The dataset of a deflated Part 10 file, inflated: the same explicit VR little endian bytes it was made of."""
    import zlib

    return zlib.decompress(data[dataset_offset(data):], -zlib.MAX_WBITS)


def decode_to(data: bytes, syntax: str) -> bytes:
    """The dataset of a Part 10 file re-encoded uncompressed in ``syntax`` (Explicit or Implicit VR LE), pixels
    decoded by pydicom (big endian swapped, compressed decompressed)."""
    import pydicom
    from pynetdicom.dsutils import encode

    target = UID(syntax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data))
        stored = ds.file_meta.TransferSyntaxUID
        if stored.is_compressed:
            ds.decompress()
        elif not stored.is_little_endian and "PixelData" in ds:
            arr = ds.pixel_array
            ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
        encoded = encode(ds, target.is_implicit_VR, True, False)
    if encoded is None:
        raise SendError(f"instance {ds.get('SOPInstanceUID', '?')} cannot be encoded in {syntax}")
    return bytes(encoded)


def _context(assoc: Any, sop: str, syntax: str) -> PresentationContext | None:
    """An accepted context for ``sop`` in exactly ``syntax`` where we may send (SCU role; on a C-GET association
    the requestor gave us the SCP's)."""
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop and cx.transfer_syntax[0] == syntax and cx.as_scu:
            return cx  # type: ignore[no-any-return]
    return None


def store_encoded(assoc: Any, context: PresentationContext, sop_class: str, sop_uid: str, payload: bytes,
                  msg_id: int = 1, originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
    """Send an already encoded dataset with C-STORE over ``context``; the peer's status (empty on no answer).

    The steps of pynetdicom's ``Association.send_c_store`` after encoding (pause the reactor, send, wait for the
    response), so that the bytes go out exactly as given.
    """
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req.MoveOriginatorApplicationEntityTitle = originator_aet
    req.MoveOriginatorMessageID = originator_id
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_uid
    req.DataSet = BytesIO(payload)
    if getattr(assoc, "_cp_held", False):  # our own association: its reactor is held, nothing can race us
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    else:
        assoc._reactor_checkpoint.clear()
        try:
            while not assoc._is_paused:
                time.sleep(0.0001)
            assoc.dimse.send_msg(req, context.context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)  # type: ignore[no-any-return]


def send_stored(assoc: Any, inst: StoredInstance, msg_id: int = 1, originator_aet: str | None = None,
                originator_id: int | None = None) -> tuple[Dataset, str]:
    """Send one stored instance over ``assoc``: as stored when the peer accepted its syntax, else decoded to an
    accepted uncompressed syntax. Returns (status dataset, how it was sent); SendError when no context fits."""
    sop, uid, stored = str(inst.SOPClassUID), str(inst.SOPInstanceUID), str(inst.file_meta.TransferSyntaxUID)
    cx = _context(assoc, sop, stored)
    data = inst.load()
    if cx is not None:
        payload, how = data[dataset_offset(data):], f"as stored ({stored})"
    elif stored in DEFLATED and (cx := _context(assoc, sop, ExplicitVRLittleEndian)) is not None:
        payload, how = inflate(data), f"inflated to {ExplicitVRLittleEndian}"
    else:
        for ts in UNCOMPRESSED:
            cx = _context(assoc, sop, ts)
            if cx is not None:
                payload, how = decode_to(data, ts), f"decoded to {ts}"
                break
        else:
            raise SendError(f"the peer accepted no context for {sop} in {stored} or uncompressed")
    status = store_encoded(assoc, cx, sop, uid, payload, msg_id, originator_aet, originator_id)
    return status, how


def _hooked_send_c_store(assoc: Any, original: Callable[..., Dataset], dataset: Any, msg_id: int = 1,
                         priority: int = 2, originator_aet: str | None = None,
                         originator_id: int | None = None) -> Dataset:
    """``send_c_store`` of our associations: StoredInstance objects go out byte-preserving, with a record of how."""
    if not isinstance(dataset, StoredInstance):
        return original(dataset, msg_id=msg_id, priority=priority, originator_aet=originator_aet,
                        originator_id=originator_id)
    try:
        try:
            status, how = send_stored(assoc, dataset, msg_id, originator_aet, originator_id)
        except SendError:
            if dataset._cp_fallback is None:
                raise
            status, how = dataset._cp_fallback(dataset)
    except Exception as exc:
        log.warning("C-STORE of %s to %s failed: %s", dataset.SOPInstanceUID, assoc.acceptor.ae_title, exc)
        if dataset._cp_results is not None:
            dataset._cp_results.append(SendResult(str(dataset.SOPInstanceUID), None, str(exc)))
        raise
    if dataset._cp_results is not None:
        dataset._cp_results.append(SendResult(str(dataset.SOPInstanceUID), status.get("Status"), how))
    return status


def hold_reactor(assoc: Any) -> None:
    """Keep a requestor association's reactor paused for its whole life.

    pynetdicom pauses the reactor thread around each send by clearing a checkpoint and waiting for a
    ``_is_paused`` flag; the flag can still read True just after the reactor passed the checkpoint, and then the
    reactor takes the C-STORE response off the queue ("Received unexpected C-STORE service message") and the
    sender waits for its DIMSE timeout — seen here under load. An association that only sends C-STOREs needs no
    reactor: it is paused once (the flag seen True twice, 5 ms apart) and left paused; ``release()`` pauses it
    the same way, so it is unaffected.
    """
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if assoc._is_paused:
            time.sleep(0.005)
            if assoc._is_paused:
                break
        time.sleep(0.0005)
    assoc._cp_held = True


def hook(assoc: Any) -> Any:
    """Make ``assoc.send_c_store`` send StoredInstance objects byte-preserving (other datasets as before)."""
    original = assoc.send_c_store
    assoc.send_c_store = lambda dataset, **kw: _hooked_send_c_store(assoc, original, dataset, **kw)
    return assoc


class ArchiveAE(AE):
    """A pynetdicom AE whose requested associations (C-MOVE destinations included) send stored bytes."""

    def associate(self, *args: Any, **kwargs: Any) -> Any:
        assoc = super().associate(*args, **kwargs)
        if assoc.is_established:
            hold_reactor(assoc)
        return hook(assoc)


def _new_ae(ae_title: str, timeout: float) -> ArchiveAE:
    ae = ArchiveAE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _nodelay(assoc: Any) -> None:
    import socket

    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Overflow:
    """Associations beyond the first for a C-MOVE with more than 128 contexts, opened one group at a time."""

    def __init__(self, ae_title: str, host: str, port: int, called: str, timeout: float = 30.0) -> None:
        self.ae = _new_ae(ae_title, timeout)
        self.host, self.port, self.called = host, port, called
        self.assoc: Any = None
        self.group = -1

    def sender(self, group: int, contexts: list[PresentationContext],
               originator: tuple[str, int] | None) -> Callable[[StoredInstance], tuple[Dataset, str]]:
        """A fallback for the instances of ``group``: sends them over that group's association."""

        def send(inst: StoredInstance) -> tuple[Dataset, str]:
            if self.group != group:
                self.close()
                self.assoc = self.ae.associate(self.host, self.port, contexts=contexts, ae_title=self.called)
                self.group = group
                if not self.assoc.is_established:
                    raise SendError(f"association {group + 1} with {self.called} at {self.host}:{self.port} failed")
                _nodelay(self.assoc)
            aet, mid = originator or (None, None)
            return send_stored(self.assoc, inst, originator_aet=aet, originator_id=mid)

        return send

    def close(self) -> None:
        """Release the open association, if any."""
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


def send_rows(rows: list[dict[str, Any]], load: Callable[[dict[str, Any]], bytes], host: str, port: int,
              called_ae: str, calling_ae: str = "CUBEPACS", timeout: float = 30.0) -> Iterator[SendResult]:
    """Send instances (index rows) to a peer with C-STORE, yielding one result per instance as it is done.

    Raises SendError when the peer cannot be reached at all.
    """
    ae = _new_ae(calling_ae, timeout)
    for n, (contexts, members) in enumerate(plan(rows)):
        assoc = ae.associate(host, port, contexts=contexts, ae_title=called_ae)
        if not assoc.is_established:
            if n == 0:
                raise SendError(f"no association with {called_ae} at {host}:{port} (rejected, aborted or "
                                "unreachable)")
            for r in members:
                yield SendResult(r["sop_uid"], None, "association refused")
            continue
        _nodelay(assoc)
        try:
            for k, r in enumerate(members):
                if not assoc.is_established:
                    yield SendResult(r["sop_uid"], None, "association lost")
                    continue
                inst = StoredInstance(r, functools.partial(load, r))
                try:
                    status, how = send_stored(assoc, inst, msg_id=k % 65535 + 1)
                except Exception as exc:
                    yield SendResult(r["sop_uid"], None, f"not sent: {exc}")
                    continue
                yield SendResult(r["sop_uid"], status.get("Status"), how)
        finally:
            if assoc.is_established:
                assoc.release()
