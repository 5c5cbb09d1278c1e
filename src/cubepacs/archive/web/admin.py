"""The administration API under ``/api`` (role ``admin``, always within the caller's own tenant).

* ``GET /api/me``: the caller's tenant, role and who it is (any role).
* ``GET /api/users``; ``POST /api/users`` with ``{"name", "password", "role"}`` adds a user or changes one (its
  sessions end); ``DELETE /api/users/{name}`` removes one (its sessions end).
* ``GET /api/keys``; ``POST /api/keys`` with ``{"role"}`` answers a new key once; ``DELETE /api/keys/{id}``
  revokes one (sessions opened with it end).
* ``GET /api/sessions``; ``POST /api/sessions/end`` with ``{"all": true}``, ``{"user": name}`` or
  ``{"id": session id}``.
* ``GET /api/audit?study=&who=&action=&limit=&offset=``: the audit log, newest first.

Users and keys configured in the settings file are not changed here (409). The role checks are the central ones
(``roles.ROUTES``, checked by ``auth.authenticate``).

Example
-------
>>> _limit("50"), _limit(None)
(50, 100)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from cubepacs.archive.auth import apikeys
from cubepacs.archive.web.auth import Identity, authenticate
from cubepacs.archive.web.jsonbody import read_json
from cubepacs.archive.web.session import describe, remove_user, save_user
from cubepacs.errors import ConfigError

API = "/api"
AUTH = Depends(authenticate)  # the caller, its role checked against roles.ROUTES


def _limit(text: str | None, default: int = 100, high: int = 1000) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
        raise HTTPException(400, f"limit must be an integer from 1 to {high}, not {text[:20]!r}")
    return int(text)


async def _body(request: Request) -> dict[str, Any]:
    doc = await read_json(request, max_bytes=65536, empty={})  # bounded in size (413) and depth (400)
    if not isinstance(doc, dict):
        raise HTTPException(400, "expected a JSON object")
    return doc


def add_routes(app: FastAPI, services: Any) -> None:
    """Register the administration routes."""

    def data_dir() -> Path:
        if not services.keys_file:
            raise HTTPException(409, "this archive has no data folder for users and keys")
        return Path(services.keys_file).parent

    def accounts() -> Any:
        if services.sessions is None:
            raise HTTPException(409, "sessions are off on this server")
        return services.sessions

    @app.get(API + "/me")
    def me(ident: Identity = AUTH) -> JSONResponse:
        return JSONResponse({"tenant": ident.tenant, "role": ident.role, "who": ident.principal})

    @app.get(API + "/users")
    def users(ident: Identity = AUTH) -> JSONResponse:
        return JSONResponse(describe(services.users, ident.tenant))

    @app.post(API + "/users")
    async def put_user(request: Request, ident: Identity = AUTH) -> JSONResponse:
        doc = await _body(request)
        name, password, role = str(doc.get("name", "")), str(doc.get("password", "")), str(doc.get("role", "user"))
        current = services.users.get(name)
        if current is not None and current.get("tenant") != ident.tenant:
            raise HTTPException(409, f"user {name!r} belongs to another tenant")
        if name in getattr(services.users, "configured", {}):
            raise HTTPException(409, f"user {name!r} is configured in the settings file: change it there")
        try:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(save_user, data_dir(), name, password, ident.tenant, role)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        request.state.detail = f"user {name} role {role}"
        return JSONResponse({"name": name, "tenant": ident.tenant, "role": role}, status_code=201)

    @app.delete(API + "/users/{name}")
    def delete_user(name: str, request: Request, ident: Identity = AUTH) -> JSONResponse:
        current = services.users.get(name)
        if current is None or current.get("tenant") != ident.tenant:
            raise HTTPException(404, f"no user {name!r} in this tenant")
        if name in getattr(services.users, "configured", {}):
            raise HTTPException(409, f"user {name!r} is configured in the settings file: remove it there")
        remove_user(data_dir(), name)
        request.state.detail = f"user {name} removed"
        return JSONResponse({"removed": name})

    @app.get(API + "/keys")
    def keys(ident: Identity = AUTH) -> JSONResponse:
        services.refresh_keys()
        rows = [{"id": apikeys.key_id_of(h), "role": apikeys.split_value(v)[1]}
                for h, v in services.api_keys.items() if apikeys.split_value(v)[0] == ident.tenant]
        return JSONResponse(sorted(rows, key=lambda r: r["id"]))

    @app.post(API + "/keys")
    async def new_key(request: Request, ident: Identity = AUTH) -> JSONResponse:
        role = str((await _body(request)).get("role", "user"))
        try:
            key = apikeys.create(data_dir(), ident.tenant, role)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        key_id = apikeys.key_id_of(apikeys.hash_key(key))
        request.state.detail = f"key {key_id} role {role} created"
        return JSONResponse({"id": key_id, "role": role, "key": key}, status_code=201,
                            headers={"Cache-Control": "no-store"})

    @app.delete(API + "/keys/{key_id}")
    def revoke_key(key_id: str, request: Request, ident: Identity = AUTH) -> JSONResponse:
        if apikeys.revoke(data_dir(), key_id, ident.tenant) == 0:
            raise HTTPException(404, f"no key {key_id!r} of this tenant in the key file (ids: 6+ characters)")
        services.refresh_keys()
        request.state.detail = f"key {key_id} revoked"
        return JSONResponse({"revoked": key_id})

    @app.get(API + "/sessions")
    def sessions(ident: Identity = AUTH) -> JSONResponse:
        return JSONResponse([{"id": s.id[:16], "who": s.principal, "role": s.role, "created": s.created,
                              "expires": s.expires, "current": s.id == ident.session}
                             for s in accounts().sessions(ident.tenant)])

    @app.post(API + "/sessions/end")
    async def end_sessions(request: Request, ident: Identity = AUTH) -> JSONResponse:
        doc = await _body(request)
        db = accounts()
        if doc.get("all") is True:
            n, what = db.end_tenant(ident.tenant), "all sessions"
        elif isinstance(doc.get("user"), str):
            n, what = db.end_principal(ident.tenant, f"user:{doc['user']}"), f"sessions of {doc['user']}"
        elif isinstance(doc.get("id"), str):
            n, what = db.end_id(ident.tenant, doc["id"]), f"session {doc['id'][:16]}"
        else:
            raise HTTPException(400, 'expected {"all": true}, {"user": name} or {"id": session id}')
        request.state.detail = f"{what} ended ({n})"
        return JSONResponse({"ended": n})

    @app.get(API + "/audit")
    def audit(request: Request, ident: Identity = AUTH) -> JSONResponse:
        q = request.query_params
        offset = q.get("offset", "0")
        if not (offset.isascii() and offset.isdigit() and int(offset) < 2**31):
            raise HTTPException(400, f"offset must be an integer from 0 to {2**31 - 1}, not {offset[:20]!r}")
        rows = accounts().audit_rows(ident.tenant, q.get("study", ""), q.get("who", ""), q.get("action", ""),
                                     _limit(q.get("limit")), int(offset))
        return JSONResponse(rows)
