"""``cubepacs backup``, ``cubepacs restore`` and ``cubepacs verify-backup`` (``archive/backup.py``).

They read the same settings as ``cubepacs serve`` (``--config``, ``CUBEPACS_*``, ``--data-dir``). Exit 0 when
all is well, 1 when a verification found a problem (each one listed), 2 for a bad setting or folder, 4 for a
backend that cannot be reached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cubepacs.cli._common import _fail, app, out
from cubepacs.errors import BackendError, CubepacsError

Config = Annotated[Path | None, typer.Option("--config", help="TOML settings file ([cubepacs] table)")]
DataDir = Annotated[str | None, typer.Option(help="data folder of the embedded backends [./cubepacs-data]")]


def _settings(config: Path | None, data_dir: str | None) -> Any:
    from cubepacs.archive.settings import load_settings

    return load_settings(config, dict(os.environ), {"data_dir": data_dir})


def _report(report: Any) -> None:
    for line in report.problems:
        out.print(f"  {line}", markup=False, soft_wrap=True)
    if report.problem_count > len(report.problems):
        out.print(f"  … and {report.problem_count - len(report.problems)} more")
    out.print(report.summary(), markup=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("backup")
def backup_cmd(target: Annotated[Path, typer.Argument(help="new (or empty) folder to write the backup to")],
               config: Config = None, data_dir: DataDir = None) -> None:
    """Back up the archive (index, databases, files, every object) into TARGET, beside a running archive."""
    from cubepacs.archive import backup

    try:
        manifest = backup.backup(_settings(config, data_dir), target)
    except BackendError as exc:
        raise _fail(str(exc), 4) from None
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"backup {target}: index ({manifest['index']}), {len(manifest['sqlite'])} database(s), "
              f"{len(manifest['data'])} file(s), {len(manifest['objects'])} object(s)", markup=False)


@app.command("restore")
def restore_cmd(source: Annotated[Path, typer.Argument(help="a folder written by cubepacs backup")],
                config: Config = None, data_dir: DataDir = None) -> None:
    """Restore SOURCE into an empty archive, then check it against its index and the backup (exit 1: problems)."""
    from cubepacs.archive import backup

    try:
        report = backup.restore(source, _settings(config, data_dir))
    except BackendError as exc:
        raise _fail(str(exc), 4) from None
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from None
    _report(report)


@app.command("verify-backup")
def verify_backup_cmd(source: Annotated[Path, typer.Argument(help="a folder written by cubepacs backup")],
                      archive: Annotated[bool, typer.Option(
                          "--archive", help="check the archive of the settings (a restored one) against the "
                                            "backup, not the backup folder alone")] = False,
                      config: Config = None, data_dir: DataDir = None) -> None:
    """Check a backup: every instance its index lists and every object present, SHA-256 equal (exit 1: problems)."""
    from cubepacs.archive import backup

    try:
        if archive:
            report = backup.verify(_settings(config, data_dir), backup.load_manifest(source))
        else:
            report = backup.verify_backup(source)
    except BackendError as exc:
        raise _fail(str(exc), 4) from None
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from None
    _report(report)
