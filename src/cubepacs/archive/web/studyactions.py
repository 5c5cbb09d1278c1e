"""The admin UI's actions on a study: labels, downloads and deletion (send is ``web/jobsui.py``, upload
``web/uploads.py``).

* Labels: ``POST /ui/studies/{study}/labels`` (field ``label``) and ``…/labels/{label}/remove`` (htmx swaps the
  study page's label list; without a script the form posts and comes back); the study list filters by
  ``?label=``; API: ``GET /api/labels`` (the tenant's labels), ``GET /api/studies/{study}/labels``,
  ``PUT`` and ``DELETE /api/studies/{study}/labels/{label}``. Labelling needs the ``upload`` permission (admin,
  user; a viewer may only filter by them).
* Downloads, written as they are sent (``web/zipstream.py``: a chunk of a stored file in memory at a time,
  nothing on disk): ``GET /ui/studies/{study}/zip`` and ``…/series/{series}/zip`` — every stored file as it was stored,
  ``SERIES/SOP.dcm``; with ``?dicomdir=1`` a DICOMDIR made by pydicom's ``FileSet`` at the root and the files at
  the paths it names (``PT000000/ST000000/SE000000/IM000000``). ``GET …/series/{series}/cube``: the series' cube
  (``.dcbs``, as the web worker built it); ``GET /ui/studies/{study}/cube``: a ZIP of its series' cubes.
* ``GET /ui/studies/{study}/delete`` asks, ``POST`` deletes (files, index rows, cubes, labels): admin only.

Example
-------
>>> _disposition("1.2.3.zip")
'attachment; filename="1.2.3.zip"'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cubepacs.archive import manage
from cubepacs.archive.index import labels
from cubepacs.archive.web.auth import Identity, authenticate
from cubepacs.archive.web.pages import UI, form_who, render_page, who
from cubepacs.archive.web.wado import check_uids
from cubepacs.archive.web.zipstream import chunks, dicomdir, size_of, zip_stream
from cubepacs.errors import ConfigError

STATIC = Path(__file__).parent / "static"  # pinned front-end files (static/README.md)


def _disposition(name: str) -> str:
    return f'attachment; filename="{name}"'


def add_routes(app: FastAPI, services: Any) -> None:
    """Register the label, download and delete routes."""

    def rows_of(tenant: str, study: str, series: str | None = None) -> list[dict[str, Any]]:
        check_uids(study, *([series] if series else []))
        rows = services.index.instances_of(tenant, study, series)
        if not rows:
            raise HTTPException(404, f"no {'series ' + series if series else 'study ' + study}")
        return list(rows)

    def getter(key: str) -> Callable[[], IO[bytes]]:  # the stored file, read a chunk at a time
        return lambda: services.storage.open_read(key)

    async def zip_answer(rows: list[dict[str, Any]], name: str, with_dicomdir: bool) -> StreamingResponse:
        made: tuple[bytes, dict[str, str], list[str]] | None = None
        if with_dicomdir:  # before the answer starts: a DICOMDIR that cannot be made is an error page, not a cut ZIP
            keys = [r["storage_key"] for r in rows]
            try:
                made = await run_in_threadpool(dicomdir, ((k, services.storage.open_read(k)) for k in keys))
            except Exception as exc:
                raise HTTPException(409, f"no DICOMDIR can be made for these instances: {type(exc).__name__}: "
                                         f"{str(exc)[:300]}") from None

        def entries() -> Iterator[tuple[str, Callable[[], bytes | IO[bytes]]]]:
            if made is None:
                for r in rows:
                    yield f"{r['series_uid']}/{r['sop_uid']}.dcm", getter(r["storage_key"])
                return
            raw, paths, notes = made
            yield "DICOMDIR", lambda: raw
            for r in rows:  # one the DICOMDIR could not hold: under OTHER/, and said why in DICOMDIR-NOTES.txt
                key = r["storage_key"]
                yield paths.get(key, f"OTHER/{r['sop_uid']}.dcm"), getter(key)
            if notes:
                yield "DICOMDIR-NOTES.txt", lambda: "\n".join(notes).encode()

        return StreamingResponse(zip_stream(entries()), media_type="application/zip",
                                 headers={"Content-Disposition": _disposition(name)})

    def cube_key(tenant: str, study: str, series: str, count: int) -> str:
        state = services.index.series_state(tenant, study, series)
        if not state or state["json_status"] != 1 or not state["cube_key"] or state["built_instances"] != count:
            raise HTTPException(409, f"series {series} has no up-to-date cube yet (the web worker builds it once "
                                     "no instance has arrived for quiet_seconds)")
        return str(state["cube_key"])

    @app.get(UI + "/studies/{study}/zip")
    async def study_zip(study: str, request: Request, dicomdir: str = "") -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        rows = await run_in_threadpool(rows_of, ident.tenant, study)
        request.state.detail = "ZIP with DICOMDIR" if dicomdir else "ZIP"
        return await zip_answer(rows, f"{study}.zip", bool(dicomdir))

    @app.get(UI + "/studies/{study}/series/{series}/zip")
    async def series_zip(study: str, series: str, request: Request, dicomdir: str = "") -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        rows = await run_in_threadpool(rows_of, ident.tenant, study, series)
        request.state.detail = f"series {series} ZIP" + (" with DICOMDIR" if dicomdir else "")
        return await zip_answer(rows, f"{series}.zip", bool(dicomdir))

    @app.get(UI + "/studies/{study}/series/{series}/cube")
    async def series_cube(study: str, series: str, request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        rows = await run_in_threadpool(rows_of, ident.tenant, study, series)
        key = cube_key(ident.tenant, study, series, len(rows))
        request.state.detail = f"series {series} cube"
        fp = await run_in_threadpool(services.storage.open_read, key)
        size = await run_in_threadpool(size_of, fp)
        return StreamingResponse(chunks(fp), media_type="application/octet-stream",  # a chunk at a time
                                 headers={"Content-Disposition": _disposition(f"{series}.dcbs"),
                                          **({"Content-Length": str(size)} if size is not None else {})})

    @app.get(UI + "/studies/{study}/cube")
    async def study_cubes(study: str, request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        rows = await run_in_threadpool(rows_of, ident.tenant, study)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["series_uid"]] = counts.get(r["series_uid"], 0) + 1
        keys = {s: cube_key(ident.tenant, study, s, n) for s, n in sorted(counts.items())}
        request.state.detail = "cubes"
        return StreamingResponse(zip_stream((f"{s}.dcbs", getter(k)) for s, k in keys.items()),
                                 media_type="application/zip",
                                 headers={"Content-Disposition": _disposition(f"{study}-cubes.zip")})

    @app.get(UI + "/static/htmx.min.js")
    def htmx() -> Response:
        return FileResponse(STATIC / "htmx.min.js", media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    # labels
    def labels_fragment(ident: Identity, study: str, error: str = "", status: int = 200) -> Response:
        return render_page("labels.html", status, ident=ident, csrf=ident.csrf, study_uid=study,
                           labels=labels.of_studies(services.index, ident.tenant, [study])[study], error=error)

    async def label_change(study: str, request: Request, label: str | None) -> Response:
        ident, form = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        await run_in_threadpool(rows_of, ident.tenant, study)
        try:
            if label is None:
                text = labels.check_label(form.get("label", ""))
                labels.add(services.index, ident.tenant, study, text)
                request.state.detail = f"label {text} added"
            else:
                labels.remove(services.index, ident.tenant, study, label)
                request.state.detail = f"label {label} removed"
        except ConfigError as exc:  # (htmx swaps in only a 2xx answer)
            return labels_fragment(ident, study, str(exc), 200 if request.headers.get("hx-request") else 400)
        if request.headers.get("hx-request"):
            return labels_fragment(ident, study)
        return RedirectResponse(f"{UI}/studies/{study}", status_code=303)

    @app.post(UI + "/studies/{study}/labels")
    async def add_label(study: str, request: Request) -> Response:
        return await label_change(study, request, None)

    @app.post(UI + "/studies/{study}/labels/{label}/remove")
    async def remove_label(study: str, label: str, request: Request) -> Response:
        return await label_change(study, request, label)

    @app.get("/api/labels")
    async def api_labels(request: Request) -> JSONResponse:
        ident = await authenticate(request)
        return JSONResponse(labels.tenant_labels(services.index, ident.tenant))

    @app.get("/api/studies/{study}/labels")
    async def api_study_labels(study: str, request: Request) -> JSONResponse:
        ident = await authenticate(request)
        await run_in_threadpool(rows_of, ident.tenant, study)
        return JSONResponse(labels.of_studies(services.index, ident.tenant, [study])[study])

    @app.put("/api/studies/{study}/labels/{label}")
    async def api_put_label(study: str, label: str, request: Request) -> JSONResponse:
        ident = await authenticate(request)
        await run_in_threadpool(rows_of, ident.tenant, study)
        try:
            added = labels.add(services.index, ident.tenant, study, label)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        request.state.detail = f"label {label} added"
        return JSONResponse({"added": added}, status_code=201 if added else 200)

    @app.delete("/api/studies/{study}/labels/{label}")
    async def api_delete_label(study: str, label: str, request: Request) -> JSONResponse:
        ident = await authenticate(request)
        check_uids(study)
        request.state.detail = f"label {label} removed"
        return JSONResponse({"removed": labels.remove(services.index, ident.tenant, study, label)})

    # deletion
    @app.get(UI + "/studies/{study}/delete")
    async def confirm_delete(study: str, request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        check_uids(study)
        found = services.index.search_studies(ident.tenant, {"StudyInstanceUID": study}, limit=1)
        if not found:
            raise HTTPException(404, f"no study {study}")
        return render_page("confirm.html", title="Delete study", ident=ident, study=found[0], csrf=ident.csrf)

    @app.post(UI + "/studies/{study}/delete")
    async def delete(study: str, request: Request) -> Response:
        ident, _ = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        check_uids(study)
        n = await run_in_threadpool(manage.delete, services.storage, services.queue, services.index, services.cache,
                                    ident.tenant, "study", study)
        return render_page("message.html", title="Deleted", ident=ident, message=f"{n} instance(s) deleted.", back=UI)
