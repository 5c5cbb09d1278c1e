"""``cubepacs viewer install`` (the OHIF viewer from npm) and ``cubepacs users add|list|remove`` (browser users).

Example
-------
>>> OHIF_VERSION
'3.13.2'
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from cubepacs.archive.web.session import load_users
from cubepacs.cli._common import _fail, app, console, out

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"  # pinned: the version the browser tests run

viewer_app = typer.Typer(help="The OHIF viewer served at / by `cubepacs serve` and `cubepacs web`.",
                         no_args_is_help=True)
users_app = typer.Typer(help="Browser users (passwords stored as Argon2id hashes in data-dir/users.json).",
                        no_args_is_help=True)
app.add_typer(viewer_app, name="viewer")
app.add_typer(users_app, name="users")

DataDir = Annotated[Path, typer.Option(help="the archive's data folder")]


@viewer_app.command("install")
def install(data_dir: DataDir = Path("./cubepacs-data"),
            version: Annotated[str, typer.Option(help="@ohif/app version")] = OHIF_VERSION) -> None:
    """Download OHIF's prebuilt viewer (npm pack @ohif/app) into DATA_DIR/viewer; nothing else of npm is kept."""
    data_dir = data_dir.resolve()  # npm runs in a folder of its own: a relative --pack-destination would miss
    target = data_dir / "viewer"
    stamp = target / ".cubepacs-ohif-version"
    if stamp.is_file() and stamp.read_text().strip() == version:
        out.print(f"OHIF {version} is already installed in {target}")
        return
    if shutil.which("npm") is None:
        raise _fail("npm is not installed: install Node.js and npm (Debian: apt-get install npm), then run this again")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        with console.status(f"downloading {OHIF_PACKAGE}@{version} from the npm registry…"):
            run = subprocess.run(["npm", "pack", f"{OHIF_PACKAGE}@{version}", "--silent", "--pack-destination", tmp],
                                 capture_output=True, text=True, check=False, cwd=tmp)
        if run.returncode != 0:
            raise _fail(f"npm pack {OHIF_PACKAGE}@{version} failed: {run.stderr.strip()[-400:]}")
        tarball = next(Path(tmp).glob("*.tgz"))
        staging = Path(tmp) / "viewer"
        with console.status("unpacking the viewer…"), tarfile.open(tarball) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith("package/dist/") and not m.issym()
                       and not m.islnk() and ".." not in Path(m.name).parts]
            tf.extractall(Path(tmp) / "x", members=members, filter="data")
        (Path(tmp) / "x" / "package" / "dist").rename(staging)
        (staging / ".cubepacs-ohif-version").write_text(version + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    out.print(f"OHIF {version} installed in {target}: `cubepacs serve` shows it at /")


def _users_file(data_dir: Path) -> Path:
    return data_dir / "users.json"


@users_app.command("add")
def add_user(name: str, tenant: Annotated[str, typer.Option(help="the tenant this user sees")] = "default",
             role: Annotated[str, typer.Option(help="admin, user (view, upload, send, export) or viewer")] = "user",
             data_dir: DataDir = Path("./cubepacs-data"),
             password_stdin: Annotated[bool, typer.Option(help="read the password from standard input")] = False,
             ) -> None:
    """Add a user who signs in with a password, or change one (its open sessions end). Running services take it
    at once."""
    from cubepacs.archive.auth.roles import check_role
    from cubepacs.archive.keys import check_tenant
    from cubepacs.archive.web.session import save_user
    from cubepacs.errors import ConfigError

    try:
        check_tenant(tenant)
        check_role(role)
        password = input() if password_stdin else getpass.getpass(f"password for {name}: ")
        save_user(data_dir, name, password, tenant, role)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"user {name} ({role}, tenant {tenant}) saved in {_users_file(data_dir)}")


@users_app.command("list")
def list_users(data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """The users, their tenants and roles (never their password hashes)."""
    from cubepacs.archive.web.session import describe

    for user in describe(load_users(data_dir)):
        out.print(f"{user['name']}\t{user['tenant']}\t{user['role']}")


@users_app.command("remove")
def remove_user(name: str, data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Remove a user; its open sessions end at once."""
    from cubepacs.archive.web.session import remove_user as remove

    if not remove(data_dir, name):
        raise _fail(f"no user {name!r}")
    out.print(f"user {name} removed")
