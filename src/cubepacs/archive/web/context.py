"""What the web routes share: the services they run on, the tenant of a request, the public base URL, the
answer cache and the DICOMweb root — so that every route module imports this and ``app.py`` only assembles.

Example
-------
>>> import tempfile, os
>>> from cubepacs.archive.index.store import Index
>>> from cubepacs.archive.queue.embedded import EmbeddedQueue
>>> from cubepacs.archive.storage.file import FileStorage
>>> tmp = tempfile.mkdtemp()
>>> services = Services(FileStorage(tmp), EmbeddedQueue(os.path.join(tmp, "q.db")), Index.from_url("sqlite://"),
...                     api_keys={})
>>> ROOT, DICOM_JSON, json_items([]).status_code
('/dicom-web', 'application/dicom+json', 204)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from cubepacs.archive.index.store import Index
from cubepacs.archive.keys import WEB_ROOT
from cubepacs.archive.observability import metrics
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.storage.base import Storage
from cubepacs.archive.web.auth import authenticate

DICOM_JSON = "application/dicom+json"
MAX_CACHED = 32 * 1024 * 1024  # larger answers are not cached (a 1,000-instance MR series' metadata is ~14 MB)
ROOT = WEB_ROOT


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
    max_value_bytes: int = 1 << 30  # the largest whole pixel value a cube reader decompresses (settings)
    remote_aes: dict[str, str] = field(default_factory=dict)  # peers for /api/send
    dicomweb_peers: dict[str, str] = field(default_factory=dict)  # STOW-RS peers of send jobs (stowsend.py)
    ae_title: str = "CUBEPACS"  # our calling AE title when sending
    sessions: Any = None  # an accounts.Accounts: browser sessions (cookie), sign-in failures, audit log when set
    users: Any = field(default_factory=dict)  # name → {password: argon2 hash, tenant, role}; a session.LiveUsers
    session_hours: float = 8.0
    cors_origins: list[str] = field(default_factory=list)
    public_url: str = ""
    trusted_proxies: list[str] = field(default_factory=list)
    viewer_dir: str = ""  # the OHIF build served at / ("" or missing: a page says how to install it)
    viewer_name: str = "cubepacs"  # OHIF's logo, title of its tour (web/branding.py)
    viewer_banner: str = "never"  # OHIF's "investigational use" banner (web/branding.py)
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
            from cubepacs.archive.auth import apikeys

            self._keys_mtime = mtime
            self.api_keys = {**apikeys.load(os.path.dirname(self.keys_file)),
                             **apikeys.normalize(self.configured_keys)}


async def tenant_of(request: Request) -> str:
    """The request's tenant, its credential and role checked (:func:`cubepacs.archive.web.auth.authenticate`:
    401 without a valid credential, 403 when the role may not use the route)."""
    return (await authenticate(request)).tenant


def public_base(request: Request) -> str:
    """The archive's public base URL (no trailing slash): ``public_url``, else the request's scheme and host —
    a proxy's X-Forwarded-Proto/Host only when it is one of ``trusted_proxies`` (``web/proxies.py``)."""
    from cubepacs.archive.web.proxies import forwarded

    services: Services = request.app.state.services
    if services.public_url:
        return services.public_url.rstrip("/")
    scheme, host = request.url.scheme, request.headers.get("host") or request.url.netloc
    if forwarded(request, services.trusted_proxies):
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    return f"{scheme}://{host}"


def json_items(items: list[dict[str, Any]]) -> Response:
    """A QIDO answer: the items as DICOM JSON, or 204 when there are none."""
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
