"""STOW-RS: ``POST /studies`` with ``multipart/related; type="application/dicom"``.

The body is streamed to a temporary file (never held in memory; more than ``max_request_bytes`` is a 413) and
its parts are stored one at a time. The response lists stored instances (ReferencedSOPSequence) and failed ones
(FailedSOPSequence with a Failure Reason code and, when they can be read, the part's SOP Class and Instance
UIDs; the reasons in words are in a bounded ``Warning`` header):
200 when all were stored, 202 when some failed, 409 when none was stored, 400 for a body without any part.
An instance of another study than the URL's (``POST /studies/{study}``) is never stored. A part that is a bare
dataset (no preamble, no file meta) in Implicit or Explicit VR Little Endian is stored with a file meta group
made for it (:func:`with_file_meta`). A malformed body (boundary not found, last part unclosed, a part without a
header separator) is a 400.

Example
-------
>>> warning_header(["part 1: bad", "part 2: é"])
'299 cubepacs "part 1: bad", 299 cubepacs "part 2: \\\\xe9"'
"""

from __future__ import annotations

import mmap
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import IO, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.ingest import RejectedInstance, StudyMismatch, ingest
from cubepacs.archive.keys import check_uid
from cubepacs.archive.web import multipart
from cubepacs.archive.web.context import DICOM_JSON, ROOT, Services, tenant_of
from cubepacs.errors import ConfigError

FAILURE_PROCESSING = 0x0110
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_MISMATCH = 0xA900  # the instance does not belong to the study in the URL
FAILURE_OUT_OF_RESOURCES = 0xA700
MAX_WARNING = 4000  # characters of reasons in the Warning header (proxies refuse headers over 8-64 KB)


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _raw_uid(ds: Any, tag: int) -> str:
    """A UI value as its bytes say (never converted: a malformed Specific Character Set must not stop this)."""
    try:
        value = ds.get_item(tag).value
    except Exception:
        return ""
    text = value.decode("ascii", "replace").strip(" \0") if isinstance(value, bytes) else str(value or "")
    return text if 0 < len(text) <= 64 and all(c in "0123456789." for c in text) else ""


def _uids_of(data: bytes) -> tuple[str, str, bool | None]:
    """(SOP Class UID, SOP Instance UID, implicit VR) of a part's dataset: a Part 10 file, or a bare dataset (no
    preamble, no file meta) in Implicit or Explicit VR Little Endian, told apart by whether a VR follows the first
    tag (``implicit`` None for a Part 10 file, and for a bare dataset in Explicit VR Big Endian: its UIDs are read
    to name it, but it is not stored). Empty strings for what cannot be read."""
    import warnings

    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    stream = BytesIO(data)
    implicit: bool | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if data[128:132] == b"DICM" or data[:2] == b"\x02\x00":
                read_preamble(stream, True)
                syntax = str(_read_file_meta_info(stream).get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
                implicit_file, little = syntax == "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2"
            else:
                group = struct.unpack_from("<H", data)[0] if len(data) >= 8 else 0
                big = len(data) >= 8 and data[0] == 0 and data[1] >= 0x08 and data[4:6].isalpha()  # (0008,…) BE
                if not big and (group < 0x0008 or group & 1):
                    return "", "", None
                implicit_file = not big and not (data[4:6].isalpha() and data[4:6].isupper())
                implicit, little = (None if big else implicit_file), not big
            ds = read_dataset(stream, implicit_file, little, stop_when=lambda tag, *_: tag > 0x00080018)
    except Exception:
        return "", "", None
    return _raw_uid(ds, 0x00080016), _raw_uid(ds, 0x00080018), implicit


def with_file_meta(data: bytes) -> bytes:
    """``data`` as a Part 10 file: unchanged when it is one; a bare dataset whose encoding can be detected (Implicit
    or Explicit VR Little Endian, see :func:`_uids_of`) and whose SOP Class and Instance UIDs can be read gets a
    preamble and a file meta group (those UIDs, that transfer syntax) before its bytes, kept as sent; anything
    else unchanged (ingest refuses it and says why).

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> with_file_meta(data) is data
    True
    >>> bare = data[data.index(b"\\x08\\x00\\x05\\x00"):]  # no preamble, no file meta: the dataset as it is
    >>> with_file_meta(bare)[128:132], with_file_meta(bare).endswith(bare)
    (b'DICM', True)
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    sop_class, sop, implicit = _uids_of(data)
    if implicit is None or not (sop_class and sop):
        return data
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue() + data


def sop_refs(data: bytes) -> dict[str, Any]:
    """Referenced SOP Class and Instance UID (DICOM JSON) of a part, when they can be read (a Part 10 file or a
    bare dataset; their bytes, whatever the rest holds), for its FailedSOPSequence item; ``{}`` otherwise.

    Example
    -------
    >>> from pathlib import Path
    >>> sorted(sop_refs(Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()))
    ['00081150', '00081155']
    >>> sop_refs(Path("../shared/data/malformed/no_preamble_no_meta_explicit_be.dcm").read_bytes())["00081155"]
    {'vr': 'UI', 'Value': ['1.2.333.4444.5.6.7.8']}
    """
    sop_class, sop, _ = _uids_of(data)
    return {tag: _ui(v) for tag, v in (("00081150", sop_class), ("00081155", sop)) if v}


def warning_header(reasons: list[str]) -> str:
    """PS3.18 Warning header fields for the reasons, ASCII only, at most about MAX_WARNING characters."""
    fields: list[str] = []
    used = 0
    for n, reason in enumerate(reasons):
        text = reason.replace('"', "'").encode("ascii", "backslashreplace").decode("ascii")[:300]
        field = f'299 cubepacs "{text}"'
        if used + len(field) > MAX_WARNING:
            fields.append(f'299 cubepacs "... and {len(reasons) - n} more failed part(s)"')
            break
        fields.append(field)
        used += len(field) + 2
    return ", ".join(fields)


async def spool(request: Request, limit: int) -> tuple[IO[bytes], int]:
    """The request body in a temporary file; 413 beyond ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds max_request_bytes ({limit})")
    f = tempfile.TemporaryFile(prefix="cubepacs-stow-")
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HTTPException(413, f"request body exceeds max_request_bytes ({limit})")
            f.write(chunk)
        f.flush()
    except BaseException:
        f.close()
        raise
    return f, total


def store_parts(services: Services, tenant: str, study: str | None, body: IO[bytes], size: int,
                content_type: str,
                expand: Callable[[str, bytes], Iterable[tuple[str, bytes]]] | None = None,
                ) -> tuple[int, dict[str, Any], list[str]]:
    """Store every part of a spooled body: (HTTP status, response JSON, reasons of the failures). ``expand``
    ((source, part) → (source, file) items): what a part holds, when it may hold several files (a ZIP the admin
    UI's upload takes apart, ``web/uploads.py``)."""
    mapped: Any = mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    parts = multipart.iter_parts(mapped, content_type)

    def items() -> Iterator[tuple[str, bytes]]:
        for n, view in enumerate(parts):
            with view:
                data = bytes(view)
            yield from (expand or (lambda source, d: [(source, d)]))(f"part {n + 1}", data)

    try:
        status, body_json, reasons, count = store_items(services, tenant, study, items())
    finally:
        parts.close()  # its view of the mapped body released, whatever ended the loop
        if isinstance(mapped, mmap.mmap):
            mapped.close()
    if count == 0:
        raise multipart.MultipartError("the request holds no DICOM part")
    return status, body_json, reasons


def store_items(services: Services, tenant: str, study: str | None,
                items: Iterable[tuple[str, bytes]]) -> tuple[int, dict[str, Any], list[str], int]:
    """Store each (source, file bytes) item through the ingest path: (HTTP status, STOW-RS response JSON, reasons
    of the failures, how many items there were). An item whose source is ``…: refused`` carries its reason as
    its bytes (what :func:`store_parts`'s ``expand`` could not take apart)."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reasons: list[str] = []
    count = 0
    for source, data in items:
        count += 1
        try:
            if source.endswith(": refused"):
                raise RejectedInstance(source.removesuffix(": refused"), data.decode("utf-8", "replace"))
            ev = ingest(with_file_meta(data), tenant, services.storage, services.queue, source=source,
                        overwrite=services.overwrite, study=study, metadata=services.metadata_at_ingest)
        except Exception as exc:
            code, reason = ((FAILURE_STUDY_MISMATCH, str(exc)) if isinstance(exc, StudyMismatch) else
                            (FAILURE_CANNOT_UNDERSTAND, str(exc)) if isinstance(exc, RejectedInstance) else
                            (FAILURE_OUT_OF_RESOURCES, f"{source}: could not be stored ({type(exc).__name__})"))
            failed.append({**sop_refs(data), "00081197": {"vr": "US", "Value": [code]}})
            reasons.append(reason)
            continue
        url = f"{ROOT}/studies/{ev['study_uid']}/series/{ev['series_uid']}/instances/{ev['sop_uid']}"
        stored.append({"00081150": _ui(ev["sop_class_uid"]), "00081155": _ui(ev["sop_uid"]),
                       "00081190": {"vr": "UR", "Value": [url]}})
    body_json: dict[str, Any] = {}
    if stored:
        body_json["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body_json["00081198"] = {"vr": "SQ", "Value": failed}
    return (200 if not failed else (202 if stored else 409)), body_json, reasons, count


def add_routes(app: FastAPI, services: Services) -> None:
    """Register the STOW-RS routes."""

    @app.post(ROOT + "/studies")
    @app.post(ROOT + "/studies/{study}")
    async def store(request: Request, study: str | None = None, tenant: str = Depends(tenant_of)) -> JSONResponse:
        if study is not None:
            try:
                check_uid(study, "StudyInstanceUID")
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from None
        if (full := services.storage.refusal()) is not None:  # below the free-space watermark (storage/guard.py)
            raise HTTPException(507, full)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/related"):
            raise HTTPException(415, f"expected multipart/related, got {content_type.split(';')[0]!r}")
        body, size = await spool(request, services.max_request_bytes)
        try:
            status, doc, reasons = await run_in_threadpool(store_parts, services, tenant, study, body, size,
                                                           content_type)
        except multipart.MultipartError as exc:
            raise HTTPException(400, str(exc)) from exc
        finally:
            body.close()
        headers = {"Warning": warning_header(reasons)} if reasons else None
        return JSONResponse(doc, status_code=status, media_type=DICOM_JSON, headers=headers)
