"""The web application, assembled: middlewares, health and metrics, and the routes of each module (QIDO-RS
``qido.py``, WADO-RS ``wado.py``, STOW-RS ``stow.py``, the API, the admin UI, the viewer); what the routes share is
in ``context.py``.

Every request needs a credential — ``Authorization: Bearer <api key or OIDC token>``, ``X-Api-Key``, HTTP Basic
with the key as password, or a browser session cookie — which selects the tenant and role (``web/auth.py``,
``roles.py``); a tenant only ever sees its own rows and objects. ``/healthz``, ``/readyz`` and ``/metrics`` need
none.

Example
-------
>>> import tempfile, os
>>> from cubepacs.archive.index.store import Index
>>> from cubepacs.archive.queue.embedded import EmbeddedQueue
>>> from cubepacs.archive.storage.file import FileStorage
>>> tmp = tempfile.mkdtemp()
>>> app = create_app(Services(FileStorage(tmp), EmbeddedQueue(os.path.join(tmp, "q.db")), Index.from_url("sqlite://"),
...                           api_keys={"key": "tenant-a"}))
>>> app.title
'cubepacs DICOMweb'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from cubepacs.archive.auth.apikeys import normalize
from cubepacs.archive.observability import metrics
from cubepacs.archive.observability.logs import REQUEST_ID
from cubepacs.archive.web.auth import record
from cubepacs.archive.web.context import DICOM_JSON, ROOT, Services, cached, public_base, tenant_of

# what the routes share lives in web/context.py; these names stay importable from here
__all__ = ["DICOM_JSON", "ROOT", "AccessMiddleware", "Services", "cached", "create_app", "public_base", "tenant_of"]


class AccessMiddleware:
    """Request id, Prometheus counters and the access log row of every request — a plain ASGI middleware (it
    only watches ``http.response.start`` go by; Starlette's ``BaseHTTPMiddleware`` re-streamed every body through
    a task and a memory stream, a few milliseconds per 512 KB frame)."""

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = secrets.token_hex(8)
        REQUEST_ID.set(request_id)
        seen: dict[str, int] = {"status": 500, "bytes": 0}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = list(message.get("headers", []))
                for name, value in headers:
                    if name.lower() == b"content-length":
                        seen["bytes"] = int(value or 0)
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP.labels(route=route, method=scope["method"], status=str(seen["status"])).inc()
            metrics.HTTP_SECONDS.labels(route=route).observe(time.perf_counter() - start)
            client = scope.get("client")
            state = scope.get("state", {})
            record(self.services, scope, seen["status"], client[0] if client else None)
            if self.services.access_log is not None:
                self.services.access_log.add(
                    tenant=state.get("tenant"), method=scope["method"], path=scope["path"],
                    status=seen["status"], bytes=seen["bytes"], duration_ms=(time.perf_counter() - start) * 1000,
                    client=client[0] if client else None, request_id=request_id, user=state.get("principal"),
                    role=state.get("role"), action=state.get("action"), study_uid=state.get("study") or None)


def create_app(services: Services, extensions: Sequence[Any] = ()) -> FastAPI:
    """The DICOMweb app (routes under ``/dicom-web``), the archive's API (``/api``), health, metrics and the web
    UI; ``extensions`` are functions ``(app, services)`` adding more routes (before the UI's catch-all)."""
    from cubepacs.archive.web import (
        admin,
        adminui,
        api,
        declared,
        fastframes,
        jobsui,
        openapi,
        qido,
        stow,
        studyactions,
        ui,
        uploads,
        wado,
    )

    app = FastAPI(title="cubepacs DICOMweb", docs_url=None, redoc_url=None)
    openapi.describe(app)  # the document says what the routes really answer (codes, content types)
    declared.install(app)  # a declared error a route lets through is its 4xx/503, never a 500
    services.api_keys = normalize(services.api_keys)  # only hashes are kept in memory too
    app.state.services = services
    if services.sessions is not None:  # refused STOW-RS parts kept next to the DIMSE ones (observability/events.py)
        from cubepacs.archive.observability import events

        events.configure(services.sessions.path)
    services.read_ahead = wado.read_ahead(services)
    app.add_middleware(fastframes.FrameFastPath, services=services)  # first added: innermost (inside CORS, access log)
    if services.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # preflights are answered here, before any route asks for a key
        app.add_middleware(CORSMiddleware, allow_origins=services.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "X-Api-Key", "Content-Type", "Accept", "X-CSRF-Token"],
                           expose_headers=["Content-Type", "Content-Length", "Content-Location", "Warning",
                                           "Location"], max_age=600)

    app.add_middleware(AccessMiddleware, services=services)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = metrics.readiness(services.storage, services.queue, services.index)
        ready = all(v == "ok" for k, v in checks.items() if not k.endswith("_ms"))
        return JSONResponse({"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    qido.add_routes(app, services)
    wado.add_routes(app, services)
    stow.add_routes(app, services)
    api.add_routes(app, services)
    admin.add_routes(app, services)
    for extend in extensions:
        extend(app, services)
    adminui.add_routes(app, services)  # /ui: the archive's own pages
    studyactions.add_routes(app, services)  # their labels, downloads, deletion
    uploads.add_routes(app, services)  # uploads (files, folders, ZIPs)
    jobsui.add_routes(app, services)  # send jobs
    from cubepacs.archive.web import opsui

    opsui.add_routes(app, services)  # /ui/operations
    ui.add_routes(app, services)  # last: its catch-all serves the viewer's client-side routes
    return app
