"""What every command module of the CLI shares: the Typer app, the consoles, progress bars and one-line errors.

The command modules import this, never ``cubepacs.cli`` itself (which imports them to register their commands).

Example
-------
>>> _fail("no such file: x.dcbs").exit_code
2
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="cubepacs: DICOM series cubes (.dcbs), a PACS archive built on them, and a lake of headers.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
out = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)  # one line, however long
    return typer.Exit(code)
