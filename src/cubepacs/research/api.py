"""``POST /api/export`` on the archive's own API: export a cohort of the caller's tenant, de-identified.

Body (JSON): ``{"name": "cohort-1", "query": {"Modality": "CT", "StudyDate": "2020-2021"}, "studies": [...],
"series": [...], "formats": ["dicom", "cube", "delta"], "options": {"retain_dates": true, ...}}``. The export goes
to ``export_dir/<tenant>/<name>`` on the server (never a path from the request); the answer streams JSON lines
(progress, then a summary without any original identifier). Registered by the command line as an extension of the
web app, so that ``cubepacs.archive`` itself never imports the lake.

Example
-------
>>> NAME.fullmatch("cohort-1") is not None, NAME.fullmatch("../etc") is None
(True, True)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

from cubepacs.research.deid import Options
from cubepacs.research.export import FORMATS, export_cohort, select

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
OPTION_NAMES = ("retain_uids", "retain_dates", "retain_patient", "retain_device", "clean_descriptors")


def routes(export_dir: str, secret: str) -> Callable[[FastAPI, Any], None]:
    """The extension registering ``POST /api/export`` (``export_dir``, project ``secret`` from the settings)."""

    def add(app: FastAPI, services: Any) -> None:
        from cubepacs.archive.web.app import tenant_of

        @app.post("/api/export")
        async def export(request: Request, tenant: str = Depends(tenant_of)) -> StreamingResponse:
            if not secret:
                raise HTTPException(400, "export_secret is not set on the server: exports are off")
            try:
                body = json.loads(await request.body() or b"{}")
                name = str(body["name"])
                formats = tuple(body.get("formats") or FORMATS)
                flags = {k: bool(v) for k, v in (body.get("options") or {}).items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise HTTPException(400, f"expected JSON with a name, a query, studies or series: {exc}") from None
            if not NAME.fullmatch(name):
                raise HTTPException(400, "name: letters, digits, '_' and '-', at most 64 characters")
            if set(flags) - set(OPTION_NAMES) or set(formats) - set(FORMATS):
                raise HTTPException(400, f"options are {', '.join(OPTION_NAMES)}; formats {', '.join(FORMATS)}")
            groups = select(services.index, tenant, body.get("query") or None, body.get("studies"),
                            body.get("series"))
            if not groups:
                raise HTTPException(404, "the query names no instance of this tenant")
            out = Path(export_dir) / tenant / name
            options = Options(secret.encode(), **{k: flags[k] for k in OPTION_NAMES if k in flags})  # type: ignore[arg-type]

            def lines() -> Iterator[bytes]:
                done: list[int] = []
                report = export_cohort(lambda r: services.storage.get(r["storage_key"]), groups, out, options,
                                       formats, progress=lambda n, total: done.append(n))
                yield json.dumps({"instances": done[-1] if done else 0}).encode() + b"\n"
                yield json.dumps({"done": True, "name": name, "series": report.series,
                                  "instances": report.instances, "resumed": report.resumed,
                                  "failed": len(report.failed), "burned_in": len(report.burned_in),
                                  "delta_committed": report.delta_committed}).encode() + b"\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")

    return add
