"""Store one received instance: check it, write it durably, queue its storage event — in that order.

Used by C-STORE and STOW-RS: success is reported only after the file is fsynced and the event is durably queued.

Example
-------
>>> import tempfile, os
>>> from pathlib import Path
>>> from cubepacs.archive.storage.file import FileStorage
>>> from cubepacs.archive.queue.embedded import EmbeddedQueue
>>> tmp = tempfile.mkdtemp()
>>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
>>> ev = ingest(data, "acme", FileStorage(tmp), EmbeddedQueue(os.path.join(tmp, "q.db")))
>>> ev["key"].startswith("acme/"), ev["attrs"]["Modality"]
(True, 'CT')
"""

from __future__ import annotations

import base64
import json
import logging
import warnings
import zlib
from io import BytesIO
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword

from cubepacs.archive.keys import WEB_ROOT, check_tenant, check_uid, instance_key, series_base
from cubepacs.archive.metadata import instance_metadata
from cubepacs.archive.queue.base import STORAGE_TOPIC, Queue
from cubepacs.archive.storage.base import Storage
from cubepacs.dicom.dicomjson import dataset_to_json, pn_string
from cubepacs.dicom.nesting import too_deep
from cubepacs.dicom.rawfile import PIXEL_TAGS, Scan, scan_file
from cubepacs.errors import DicomReadError

INDEX_KEYWORDS = (
    "PatientID", "PatientName", "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime", "AccessionNumber",
    "StudyID", "StudyDescription", "ReferringPhysicianName", "Modality", "SeriesNumber", "SeriesDescription",
    "SeriesDate", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
)


class RejectedInstance(DicomReadError):
    """An instance the archive refuses (malformed, or without valid UIDs)."""


def describe(data: bytes, source: str = "<received>") -> dict[str, Any]:
    """Check an encoded instance and return its UIDs and index attributes; RejectedInstance when it cannot be
    archived (the message says why)."""
    return _describe(data, source)[0]


def _header_size(data: bytes, scan: Scan) -> int:
    """Where the top-level pixel element (``PIXEL_TAGS``) starts (what a reader of the header needs: everything
    before it); the whole file when it has none or is deflated."""
    for tag, _, start, _, _ in reversed(scan.spans):
        if tag in PIXEL_TAGS:
            return start
    return len(data)


def _describe(data: bytes, source: str) -> tuple[dict[str, Any], Scan]:
    try:
        scan = scan_file(data, source)  # the whole file must be well formed: it is what we keep
    except DicomReadError as exc:
        raise RejectedInstance(source, exc.reason, exc.offset) from exc
    if not scan.has_transfer_syntax:
        raise RejectedInstance(source, "no file meta information / Transfer Syntax UID")
    deep = too_deep(data, scan, source)
    if deep is not None:
        raise RejectedInstance(source, deep[1], deep[0])
    try:
        uids, attrs = _fast_attrs(data, scan)
    except Exception:  # unusual character set, deflated, odd values: pydicom decides
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
            uids = {k: str(ds.get(k, "") or "") for k in _UID_KEYWORDS}
            attrs = {k: _plain(ds.get(k)) for k in INDEX_KEYWORDS if ds.get(k) not in (None, "")}
        except Exception as exc:
            raise RejectedInstance(source, f"dataset cannot be parsed: {exc}") from exc
    for name in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            check_uid(uids[name], name)
        except ValueError as exc:
            raise RejectedInstance(source, str(exc)) from exc
    return {"study_uid": uids["StudyInstanceUID"], "series_uid": uids["SeriesInstanceUID"],
            "sop_uid": uids["SOPInstanceUID"], "sop_class_uid": uids["SOPClassUID"] or None,
            "transfer_syntax": scan.transfer_syntax, "size": len(data), "attrs": attrs}, scan


_UID_KEYWORDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
_WANTED = {f"{tag_for_keyword(k):08X}": k for k in (*_UID_KEYWORDS, *INDEX_KEYWORDS, "SpecificCharacterSet")}
_WANTED_TAGS = frozenset(int(t, 16) for t in _WANTED)


def _fast_attrs(data: bytes, scan: Scan) -> tuple[dict[str, str], dict[str, Any]]:
    """UIDs and index attributes straight from the encoded top-level elements (the fast DICOM JSON path)."""
    if scan.deflated_body is not None:
        raise ValueError("deflated")
    wanted = b"".join([data[s:e] for tag, _, s, _, e in scan.spans if tag in _WANTED_TAGS and tag >> 16 != 2])
    doc, _, _, _ = dataset_to_json(wanted, scan.implicit, scan.little_endian)
    values: dict[str, Any] = {}
    for tag, kw in _WANTED.items():
        v = doc.get(tag, {}).get("Value")
        if v:
            first = v[0]
            # a Person Name keeps its three component groups (index/matching.py matches them one by one)
            values[kw] = pn_string(first) if isinstance(first, dict) else first
    values.pop("SpecificCharacterSet", None)
    uids = {k: str(values.pop(k, "") or "") for k in _UID_KEYWORDS}
    return uids, {k: v for k, v in values.items() if v not in (None, "")}


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return value
    return str(value)


log = logging.getLogger("cubepacs.ingest")
# a larger document is not kept (its series' metadata converts that file when asked): a storage event must stay
# well under what a queue takes in one message (Kafka's default is 1 MB), and a header that large is rare (an
# enhanced multi-frame instance's per-frame groups); the shared series' documents are 1.6–3.7 KB
MAX_KEPT_METADATA = 256 * 1024


def stored_metadata(data: bytes, ev: dict[str, Any]) -> str | None:
    """The instance's DICOM JSON as a storage event carries it to the index (``metadata_at_ingest``): compact
    JSON, zlib-compressed, base64 — what the series' ``/metadata`` joins before the web worker has built it.
    None when the instance cannot be converted or its document would exceed :data:`MAX_KEPT_METADATA` compressed:
    its metadata is then built from the file when asked, as without the setting.

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> ev = describe(data)
    >>> doc = json.loads(zlib.decompress(base64.b64decode(stored_metadata(data, ev))))
    >>> doc["7FE00010"]["BulkDataURI"].endswith(ev["sop_uid"] + "/frames/1")
    True
    """
    try:
        doc = instance_metadata(data, series_base(WEB_ROOT, ev["study_uid"], ev["series_uid"], ev["sop_uid"]),
                                source=ev.get("key", ""))
        text = json.dumps(doc, separators=(",", ":"), check_circular=False).encode()
    except Exception as exc:  # served from the file when asked (which logs what is wrong with it then)
        log.info("%s: metadata not kept at ingest (%s)", ev.get("key", ""), type(exc).__name__)
        return None
    packed = zlib.compress(text, 1)
    if len(packed) > MAX_KEPT_METADATA:
        log.info("%s: metadata not kept at ingest (%d bytes compressed)", ev.get("key", ""), len(packed))
        return None
    return base64.b64encode(packed).decode("ascii")


class StudyMismatch(RejectedInstance):
    """A STOW-RS part whose Study Instance UID is not the one of the request URL (never stored)."""


def ingest(data: bytes, tenant: str, storage: Storage, queue: Queue, source: str = "<received>",
           overwrite: bool = False, study: str | None = None, metadata: bool = False) -> dict[str, Any]:
    """Archive one instance for ``tenant``; returns its storage event once file and event are durable.

    A SOP Instance UID already stored is kept as it is (``ev["duplicate"]`` is True, its event is queued again so
    that a crash between file and event heals), unless ``overwrite``: then the new bytes replace it and the event
    says ``replace`` so that the indexer re-indexes it and the web worker rebuilds its series. With ``study``, an
    instance of another study is refused (StudyMismatch) before anything is written. With ``metadata``, the event
    carries the instance's DICOM JSON for the index (:func:`stored_metadata`).
    """
    try:
        ev, scan = _describe(data, source)
        if study is not None and ev["study_uid"] != study:
            raise StudyMismatch(source, f"Study Instance UID {ev['study_uid']} is not the study of the request "
                                        f"({study})")
    except RejectedInstance as exc:  # counted and kept for the operations page (observability/events.py)
        from cubepacs.archive.observability import events

        events.refused(tenant, source, str(exc))
        raise
    ev["tenant"] = check_tenant(tenant)
    ev["key"] = instance_key(tenant, ev["study_uid"], ev["series_uid"], ev["sop_uid"])
    if storage.exists(ev["key"]):
        if not overwrite:
            old = storage.get(ev["key"])
            kept = describe(old, ev["key"])
            kept.update(tenant=ev["tenant"], key=ev["key"])
            if metadata:
                kept["meta"] = stored_metadata(old, kept)
            queue.publish(STORAGE_TOPIC, kept)
            return {**kept, "duplicate": True}
        ev["replace"] = True
    if metadata:
        ev["meta"] = stored_metadata(data, ev)
    storage.put_received(ev["key"], data, _header_size(data, scan))
    queue.publish(STORAGE_TOPIC, ev)
    return ev
