"""API keys for machines, kept hashed (SHA-256) in ``data_dir/api-keys.json`` — never in clear on disk.

A key is 32 random bytes (URL-safe base64), so a plain SHA-256 is enough to keep it (a KDF is for guessable
passwords: users have Argon2id, see ``web/session.py``). Keys written in clear in a settings file are hashed as
they are loaded. ``cubepacs keys create|list|revoke`` manage the file.

Example
-------
>>> hashed = normalize({"k3y-0123456789": "acme"})
>>> list(hashed.values()), tenant_of_key(hashed, "k3y-0123456789"), tenant_of_key(hashed, "other")
(['acme'], 'acme', None)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def normalize(keys: dict[str, str]) -> dict[str, str]:
    """Key → tenant with every key in its hashed form (hashed entries kept, clear ones hashed)."""
    return {(k if k.startswith(PREFIX) else hash_key(k)): t for k, t in keys.items()}


def tenant_of_key(hashed: dict[str, str], key: str) -> str | None:
    """The tenant of a presented key, or None."""
    return hashed.get(hash_key(key)) if key else None


def _path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "api-keys.json"


def load(data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The hashed keys of ``data_dir`` (clear ones from older versions are hashed and the file rewritten)."""
    path = _path(data_dir)
    if not path.is_file():
        return {}
    keys = dict(json.loads(path.read_text()))
    hashed = normalize(keys)
    if hashed != keys:
        _save(data_dir, hashed)
    return hashed


def _save(data_dir: str | os.PathLike[str], keys: dict[str, str]) -> None:
    from cubepacs._atomic import atomic_write

    path = _path(data_dir)
    atomic_write(path, [json.dumps(keys, indent=1).encode()])
    os.chmod(path, 0o600)


def create(data_dir: str | os.PathLike[str], tenant: str) -> str:
    """A new key for ``tenant``; only its hash is kept. Returns the key (show it once)."""
    from cubepacs.archive.keys import check_tenant

    check_tenant(tenant)
    key = secrets.token_urlsafe(32)
    keys = load(data_dir)
    keys[hash_key(key)] = tenant
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    _save(data_dir, keys)
    return key


def revoke(data_dir: str | os.PathLike[str], key_id: str) -> int:
    """Remove the keys whose id (the first characters of the hash) starts with ``key_id``; how many."""
    keys = load(data_dir)
    gone = [k for k in keys if k[len(PREFIX):].startswith(key_id)] if len(key_id) >= 6 else []
    for k in gone:
        del keys[k]
    if gone:
        _save(data_dir, keys)
    return len(gone)


def key_id(hashed: str) -> str:
    """The short id shown for a key (12 hex characters of its hash)."""
    return hashed[len(PREFIX):][:12]
