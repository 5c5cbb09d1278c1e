"""C-STORE SCU: send stored instances to a peer unchanged, re-encoding them only when the peer needs it.

Used by ``cubepacs send``, the archive's ``/api/send`` endpoint, C-MOVE and C-GET. For each (SOP class, stored
transfer syntax) one presentation context is proposed with the stored syntax alone; per SOP class Explicit and
Implicit VR Little Endian alone (where not stored), and one context with the lossless compressed syntaxes this
host can encode (JPEG-LS, RLE, JPEG 2000 lossless). When the peer accepted the stored syntax, the stored dataset
bytes (everything after the file meta) go out as they are: no group length dropped, no VR changed, no padding
lost (a deflated one deflated). Otherwise the instance is re-encoded by :mod:`cubepacs.dicom.transcode` — every
UID and value kept, only the transfer syntax and pixel encoding changed — in the best lossless syntax the peer
accepted (Explicit VR LE first, Implicit last). More than 128 contexts are spread over several associations.

pynetdicom's ``Association.send_c_store`` always re-encodes a pydicom Dataset; :func:`store_encoded` is the small
part of it that sends an already encoded dataset (the same steps, with our bytes as the primitive's data set).

Example
-------
>>> rows = [{"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax": "1.2.840.10008.1.2.4.70"},
...         {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax": "1.2.840.10008.1.2.1"}]
>>> [(len(cxs), len(part)) for cxs, part in plan(rows)]
[(4, 2)]
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext

from cubepacs.dicom.transcode import (
    DEFLATED,
    EXPLICIT_LE,
    IMPLICIT_LE,
    can_encode,
    dataset_offset,
    lossless_rank,
    transcode_dataset,
)
from cubepacs.errors import CodecError, CubepacsError

log = logging.getLogger("cubepacs.dimse")

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE)
# lossless compressed syntaxes an instance can be re-encoded in here, proposed in one context per SOP class for
# the peers that take none of the stored or uncompressed ones
ENCODABLE = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90")
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class SendError(CubepacsError, ConnectionError):
    """A peer that cannot be reached or that accepted no usable presentation context."""


@dataclass
class SendResult:
    """What happened to one instance: the peer's C-STORE status and how it was sent."""

    sop_uid: str
    status: int | None  # None: never sent (no context, unreadable, no association)
    sent_as: str  # "as stored (<ts>)", "transcoded to <ts>" or the reason it was not sent
    comment: str = ""  # the peer's Error Comment (0000,0902), when its response had one

    @classmethod
    def of(cls, sop_uid: str, status: Dataset, sent_as: str) -> SendResult:
        """The result of a C-STORE the peer answered with ``status`` (empty: it did not answer)."""
        code = status.get("Status")
        return cls(sop_uid, None if code is None else int(code), sent_as, str(status.get("ErrorComment", "") or ""))

    def describe(self) -> str:
        """One line for a log or a report: the instance, the peer's own status and comment, how it was sent.

        Example
        -------
        >>> SendResult("1.2.3", 0xA900, "as stored (1.2.840.10008.1.2.1)", "UID mismatch").describe()
        "1.2.3: peer status 0xA900 ('UID mismatch'), as stored (1.2.840.10008.1.2.1)"
        """
        if self.status is None:
            return f"{self.sop_uid}: not stored: {self.sent_as}"
        comment = f" ({self.comment!r})" if self.comment else ""
        return f"{self.sop_uid}: peer status 0x{self.status:04X}{comment}, {self.sent_as}"

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
    # each syntax alone (an acceptor picks by its own preference within a context: pynetdicom's would take Implicit
    # VR over Explicit): the stored ones (a deflated one goes out deflated), Explicit and Implicit VR Little Endian,
    # then the lossless compressed ones re-encoding can produce, for the peers that take none of the others
    out = [build_context(sop, [ts]) for ts in syntaxes]
    out += [build_context(sop, [ts]) for ts in UNCOMPRESSED if ts not in syntaxes]
    encodable = [ts for ts in ENCODABLE if can_encode(ts) and ts not in syntaxes]
    if encodable:
        out.append(build_context(sop, encodable))
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


def _candidates(assoc: Any, sop: str) -> list[PresentationContext]:
    """The accepted contexts of ``sop`` we may send on, in a syntax any instance can be re-encoded to without
    loss (``transcode.LOSSLESS_ORDER``), best first."""
    ranked = []
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop and cx.as_scu:
            rank = lossless_rank(str(cx.transfer_syntax[0]))
            if rank is not None:
                ranked.append((rank, cx.context_id, cx))
    return [cx for _, _, cx in sorted(ranked, key=lambda t: (t[0], t[1]))]


def send_stored(assoc: Any, inst: StoredInstance, msg_id: int = 1, originator_aet: str | None = None,
                originator_id: int | None = None) -> tuple[Dataset, str]:
    """Send one stored instance over ``assoc``: as stored when the peer accepted its syntax, else re-encoded
    (``cubepacs.dicom.transcode``: every UID and value kept) in the best lossless syntax the peer accepted.
    Returns (status dataset, how it was sent); SendError when no accepted context fits or it cannot be
    re-encoded (the reason named)."""
    sop, uid, stored = str(inst.SOPClassUID), str(inst.SOPInstanceUID), str(inst.file_meta.TransferSyntaxUID)
    cx = _context(assoc, sop, stored)
    data = inst.load()
    if cx is not None:
        payload, how = data[dataset_offset(data):], f"as stored ({stored})"
        if stored == DEFLATED and len(payload) % 2:
            payload += b"\0"  # PS3.5 A.5: a deflated stream of odd length is padded (DCMTK refuses it unpadded)
    else:
        reasons = []
        for cx in _candidates(assoc, sop):
            ts = str(cx.transfer_syntax[0])
            try:
                payload, how = transcode_dataset(data, ts), f"transcoded to {ts}"
                break
            except CodecError as exc:
                reasons.append(str(exc))
        else:
            accepted = sorted({str(c.transfer_syntax[0]) for c in assoc.accepted_contexts if c.abstract_syntax == sop})
            why = "; ".join(reasons) if reasons else f"the peer accepted {sop} only in {accepted or 'nothing'}"
            raise SendError(f"instance {uid} (stored as {stored}) cannot be sent losslessly: {why}")
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
    except Exception as exc:  # logged with the others by the caller (retrieve._log_failures)
        if dataset._cp_results is not None:
            dataset._cp_results.append(SendResult(str(dataset.SOPInstanceUID), None, str(exc)))
        raise
    if dataset._cp_results is not None:
        dataset._cp_results.append(SendResult.of(str(dataset.SOPInstanceUID), status, how))
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
                yield SendResult.of(r["sop_uid"], status, how)
        finally:
            if assoc.is_established:
                assoc.release()
