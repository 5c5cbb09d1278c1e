"""STOW-RS: ``POST /studies`` with ``multipart/related; type="application/dicom"``.

The body is streamed to a temporary file (never held in memory; more than ``max_request_bytes`` is a 413) and
its parts are stored one at a time. The response lists stored instances (ReferencedSOPSequence) and failed ones
(FailedSOPSequence with a Failure Reason code; the reasons in words are in a bounded ``Warning`` header):
200 when all were stored, 202 when some failed, 409 when none was stored, 400 for a body without any part.
An instance of another study than the URL's (``POST /studies/{study}``) is never stored.

Example
-------
>>> warning_header(["part 1: bad", "part 2: é"])
'299 cubepacs "part 1: bad", 299 cubepacs "part 2: \\\\xe9"'
"""

from __future__ import annotations

import mmap
import tempfile
from typing import IO, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.ingest import RejectedInstance, StudyMismatch, ingest
from cubepacs.archive.keys import check_uid
from cubepacs.archive.web import multipart
from cubepacs.archive.web.app import DICOM_JSON, ROOT, Services, tenant_of
from cubepacs.errors import ConfigError

FAILURE_PROCESSING = 0x0110
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_MISMATCH = 0xA900  # the instance does not belong to the study in the URL
FAILURE_OUT_OF_RESOURCES = 0xA700
MAX_WARNING = 4000  # characters of reasons in the Warning header (proxies refuse headers over 8-64 KB)


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


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
                content_type: str) -> tuple[int, dict[str, Any], list[str]]:
    """Store every part of a spooled body: (HTTP status, response JSON, reasons of the failures)."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reasons: list[str] = []
    mapped: Any = mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    try:
        count = 0
        for n, view in enumerate(multipart.iter_parts(mapped, content_type)):
            count += 1
            with view:
                data = bytes(view)
            source = f"part {n + 1}"
            try:
                ev = ingest(data, tenant, services.storage, services.queue, source=source,
                            overwrite=services.overwrite, study=study,
                            metadata=services.metadata_at_ingest)
            except StudyMismatch as exc:
                failed.append({"00081197": {"vr": "US", "Value": [FAILURE_STUDY_MISMATCH]}})
                reasons.append(str(exc))
                continue
            except RejectedInstance as exc:
                failed.append({"00081197": {"vr": "US", "Value": [FAILURE_CANNOT_UNDERSTAND]}})
                reasons.append(str(exc))
                continue
            except Exception as exc:
                failed.append({"00081197": {"vr": "US", "Value": [FAILURE_OUT_OF_RESOURCES]}})
                reasons.append(f"{source}: could not be stored ({type(exc).__name__})")
                continue
            url = f"{ROOT}/studies/{ev['study_uid']}/series/{ev['series_uid']}/instances/{ev['sop_uid']}"
            stored.append({"00081150": _ui(ev["sop_class_uid"]), "00081155": _ui(ev["sop_uid"]),
                           "00081190": {"vr": "UR", "Value": [url]}})
    finally:
        if isinstance(mapped, mmap.mmap):
            mapped.close()
    if count == 0:
        raise multipart.MultipartError("the request holds no DICOM part")
    body_json: dict[str, Any] = {}
    if stored:
        body_json["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body_json["00081198"] = {"vr": "SQ", "Value": failed}
    return (200 if not failed else (202 if stored else 409)), body_json, reasons


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
