"""``cubepacs scan``: DICOM headers from ZIPs, folders and cubes into a Delta table, without Spark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli._common import _fail, _progress, app, out


@app.command()
def scan(
    inputs: Annotated[list[Path], typer.Argument(help="ZIP files, folders (of ZIPs or DICOM files), .dcbs cubes")],
    to: Annotated[Path, typer.Option("--to", help="the Delta table folder to append to")],
    workers: Annotated[int, typer.Option(help="worker processes (0: one per core)")] = 0,
    partitions: Annotated[int, typer.Option(help="partitions (0: three per core)")] = 0,
    glob: Annotated[str | None, typer.Option(help="only entries whose name matches, e.g. '*.dcm'")] = None,
    recursive: Annotated[bool, typer.Option(help="walk folders recursively")] = True,
    bulk_threshold: Annotated[int, typer.Option(help="values larger than this (bytes) are left out of the JSON")]
    = 1024,
    batch_id: Annotated[str | None, typer.Option(help="commit id; the same id never commits twice "
                                                      "(default: derived from the inputs)")] = None,
    max_header_bytes: Annotated[int, typer.Option(help="bytes read at most per entry to find its header "
                                                       "(beyond: an error row)")] = 32 * 1024 * 1024,
    max_nested_bytes: Annotated[int, typer.Option(help="size at most of a ZIP inside a ZIP (spooled to a "
                                                       "temporary file)")] = 4 * 1024**3,
) -> None:
    """Read every DICOM header (no pixel data) in parallel processes and append one row per instance.

    Bad entries become rows with ``error`` and ``error_stage``; the scan never stops for one file. Scanning the
    same unchanged inputs again adds nothing (the commit is idempotent per batch).
    """
    from cubepacs.lake.scan import scan as run

    with _progress() as bar:
        task = bar.add_task("partitions", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = run([str(p) for p in inputs], str(to), workers=workers or None,
                         num_partitions=partitions or None, pattern=glob, recursive=recursive,
                         bulk_threshold=bulk_threshold, batch_id=batch_id, progress=advance,
                         max_header=max_header_bytes, max_nested=max_nested_bytes)
        except (FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    rate = (result.files + result.errors) / result.wall_s if result.wall_s else 0.0
    status = "committed" if result.committed else "already committed (nothing added)"
    out.print(f"{result.files} instances, {result.errors} errors, {result.compressed_bytes / 1e6:.1f} MB read "
              f"in {result.wall_s:.1f} s ({rate:.0f} files/s, {result.core_ms_per_file:.2f} core-ms/file); "
              f"batch {result.batch_id} {status} → {to}")
