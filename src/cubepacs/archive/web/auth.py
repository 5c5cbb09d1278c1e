"""Who a request is and whether its role may use the route: API keys, OIDC bearer tokens and browser sessions.

:func:`authenticate` is the one check every credentialed route goes through (``app.tenant_of`` calls it): it
finds the credential — ``Authorization: Bearer <api key or OIDC token>``, ``X-Api-Key``, HTTP Basic with the key
as password, or the session cookie (then a state-changing request needs the session's ``X-CSRF-Token``) — and
its tenant, role and principal (``key:ID``, ``user:NAME``, ``oidc:SUB``), then the permission the matched route
needs (:data:`cubepacs.archive.auth.roles.ROUTES`): 401 without a valid credential, 403 when the role lacks it. A
request answered before routing (the frame fast path, GET only) needs ``view``. Keys and users are read again
as their files change and sessions live in the shared accounts database, so every change takes effect at once
in every process.

Example
-------
>>> study_of("/dicom-web/studies/1.2.3/series/4.5/metadata"), study_of("/api/send")
('1.2.3', '')
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.auth import roles
from cubepacs.archive.auth.apikeys import entry_of_key, hash_key, key_id_of, split_value
from cubepacs.archive.web.session import COOKIE, CSRF_HEADER, fingerprint, user_role
from cubepacs.archive.web.tokens import looks_like_jwt

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_STUDY = re.compile(r"/studies/([0-9.]{1,64})(?:/|$)")


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    tenant: str
    role: str
    principal: str  # key:ID, user:NAME or oidc:SUBJECT
    csrf: str = ""  # the session's CSRF token (browser sessions only)
    session: str = ""  # the session's stored id (browser sessions only)


def study_of(path: str) -> str:
    """The Study Instance UID a URL path names ("" when none)."""
    match = _STUDY.search(path)
    return match.group(1) if match else ""


def api_key_of(request: Request) -> str:
    """The API key a request presents: ``Authorization: Bearer <key>``, ``X-Api-Key: <key>``, or HTTP Basic with the
    key as password (what OHIF's ``requestOptions.auth`` sends)."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        import base64
        import binascii

        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return request.headers.get("x-api-key", "")


def key_identity(services: Any, key: str) -> Identity | None:
    """The identity of an API key (None: not a key of this archive)."""
    services.refresh_keys()
    entry = entry_of_key(services.api_keys, key)
    if entry is None:
        return None
    return Identity(entry[0], entry[1], f"key:{key_id_of(hash_key(key))}")


def session_of(request: Request) -> Identity | None:
    """The identity of the request's session cookie, when the session is live and the user or key it was opened
    with is unchanged (a changed or removed one ends it)."""
    services = request.app.state.services
    token = request.cookies.get(COOKIE)
    accounts = services.sessions
    if not token or accounts is None:
        return None
    session = accounts.get(token)
    if session is None:
        return None
    kind, _, name = session.principal.partition(":")
    if kind == "user":
        user = services.users.get(name)
        live = user is not None and fingerprint(user) == session.fingerprint
    else:
        services.refresh_keys()
        value = services.api_keys.get(session.fingerprint)
        live = value is not None and split_value(value) == (session.tenant, session.role)
    if not live:
        accounts.end(token)
        return None
    return Identity(session.tenant, session.role, session.principal, session.csrf, session.id)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    from cubepacs.archive.web.session import hash_password

    return hash_password(secrets.token_urlsafe(16))


def user_identity(services: Any, name: str, password: str) -> tuple[Identity, str] | None:
    """(identity, fingerprint) of a user name and password, or None (runs Argon2: call it in a thread)."""
    from cubepacs.archive.web.session import check_password

    user = services.users.get(name)
    if user is None:
        check_password(_dummy_hash(), password)  # as long as for a user who exists: names are not revealed
        return None
    if not check_password(user.get("password", ""), password) or not user.get("tenant"):
        return None
    return Identity(user["tenant"], user_role(user), f"user:{name}"), fingerprint(user)


async def authenticate(request: Request) -> Identity:
    """The request's identity, its role checked against the route's permission (401/403 otherwise); the tenant,
    role, principal, audit action and study are kept in ``request.state`` for the access and audit logs.

    Async, so that it costs no hop to the thread pool: everything here is a lookup in memory or one indexed
    SQLite read, except an OIDC token check (its signing keys may have to be fetched), which runs in the pool."""
    services = request.app.state.services
    key = api_key_of(request)
    ident = key_identity(services, key) if key else None
    if ident is None and key and services.oidc is not None and looks_like_jwt(key):
        try:
            tenant, role, subject = await run_in_threadpool(services.oidc.identity, key)
        except ValueError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) \
                from None
        ident = Identity(tenant, role, f"oidc:{subject}")
    if ident is None and not key:
        ident = session_of(request)
        if ident is not None and request.method not in _SAFE_METHODS \
                and not secrets.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), ident.csrf.encode()):
            raise HTTPException(403, "a request made with the session cookie that changes data needs the "
                                     "session's X-CSRF-Token header")
    if ident is None:
        raise HTTPException(401, "an API key is required (Authorization: Bearer <key>) or a signed-in session",
                            headers={"WWW-Authenticate": "Bearer"})
    state = request.state
    state.tenant, state.role, state.principal = ident.tenant, ident.role, ident.principal
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    need = roles.required(request.method, path) if path is not None else "view"
    state.action = roles.action(request.method, path) if path is not None else "view"
    state.study = study_of(request.url.path)
    if need is not None and not roles.allows(ident.role, need):
        why = "this route has no role rule" if need == roles.UNLISTED else f"it needs {need!r}"
        raise HTTPException(403, f"role {ident.role!r} may not {request.method} {path}: {why}")
    return ident


def record(services: Any, scope: Any, status: int, client: str | None) -> None:
    """The audit row of a finished request (actions on studies, account changes; successful ones and refusals)."""
    state = scope.get("state") or {}
    action, accounts = state.get("action"), services.sessions
    if not action or accounts is None or not state.get("principal") or (400 <= status and status != 403):
        return
    accounts.audit(state["tenant"], state["principal"], state.get("role", ""), action if status < 400
                   else f"refused:{action}", state.get("study", ""), state.get("detail", ""), status, client or "")
