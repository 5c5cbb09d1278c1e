"""``/ui/export`` in the archive's admin UI: a de-identified export of a selection, with the research export's
options (``research/api.py``), started from a form and followed on the page as it runs.

``GET /ui/export?study=UID&study=UID…`` shows the form for those studies (the study page links to it; without a
study the form takes study UIDs, one a line, or a query: patient ID, modality, date range): the cohort's name,
its formats (DICOM files, cubes, a Delta table) and each option of the de-identification profile (retain UIDs,
dates, patient characteristics, device identity, clean descriptors, leave out burned-in annotations), all off
by default — the safest export. ``POST /ui/export`` checks everything as ``POST /api/export`` does (a bad field
is a 400 page naming it), then streams a page: what was selected, a progress line as instances are done, and the
summary — counts only, no original identifier. The output goes to ``export_dir/<tenant>/<name>`` on the server.
Registered as an extension of the web app by the command line, as ``/api/export`` is, so that the archive never
imports the research code. Needs the ``export`` permission (user, admin).

Example
-------
>>> body_of({"name": ["c1"], "study": ["1.2.3"], "format": ["dicom"], "retain_dates": ["on"]})["options"]
{'retain_dates': True}
>>> body_of({"name": ["c1"], "uids": ["1.2.3\\r\\n 4.5.6 "], "Modality": ["CT"]})["studies"]
['1.2.3', '4.5.6']
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cubepacs.errors import ConfigError
from cubepacs.research.api import OPTION_NAMES, audit_of, plan, run
from cubepacs.research.export import FORMATS

LABELS = {"retain_uids": "Retain UIDs", "retain_dates": "Retain dates (else shifted per patient)",
          "retain_patient": "Retain patient characteristics (sex, age, size, weight)",
          "retain_device": "Retain device identity", "clean_descriptors": "Clean descriptors (keep them, cleaned)",
          "exclude_burned_in": "Leave out instances flagged with burned-in annotations"}
QUERY_KEYS = ("PatientID", "Modality", "StudyDate")

FORM = """{% extends "base.html" %}{% block body %}
<form method="post" action="/ui/export" id="export"><input type="hidden" name="csrf" value="{{ csrf }}">
{% if studies %}<p>{{ studies|length }} stud{{ 'y' if studies|length == 1 else 'ies' }}:</p><ul>
{% for s in studies %}<li class="mono">{{ s }}<input type="hidden" name="study" value="{{ s }}"></li>{% endfor %}
</ul>{% else %}<p><label>Study Instance UIDs, one a line<br><textarea name="uids" rows="4" cols="70"></textarea>
</label></p><p>or a query: <input name="PatientID" placeholder="patient ID">
<input name="Modality" placeholder="modality" size="6">
<input name="StudyDate" placeholder="YYYYMMDD-YYYYMMDD" size="18"></p>{% endif %}
<p><label>Cohort name <input name="name" id="name" required pattern="[A-Za-z0-9][A-Za-z0-9_-]{0,63}"></label>
(letters, digits, _ and -; written to the server's export folder)</p>
<fieldset><legend>Formats</legend>{% for f in formats %}<label><input type="checkbox" name="format"
value="{{ f }}" id="format-{{ f }}" {% if f == 'dicom' %}checked{% endif %}> {{ f }}</label> {% endfor %}
</fieldset>
<fieldset><legend>De-identification (PS3.15 E basic profile; every option off keeps the least)</legend>
{% for key, text in options %}<label><input type="checkbox" name="{{ key }}" id="opt-{{ key }}"> {{ text
}}</label><br>{% endfor %}</fieldset>
<p><button id="start">Export</button></p></form>{% endblock %}"""

RUNNING = """{% extends "base.html" %}{% block body %}<p>Cohort <b>{{ cohort }}</b>: <span id="selected">{{
selected.studies }} stud{{ 'y' if selected.studies == 1 else 'ies' }}, {{ selected.series }} series, {{
selected.instances }} instances</span> selected.</p><ol id="progress"><!--rows--></ol><!--summary-->
{% endblock %}"""


def body_of(form: dict[str, list[str]]) -> dict[str, Any]:
    """The ``POST /api/export`` body a submitted form stands for."""
    studies = form.get("study", []) + [u.strip() for text in form.get("uids", []) for u in text.split()
                                       if u.strip()]
    query = {k: form[k][0].strip() for k in QUERY_KEYS if form.get(k) and form[k][0].strip()}
    body: dict[str, Any] = {"name": (form.get("name") or [""])[0].strip(), "formats": form.get("format") or [],
                            "options": {k: True for k in OPTION_NAMES if form.get(k)}}
    if studies:
        body["studies"] = studies
    if query:
        body["query"] = query
    return body


def _summary(event: dict[str, Any]) -> str:
    if event.get("error"):
        return f'<p id="summary" class="err">The export stopped: {html.escape(str(event["error"]))}</p>'
    excluded = ", ".join(f"{html.escape(str(k))}: {v}" for k, v in sorted(event.get("excluded", {}).items()))
    return (f'<p id="summary">Done: {event.get("series", 0)} series, <span id="exported">{event.get("instances", 0)}'
            f'</span> instances exported ({event.get("resumed", 0)} series already done), '
            f'<span id="failed">{event.get("failed", 0)}</span> failed, left out: {excluded or "none"}, '
            f'{event.get("burned_in", 0)} flagged for burned-in annotations.</p>')


def ui_routes(export_dir: str, secret: str) -> Callable[[FastAPI, Any], None]:
    """The extension registering ``/ui/export`` (the same ``export_dir`` and ``secret`` as ``/api/export``)."""

    def add(app: FastAPI, services: Any) -> None:
        from cubepacs.archive.web import uitemplates
        from cubepacs.archive.web.auth import Identity
        from cubepacs.archive.web.pages import UI, form_who, render_page, who

        uitemplates.TEMPLATES.setdefault("export.html", FORM)
        uitemplates.TEMPLATES.setdefault("exporting.html", RUNNING)

        def refusal(ident: Identity, message: str, status: int, back: str = UI + "/export") -> Response:
            return render_page("message.html", status, title="Not exported", message=message, kind="err", ident=ident,
                               back=back)

        def first_step(ident: Identity, body: dict[str, Any]) -> tuple[tuple[str, str], Iterator[dict[str, Any]], str]:
            """An export checked and selected (the index reads of the whole cohort), its audit row's (study,
            detail), its events (the selection's counts taken) and the page showing them — blocking work."""
            checked = plan(services, ident.tenant, body, export_dir, secret)
            events = run(services, checked)
            selected = next(events)["selected"]
            page = uitemplates.render("exporting.html", title="De-identified export", ident=ident,
                                      cohort=checked.name, selected=selected)
            return audit_of(checked), events, page

        @app.get(UI + "/export")
        async def export_form(request: Request) -> Response:
            ident = await who(request)
            if not isinstance(ident, Identity):
                return ident
            if not secret:  # said before the form is filled in, not after
                return refusal(ident, "exports are off on this server: set export_secret (docs/settings.md)", 409,
                               UI)
            studies = request.query_params.getlist("study")[:1000]
            return render_page("export.html", title="De-identified export", ident=ident, csrf=ident.csrf,
                               studies=studies, formats=FORMATS, options=[(k, LABELS.get(k, k)) for k in OPTION_NAMES])

        @app.post(UI + "/export")
        async def export_start(request: Request) -> Response:
            raw = await request.body()
            if len(raw) > 1024 * 1024:
                return render_page("message.html", 413, title="Too large", message="form larger than 1 MB", ident=None)
            form = parse_qs(raw.decode("utf-8", "replace"))
            ident, _ = await form_who(request, (form.get("csrf") or [""])[0] or None)
            if not isinstance(ident, Identity):
                return ident
            try:  # the whole first step (checks, selection, its counts, the page's head) holds no event loop
                audit, events, page = await run_in_threadpool(first_step, ident, body_of(form))
            except ConfigError as exc:
                return refusal(ident, str(exc), 400)
            except HTTPException as exc:
                return refusal(ident, str(exc.detail), exc.status_code)
            request.state.study, request.state.detail = audit  # who exported which studies
            head, _, rest = page.partition("<!--rows-->")
            middle, _, tail = rest.partition("<!--summary-->")

            def lines() -> Iterator[str]:  # each progress line as it comes: the page shows the export running
                yield head
                last: dict[str, Any] = {}
                for event in events:
                    if "progress" in event:
                        yield f'<li class="progress">{event["progress"]} / {event["total"]} instances</li>\n'
                    last = event
                yield middle + _summary(last) + tail

            return StreamingResponse(lines(), media_type="text/html; charset=utf-8",
                                     headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    return add
