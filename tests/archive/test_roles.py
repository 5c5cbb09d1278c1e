"""Roles on every HTTP route: the tenant-isolation matrix of ``test_archive.py`` extended to roles.

The app is the real one (``create_app`` over a file storage, an embedded queue, a SQLite index, the accounts
database and the research export extension, as ``cubepacs serve`` builds it), served by uvicorn on a free
127.0.0.1 port in a thread of the test. Every route of
``app.routes`` is requested by each role, with an API key and with a browser session: a route missing from
``roles.ROUTES`` fails, a role refused must get 403 before anything is done, a role allowed must get past the
check (any answer but 401/403), and no credential gets 401.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.routing import Route

from cubepacs.archive.auth import apikeys, roles
from cubepacs.archive.auth.accounts import Accounts
from cubepacs.archive.index.store import Index
from cubepacs.archive.queue.embedded import EmbeddedQueue
from cubepacs.archive.storage.file import FileStorage
from cubepacs.archive.web.app import Services, create_app
from cubepacs.archive.web.session import COOKIE, LiveUsers
from cubepacs.archive.web.tokens import OidcVerifier
from tests.archive.conftest import free_port, serve_jwks, wait_until

SAMPLE = {"study": "1.2.3", "series": "1.2.3.4", "sop": "1.2.3.4.5", "frames": "1", "path": "7FE00010",
          "name": "nobody", "key_id": "abcdef123456", "path:path": "7FE00010", "label": "x", "job": "0123abcd"}
# bodies that make an allowed request stop at validation (nothing is created or sent)
BODY: dict[tuple[str, str], Any] = {("POST", "/api/keys"): {"role": "no-such-role"},
                                    ("POST", "/api/users"): {"name": ""}, ("POST", "/api/send"): {},
                                    ("POST", "/api/export"): {}, ("POST", "/api/sessions/end"): {}}


class Site:
    def __init__(self, app: Any, client: httpx.Client, keys: dict[str, str], accounts: Accounts, idp: Any) -> None:
        self.app, self.client, self.keys, self.accounts, self.idp = app, client, keys, accounts, idp

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "https://idp.test", "aud": "cubepacs", "org": "alpha", "sub": "someone", "exp": now + 300,
                **claims}
        return jwt.encode(body, self.idp, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from cubepacs.research.api import routes
    from cubepacs.research.exportui import ui_routes

    root = tmp_path_factory.mktemp("roles")
    data = root / "data"
    keys = {role: apikeys.create(data, "alpha", role) for role in roles.ROLES}
    keys["beta-admin"] = apikeys.create(data, "beta", "admin")
    accounts = Accounts(data / "accounts.db")
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    jwks = serve_jwks({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    oidc = OidcVerifier(f"http://127.0.0.1:{jwks.server_address[1]}/jwks.json", "https://idp.test", "cubepacs", "org")
    services = Services(FileStorage(str(data / "storage")), EmbeddedQueue(str(data / "queue.db")),
                        Index.from_url(f"sqlite:///{data}/index.db"), {}, sessions=accounts,
                        users=LiveUsers(data / "users.json"), keys_file=str(data / "api-keys.json"), oidc=oidc)
    app = create_app(services, extensions=[routes(str(root / "exports"), ""), ui_routes(str(root / "exports"), "")])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        yield Site(app, client, keys, accounts, signing)
    server.should_exit = True
    thread.join(timeout=10)
    jwks.shutdown()
    jwks.server_close()
    services.queue.close()
    services.index.close()


def _endpoints(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route of the app — FastAPI's and plain Starlette ones (``/openapi.json``) alike."""
    out = []
    for route in app.routes:
        assert isinstance(route, Route), f"a route of another kind ({type(route).__name__}): give it a role rule"
        out.extend((m, route.path) for m in sorted(route.methods or ()) if m != "HEAD")
    return out


def _url(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLE[m.group(1)], path)


def _call(site: Site, method: str, path: str, headers: dict[str, str]) -> int:
    body = BODY.get((method, path))
    r = site.client.request(method, _url(path), headers=headers, json=body)
    return r.status_code


def _session(site: Site, role: str) -> dict[str, str]:
    """A browser session opened with the role's key: its cookie and CSRF token as headers."""
    r = site.client.post("/login", data={"api_key": site.keys[role]})
    assert r.status_code == 303, r.text
    token = r.cookies[COOKIE]
    site.client.cookies.clear()
    session = site.accounts.get(token)
    assert session is not None and session.role == role
    return {"Cookie": f"{COOKIE}={token}", "X-CSRF-Token": session.csrf}


def test_every_route_has_a_role_rule(site: Site) -> None:
    endpoints = _endpoints(site.app)
    assert len(endpoints) >= 40
    missing = [e for e in endpoints if roles.required(*e) == roles.UNLISTED]
    assert not missing, f"routes without a role rule in roles.ROUTES: {missing}"
    stale = set(roles.ROUTES) - set(endpoints)
    assert not stale, f"roles.ROUTES names routes the app does not have: {stale}"


@pytest.mark.parametrize("credential", ["key", "session", "oidc"])
def test_each_role_is_refused_what_it_may_not_do(site: Site, credential: str) -> None:
    refused: dict[str, list[str]] = {r: [] for r in roles.ROLES}
    for role in roles.ROLES:
        headers = ({"Authorization": f"Bearer {site.keys[role]}"} if credential == "key"
                   else _session(site, role) if credential == "session"
                   else {"Authorization": f"Bearer {site.token(role=role)}"})
        for method, path in _endpoints(site.app):
            need = roles.required(method, path)
            if need is None:
                continue
            status = _call(site, method, path, headers)
            if roles.allows(role, need):
                assert status not in (401, 403), (role, method, path, status)
            else:
                assert status == 403, (role, method, path, status)
                refused[role].append(f"{method} {path}")
    # what each role was refused, as the issue states it: a viewer only views, a user may not delete or administer
    assert not refused["admin"]
    assert {"DELETE /api/studies/{study}", "GET /api/audit", "POST /api/users"} <= set(refused["user"])
    assert "POST /dicom-web/studies" not in refused["user"] and "POST /api/send" not in refused["user"]
    assert {"POST /dicom-web/studies", "POST /api/send", "POST /api/export", "DELETE /api/studies/{study}"} \
        <= set(refused["viewer"])
    assert not [p for p in refused["viewer"] if p.startswith("GET /dicom-web")]
    # the rules, read off the routes themselves and not off roles.ROUTES: a viewer only views (every request
    # that may change something is refused to it), and only an admin manages users, keys, sessions and the audit log
    endpoints = [e for e in _endpoints(site.app) if roles.required(*e) is not None]
    changing = {f"{m} {p}" for m, p in endpoints if m in ("POST", "PUT", "PATCH", "DELETE")}
    assert changing <= set(refused["viewer"]), changing - set(refused["viewer"])
    administering = {f"{m} {p}" for m, p in endpoints
                     if p.startswith(("/api/users", "/api/keys", "/api/audit", "/ui/admin", "/ui/audit"))}
    assert administering and administering <= set(refused["user"]), administering - set(refused["user"])


def test_without_credentials_only_public_routes_answer(site: Site) -> None:
    public = {}
    for method, path in _endpoints(site.app):
        status = _call(site, method, path, {})
        if roles.required(method, path) is None:
            public[f"{method} {path}"] = status
        else:  # the admin UI's pages send a browser to the sign-in page instead
            assert status == (303 if path.startswith("/ui") else 401), (method, path, status)
    # the public ones: health and metrics, the sign-in page; a failed sign-in, the viewer's configuration and
    # files without a session say so (401 or a redirect to the sign-in page)
    assert public == {"GET /healthz": 200, "GET /readyz": 200, "GET /metrics": 200, "GET /openapi.json": 200,
                      "GET /login": 200, "GET /ui/static/htmx.min.js": 200,
                      "POST /login": 401, "POST /logout": 303, "GET /app-config.js": 401, "GET /{path:path}": 303}


def test_oidc_role_claims(site: Site) -> None:
    def me(token: str) -> Any:
        return site.client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()

    assert me(site.token()) == {"tenant": "alpha", "role": "viewer", "who": "oidc:someone"}  # no claim: viewer
    assert me(site.token(role=["viewer", "admin"]))["role"] == "admin"  # a list: the most privileged
    assert me(site.token(role="superuser"))["role"] == "viewer"  # unknown: viewer
    upload = site.client.post("/dicom-web/studies", headers={"Authorization": f"Bearer {site.token()}"})
    assert upload.status_code == 403


def test_session_requests_that_change_data_need_the_csrf_token(site: Site) -> None:
    headers = _session(site, "admin")
    without = {"Cookie": headers["Cookie"]}
    assert site.client.delete(_url("/api/studies/{study}"), headers=without).status_code == 403
    assert site.client.delete(_url("/api/studies/{study}"), headers=headers).status_code == 200
    assert site.client.get("/api/me", headers=without).json()["role"] == "admin"


def test_the_frame_fast_path_checks_the_key(site: Site) -> None:
    url = _url("/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
    assert site.client.get(url).status_code == 401
    assert site.client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert site.client.get(url, headers={"Authorization": f"Bearer {site.keys['viewer']}"}).status_code == 404


def test_admins_manage_only_their_own_tenant(site: Site, tmp_path: Path) -> None:
    alpha = {"Authorization": f"Bearer {site.keys['admin']}"}
    beta = {"Authorization": f"Bearer {site.keys['beta-admin']}"}
    r = site.client.post("/api/users", headers=alpha, json={"name": "ann", "password": "correct horse",
                                                            "role": "viewer"})
    assert r.status_code == 201
    assert [u["name"] for u in site.client.get("/api/users", headers=alpha).json()] == ["ann"]
    assert site.client.get("/api/users", headers=beta).json() == []
    assert site.client.delete("/api/users/ann", headers=beta).status_code == 404
    r = site.client.post("/api/users", headers=beta, json={"name": "ann", "password": "another one", "role": "admin"})
    assert r.status_code == 409
    made = site.client.post("/api/keys", headers=alpha, json={"role": "viewer"}).json()
    assert site.client.get("/api/me", headers={"Authorization": f"Bearer {made['key']}"}).json()["role"] == "viewer"
    assert made["id"] in [k["id"] for k in site.client.get("/api/keys", headers=alpha).json()]
    assert made["id"] not in [k["id"] for k in site.client.get("/api/keys", headers=beta).json()]
    assert site.client.delete(f"/api/keys/{made['id']}", headers=beta).status_code == 404
    assert site.client.delete(f"/api/keys/{made['id']}", headers=alpha).status_code == 200
    assert site.client.get("/api/me", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 401
    assert site.client.delete("/api/users/ann", headers=alpha).status_code == 200


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 30, "-1", "x"])
def test_paging_values_that_are_not_small_ascii_integers_are_never_a_500(site: Site, value: str) -> None:
    """``str.isdigit`` takes '²' and Arabic-Indic digits (then ``int`` fails or SQLite overflows): a 400, or the
    page's default, never a 500 (found by review)."""
    admin = {"Authorization": f"Bearer {site.keys['admin']}"}
    for path in (f"/ui?limit={value}", f"/ui?offset={value}", f"/api/audit?offset={value}",
                 f"/api/audit?limit={value}"):
        status = site.client.get(path, headers=admin).status_code
        assert status in (200, 400), (path, status)
