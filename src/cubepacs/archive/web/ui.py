"""The web UI at ``/``: sign-in, sign-out, and the OHIF viewer (npm ``@ohif/app``) served from the archive.

* ``GET /login`` a sign-in form (API key, or user name and password); ``POST /login`` opens a server-side session
  (``web/session.py``), sets its cookie and goes to ``/``; failed sign-ins are limited per user name and per
  address (429 with ``Retry-After``, ``accounts.py``); ``POST /logout`` ends the session on the server (a copy of
  the cookie answers 401 from then on) and clears the cookie.
* ``GET /`` and every client-side route of the viewer: OHIF's ``index.html`` for a signed-in browser (else a
  redirect to ``/login``); its assets as static files; ``/app-config.js`` written from the archive's settings
  (same-origin DICOMweb roots, STOW upload enabled, the session's CSRF token added to state-changing requests).
* Without an installed viewer (``cubepacs viewer install``), ``/`` says how to get it.

Example
-------
>>> "cubepacs viewer install" in NOT_INSTALLED
True
"""

from __future__ import annotations

import html
import json
import mimetypes
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.auth.apikeys import hash_key
from cubepacs.archive.web.auth import Identity, key_identity, session_of, user_identity
from cubepacs.archive.web.context import ROOT, Services
from cubepacs.archive.web.proxies import client_address
from cubepacs.archive.web.session import COOKIE

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cubepacs</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:#0b1a2a;color:#e8eef5;display:flex;justify-content:center;
align-items:center;min-height:100vh;margin:0}}main{{background:#132a40;padding:2rem 2.5rem;border-radius:10px;
min-width:22rem;max-width:40rem}}h1{{margin-top:0;font-size:1.4rem}}label{{display:block;margin:.8rem 0 .2rem}}
input{{width:100%;padding:.5rem;border-radius:5px;border:1px solid #3b5d7d;background:#0b1a2a;color:#e8eef5;
box-sizing:border-box}}button{{margin-top:1.2rem;padding:.55rem 1.2rem;border:0;border-radius:5px;background:#4aa3df;
color:#04121f;font-weight:600;cursor:pointer}}.err{{color:#ff9b9b}}code{{background:#0b1a2a;padding:.1rem .3rem}}
hr{{border:0;border-top:1px solid #3b5d7d;margin:1.2rem 0}}</style></head><body><main>{body}</main></body></html>"""

LOGIN = """<h1>cubepacs — sign in</h1>{error}
<form method="post" action="/login">
<label for="api_key">API key</label><input id="api_key" name="api_key" type="password" autocomplete="off">
<hr><label for="user">or user name</label><input id="user" name="user" autocomplete="username">
<label for="password">password</label><input id="password" name="password" type="password"
autocomplete="current-password"><button type="submit">Sign in</button></form>"""

NOT_INSTALLED = """<h1>cubepacs</h1><p>You are signed in, but the viewer is not installed on this server.</p>
<p>Install it (OHIF, from npm) and restart: <code>cubepacs viewer install</code></p>
<p>DICOMweb is at <code>{root}</code>.</p><form method="post" action="/logout"><button>Sign out</button></form>"""

# Added to OHIF's configuration: the CSRF token on the browser's state-changing requests to this origin, and a
# sign-out button.
_CLIENT = """
(function () {{
  var token = {csrf};
  var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {{
    this._cpUnsafe = !/^(GET|HEAD|OPTIONS)$/i.test(method) &&
      new URL(url, window.location.href).origin === window.location.origin;
    return open.apply(this, arguments);
  }};
  XMLHttpRequest.prototype.send = function () {{
    if (this._cpUnsafe) this.setRequestHeader("X-CSRF-Token", token);
    return send.apply(this, arguments);
  }};
  var fetch0 = window.fetch;
  window.fetch = function (input, init) {{
    init = init || {{}};
    var method = (init.method || (input && input.method) || "GET").toUpperCase();
    var url = new URL(typeof input === "string" ? input : input.url, window.location.href);
    if (!/^(GET|HEAD|OPTIONS)$/.test(method) && url.origin === window.location.origin) {{
      init.headers = new Headers(init.headers || {{}});
      init.headers.set("X-CSRF-Token", token);
    }}
    return fetch0.call(this, input, init);
  }};
  window.addEventListener("DOMContentLoaded", function () {{
    var f = document.createElement("form");
    f.method = "post"; f.action = "/logout"; f.id = "cubepacs-signout";
    f.style.cssText = "position:fixed;right:8px;bottom:8px;z-index:10000";
    f.innerHTML = '<button style="font-size:12px;padding:3px 8px;opacity:.8">Sign out</button>';
    document.body.appendChild(f);
  }});
}})();
"""


def app_config(origin: str, csrf: str, name: str = "cubepacs", banner: str = "never") -> str:
    """OHIF's ``window.config``: this archive as its one DICOMweb data source, upload through STOW-RS, and its
    branding (``web/branding.py``: ``name`` in place of OHIF's logo and in the tour, the ``banner`` setting)."""
    from cubepacs.archive.web.branding import branding_js

    root = origin + ROOT
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "cubepacs",
        "configuration": {
            "friendlyName": "cubepacs", "name": "cubepacs", "wadoUriRoot": root, "qidoRoot": root, "wadoRoot": root,
            "qidoSupportsIncludeField": False, "imageRendering": "wadors", "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True, "supportsFuzzyMatching": True, "supportsWildcard": True,
            "dicomUploadEnabled": True, "singlepart": "pdf,video", "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/", "extensions": [], "modes": [], "showStudyList": True, "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": True, "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True, "defaultDataSourceName": "cubepacs", "dataSources": [source],
    }
    return (f"window.config = {json.dumps(config, indent=1)};\n" + branding_js(name, banner)
            + _CLIENT.format(csrf=json.dumps(csrf)))


def _page(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(PAGE.format(body=body), status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", **(headers or {})})


def add_routes(app: FastAPI, services: Services) -> None:
    """Register sign-in, sign-out, the viewer's configuration and its files (a catch-all: register last)."""
    viewer = Path(services.viewer_dir) if services.viewer_dir else None

    def installed() -> bool:
        return viewer is not None and (viewer / "index.html").is_file()

    @app.get("/login")
    def login_form() -> HTMLResponse:
        return _page(LOGIN.format(error=""))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body())[:8192].decode("utf-8", "replace")).items()}
        accounts = services.sessions
        address = client_address(request, services.trusted_proxies)  # behind a proxy: the browser's own
        key, name = form.get("api_key", "").strip(), form.get("user", "").strip()
        if accounts is None:
            return _page(LOGIN.format(error='<p class="err">Sign-in is off on this server.</p>'), 503)
        wait = await run_in_threadpool(accounts.blocked, name or None, address)
        if wait > 0:
            return _page(LOGIN.format(error=f'<p class="err">Too many failed sign-ins: try again in '
                                            f'{int(wait) + 1} s.</p>'), 429, {"Retry-After": str(int(wait) + 1)})
        found: Identity | None = None
        proof = ""
        if key:
            found = key_identity(services, key)
            proof = hash_key(key)
        elif name:
            checked = await run_in_threadpool(user_identity, services, name, form.get("password", ""))
            if checked is not None:
                found, proof = checked
        if found is None:
            await run_in_threadpool(accounts.failed, name or None, address)
            return _page(LOGIN.format(error='<p class="err">Unknown API key, or wrong user name or password.</p>'),
                         401)
        if name:
            await run_in_threadpool(accounts.succeeded, name)
        token, _ = await run_in_threadpool(accounts.issue, found.tenant, found.role, found.principal, proof,
                                           services.session_hours, address)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, max_age=int(services.session_hours * 3600), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        request.state.tenant, request.state.principal, request.state.role = found.tenant, found.principal, found.role
        request.state.action = "sign-in"
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token and services.sessions is not None:
            ident = session_of(request)
            if ident is not None:
                state = request.state
                state.tenant, state.principal, state.role, state.action = (ident.tenant, ident.principal,
                                                                           ident.role, "sign-out")
            services.sessions.end(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/app-config.js")
    def config_js(request: Request) -> Response:
        from cubepacs.archive.web.context import public_base

        session = session_of(request)
        if session is None:
            return Response("window.location.href = '/login';", media_type="text/javascript", status_code=401)
        request.state.tenant = session.tenant
        return Response(app_config(public_base(request), session.csrf, services.viewer_name, services.viewer_banner),
                        media_type="text/javascript",
                        headers={"Cache-Control": "no-store"})

    @app.get("/{path:path}")
    def viewer_files(path: str, request: Request) -> Response:
        if path.startswith(("dicom-web/", "api/")) or path in ("dicom-web", "api"):
            return Response(status_code=404)
        if installed():
            assert viewer is not None
            target = (viewer / path).resolve()
            if path and target.is_file() and viewer.resolve() in target.parents and target.name != "index.html":
                media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                if target.suffix == ".wasm":
                    media = "application/wasm"
                return FileResponse(target, media_type=media)
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        request.state.tenant = session.tenant
        if not installed():
            return _page(NOT_INSTALLED.format(root=html.escape(ROOT)))
        assert viewer is not None
        return FileResponse(viewer / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})
