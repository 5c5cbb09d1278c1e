"""The ``cubepacs`` command line: convert, info, export, verify, qc.

Example
-------
>>> from typer.testing import CliRunner
>>> result = CliRunner().invoke(app, ["--help"])
>>> "convert" in result.output
True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID
from rich.table import Table

from cubepacs.cli._common import _fail, _progress, app, out
from cubepacs.cube import api
from cubepacs.cube.codecs import CODEC_NAMES, DEFAULT_CODEC
from cubepacs.cube.reader import CubeReader, is_cube
from cubepacs.errors import CubepacsError


@app.command()
def convert(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM folders or files (one folder = one batch item)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="a .dcbs file, or a folder for many series")],
    codec: Annotated[str, typer.Option(help=f"frame codec: {', '.join(CODEC_NAMES)}")] = DEFAULT_CODEC,
    split: Annotated[bool, typer.Option(help="write one cube per series when an input holds several")] = False,
    threads: Annotated[int, typer.Option(help="encoding threads (0: one per core)")] = 0,
) -> None:
    """Convert DICOM series into cubes. Every frame is verified bit-exact before the file is written.

    One folder to one file: ``cubepacs convert ct/ -o ct.dcbs``. Many folders (or ``--split``) to a folder:
    ``cubepacs convert study/*/ -o cubes/`` writes ``cubes/<folder>.dcbs`` (``<folder>-<n>.dcbs`` per series).
    """
    many = len(inputs) > 1 or split or output.suffix != ".dcbs"
    if codec not in CODEC_NAMES:
        raise _fail(f"unknown codec {codec!r}; choose one of {', '.join(CODEC_NAMES)}")
    total_in = total_out = frames = 0
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("series", total=len(inputs))
        for src in inputs:
            try:
                series = api.load_series(src) if many else {"": api.load_from_dicom_folder(src)}
            except (CubepacsError, FileNotFoundError) as exc:
                raise _fail(str(exc)) from exc
            for n, image in enumerate(series.values()):
                dest = output
                if many:
                    stem = src.stem if src.is_dir() or src.suffix else src.name
                    dest = output / (f"{stem}.dcbs" if len(series) == 1 else f"{stem}-{n + 1}.dcbs")
                sub = bar.add_task(f"  {dest.name}", total=image.num_frames)

                def advance(k: int, sub: TaskID = sub) -> None:
                    bar.update(sub, completed=k)

                api.save(image, dest, codec=codec, threads=threads or None, progress=advance)
                bar.remove_task(sub)
                size_in = sum(len(image.pixels.instance_bytes(i)) for i in range(len(image.dicom_meta)))
                total_in += size_in
                total_out += dest.stat().st_size
                frames += image.num_frames
                qc = image.dicom_meta.qc
                note = "" if qc["ok"] else f"  [yellow]QC: {'; '.join(qc['issues'])}[/yellow]"
                out.print(f"{dest}  {len(image.dicom_meta)} instances, {image.num_frames} frames, "
                          f"{size_in / 1e6:.1f} MB → {dest.stat().st_size / 1e6:.1f} MB{note}")
            bar.advance(task)
    secs = time.perf_counter() - start
    ratio = total_in / total_out if total_out else 0.0
    out.print(f"done: {frames} frames, {total_in / 1e6:.1f} MB → {total_out / 1e6:.1f} MB (×{ratio:.2f}) "
              f"in {secs:.1f} s")


def _short(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def info(
    cube: Annotated[Path, typer.Argument(help="a .dcbs file")],
    rows: Annotated[int, typer.Option(help="per-instance rows to show")] = 10,
) -> None:
    """Show a cube: shared tags, a per-instance table, codec, sizes and QC."""
    try:  # everything read from the cube inside: a damaged index or column is a one-line error, not a traceback
        _show(cube, CubeReader(cube), rows)
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from exc


def _show(cube: Path, reader: CubeReader, rows: int) -> None:
    meta = reader.meta
    raw = sum(int(r["length"]) for r in reader.index)  # stored
    out.print(f"[bold]{cube}[/bold]  format 1, codec {reader.codec}, {len(meta)} instances, "
              f"{reader.num_frames} frames, {cube.stat().st_size / 1e6:.2f} MB (frames {raw / 1e6:.2f} MB)")
    from pydicom.datadict import keyword_for_tag

    shared = Table("tag", "keyword", "value", title="shared elements")
    for key in meta.keys():
        tag = int(key, 16)
        if tag >> 16 in (0x7FE0,) or not meta.is_shared(tag):
            continue
        shared.add_row(f"({key[:4]},{key[4:]})", keyword_for_tag(tag) or "", _short(meta.get_shared_value(tag)))
    out.print(shared)
    table = Table("#", "file", "InstanceNumber", "ImagePositionPatient", "SliceLocation", title="instances")
    ipp, loc = meta.get_array("ImagePositionPatient"), meta.get_array("SliceLocation")
    for i, n in enumerate(meta.instance_numbers()[:rows]):
        table.add_row(str(i), meta.names[i], str(n), ", ".join(f"{v:.2f}" for v in ipp[i]), f"{loc[i]:.2f}")
    out.print(table)
    qc = meta.qc
    out.print("QC: ok" if qc["ok"] else "QC issues:\n  " + "\n  ".join(qc["issues"]))


@app.command()
def export(
    cube: Annotated[Path, typer.Argument(help="a .dcbs file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="folder to write the DICOM files into")],
) -> None:
    """Write a cube back as the original DICOM files (same names, same bytes)."""
    try:
        image = api.load(cube)
        paths = api.save_to_dicom_folder(image, output)
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from exc
    out.print(f"wrote {len(paths)} files to {output}")


@app.command()
def verify(cubes: Annotated[list[Path], typer.Argument(help=".dcbs files")]) -> None:
    """Check every checksum and decode every frame; exit 1 when any cube is damaged."""
    bad = 0
    for cube in cubes:
        try:
            problems = api.verify(cube)
        except (CubepacsError, OSError) as exc:
            problems = [str(exc)]
        if problems:
            bad += 1
            out.print(f"[red]FAIL[/red] {cube}: " + "; ".join(problems[:5]))
        else:
            out.print(f"[green]OK[/green]   {cube}")
    if bad:
        raise typer.Exit(1)


@app.command()
def qc(
    source: Annotated[Path, typer.Argument(help="a DICOM folder or a .dcbs file")],
    strict: Annotated[bool, typer.Option(help="exit 1 when any issue is found")] = False,
) -> None:
    """Series quality report: instance numbers, spacing, orientation, sizes, empty key tags."""
    try:
        if source.is_file() and is_cube(source):
            reports = {str(source): api.load_meta(source).qc}
        else:
            reports = {uid: img.dicom_meta.qc for uid, img in api.load_series(source).items()}
    except (CubepacsError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if len(reports) > 1:
        out.print(f"[yellow]{len(reports)} series in {source}[/yellow]")
    issues = 0
    for name, rep in reports.items():
        out.print(f"[bold]{name}[/bold]: {rep['instances']} instances")
        if rep.get("spacing"):
            out.print(f"  spacing: median {rep['spacing']['median_spacing']} mm")
        for issue in rep["issues"]:
            out.print(f"  [yellow]• {issue}[/yellow]")
            issues += 1
        if rep["ok"]:
            out.print("  [green]no issues[/green]")
    if strict and issues:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``cubepacs`` command."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()


from cubepacs.cli import archive as _archive  # noqa: E402,F401  (registers serve, storescp, indexer, …)
from cubepacs.cli import backup as _backup  # noqa: E402,F401  (registers `cubepacs backup`, `restore`, `verify-backup`)
from cubepacs.cli import keys as _keys  # noqa: E402,F401  (registers `cubepacs keys`)
from cubepacs.cli import lake as _lake  # noqa: E402,F401  (registers `cubepacs scan`)
from cubepacs.cli import manage as _manage  # noqa: E402,F401  (registers `cubepacs send`, `cubepacs delete`)
from cubepacs.cli import research as _research  # noqa: E402,F401  (registers `cubepacs export-cohort`)
from cubepacs.cli import viewer as _viewer  # noqa: E402,F401  (registers `cubepacs viewer`, `cubepacs users`)
