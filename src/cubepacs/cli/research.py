"""``cubepacs export-cohort``: a de-identified cohort from the archive to DICOM, cubes and a Delta table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli import _fail, _progress, app, console, out


@app.command("export-cohort")
def export_cohort(
    to: Annotated[Path, typer.Option("--to", help="the export folder (created; an interrupted export continues)")],
    study: Annotated[list[str] | None, typer.Option("--study", help="a Study Instance UID (repeatable)")] = None,
    series: Annotated[list[str] | None, typer.Option("--series", help="a Series Instance UID (repeatable)")] = None,
    query: Annotated[list[str] | None, typer.Option("--query", help="a QIDO-style study filter KEY=VALUE, e.g. "
                                                                    "Modality=CT or StudyDate=2020-2021")] = None,
    formats: Annotated[str, typer.Option("--formats", help="any of dicom,cube,delta")] = "dicom,cube,delta",
    secret_file: Annotated[Path | None, typer.Option(help="the project secret (else CUBEPACS_EXPORT_SECRET or "
                                                          "the export_secret setting)")] = None,
    retain_uids: bool = False, retain_dates: bool = False, retain_patient: bool = False,
    retain_device: bool = False, clean_descriptors: bool = False,
    keep_private: Annotated[list[str] | None, typer.Option(help="a safe private attribute CREATOR:0xEE to keep "
                                                                "(repeatable)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file")] = None,
    tenant: Annotated[str, typer.Option(help="whose data")] = "default",
) -> None:
    """De-identify (PS3.15 Annex E Basic Profile and the chosen options) and export the chosen studies or series.

    New UIDs and date shifts derive from the project secret: the same secret links exports, nothing else can.
    The original → new mapping goes to TO/mapping.json (mode 0600), apart from the manifest.
    """
    from cubepacs.archive.service import open_backends
    from cubepacs.archive.settings import load_settings
    from cubepacs.errors import CubepacsError
    from cubepacs.research.deid import Options
    from cubepacs.research.export import export_cohort as run
    from cubepacs.research.export import select

    try:
        settings = load_settings(config, dict(os.environ))
        secret = secret_file.read_text().strip() if secret_file else settings.export_secret
        if len(secret) < 16:
            raise _fail("a project secret of at least 16 characters is needed: --secret-file, "
                        "CUBEPACS_EXPORT_SECRET or the export_secret setting")
        filters = dict(q.split("=", 1) for q in query or [] if "=" in q)
        private = tuple((c, int(e, 16)) for c, _, e in (k.rpartition(":") for k in keep_private or []))
        options = Options(secret.encode(), retain_uids, retain_dates, retain_patient, retain_device,
                          clean_descriptors, private)
        b = open_backends(settings)
        groups = select(b.index, tenant, filters or None, study, series)
        if not groups:
            raise _fail(f"tenant {tenant!r} has no instance matching the query")
        with _progress() as bar:
            task = bar.add_task("de-identifying", total=sum(len(g) for g in groups.values()))
            report = run(lambda r: b.storage.get(r["storage_key"]), groups, to, options,
                         tuple(f.strip() for f in formats.split(",") if f.strip()),
                         progress=lambda n, total: bar.update(task, completed=n))
    except (CubepacsError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for flag in report.burned_in:
        console.print(f"  burned-in annotation possible: series {flag['series']}, {flag['reason']}")
    for failure in report.failed:
        console.print(f"  failed: {failure}")
    delta = {None: "", True: ", Delta table committed", False: ", Delta table already had them"}[
        report.delta_committed]
    out.print(f"{report.series} series, {report.instances} instances exported to {to} ({report.resumed} series "
              f"already done{delta}); {len(report.burned_in)} flagged for burned-in annotation")
    if report.failed:
        raise typer.Exit(1)
