"""``cubepacs keys create|list|revoke``: API keys for machines, stored hashed in DATA_DIR/api-keys.json, each with a
tenant and a role (admin, user, viewer). Running services take every change at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli._common import _fail, app, console, out

keys_app = typer.Typer(help="API keys (kept as SHA-256 hashes; a new key is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
DataDir = Annotated[Path, typer.Option(help="the archive's data folder")]


@keys_app.command("create")
def create(tenant: Annotated[str, typer.Option(help="the tenant the key gives access to")] = "default",
           role: Annotated[str, typer.Option(help="admin, user (view, upload, send, export) or viewer")] = "user",
           data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Create a key; it is printed once (to standard output) and only its hash is stored."""
    from cubepacs.archive.auth import apikeys
    from cubepacs.errors import ConfigError

    try:
        key = apikeys.create(data_dir, tenant, role)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"{role} key for tenant {tenant} (id {apikeys.key_id_of(apikeys.hash_key(key))}), shown only now:")
    out.print(key)


@keys_app.command("list")
def list_keys(data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Key ids, tenants and roles (the keys themselves are not stored)."""
    from cubepacs.archive.auth import apikeys

    for hashed, value in sorted(apikeys.load(data_dir).items(), key=lambda kv: kv[1]):
        tenant, role = apikeys.split_value(value)
        out.print(f"{apikeys.key_id_of(hashed)}\t{tenant}\t{role}")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the id `keys list` shows (at least 6 characters)")],
           data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Revoke a key: running services stop accepting it at once (and end the sessions opened with it)."""
    from cubepacs.archive.auth import apikeys

    if apikeys.revoke(data_dir, key_id) == 0:
        raise _fail(f"no key with id {key_id!r} (ids have at least 6 characters; see `cubepacs keys list`)")
    out.print(f"revoked {key_id}")


def show_first_key(data_dir: Path, key: str) -> None:
    """Tell the operator the admin key made on first start, once: on a terminal, printed; otherwise (a service
    manager's log) written to ``data_dir/initial-api-key`` (mode 0600) and its path printed, never the key."""
    import os

    if console.is_terminal:
        console.print(f"[bold]Created an admin API key for tenant 'default'[/bold], shown only now:\n  {key}\n"
                      "Use it as: Authorization: Bearer <key>; `cubepacs users add NAME --role admin` makes a "
                      "browser user.")
        return
    path = data_dir / "initial-api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    console.print(f"Created an admin API key for tenant 'default': written to {path} (mode 0600, not shown "
                  "because output is not a terminal); read it, keep it elsewhere and delete the file. "
                  "Use it as: Authorization: Bearer <key>")
