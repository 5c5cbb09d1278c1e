"""``POST /api/export`` on the archive's own API: export a cohort of the caller's tenant, de-identified.

Body (JSON): ``{"name": "cohort-1", "query": {"Modality": "CT", "StudyDate": "20200101-20211231"}, "studies": [...],
"series": [...], "formats": ["dicom", "cube", "delta"], "options": {"retain_dates": true, ...}}``. Every part is
checked before anything is read or written: a bad one is a 400 naming it (an unknown query key, a value of the
wrong form, an unknown option or format). The export goes to ``export_dir/<tenant>/<name>`` on the server (never a
path from the request); the answer streams JSON lines while it runs: ``{"selected": {...}}`` first, then
``{"progress": n, "total": t}`` as instances are done, then the summary (``"done": true``) without any original
identifier. Registered by the command line as an extension of the web app, so that ``cubepacs.archive`` itself
never imports the lake.

Example
-------
>>> NAME.fullmatch("cohort-1") is not None, NAME.fullmatch("../etc") is None
(True, True)
>>> options_of({"retain_dates": True})
{'retain_dates': True}
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cubepacs.errors import ConfigError
from cubepacs.research.deid import Options
from cubepacs.research.export import FORMATS, check_formats, check_plan, export_cohort, prepare
from cubepacs.research.query import select

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
OPTION_NAMES = ("retain_uids", "retain_dates", "retain_patient", "retain_device", "clean_descriptors",
                "exclude_burned_in")
PROGRESS_EVERY = 0.5  # seconds between two progress lines


def options_of(raw: Any) -> dict[str, bool]:
    """The ``options`` of a request checked: known names, true or false; a ConfigError names the bad one."""
    if not isinstance(raw, dict):
        raise ConfigError("options: expected an object of option names → true/false")
    for key, value in raw.items():
        if key not in OPTION_NAMES:
            raise ConfigError(f"options.{key}: unknown option; options are {', '.join(OPTION_NAMES)}")
        if not isinstance(value, bool):
            raise ConfigError(f"options.{key}: expected true or false, not {value!r}")
    return dict(raw)


def _uids(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of UIDs")
    return value


@dataclass(frozen=True)
class Plan:
    """An export checked and ready to run: where it goes, how, and what it selects."""

    name: str
    out: Path
    options: Options
    formats: tuple[str, ...]
    selection: Any  # research.query.Selection


def plan(services: Any, tenant: str, body: Any, export_dir: str, secret: str) -> Plan:
    """Check an export request's body (the fields of ``POST /api/export``) and select its instances — before
    anything is read or written: ConfigError names the bad part (400), an empty selection is a 404."""
    if not secret:
        raise HTTPException(400, "export_secret is not set on the server: exports are off")
    if not isinstance(body, dict):
        raise ConfigError("expected a JSON object with a name, a query, studies or series")
    unknown = set(body) - {"name", "query", "studies", "series", "formats", "options"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown field; fields are name, query, studies, "
                          "series, formats, options")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError("name: letters, digits, '_' and '-', at most 64 characters")
    raw_formats = body.get("formats") or list(FORMATS)
    if not isinstance(raw_formats, list):
        raise ConfigError(f"formats: expected a list among {', '.join(FORMATS)}")
    formats = check_formats(tuple(str(f) for f in raw_formats))
    flags = options_of(body.get("options") or {})
    query = body.get("query") or {}
    if not isinstance(query, dict):
        raise ConfigError("query: expected an object of DICOM keywords → values")
    studies, series = _uids(body, "studies"), _uids(body, "series")
    if not (query or studies or series):
        raise ConfigError("query: choose the cohort with a query, studies or series")
    out = Path(export_dir) / tenant / name
    options = Options(secret.encode(), **flags)  # type: ignore[arg-type]
    prepare(out, options, formats)
    selection = select(services.index, tenant, query, studies, series)
    if not selection.groups:
        raise HTTPException(404, "the query names no instance of this tenant")
    check_plan(out, options, formats, selection.groups)
    return Plan(name, out, options, formats, selection)


def audit_of(checked: Plan) -> tuple[str, str]:
    """(study, detail) of an export's audit row: the study when it is one, every study in the detail (bounded).

    Example
    -------
    >>> class S: groups = {("1.2", "1.2.1"): [{}], ("1.3", "1.3.1"): [{}, {}]}; instances = 3
    >>> audit_of(Plan("c1", Path("x"), None, ("dicom",), S()))  # type: ignore[arg-type]
    ('', 'export c1: 3 instance(s) of 1.2, 1.3')
    """
    studies = sorted({study for study, _ in checked.selection.groups})
    detail = f"export {checked.name}: {checked.selection.instances} instance(s) of {', '.join(studies)}"
    return (studies[0] if len(studies) == 1 else ""), detail[:2000]


def run(services: Any, checked: Plan) -> Iterator[dict[str, Any]]:
    """Run a checked export in a thread: ``{"selected": …}``, then ``{"progress": n, "total": t}`` at most every
    :data:`PROGRESS_EVERY` seconds, then the summary (``"done": true``; an error is the last event's ``error``)."""
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    last = [0.0]

    def progress(n: int, total: int) -> None:
        import time

        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY or n == total:
            last[0] = now
            events.put({"progress": n, "total": total})

    def work() -> None:
        try:
            report = export_cohort(lambda r: services.storage.get(r["storage_key"]), checked.selection.groups,
                                   checked.out, checked.options, checked.formats, progress=progress)
            events.put({"done": True, "name": checked.name, **report.summary()})
        except Exception as exc:  # the stream has started: the error is its last event
            events.put({"done": True, "error": f"{type(exc).__name__}: {exc}"})

    selection = checked.selection
    yield {"selected": {"studies": selection.studies, "series": selection.series, "instances": selection.instances}}
    threading.Thread(target=work, name="export", daemon=True).start()
    while True:
        event = events.get()
        yield event
        if event.get("done"):
            return


def routes(export_dir: str, secret: str) -> Callable[[FastAPI, Any], None]:
    """The extension registering ``POST /api/export`` (``export_dir``, project ``secret`` from the settings)."""

    def add(app: FastAPI, services: Any) -> None:
        from cubepacs.archive.web.context import tenant_of

        @app.post("/api/export")
        async def export(request: Request, tenant: str = Depends(tenant_of)) -> StreamingResponse:
            from cubepacs.archive.web.jsonbody import read_json

            if not secret:
                raise HTTPException(400, "export_secret is not set on the server: exports are off")
            body = await read_json(request, empty={})  # bounded in size and depth: 413/400
            try:
                checked = await run_in_threadpool(plan, services, tenant, body, export_dir, secret)  # index reads
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from None
            request.state.study, request.state.detail = audit_of(checked)  # who exported which studies

            def lines() -> Iterator[bytes]:
                for event in run(services, checked):
                    yield json.dumps(event).encode() + b"\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")

    return add
