"""The archive's own API under ``/api`` (not DICOMweb): delete and send studies, series and instances.

* ``DELETE /api/studies/{study}``, ``…/series/{series}``, ``…/instances/{sop}``: removes files, index rows,
  pre-built metadata, cubes and cached answers of the caller's tenant; 200 with ``{"deleted": n}`` (``0`` when it
  was already gone: deleting is idempotent).
* ``POST /api/send`` with ``{"to": "AE", "level": "study|series|instance", "uid": "…"}``: C-STORE to a configured
  peer; the answer is streamed as JSON lines, one per instance (``sop``, ``status``, ``sent_as``) as it is sent,
  then a summary line (``done``, ``sent``, ``failed``).

Example
-------
>>> _line({"sop": "1.2", "status": 0})
b'{"sop": "1.2", "status": 0}\\n'
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cubepacs.archive import manage
from cubepacs.archive.web.context import Services, tenant_of
from cubepacs.archive.web.jsonbody import read_json
from cubepacs.archive.web.wado import check_uids
from cubepacs.errors import ConfigError, CubepacsError

API = "/api"


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def add_routes(app: FastAPI, services: Services) -> None:
    """Register the ``/api`` routes."""

    def delete(tenant: str, study: str, series: str | None, sop: str | None) -> JSONResponse:
        check_uids(*(u for u in (study, series, sop) if u))
        rows = services.index.instances_of(tenant, study, series, [sop] if sop else None)
        if not rows:
            return JSONResponse({"deleted": 0})
        level, uid = ("instance", sop) if sop else (("series", series) if series else ("study", study))
        n = manage.delete(services.storage, services.queue, services.index, services.cache, tenant, level,
                          str(uid))
        return JSONResponse({"deleted": n})

    @app.delete(API + "/studies/{study}")
    def delete_study(study: str, tenant: str = Depends(tenant_of)) -> JSONResponse:
        return delete(tenant, study, None, None)

    @app.delete(API + "/studies/{study}/series/{series}")
    def delete_series(study: str, series: str, tenant: str = Depends(tenant_of)) -> JSONResponse:
        return delete(tenant, study, series, None)

    @app.delete(API + "/studies/{study}/series/{series}/instances/{sop}")
    def delete_instance(study: str, series: str, sop: str, tenant: str = Depends(tenant_of)) -> JSONResponse:
        return delete(tenant, study, series, sop)

    @app.post(API + "/send")
    async def send(request: Request, tenant: str = Depends(tenant_of)) -> StreamingResponse:
        body = await read_json(request, empty={})  # bounded in size and depth: 413/400
        try:
            to, level, uid = str(body["to"]), str(body.get("level", "study")), str(body["uid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(400, 'expected JSON {"to": AE, "level": "study|series|instance", "uid": UID}: '
                                     f"{type(exc).__name__} {exc}") from None
        try:
            manage.destination(services.remote_aes, to)
            rows = manage.resolve(services.index, tenant, level, uid)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        if not rows:
            raise HTTPException(404, f"no {level} {uid}")
        request.state.study, request.state.detail = rows[0]["study_uid"], f"{level} {uid} to {to}"  # audit log

        def results() -> Iterator[bytes]:
            sent = failed = 0
            try:
                for r in manage.send(services.storage, rows, services.remote_aes, to, services.ae_title):
                    sent, failed = sent + r.ok, failed + (not r.ok)
                    yield _line({"sop": r.sop_uid, "status": r.status, "sent_as": r.sent_as,
                                 **({"comment": r.comment} if r.comment else {})})
            except CubepacsError as exc:
                yield _line({"error": str(exc)})
                failed = len(rows) - sent
            yield _line({"done": True, "to": to, "instances": len(rows), "sent": sent, "failed": failed})

        return StreamingResponse(results(), media_type="application/x-ndjson")
