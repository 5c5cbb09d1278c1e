"""The archive's own web UI at ``/ui`` (server-rendered pages, same sign-in as the viewer; OHIF stays the viewer).

* ``/ui``: the study list — filters (patient name with wildcards, ID, accession, description, modality, date
  range, label), sorting by any column (server side, ``?sort=date`` / ``-date``), paging;
  ``/ui/studies/{study}``: its labels, its series with thumbnails (``/thumbnail``), "open in OHIF", downloads,
  send, delete (those actions: ``studyactions.py``, ``jobsui.py``); ``…/series/{series}``: its instances;
  ``…/instances/{sop}``: every tag of the stored file (sequences expandable, private tags named by their creator).
* ``/ui/upload``: ``uploads.py``.
* ``/ui/admin``: users, API keys and sessions of the tenant (add, change, remove, create, revoke, end, end all);
  ``/ui/audit``: the audit log.

Every page goes through the same role check as the API (``roles.ROUTES``, ``auth.authenticate``); without a
session a page redirects to ``/login``, a role that may not sees 403. Forms that change something carry the
session's CSRF token (a hidden field; the upload's in its URL), checked as the ``X-CSRF-Token`` header is.

Example
-------
>>> _query_filters({"PatientName": "DOE*", "from": "20200101", "to": "", "limit": "50"})
{'PatientName': 'DOE*', 'StudyDate': '20200101-'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.auth import apikeys, roles
from cubepacs.archive.index import labels
from cubepacs.archive.keys import check_uid
from cubepacs.archive.web.auth import Identity
from cubepacs.archive.web.pages import UI, form_who, render_page, who
from cubepacs.archive.web.session import describe, remove_user, save_user
from cubepacs.errors import ConfigError

_FILTERS = ("PatientName", "PatientID", "AccessionNumber", "StudyDescription", "ModalitiesInStudy")


def _query_filters(q: dict[str, str]) -> dict[str, str]:
    filters = {k: q[k] for k in _FILTERS if q.get(k)}
    if q.get("from") or q.get("to"):
        filters["StudyDate"] = f"{q.get('from', '')}-{q.get('to', '')}"
    return filters


def _paging(text: str, low: int, high: int, default: int) -> int:
    """A paging parameter of a page's query: an ASCII integer within [low, high], else the default.

    Example
    -------
    >>> _paging("25", 1, 200, 50), _paging("²", 1, 200, 50), _paging("9" * 30, 0, 2**31 - 1, 0)
    (25, 50, 0)
    """
    if text.isascii() and text.isdigit() and len(text) <= 12 and low <= int(text) <= high:
        return int(text)
    return default

def add_routes(app: FastAPI, services: Any) -> None:
    """Register the ``/ui`` pages (before the viewer's catch-all)."""

    def data_dir() -> Path:
        if not services.keys_file:
            raise HTTPException(409, "this archive has no data folder for users and keys")
        return Path(services.keys_file).parent

    def study_row(tenant: str, study: str) -> dict[str, Any]:
        try:
            check_uid(study, "StudyInstanceUID")
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        rows = services.index.search_studies(tenant, {"StudyInstanceUID": study}, limit=1)
        if not rows:
            raise HTTPException(404, f"no study {study}")
        return dict(rows[0])

    @app.get(UI)
    async def studies(request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        q = dict(request.query_params)
        limit, offset = _paging(q.get("limit", ""), 1, 200, 50), _paging(q.get("offset", ""), 0, 2**31 - 1, 0)
        try:
            rows = await run_in_threadpool(services.index.search_studies, ident.tenant, _query_filters(q),
                                           limit + 1, offset, False, True, q.get("sort", ""), q.get("label", ""))
        except (ConfigError, ValueError) as exc:
            return render_page("message.html", 400, title="Search", message=str(exc), kind="err", ident=ident, back=UI)
        more, rows = len(rows) > limit, rows[:limit]
        tagged = labels.of_studies(services.index, ident.tenant, [r["study_uid"] for r in rows])
        for r in rows:
            r["labels"] = tagged[r["study_uid"]]

        def page(at: int) -> str:
            return urlencode({**q, "offset": max(at, 0), "limit": limit})

        def sorted_by(key: str) -> str:  # the list sorted by key (again: the other way), from its first page
            return urlencode({**q, "sort": f"-{key}" if q.get("sort") == key else key, "offset": 0, "limit": limit})

        return render_page("studies.html", title="Studies", ident=ident, studies=rows, more=more, q=q, limit=limit,
                           offset=offset, page=page, sorted_by=sorted_by,
                           all_labels=labels.tenant_labels(services.index, ident.tenant))

    @app.get(UI + "/studies/{study}")
    async def study(study: str, request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        row = study_row(ident.tenant, study)
        series = [dict(s) for s in services.index.search_series(ident.tenant, {}, study, limit=10_000)]
        for s in series:
            first = services.index.search_instances(ident.tenant, {}, study, s["series_uid"], limit=1)
            s["first"] = first[0]["sop_uid"] if first else ""
        return render_page("study.html", title="Study", ident=ident, study=row, series=series, csrf=ident.csrf,
                           peers=sorted({*services.remote_aes, *services.dicomweb_peers}),
                           web_peers=set(services.dicomweb_peers) - set(services.remote_aes), study_uid=study,
                           labels=labels.of_studies(services.index, ident.tenant, [study])[study])

    @app.get(UI + "/studies/{study}/series/{series}")
    async def series_page(study: str, series: str, request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        check = study_row(ident.tenant, study)
        rows = services.index.search_instances(ident.tenant, {}, check["study_uid"], series, limit=100_000)
        if not rows:
            raise HTTPException(404, f"no series {series}")
        rows.sort(key=lambda r: (r.get("instance_number") is None, r.get("instance_number") or 0))
        return render_page("series.html", title="Series", ident=ident, study=study, series=series, instances=rows)

    @app.get(UI + "/studies/{study}/series/{series}/instances/{sop}")
    async def instance_page(study: str, series: str, sop: str, request: Request) -> Response:
        from cubepacs.archive.web.tagtree import tag_tree

        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        for uid in (study, series, sop):
            try:
                check_uid(uid)
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from None
        rows = services.index.instances_of(ident.tenant, study, series, [sop])
        if not rows:
            raise HTTPException(404, f"no instance {sop}")
        data = await run_in_threadpool(services.storage.get, rows[0]["storage_key"])
        meta, elements = await run_in_threadpool(tag_tree, data)
        return render_page("tags.html", title="Instance", ident=ident, study=study, series=series, sop=sop, meta=meta,
                           elements=elements)

    def admin_page(ident: Identity, new_key: dict[str, str] | None = None, status: int = 200) -> Response:
        services.refresh_keys()
        keys = sorted(({"id": apikeys.key_id_of(h), "role": apikeys.split_value(v)[1]}
                       for h, v in services.api_keys.items() if apikeys.split_value(v)[0] == ident.tenant),
                      key=lambda k: k["id"])
        return render_page("admin.html", status, title="Users, keys, sessions", ident=ident, csrf=ident.csrf,
                           users=describe(services.users, ident.tenant), keys=keys, roles=roles.ROLES,
                           sessions=None if services.sessions is None else services.sessions.sessions(ident.tenant),
                           new_key=new_key)

    @app.get(UI + "/admin")
    async def admin(request: Request) -> Response:
        ident = await who(request)
        return ident if not isinstance(ident, Identity) else admin_page(ident)

    def failure(ident: Identity, message: str, status: int = 400) -> Response:
        return render_page("message.html", status, title="Not done", message=message, kind="err", ident=ident,
                           back=UI + "/admin")

    @app.post(UI + "/admin/users")
    async def add_user(request: Request) -> Response:
        ident, form = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        name = form.get("name", "")
        if name in getattr(services.users, "configured", {}):  # the settings file wins over users.json
            return failure(ident, f"user {name!r} is configured in the settings file: change it there", 409)
        current = services.users.get(name)
        if current is not None and current.get("tenant") != ident.tenant:
            return failure(ident, f"user {name!r} belongs to another tenant", 409)
        try:
            await run_in_threadpool(save_user, data_dir(), name, form.get("password", ""),
                                    ident.tenant, form.get("role", "user"))
        except ConfigError as exc:
            return failure(ident, str(exc))
        request.state.detail = f"user {name} role {form.get('role')}"
        return RedirectResponse(UI + "/admin", status_code=303)

    @app.post(UI + "/admin/users/{name}/remove")
    async def drop_user(name: str, request: Request) -> Response:
        ident, _ = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        current = services.users.get(name)
        if current is None or current.get("tenant") != ident.tenant:
            return failure(ident, f"no user {name!r} in this tenant", 404)
        if name in getattr(services.users, "configured", {}):
            return failure(ident, f"user {name!r} is configured in the settings file: remove it there", 409)
        remove_user(data_dir(), name)
        request.state.detail = f"user {name} removed"
        return RedirectResponse(UI + "/admin", status_code=303)

    @app.post(UI + "/admin/keys")
    async def add_key(request: Request) -> Response:
        ident, form = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        role = form.get("role", "user")
        try:
            key = apikeys.create(data_dir(), ident.tenant, role)
        except ConfigError as exc:
            return failure(ident, str(exc))
        request.state.detail = f"key {apikeys.key_id_of(apikeys.hash_key(key))} role {role} created"
        return admin_page(ident, {"key": key, "role": role})

    @app.post(UI + "/admin/keys/{key_id}/revoke")
    async def drop_key(key_id: str, request: Request) -> Response:
        ident, _ = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        if apikeys.revoke(data_dir(), key_id, ident.tenant) == 0:
            return failure(ident, f"no key {key_id!r} of this tenant in the key file", 404)
        request.state.detail = f"key {key_id} revoked"
        return RedirectResponse(UI + "/admin", status_code=303)

    @app.post(UI + "/admin/sessions/end")
    async def end_sessions(request: Request) -> Response:
        ident, form = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        db = services.sessions
        if db is None:  # an archive run without its accounts database has no session to end
            return failure(ident, "this archive keeps no sessions (no accounts database)", 409)
        if form.get("all"):
            n = db.end_tenant(ident.tenant)
        elif form.get("user"):
            n = db.end_principal(ident.tenant, f"user:{form['user']}")
        else:
            n = db.end_id(ident.tenant, form.get("id", ""))
        request.state.detail = f"{n} session(s) ended"
        return RedirectResponse(UI + "/admin", status_code=303)

    @app.get(UI + "/audit")
    async def audit(request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        q = dict(request.query_params)
        if services.sessions is None:
            return render_page("message.html", 409, title="Audit log", kind="err", ident=ident, back=UI,
                               message="this archive keeps no audit log (no accounts database)")
        limit, offset = _paging(q.get("limit", ""), 1, 500, 100), _paging(q.get("offset", ""), 0, 2**31 - 1, 0)
        rows = services.sessions.audit_rows(ident.tenant, q.get("study", ""), q.get("who", ""), q.get("action", ""),
                                            limit + 1, offset)

        def page(at: int) -> str:  # the same filters, another page (older: a larger offset)
            return urlencode({**q, "offset": max(at, 0), "limit": limit})

        return render_page("audit.html", title="Audit log", ident=ident, rows=rows[:limit], q=q, more=len(rows) > limit,
                           limit=limit, offset=offset, page=page)

