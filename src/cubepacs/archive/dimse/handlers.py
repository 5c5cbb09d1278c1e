"""DIMSE event handlers: each takes the services it needs and returns DICOM status codes, never raises.

Example
-------
>>> STATUS_REFUSED_NOT_AUTHORIZED
292
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cubepacs.archive.dimse import store
from cubepacs.archive.dimse.filemeta import encode_file_meta
from cubepacs.archive.index.store import Index
from cubepacs.archive.ingest import RejectedInstance, ingest
from cubepacs.archive.observability import events, metrics
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.storage.base import Storage
from cubepacs.errors import StorageFullError

log = logging.getLogger("cubepacs.dimse")

STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_REFUSED_NOT_AUTHORIZED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_FIND_UNABLE = 0xC001
STATUS_IDENTIFIER_MISMATCH = 0xA900

_STUDY_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
               "ModalitiesInStudy")
_SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate")
_INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
_ROW = {"PatientID": "patient_id", "PatientName": "patient_name", "PatientBirthDate": "patient_birth_date",
        "PatientSex": "patient_sex", "StudyInstanceUID": "study_uid", "StudyDate": "study_date",
        "StudyTime": "study_time", "AccessionNumber": "accession_number", "StudyID": "study_id",
        "StudyDescription": "study_description", "ReferringPhysicianName": "referring_physician",
        "SeriesInstanceUID": "series_uid", "Modality": "modality", "SeriesNumber": "series_number",
        "SeriesDescription": "series_description", "SeriesDate": "series_date", "SOPInstanceUID": "sop_uid",
        "SOPClassUID": "sop_class_uid",
        "InstanceNumber": "instance_number"}


def called_ae(event: Any) -> str:
    """The AE title the peer called (selects the tenant)."""
    title = event.assoc.requestor.primitive.called_ae_title
    return (title.decode() if isinstance(title, bytes) else str(title)).strip()


def calling_ae(event: Any) -> str:
    """The peer's own AE title (from its A-ASSOCIATE-RQ: the requestor's title is set only once accepted)."""
    primitive = event.assoc.requestor.primitive
    title = primitive.calling_ae_title if primitive is not None else event.assoc.requestor.ae_title
    return (title.decode() if isinstance(title, bytes) else str(title)).strip()


def permitted(allowed: list[str], calling: str, address: str) -> bool:
    """Whether a calling AE (from ``address``) is on a tenant's allow-list (``AE`` or ``AE@address`` entries).

    Example
    -------
    >>> permitted(["CT1", "MR1@10.0.0.5"], "MR1", "10.0.0.6"), permitted(["CT1", "MR1@10.0.0.5"], "CT1", "x")
    (False, True)
    """
    for entry in allowed:
        title, _, where = entry.partition("@")
        if title.strip() == calling and (not where or where.strip() == address):
            return True
    return False


def peer_common_name(assoc: Any) -> str | None:
    """The common name of the TLS client certificate of an association (None on plain TCP or without one)."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    cert = sock.getpeercert() if sock is not None and hasattr(sock, "getpeercert") else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def handle_requested(event: Any, tenants: dict[str, str], allowed: dict[str, list[str]] | None = None,
                     cert_tenants: dict[str, str] | None = None) -> None:
    """Answer A-ASSOCIATE-RJ (permanent, service user) to an association whose called AE title belongs to no
    tenant (diagnostic 7), or whose calling AE is not on that tenant's allow-list (diagnostic 3)."""
    import secrets

    from pynetdicom import evt

    from cubepacs.archive.observability.logs import ASSOCIATION_ID, TENANT

    assoc = event.assoc
    called, calling = called_ae(event), calling_ae(event)
    ASSOCIATION_ID.set(f"{calling}-{secrets.token_hex(4)}")  # the association's thread: its later logs carry it
    TENANT.set(tenants.get(called))
    address = f"{assoc.requestor.address}:{assoc.requestor.port}"
    tenant = tenants.get(called)
    assoc._cp_tenant = tenant  # whose operations page shows it if it aborts (handle_closed)
    diagnostic, why = 0, ""
    if tenant is None:
        diagnostic, why = 0x07, f"called AE {called!r} is not configured"
    elif (allowed or {}).get(tenant) and not permitted((allowed or {})[tenant], calling, assoc.requestor.address):
        diagnostic, why = 0x03, f"calling AE {calling!r} is not allowed for tenant {tenant!r}"
    elif cert_tenants and (cn := peer_common_name(assoc)) in cert_tenants and cert_tenants[cn] != tenant:
        diagnostic, why = 0x07, f"client certificate {cn!r} may not call tenant {tenant!r}"
    if diagnostic:
        log.warning("association from %r at %s rejected: %s", calling, address, why)
        assoc._cp_rejected = (why, tenant, calling)  # for handle_rejected, which records it
        assoc.acse.send_reject(0x01, 0x01, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()  # as pynetdicom does for its own rejections: the RJ PDU is sent before the socket closes


def handle_established(event: Any) -> None:
    """Count the association as open. (Its DUL no longer polls — ``lean.LeanDUL`` sleeps in ``select()`` — so
    nothing is tuned here any more: the count of open associations walked every thread of the process.)"""
    event.assoc._cp_open = True
    metrics.ASSOCIATIONS_OPEN.inc()


def handle_closed(event: Any) -> None:
    """Released or aborted: no longer open (aborts are also counted as refused ones, "aborted")."""
    if getattr(event.assoc, "_cp_open", False):
        event.assoc._cp_open = False
        metrics.ASSOCIATIONS_OPEN.dec()
    if event.event.name == "EVT_ABORTED":
        metrics.ASSOCIATIONS_REFUSED.labels(reason="aborted").inc()
        requestor = event.assoc.requestor
        events.association_failed("aborted", calling_ae(event), f"{requestor.address}:{requestor.port}",
                                  getattr(event.assoc, "_cp_tenant", None))


def handle_rejected(event: Any) -> None:
    """Count an A-ASSOCIATE-RJ (ours, or pynetdicom's when max_associations is reached)."""
    metrics.ASSOCIATIONS_REFUSED.labels(reason="rejected").inc()
    assoc = event.assoc
    why, tenant, calling = getattr(assoc, "_cp_rejected", ("rejected by pynetdicom (e.g. max_associations reached)",
                                                           None, calling_ae(event)))
    events.association_failed(f"rejected: {why}", calling, f"{assoc.requestor.address}:{assoc.requestor.port}",
                              tenant)


def handle_conn_open(event: Any) -> None:
    """Disable Nagle's algorithm on the association's socket (≈40 ms per C-STORE otherwise)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_echo(event: Any) -> int:
    """C-ECHO: success."""
    return STATUS_SUCCESS


@store.reader_safe  # it never waits for the association: the reader thread may run it
def handle_store(event: Any, tenants: dict[str, str], storage: Storage, queue: Queue,
                 overwrite: bool = False, metadata: bool = False) -> int | Dataset:
    """C-STORE: archive the dataset as received; success only once file and event are durable (with
    ``metadata``, the event carries the instance's DICOM JSON for the index)."""
    tenant = tenants.get(called_ae(event))
    if tenant is None:
        return STATUS_REFUSED_NOT_AUTHORIZED
    start = time.perf_counter()
    code: int = STATUS_SUCCESS
    answer: int | Dataset = STATUS_SUCCESS
    try:
        req = event.request
        meta = encode_file_meta(str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                                str(event.context.transfer_syntax), str(event.assoc.requestor.ae_title))
        data = meta + event.encoded_dataset(include_meta=False)
        ingest(data, tenant, storage, queue, source="C-STORE", overwrite=overwrite, metadata=metadata)
        metrics.STORE_BYTES.labels(tenant=tenant).inc(len(data))
    except RejectedInstance as exc:
        log.warning("C-STORE from %r refused: %s", calling_ae(event), exc)
        answer = Dataset()
        answer.Status = code = STATUS_CANNOT_UNDERSTAND
        answer.ErrorComment = str(exc.reason)[:64]
    except StorageFullError as exc:  # the disk guard logged it once (storage/guard.py): not once per C-STORE
        answer = Dataset()
        answer.Status = code = STATUS_OUT_OF_RESOURCES
        answer.ErrorComment = str(exc)[:64]
    except Exception as exc:
        log.error("C-STORE from %r failed: %s: %s", calling_ae(event), type(exc).__name__, str(exc)[:300])
        answer = code = STATUS_OUT_OF_RESOURCES
    metrics.STORES.labels(tenant=tenant, status=f"0x{code:04X}").inc()
    metrics.STORE_SECONDS.labels(tenant=tenant).observe(time.perf_counter() - start)
    return answer


def _filters(identifier: Dataset, keys: tuple[str, ...]) -> dict[str, Any]:
    """The identifier's matching keys: a value as its string (a Person Name with its component groups), several
    values (``CT\\MR``) as a list of strings, each matched on its own (``index/matching.py``)."""
    out: dict[str, Any] = {}
    for kw in keys:
        if kw in identifier:
            value = identifier[kw].value
            if value in (None, ""):
                continue
            if isinstance(value, (list, MultiValue)):
                out[kw] = [str(v) for v in value]
            else:
                out[kw] = str(value)
    return out


def _answer(identifier: Dataset, row: dict[str, Any], level: str) -> Dataset:
    """A C-FIND response: the identifier's keys with the row's values, as stored (a malformed date is not
    refused nor cut), and the Specific Character Set of those values (ISO_IR 192 when one is not ASCII)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    wide = False
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value: Any = row.get(_ROW.get(kw, ""))
        if kw == "ModalitiesInStudy":
            value = row.get("modalities") or None
        elif kw == "NumberOfStudyRelatedSeries":
            value = row.get("series")
        elif kw in ("NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"):
            value = row.get("instances") if kw.startswith("NumberOfStudy") else row.get("series_related_instances")
        if elem.VR == "SQ":
            value = []  # no sequence is indexed: returned empty (zero-length), as PS3.4 C.2.2.1.3 allows
        elif value is None:
            value = ""
        wide = wide or any(isinstance(v, str) and not v.isascii() for v in (value if isinstance(value, list)
                                                                          else [value]))
        ds.add(DataElement(elem.tag, elem.VR, value, validation_mode=config.IGNORE))
    if wide:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def handle_find(event: Any, tenants: dict[str, str], index: Index) -> Iterator[tuple[int, Dataset | None]]:
    """C-FIND at PATIENT/STUDY/SERIES/IMAGE level (Patient Root and Study Root), matched as PS3.4 C.2.2.2 says:
    multiple values, wild cards, ranges, UID lists, Person Name groups (``index/matching.py``)."""
    tenant = tenants.get(called_ae(event))
    if tenant is None:
        yield STATUS_REFUSED_NOT_AUTHORIZED, None
        return
    try:
        identifier: Dataset = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", ""))
        if level in ("PATIENT", "STUDY"):
            rows = index.search_studies(tenant, _filters(identifier, _STUDY_KEYS), limit=10_000)
            if level == "PATIENT":
                seen: dict[str, dict[str, Any]] = {}
                for r in rows:
                    seen.setdefault(str(r.get("patient_id")), r)
                rows = list(seen.values())
        elif level == "SERIES":
            rows = index.search_series(tenant, _filters(identifier, _STUDY_KEYS + _SERIES_KEYS), limit=10_000)
        elif level == "IMAGE":
            rows = index.search_instances(tenant, _filters(identifier, _STUDY_KEYS + _SERIES_KEYS + _INSTANCE_KEYS),
                                          limit=100_000)
        else:
            yield STATUS_IDENTIFIER_MISMATCH, None
            return
    except Exception as exc:
        log.error("C-FIND failed: %s: %s", type(exc).__name__, str(exc)[:300])
        yield STATUS_FIND_UNABLE, None
        return
    for row in rows:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield STATUS_PENDING, _answer(identifier, row, level)


COMMIT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known Storage Commitment Push Model SOP Instance
NO_SUCH_OBJECT = 0x0112


def commitment_result(tenant: str, request: Dataset, index: Index) -> tuple[int, Dataset]:
    """(event type, N-EVENT-REPORT dataset) for a Storage Commitment request: instances held for ``tenant`` are
    committed (stored durably, indexed); the others fail with 0x0112 (no such object instance)."""
    refs = list(request.get("ReferencedSOPSequence", []))
    uids = [str(item.ReferencedSOPInstanceUID) for item in refs]
    held = {r["sop_uid"] for r in index.search_instances(tenant, {"SOPInstanceUID": uids}, limit=len(uids) + 1)}
    ok, failed = [], []
    for item in refs:
        out = Dataset()
        out.ReferencedSOPClassUID = item.ReferencedSOPClassUID
        out.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
        if str(item.ReferencedSOPInstanceUID) in held:
            ok.append(out)
        else:
            out.FailureReason = NO_SUCH_OBJECT
            failed.append(out)
    report = Dataset()
    report.TransactionUID = request.TransactionUID
    if ok:
        report.ReferencedSOPSequence = ok
    if failed:
        report.FailedSOPSequence = failed
    return (2 if failed else 1), report


def handle_n_action(event: Any, tenants: dict[str, str], index: Index, remote_aes: dict[str, str],
                    ae_title: str) -> tuple[int, Dataset | None]:
    """Storage Commitment (push model) request: answer at once, report the result by N-EVENT-REPORT on a new
    association to the requesting AE (its address from ``remote_aes``)."""
    import threading

    tenant = tenants.get(called_ae(event))
    calling = str(event.assoc.requestor.ae_title).strip()
    destination = remote_aes.get(calling)
    if tenant is None:
        return STATUS_REFUSED_NOT_AUTHORIZED, None
    if destination is None:
        log.warning("storage commitment from %s refused: no address configured for it", calling)
        return 0x0110, None  # processing failure
    request: Dataset = event.action_information
    if "TransactionUID" not in request:
        return 0x0120, None  # missing attribute
    event_type, report = commitment_result(tenant, request, index)
    host, _, port = destination.rpartition(":")

    def send() -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

        ae = AE(ae_title=ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(host, int(port), ae_title=calling)
        if not assoc.is_established:
            log.error("storage commitment report to %s (%s) failed: no association", calling, destination)
            return
        try:
            assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, COMMIT_INSTANCE)
        finally:
            assoc.release()

    threading.Thread(target=send, name="commitment-report", daemon=True).start()
    return STATUS_SUCCESS, None
