"""``cubepacs export-cohort``: a de-identified cohort from the archive to DICOM, cubes and a Delta table."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli._common import _fail, _progress, app, console, out

PRIVATE = re.compile(r"(?P<creator>[^:]{1,64}):(0x)?(?P<element>[0-9A-Fa-f]{1,2})")


def parse_private(items: list[str]) -> tuple[tuple[str, int], ...]:
    """``CREATOR:0xEE`` strings → (creator, element offset) pairs; a bad one names the parameter.

    >>> parse_private(["SIEMENS MEDCOM HEADER:0x31"])
    (('SIEMENS MEDCOM HEADER', 49),)
    """
    from cubepacs.errors import ConfigError

    pairs = []
    for item in items:
        found = PRIVATE.fullmatch(item.strip())
        if not found:
            raise ConfigError(f"--keep-private {item}: expected CREATOR:0xEE, a private creator and the element's "
                              "offset in its block (00-FF), e.g. 'SIEMENS MEDCOM HEADER:0x31'")
        pairs.append((found["creator"], int(found["element"], 16)))
    return tuple(pairs)


@app.command("export-cohort")
def export_cohort(
    to: Annotated[Path, typer.Option("--to", help="the export folder (created; an interrupted export continues)")],
    study: Annotated[list[str] | None, typer.Option("--study", help="a Study Instance UID (repeatable)")] = None,
    series: Annotated[list[str] | None, typer.Option("--series", help="a Series Instance UID (repeatable)")] = None,
    query: Annotated[list[str] | None, typer.Option("--query", help="a QIDO-style filter KEY=VALUE, e.g. "
                                                                    "Modality=CT or StudyDate=20200101-20211231 "
                                                                    "(repeatable)")] = None,
    formats: Annotated[str, typer.Option("--formats", help="any of dicom,cube,delta")] = "dicom,cube,delta",
    secret_file: Annotated[Path | None, typer.Option(help="the project secret (else CUBEPACS_EXPORT_SECRET or "
                                                          "the export_secret setting)")] = None,
    retain_uids: bool = False, retain_dates: bool = False, retain_patient: bool = False,
    retain_device: bool = False, clean_descriptors: bool = False,
    exclude_burned_in: Annotated[bool, typer.Option(help="leave out instances flagged for possible burned-in "
                                                         "text (counted)")] = False,
    keep_private: Annotated[list[str] | None, typer.Option(help="a safe private attribute CREATOR:0xEE to keep "
                                                                "(repeatable)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="export without asking when the cohort is large")] = False,
    confirm_above: Annotated[int, typer.Option(help="instances above which --yes is needed")] = 1000,
    codec: Annotated[str, typer.Option(help="the cubes' frame codec")] = "htj2k",
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file")] = None,
    tenant: Annotated[str, typer.Option(help="whose data")] = "default",
) -> None:
    """De-identify (PS3.15 Annex E Basic Profile and the chosen options) and export the chosen studies or series.

    New UIDs and date shifts derive from the project secret: the same secret links exports, nothing else can.
    The original → new mapping goes to TO/mapping.json (mode 0600), apart from the manifest. Every parameter is
    checked, and the cohort counted, before anything is written; exit 2 on a bad parameter, 1 when instances failed.
    """
    from cubepacs.archive.services.service import open_backends
    from cubepacs.archive.settings import load_settings
    from cubepacs.errors import CubepacsError
    from cubepacs.research.deid import Options
    from cubepacs.research.export import check_formats, check_plan, prepare
    from cubepacs.research.export import export_cohort as run
    from cubepacs.research.query import parse_query, select

    try:
        chosen = check_formats(tuple(f.strip() for f in formats.split(",") if f.strip()))
        filters = parse_query(query or [])
        if not (filters or study or series):
            raise _fail("choose the cohort: --query KEY=VALUE, --study UID or --series UID")
        private = parse_private(keep_private or [])
        settings = load_settings(config, dict(os.environ))
        secret = secret_file.read_text().strip() if secret_file else settings.export_secret
        if len(secret) < 16:
            raise _fail("a project secret of at least 16 characters is needed: --secret-file, "
                        "CUBEPACS_EXPORT_SECRET or the export_secret setting")
        options = Options(secret.encode(), retain_uids, retain_dates, retain_patient, retain_device,
                          clean_descriptors, private, exclude_burned_in)
        prepare(to, options, chosen)
        b = open_backends(settings)
        selection = select(b.index, tenant, filters, study, series)
    except (CubepacsError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if not selection.groups:
        raise _fail(f"tenant {tenant!r} has no instance matching the query")
    try:
        check_plan(to, options, chosen, selection.groups)
    except (CubepacsError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"selected: {selection.summary()}")
    if selection.instances > confirm_above and not yes:
        raise _fail(f"{selection.summary()} selected: more than {confirm_above} instances, add --yes to export "
                    "them")
    try:
        with _progress() as bar:
            task = bar.add_task("de-identifying", total=selection.instances)
            report = run(lambda r: b.storage.get(r["storage_key"]), selection.groups, to, options, chosen, codec,
                         progress=lambda n, total: bar.update(task, completed=n))
    except (CubepacsError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for flag in report.burned_in:
        console.print(f"  burned-in annotation possible: series {flag['series']}, {flag['reason']}")
    for failure in report.failed:
        console.print(f"  failed: {failure}")
    left_out = "".join(f"; {n} left out: {why}" for why, n in sorted(report.excluded.items()))
    delta = {None: "", True: ", Delta table committed", False: ", Delta table already had them"}[
        report.delta_committed]
    out.print(f"{report.series} series, {report.instances} instances exported to {to} ({report.resumed} series "
              f"already done{delta}); {len(report.burned_in)} flagged for burned-in annotation; "
              f"{len(report.failed)} failed{left_out}")
    if report.failed:
        raise typer.Exit(1)
