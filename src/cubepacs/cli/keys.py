"""``cubepacs keys create|list|revoke``: API keys for machines, stored hashed in DATA_DIR/api-keys.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cubepacs.cli import _fail, app, console, out

keys_app = typer.Typer(help="API keys (kept as SHA-256 hashes; a new key is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
DataDir = Annotated[Path, typer.Option(help="the archive's data folder")]


@keys_app.command("create")
def create(tenant: Annotated[str, typer.Option(help="the tenant the key gives access to")] = "default",
           data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Create a key; it is printed once (to standard output) and only its hash is stored."""
    from cubepacs.archive import apikeys
    from cubepacs.errors import ConfigError

    try:
        key = apikeys.create(data_dir, tenant)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"key for tenant {tenant} (id {apikeys.key_id(apikeys.hash_key(key))}), shown only now:")
    out.print(key)


@keys_app.command("list")
def list_keys(data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Key ids and tenants (the keys themselves are not stored)."""
    from cubepacs.archive import apikeys

    for hashed, tenant in sorted(apikeys.load(data_dir).items(), key=lambda kv: kv[1]):
        out.print(f"{apikeys.key_id(hashed)}\t{tenant}")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the id `keys list` shows (at least 6 characters)")],
           data_dir: DataDir = Path("./cubepacs-data")) -> None:
    """Revoke a key: running services stop accepting it when they restart."""
    from cubepacs.archive import apikeys

    if apikeys.revoke(data_dir, key_id) == 0:
        raise _fail(f"no key with id {key_id!r} (ids have at least 6 characters; see `cubepacs keys list`)")
    out.print(f"revoked {key_id}")
