"""Send jobs in the admin UI and the API (``archive/jobs.py`` keeps them).

* ``POST /ui/studies/{study}/send`` (fields ``to``, ``series`` — empty: the whole study): starts a job sending to
  a configured peer (``remote_aes``: DIMSE C-STORE; ``dicomweb_peers``: STOW-RS, ``stowsend.py``) and goes to
  its page.
* ``GET /ui/jobs``: the tenant's jobs, running and finished; ``GET /ui/jobs/{job}``: one job — a progress bar
  and each instance's result (the peer's status, how it was sent); while it runs, htmx reloads its part of the
  page every second (``/ui/jobs/{job}?part=1``).
* ``POST /ui/jobs/{job}/cancel`` and ``POST /api/jobs/{job}/cancel`` (``send`` permission): a queued or running
  job stops after the instance it is sending and ends ``cancelled`` (``{"cancelled": false}``: it had ended).
* ``POST /api/jobs/send`` with ``{"to": "AE", "level": "study|series|instance", "uid": "…"}``: 202 and
  ``{"job": id}``; ``GET /api/jobs`` and ``GET /api/jobs/{job}``: the same as JSON (a job with its ``results``).

Sending needs the ``send`` permission (admin, user); everyone of the tenant who may view sees its jobs.

Example
-------
>>> _status(0), _status(None), _status(0xA700)
('0x0000', '', '0xA700')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cubepacs.archive import manage
from cubepacs.archive.jobs import WAITING, Jobs
from cubepacs.archive.stowsend import peer_url, send_stow
from cubepacs.archive.web.auth import Identity, authenticate
from cubepacs.archive.web.jsonbody import read_json
from cubepacs.archive.web.pages import UI, form_who, render_page, who
from cubepacs.errors import ConfigError


def _status(status: int | None) -> str:
    return "" if status is None else f"0x{status:04X}"


def add_routes(app: FastAPI, services: Any) -> None:
    """Register the send and jobs routes; the jobs database lives beside the accounts database."""
    accounts = getattr(services.sessions, "path", "")
    jobs = Jobs(Path(accounts).parent / "jobs.db" if accounts else ":memory:")

    def start(ident: Identity, to: str, level: str, uid: str) -> str:
        """A new job's id (ConfigError: unknown peer or level, bad UID; 404: nothing to send). ``to``: an AE title
        of ``remote_aes`` (C-STORE), else a name of ``dicomweb_peers`` (STOW-RS)."""
        web = to not in services.remote_aes and to in services.dicomweb_peers
        url = peer_url(services.dicomweb_peers, to) if web else ""
        if not web:
            manage.destination(services.remote_aes, to)
        rows = manage.resolve(services.index, ident.tenant, level, uid)
        if not rows:
            raise HTTPException(404, f"no {level} {uid}")
        if jobs.full():
            raise HTTPException(429, f"{WAITING} send jobs are running or queued here already: send again when some "
                                     "have ended")
        job = jobs.create(ident.tenant, ident.principal, to, level, uid, len(rows))
        if web:
            jobs.run(job, lambda: send_stow(services.storage.get, rows, url))
        else:
            jobs.run(job, lambda: manage.send(services.storage, rows, services.remote_aes, to, services.ae_title))
        return job

    @app.post(UI + "/studies/{study}/send")
    async def send(study: str, request: Request) -> Response:
        ident, form = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        to, series = form.get("to", ""), form.get("series", "")
        level, uid = ("series", series) if series else ("study", study)
        try:
            job = await run_in_threadpool(start, ident, to, level, uid)
        except ConfigError as exc:
            return render_page("message.html", 400, title="Not sent", message=str(exc), kind="err", ident=ident,
                               back=UI)
        request.state.detail = f"{level} {uid} to {to} (job {job})"
        return RedirectResponse(f"{UI}/jobs/{job}", status_code=303)

    @app.get(UI + "/jobs")
    async def jobs_page(request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        return render_page("jobs.html", title="Jobs", ident=ident, jobs=jobs.list(ident.tenant))

    @app.get(UI + "/jobs/{job}")
    async def job_page(job: str, request: Request, part: str = "") -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        found = jobs.get(ident.tenant, job)
        if found is None:
            raise HTTPException(404, f"no job {job}")
        return render_page("job_part.html" if part else "job.html", title="Send job", ident=ident, job=found,
                           code=_status, csrf=ident.csrf)

    @app.post(UI + "/jobs/{job}/cancel")
    async def cancel(job: str, request: Request) -> Response:
        ident, _ = await form_who(request)
        if not isinstance(ident, Identity):
            return ident
        if not jobs.cancel(ident.tenant, job) and jobs.get(ident.tenant, job) is None:
            raise HTTPException(404, f"no job {job}")
        request.state.detail = f"job {job} cancelled"
        found = jobs.get(ident.tenant, job)
        if request.headers.get("hx-request"):
            return render_page("job_part.html", ident=ident, job=found, code=_status, csrf=ident.csrf)
        return RedirectResponse(f"{UI}/jobs/{job}", status_code=303)

    @app.post("/api/jobs/send")
    async def api_send(request: Request) -> JSONResponse:
        ident = await authenticate(request)
        body = await read_json(request, empty={})
        try:
            to, level, uid = str(body["to"]), str(body.get("level", "study")), str(body["uid"])
            job = await run_in_threadpool(start, ident, to, level, uid)
        except (KeyError, TypeError, AttributeError) as exc:
            raise HTTPException(400, 'expected JSON {"to": AE, "level": "study|series|instance", "uid": UID}: '
                                     f"{type(exc).__name__} {exc}") from None
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        request.state.detail = f"{level} {uid} to {to} (job {job})"
        if level == "study":
            request.state.study = uid  # the audit row names it
        return JSONResponse({"job": job}, status_code=202)

    @app.post("/api/jobs/{job}/cancel")
    async def api_cancel(job: str, request: Request) -> JSONResponse:
        ident = await authenticate(request)
        if jobs.get(ident.tenant, job) is None:
            raise HTTPException(404, f"no job {job}")
        request.state.detail = f"job {job} cancelled"
        return JSONResponse({"cancelled": jobs.cancel(ident.tenant, job)})

    @app.get("/api/jobs")
    async def api_jobs(request: Request) -> JSONResponse:
        ident = await authenticate(request)
        return JSONResponse(jobs.list(ident.tenant))

    @app.get("/api/jobs/{job}")
    async def api_job(job: str, request: Request) -> JSONResponse:
        ident = await authenticate(request)
        found = jobs.get(ident.tenant, job)
        if found is None:
            raise HTTPException(404, f"no job {job}")
        return JSONResponse(found)
