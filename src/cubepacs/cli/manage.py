"""``cubepacs send`` (C-STORE a study, series or instance to a peer) and ``cubepacs delete``.

Both open the archive's backends from the same settings as ``cubepacs serve`` (``--config``, ``CUBEPACS_*``) and
act for one tenant (``--tenant``, default ``default``).
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli._common import _fail, _progress, app, console, out
from cubepacs.errors import CubepacsError

Config = Annotated[Path | None, typer.Option("--config", help="TOML settings file ([cubepacs] table)")]
Tenant = Annotated[str, typer.Option("--tenant", help="whose data [default]")]


class Level(StrEnum):
    """What a UID names."""

    study = "study"
    series = "series"
    instance = "instance"


LevelArg = Annotated[Level, typer.Argument(help="what UID names: study, series or instance")]
UidArg = Annotated[str, typer.Argument(help="Study, Series or SOP Instance UID")]


def _settings(config: Path | None) -> object:
    from cubepacs.archive.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    return load_settings(config, dict(os.environ))


@app.command()
def send(level: LevelArg, uid: UidArg,
         to: Annotated[str, typer.Option("--to", help="destination AE title (one of the remote_aes setting)")],
         config: Config = None, tenant: Tenant = "default") -> None:
    """Send a study, series or instance to a peer with C-STORE: stored bytes as they are where the peer accepts
    their transfer syntax, else re-encoded losslessly (every UID kept) in one it accepts. Exit 1 when any instance
    failed."""
    from cubepacs.archive import manage
    from cubepacs.archive.services.service import open_backends
    from cubepacs.archive.settings import Settings

    try:
        settings = _settings(config)
        assert isinstance(settings, Settings)
        manage.destination(settings.remote_aes, to)
        b = open_backends(settings)
        rows = manage.resolve(b.index, tenant, level.value, uid)
        if not rows:
            raise _fail(f"tenant {tenant!r} has no {level.value} {uid}")
        sent = failed = 0
        with _progress() as progress:
            task = progress.add_task(f"C-STORE to {to}", total=len(rows))
            for r in manage.send(b.storage, rows, settings.remote_aes, to, settings.ae_title):
                if r.ok:
                    sent += 1
                else:
                    failed += 1
                    console.print(f"  {r.describe()}")
                progress.advance(task)
    except CubepacsError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"{level.value} {uid} to {to}: {sent} sent, {failed} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def delete(level: LevelArg, uid: UidArg, config: Config = None, tenant: Tenant = "default",
           yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False) -> None:
    """Delete a study, series or instance: files, index rows, pre-built metadata, cubes and cached answers.
    Deleting what is already gone does nothing."""
    from cubepacs.archive import manage
    from cubepacs.archive.services.service import open_backends
    from cubepacs.archive.settings import Settings

    try:
        settings = _settings(config)
        assert isinstance(settings, Settings)
        b = open_backends(settings)
        rows = manage.resolve(b.index, tenant, level.value, uid)
        if rows and not yes:
            typer.confirm(f"Delete {len(rows)} instance(s) of {level.value} {uid} (tenant {tenant})?", abort=True)
        n = manage.delete(b.storage, b.queue, b.index, b.cache, tenant, level.value, uid)
        b.queue.close()
    except CubepacsError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"deleted {n} instance(s) of {level.value} {uid}")
