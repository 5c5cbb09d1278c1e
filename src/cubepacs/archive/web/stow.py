"""STOW-RS: ``POST /studies`` with ``multipart/related; type="application/dicom"``.

The response lists stored instances (ReferencedSOPSequence) and failed ones (FailedSOPSequence with a Failure
Reason code; the reason in words is in a ``Warning`` header):
200 when all were stored, 202 when some failed, 409 when none was stored.

Example
-------
>>> FAILURE_PROCESSING
272
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from cubepacs.archive.ingest import RejectedInstance, ingest
from cubepacs.archive.web import multipart
from cubepacs.archive.web.app import DICOM_JSON, ROOT, Services, tenant_of

FAILURE_PROCESSING = 0x0110
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_STUDY_MISMATCH = 0xA900  # the instance does not belong to the study in the URL
FAILURE_OUT_OF_RESOURCES = 0xA700


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def add_routes(app: FastAPI, services: Services) -> None:
    """Register the STOW-RS routes."""

    @app.post(ROOT + "/studies")
    @app.post(ROOT + "/studies/{study}")
    async def store(request: Request, study: str | None = None, tenant: str = Depends(tenant_of)) -> JSONResponse:
        try:
            parts = multipart.parse(await request.body(), request.headers.get("content-type", ""))
        except multipart.MultipartError as exc:
            raise HTTPException(415 if "expected multipart" in str(exc) else 400, str(exc)) from exc
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        reasons: list[str] = []
        for n, data in enumerate(parts):
            try:
                ev = ingest(data, tenant, services.storage, services.queue, source=f"part {n + 1}")
            except RejectedInstance as exc:
                failed.append({"00081197": {"vr": "US", "Value": [FAILURE_CANNOT_UNDERSTAND]}})
                reasons.append(str(exc))
                continue
            except Exception:
                failed.append({"00081197": {"vr": "US", "Value": [FAILURE_OUT_OF_RESOURCES]}})
                reasons.append(f"part {n + 1}: could not be stored (server error)")
                continue
            if study and ev["study_uid"] != study:
                failed.append({"00081150": _ui(ev["sop_class_uid"]), "00081155": _ui(ev["sop_uid"]),
                               "00081197": {"vr": "US", "Value": [FAILURE_STUDY_MISMATCH]}})
                continue
            url = f"{ROOT}/studies/{ev['study_uid']}/series/{ev['series_uid']}/instances/{ev['sop_uid']}"
            stored.append({"00081150": _ui(ev["sop_class_uid"]), "00081155": _ui(ev["sop_uid"]),
                           "00081190": {"vr": "UR", "Value": [url]}})
        body: dict[str, Any] = {}
        if stored:
            body["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored else 409)
        # the reasons, in words, as PS3.18 Warning header fields (the JSON only carries codes)
        headers = {"Warning": ", ".join('299 cubepacs "' + r.replace('"', "'")[:300] + '"' for r in reasons)}
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers if reasons else None)
