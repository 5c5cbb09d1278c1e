"""The DICOMweb application: tenant authentication, QIDO-RS; WADO-RS and STOW-RS routes from their modules.

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

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from cubepacs.archive import metrics
from cubepacs.archive.apikeys import normalize
from cubepacs.archive.index.matching import split_values
from cubepacs.archive.index.store import Index
from cubepacs.archive.keys import WEB_ROOT
from cubepacs.archive.logs import REQUEST_ID
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.storage.base import Storage
from cubepacs.archive.web.auth import authenticate, record
from cubepacs.dicom.dicomjson import pn_groups

DICOM_JSON = "application/dicom+json"
MAX_CACHED = 32 * 1024 * 1024  # larger answers are not cached (a 1,000-instance MR series' metadata is ~14 MB)
ROOT = WEB_ROOT

_STUDY = {"StudyDate": "study_date", "StudyTime": "study_time", "AccessionNumber": "accession_number",
          "ReferringPhysicianName": "referring_physician", "PatientName": "patient_name", "PatientID": "patient_id",
          "PatientBirthDate": "patient_birth_date", "PatientSex": "patient_sex", "StudyInstanceUID": "study_uid",
          "StudyID": "study_id", "StudyDescription": "study_description"}
_SERIES = {"SeriesInstanceUID": "series_uid", "Modality": "modality", "SeriesNumber": "series_number",
           "SeriesDescription": "series_description", "SeriesDate": "series_date"}
_INSTANCE = {"SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class_uid", "InstanceNumber": "instance_number",
             "Rows": "rows", "Columns": "columns", "NumberOfFrames": "frames"}
_PAGING = {"limit", "offset", "fuzzymatching", "includefield"}


@dataclass
class Services:
    """What the web layer needs, shared with the other services only through these backends."""

    storage: Storage
    queue: Queue
    index: Index
    api_keys: dict[str, str]
    access_log: Any = None
    cache: Any = None  # a cubepacs.archive.cache Cache, or None
    overwrite: bool = False  # a re-sent SOP Instance UID replaces the stored one
    metadata_at_ingest: bool = False  # each instance's DICOM JSON kept in the index when it is stored
    max_request_bytes: int = 4 * 1024**3
    remote_aes: dict[str, str] = field(default_factory=dict)  # peers for /api/send
    ae_title: str = "CUBEPACS"  # our calling AE title when sending
    sessions: Any = None  # an accounts.Accounts: browser sessions (cookie), sign-in failures, audit log when set
    users: Any = field(default_factory=dict)  # name → {password: argon2 hash, tenant, role}; a session.LiveUsers
    session_hours: float = 8.0
    cors_origins: list[str] = field(default_factory=list)
    public_url: str = ""
    trusted_proxies: list[str] = field(default_factory=list)
    viewer_dir: str = ""  # the OHIF build served at / ("" or missing: a page says how to install it)
    oidc: Any = None  # a web.tokens.OidcVerifier: bearer JWTs accepted when set
    keys_file: str = ""  # data_dir/api-keys.json: re-read when it changes (a revoked key stops working at once)
    configured_keys: dict[str, str] = field(default_factory=dict)
    read_ahead: Any = None  # a web.readahead.ReadAhead (create_app makes it): frames warmed for scrolling viewers
    _keys_mtime: float = 0.0

    def refresh_keys(self) -> None:
        """Re-read the key file when it changed since the last request."""
        import os

        if not self.keys_file:
            return
        try:
            mtime = os.stat(self.keys_file).st_mtime
        except OSError:
            return
        if mtime != self._keys_mtime:
            from cubepacs.archive import apikeys

            self._keys_mtime = mtime
            self.api_keys = {**apikeys.load(os.path.dirname(self.keys_file)),
                             **apikeys.normalize(self.configured_keys)}


def _element(keyword: str, value: Any) -> dict[str, Any] | None:
    if value in (None, "", []):
        return None
    vr = str(dictionary_VR(keyword))
    values = value if isinstance(value, list) else [value]
    if vr == "PN":  # the index keeps a name's component groups: Alphabetic=Ideographic=Phonetic
        values = [pn_groups(str(v)) for v in values]
    elif vr in ("IS", "US", "UL"):
        values = [int(v) for v in values]
    return {"vr": vr, "Value": values}


def to_json(row: dict[str, Any], fields: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A QIDO result as DICOM JSON (tags as ``GGGGEEEE``)."""
    out: dict[str, Any] = {}
    for kw, col in fields.items():
        el = _element(kw, row.get(col))
        if el is not None:
            out[f"{tag_for_keyword(kw):08X}"] = el
    for kw, value in (extra or {}).items():
        el = _element(kw, value)
        if el is not None:
            out[f"{tag_for_keyword(kw):08X}"] = el
    return dict(sorted(out.items()))


async def tenant_of(request: Request) -> str:
    """The request's tenant, its credential and role checked (:func:`cubepacs.archive.web.auth.authenticate`:
    401 without a valid credential, 403 when the role may not use the route)."""
    return (await authenticate(request)).tenant


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


def public_base(request: Request) -> str:
    """The archive's public base URL (no trailing slash): ``public_url``, else the request's scheme and host —
    a proxy's X-Forwarded-Proto/Host only when it is one of ``trusted_proxies``."""
    services: Services = request.app.state.services
    if services.public_url:
        return services.public_url.rstrip("/")
    scheme, host = request.url.scheme, request.headers.get("host") or request.url.netloc
    client = request.client.host if request.client else ""
    if client and client in services.trusted_proxies:
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    return f"{scheme}://{host}"


_INTEGER = {"SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"}
_INT = re.compile(r"-?[0-9]{1,12}")
_DATE = re.compile(r"(\d{8})?(-(\d{8})?)?")
_UID = re.compile(r"[0-9.]{1,64}")


def _check_value(keyword: str, key: str, value: str) -> None:
    """400 for a query value the attribute can never match (a number that is not one, a malformed date); each of
    several values (``\\`` or ``,``: PS3.18 8.3.4.1) is checked."""
    if value in ("", "*"):
        return
    vr = str(dictionary_VR(keyword))
    for item in split_values(value, qido=True):
        if keyword in _INTEGER and not (_INT.fullmatch(item) and abs(int(item)) < 2**31):
            raise HTTPException(400, f"query attribute {key!r} must be an integer, not {item[:40]!r}")
        if vr == "DA" and not _DATE.fullmatch(item):
            raise HTTPException(400, f"query attribute {key!r} must be a date YYYYMMDD or a range, not {item[:40]!r}")
        if vr == "UI" and not _UID.fullmatch(item):
            raise HTTPException(400, f"query attribute {key!r} must be UIDs (digits and dots), not {item[:40]!r}")


def _bounded_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _INT.fullmatch(text) or not low <= int(text) <= high:
        raise HTTPException(400, f"{name} must be an integer from {low} to {high}, not {text[:40]!r}")
    return int(text)


def query_filters(request: Request) -> tuple[dict[str, Any], int, int, bool]:
    """QIDO query parameters → (filters by keyword, limit, offset, fuzzy); 400 with the reason for an unknown
    attribute or a value it can never have."""
    filters: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key.lower() in _PAGING:
            continue
        keyword = key
        if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
            keyword = keyword_for_tag(int(key, 16)) or key
        if tag_for_keyword(keyword) is None:
            raise HTTPException(400, f"unknown query attribute {key[:64]!r}")
        _check_value(keyword, key, value)
        filters[keyword] = value
    limit = min(_bounded_int(request, "limit", 100, 1, 2**31 - 1), 10_000)
    offset = _bounded_int(request, "offset", 0, 0, 2**31 - 1)
    fuzzy = request.query_params.get("fuzzymatching", "false").lower() == "true"
    return filters, limit, offset, fuzzy


def _json(items: list[dict[str, Any]]) -> Response:
    if not items:
        return Response(status_code=204)
    return JSONResponse(items, media_type=DICOM_JSON)


def cached(services: Services, tenant: str, kind: str, request: Request, build: Any, vary: str = "") -> Response:
    """``build()``'s response, from the cache when an unchanged tenant asked the same before; ``vary``: what else
    the answer depends on (metadata with absolute BulkDataURIs: the public base URL)."""
    if services.cache is None:
        return build()  # type: ignore[no-any-return]
    query = "&".join(sorted(f"{k}={v}" for k, v in request.query_params.multi_items()))
    key = services.cache.key(tenant, kind, f"{vary}{request.url.path}?{query}")
    hit = services.cache.get(key)
    metrics.CACHE.labels(result="hit" if hit is not None else "miss").inc()
    if hit is not None:
        return Response(hit, status_code=204) if hit == b"" else Response(hit, media_type=DICOM_JSON)
    response: Response = build()
    if response.status_code in (200, 204) and len(response.body) <= MAX_CACHED:
        services.cache.set(key, bytes(response.body))
    return response


def create_app(services: Services, extensions: Sequence[Any] = ()) -> FastAPI:
    """The DICOMweb app (routes under ``/dicom-web``), the archive's API (``/api``), health, metrics and the web
    UI; ``extensions`` are functions ``(app, services)`` adding more routes (before the UI's catch-all)."""
    from cubepacs.archive.web import admin, adminui, api, declared, fastframes, openapi, stow, ui, wado

    app = FastAPI(title="cubepacs DICOMweb", docs_url=None, redoc_url=None)
    openapi.describe(app)  # the document says what the routes really answer (codes, content types)
    declared.install(app)  # a declared error a route lets through is its 4xx/503, never a 500
    services.api_keys = normalize(services.api_keys)  # only hashes are kept in memory too
    app.state.services = services
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

    @app.get(ROOT + "/studies")
    def search_studies(request: Request, tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_studies(tenant, filters, limit, offset, fuzzy, qido=True)
            return _json([to_json(r, _STUDY, {"ModalitiesInStudy": r.get("modalities"),
                                              "NumberOfStudyRelatedSeries": r.get("series"),
                                              "NumberOfStudyRelatedInstances": r.get("instances")}) for r in rows])

        return cached(services, tenant, "qido", request, build)

    @app.get(ROOT + "/series")
    @app.get(ROOT + "/studies/{study}/series")
    def search_series(request: Request, study: str | None = None, tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_series(tenant, filters, study, limit, offset, fuzzy, qido=True)
            return _json([to_json(r, {**_STUDY, **_SERIES},
                                  {"NumberOfSeriesRelatedInstances": r.get("series_related_instances")})
                          for r in rows])

        return cached(services, tenant, "qido", request, build)

    @app.get(ROOT + "/instances")
    @app.get(ROOT + "/studies/{study}/instances")
    @app.get(ROOT + "/studies/{study}/series/{series}/instances")
    def search_instances(request: Request, study: str | None = None, series: str | None = None,
                         tenant: str = Depends(tenant_of)) -> Response:
        filters, limit, offset, fuzzy = query_filters(request)

        def build() -> Response:
            rows = services.index.search_instances(tenant, filters, study, series, limit, offset, fuzzy,
                                                     qido=True)
            return _json([to_json(r, {**_STUDY, **_SERIES, **_INSTANCE}) for r in rows])

        return cached(services, tenant, "qido", request, build)

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

    wado.add_routes(app, services)
    stow.add_routes(app, services)
    api.add_routes(app, services)
    admin.add_routes(app, services)
    for extend in extensions:
        extend(app, services)
    adminui.add_routes(app, services)  # /ui: the archive's own pages
    ui.add_routes(app, services)  # last: its catch-all serves the viewer's client-side routes
    return app
