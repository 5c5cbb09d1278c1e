"""C-GET and C-MOVE handlers: the stored bytes go out unchanged wherever the peer accepted their syntax.

Both yield :class:`~cubepacs.archive.dimse.scu.StoredInstance` objects to pynetdicom, whose associations (ours
are :class:`~cubepacs.archive.dimse.scu.ArchiveAE` or hooked) send them byte-preserving, or re-encoded with every
UID kept where the peer took another syntax (``scu.send_stored``). A C-MOVE proposes one context per (SOP class,
stored syntax) plus uncompressed and lossless compressed fallbacks; beyond 128 contexts further associations to
the destination are opened one group at a time. A C-GET's syntaxes were chosen at negotiation (``syntaxes.py``).
How the instances went out is logged in a summary line, and each failed one on a line of its own with the peer's
status and comment or the reason it was not sent.

Example
-------
>>> _summary([])
'0 sent'
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_GET

from cubepacs.archive.dimse.handlers import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_PENDING,
    STATUS_REFUSED_NOT_AUTHORIZED,
    _filters,
    called_ae,
    calling_ae,
)
from cubepacs.archive.dimse.scu import Overflow, SendResult, StoredInstance, hook, plan
from cubepacs.archive.index.store import Index
from cubepacs.archive.storage.base import Storage

log = logging.getLogger("cubepacs.dimse")
_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID")


def retrieve_rows(identifier: Dataset, tenant: str, index: Index) -> list[dict[str, Any]]:
    """The instance rows a C-GET/C-MOVE identifier names (ValueError without any UID or PatientID)."""
    filters = _filters(identifier, _KEYS)
    if not filters:
        raise ValueError("a retrieve needs a StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID or PatientID")
    return index.search_instances(tenant, filters, limit=65_535)


def _summary(results: list[SendResult]) -> str:
    how = Counter(r.sent_as.split(" (")[0].split(" to ")[0] if r.ok else "failed" for r in results)
    return f"{len(results)} sent" + "".join(f", {n} {k}" for k, n in sorted(how.items()))


def _log_failures(what: str, results: list[SendResult]) -> None:
    """One warning per failed sub-operation: the instance, the peer's own status and comment, or why it was not
    sent."""
    for r in results:
        if not r.ok:
            log.warning("%s: %s", what, r.describe())


def _instances(rows: list[dict[str, Any]], storage: Storage, results: list[SendResult]) -> list[StoredInstance]:
    out = []
    for r in rows:
        inst = StoredInstance(r, functools.partial(storage.get, r["storage_key"]))
        inst._cp_results = results
        out.append(inst)
    return out


DCMTK_ROOT = "1.2.276.0.7230010.3"  # the Implementation Class UIDs of DCMTK's tools


def _final_without_identifier(assoc: Any) -> None:
    """For a DCMTK requestor, send the final C-GET response without its identifier.

    PS3.4 C.4.3.1.3.1 puts the Failed SOP Instance UID List in the identifier of a final response with failures;
    DCMTK's ``DcmSCU`` (getscu) receives that response's command but never its data set, so the data set's P-DATA
    is still waiting when it releases ("Association Release Failed: DUL P-Data PDU arrived") and the association
    is aborted. Its failed instances are still counted in the response, and each is logged with its reason."""
    impl = str(getattr(assoc.requestor, "implementation_class_uid", "") or "")
    if not impl.startswith(DCMTK_ROOT):
        return
    original = assoc.dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_GET) and primitive.Status is not None and primitive.Status not in (0xFF00, 0xFF01):
            primitive.Identifier = None
        original(primitive, context_id)

    assoc.dimse.send_msg = send_msg


def handle_get(event: Any, tenants: dict[str, str], index: Index, storage: Storage) -> Iterator[Any]:
    """C-GET: send the matching instances back over the same association, as stored where it can."""
    tenant = tenants.get(called_ae(event))
    if tenant is None:
        yield 0
        yield STATUS_REFUSED_NOT_AUTHORIZED, None
        return
    try:
        rows = retrieve_rows(event.identifier, tenant, index)
    except Exception as exc:
        log.warning("C-GET from %r refused: %s", calling_ae(event), exc)
        yield 0
        yield STATUS_IDENTIFIER_MISMATCH, None
        return
    if not getattr(event.assoc, "_cp_hooked", False):
        hook(event.assoc)
        _final_without_identifier(event.assoc)
        event.assoc._cp_hooked = True
    results: list[SendResult] = []
    yield len(rows)
    for inst in _instances(rows, storage, results):
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield STATUS_PENDING, inst
    log.info("C-GET by %r: %s", calling_ae(event), _summary(results))
    _log_failures(f"C-GET by {calling_ae(event)!r}", results)


def handle_move(event: Any, tenants: dict[str, str], index: Index, storage: Storage,
                remote_aes: dict[str, str], ae_title: str = "CUBEPACS") -> Iterator[Any]:
    """C-MOVE: send the matching instances to a configured destination AE (``remote_aes``: title → host:port)."""
    tenant = tenants.get(called_ae(event))
    raw = event.move_destination
    title = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()
    destination = remote_aes.get(title)
    if tenant is None or destination is None:
        log.warning("C-MOVE from %r refused: move destination %r is not configured", calling_ae(event), title)
        yield None, None  # 0xA801: move destination unknown
        return
    host, _, port_text = destination.rpartition(":")
    port = int(port_text)
    try:
        rows = retrieve_rows(event.identifier, tenant, index)
    except Exception as exc:
        log.warning("C-MOVE from %r refused: %s", calling_ae(event), exc)
        yield host, port
        yield 0
        yield STATUS_IDENTIFIER_MISMATCH, None
        return
    groups = plan(rows)
    results: list[SendResult] = []
    overflow = Overflow(ae_title, host, port, title) if len(groups) > 1 else None
    instances: list[StoredInstance] = []
    originator = (calling_ae(event), int(event.request.MessageID))
    for g, (contexts, members) in enumerate(groups):
        group = _instances(members, storage, results)
        if g and overflow is not None:
            send = overflow.sender(g, contexts, originator)
            for inst in group:
                inst._cp_fallback = send
        instances.extend(group)
    yield host, port, {"contexts": groups[0][0] if groups else []}
    yield len(instances)
    try:
        for inst in instances:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield STATUS_PENDING, inst
    finally:
        if overflow is not None:
            overflow.close()
    log.info("C-MOVE by %r to %r: %s (%d association(s))", calling_ae(event), title, _summary(results),
             len(groups))
    _log_failures(f"C-MOVE by {calling_ae(event)!r} to {title!r}", results)
