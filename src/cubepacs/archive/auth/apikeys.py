"""API keys for machines, kept hashed (SHA-256) in ``data_dir/api-keys.json`` — never in clear on disk.

A key is 32 random bytes (URL-safe base64), so a plain SHA-256 is enough to keep it (a KDF is for guessable
passwords: users have Argon2id, see ``web/session.py``). Keys written in clear in a settings file are hashed as
they are loaded. ``cubepacs keys create|list|revoke`` manage the file; every process reads it again as it
changes, so a new key works and a revoked one stops at once.

A key's value is its tenant and role, ``"tenant:role"`` (role ``admin``, ``user`` or ``viewer``); a bare
``"tenant"`` (a key from before roles, or one configured in the settings without a role) is ``admin``.

Example
-------
>>> hashed = normalize({"k3y-0123456789": "acme", "r3ad-0123456789": "acme:viewer"})
>>> sorted(hashed.values()), tenant_of_key(hashed, "k3y-0123456789"), tenant_of_key(hashed, "other")
(['acme', 'acme:viewer'], 'acme', None)
>>> entry_of_key(hashed, "r3ad-0123456789"), entry_of_key(hashed, "k3y-0123456789")
(('acme', 'viewer'), ('acme', 'admin'))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def normalize(keys: dict[str, str]) -> dict[str, str]:
    """Key → tenant with every key in its hashed form (hashed entries kept, clear ones hashed)."""
    return {(k if k.startswith(PREFIX) else hash_key(k)): t for k, t in keys.items()}


def split_value(value: str) -> tuple[str, str]:
    """(tenant, role) of a stored value ``tenant`` or ``tenant:role``."""
    from cubepacs.archive.auth.roles import LEGACY_ROLE

    tenant, _, role = value.partition(":")
    return tenant, role or LEGACY_ROLE


def entry_of_key(hashed: dict[str, str], key: str) -> tuple[str, str] | None:
    """(tenant, role) of a presented key, or None."""
    value = hashed.get(hash_key(key)) if key else None
    return split_value(value) if value is not None else None


def tenant_of_key(hashed: dict[str, str], key: str) -> str | None:
    """The tenant of a presented key, or None."""
    entry = entry_of_key(hashed, key)
    return entry[0] if entry is not None else None


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


@contextlib.contextmanager
def _locked(data_dir: str | os.PathLike[str]) -> Iterator[None]:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / ".api-keys.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time (the CLI and the web's admin API)
        yield


def create(data_dir: str | os.PathLike[str], tenant: str, role: str = "user") -> str:
    """A new key for ``tenant`` with ``role``; only its hash is kept. Returns the key (show it once)."""
    from cubepacs.archive.auth.roles import check_role
    from cubepacs.archive.keys import check_tenant

    check_tenant(tenant)
    check_role(role)
    key = secrets.token_urlsafe(32)
    with _locked(data_dir):
        keys = load(data_dir)
        keys[hash_key(key)] = f"{tenant}:{role}"
        _save(data_dir, keys)
    return key


def revoke(data_dir: str | os.PathLike[str], key_id: str, tenant: str | None = None) -> int:
    """Remove the keys whose id (the first characters of the hash) starts with ``key_id`` (only keys of
    ``tenant`` when given); how many. Browser sessions opened with them end too."""
    with _locked(data_dir):
        keys = load(data_dir)
        gone = [k for k, v in keys.items() if k[len(PREFIX):].startswith(key_id)
                and (tenant is None or split_value(v)[0] == tenant)] if len(key_id) >= 6 else []
        for k in gone:
            del keys[k]
        if gone:
            _save(data_dir, keys)
    if gone:
        from cubepacs.archive.auth.accounts import Accounts

        accounts = Accounts(Path(data_dir) / "accounts.db")
        for k in gone:
            accounts.end_principal(None, f"key:{key_id_of(k)}")
    return len(gone)


def key_id_of(hashed: str) -> str:
    """The short id shown for a key (12 hex characters of its hash)."""
    return hashed[len(PREFIX):][:12]
