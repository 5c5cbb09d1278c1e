"""Browser users and sessions: a user's password (or an API key) exchanged for a server-side session.

The cookie (``cubepacs_session``) is HttpOnly, SameSite=Strict, Secure when the site is served over HTTPS, and
holds a random token; the session itself — tenant, role, CSRF token, expiry — lives in the accounts database
(:mod:`cubepacs.archive.auth.accounts`) shared by every process, so that ending it takes effect at once everywhere.
Requests authenticated by the cookie that change state must also carry the CSRF token in ``X-CSRF-Token``; the
viewer's configuration, served only to a signed-in browser, adds it to its requests.

Users are kept in ``data_dir/users.json`` (``{name: {password: Argon2id hash, tenant, role}}``, mode 0600), read
again by every process as the file changes (:class:`LiveUsers`): an added user can sign in at once, a removed
one cannot. A session remembers a fingerprint of the user's entry; when the password, role or tenant changes or
the user is removed, the fingerprint no longer matches and the session is over.

Example
-------
>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> save_user(d, "ann", "correct horse", "alpha", "viewer")
>>> users = LiveUsers(d + "/users.json")
>>> users.get("ann")["role"], check_password(users.get("ann")["password"], "correct horse")
('viewer', True)
>>> remove_user(d, "ann"), users.get("ann")
(True, None)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COOKIE = "cubepacs_session"
CSRF_HEADER = "x-csrf-token"


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (argon2-cffi's defaults)."""
    from argon2 import PasswordHasher

    return str(PasswordHasher().hash(password))


def check_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches an Argon2 hash (False for anything malformed)."""
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return bool(PasswordHasher().verify(stored_hash, password))
    except (Argon2Error, InvalidHashError):
        return False


def fingerprint(user: dict[str, str]) -> str:
    """What a session remembers of a user's entry: it changes with the password, the role or the tenant."""
    text = "\0".join((user.get("password", ""), user.get("tenant", ""), user_role(user)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def user_role(user: dict[str, str]) -> str:
    """A user's role (an entry written before roles existed is ``admin``: it could do everything)."""
    from cubepacs.archive.auth.roles import LEGACY_ROLE

    return user.get("role") or LEGACY_ROLE


def load_users(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The users kept in ``data_dir/users.json`` (none: ``{}``)."""
    path = Path(data_dir) / "users.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


class LiveUsers:
    """The users of ``path`` (re-read when the file changes) and those of the settings (``configured``)."""

    def __init__(self, path: str | os.PathLike[str], configured: dict[str, dict[str, str]] | None = None) -> None:
        self.path = Path(path)
        self.configured = dict(configured or {})
        self._stamp: tuple[float, int, int] | None = None
        self._users: dict[str, dict[str, str]] = dict(self.configured)

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp: tuple[float, int, int] | None = (st.st_mtime, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._users = {**(load_users(self.path.parent) if stamp else {}), **self.configured}

    def get(self, name: str) -> dict[str, str] | None:
        """A user's entry, as the file holds it now."""
        self._refresh()
        return self._users.get(name)

    def items(self) -> list[tuple[str, dict[str, str]]]:
        """Every user (name, entry)."""
        self._refresh()
        return sorted(self._users.items())


@contextlib.contextmanager
def _locked(data_dir: str | os.PathLike[str]) -> Iterator[dict[str, dict[str, str]]]:
    """The users of ``data_dir``, written back when the block ends (one writer at a time, over processes)."""
    from cubepacs._atomic import atomic_write

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / ".users.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        users = load_users(data_dir)
        before = json.dumps(users, sort_keys=True)
        yield users
        if json.dumps(users, sort_keys=True) != before:
            path = Path(data_dir) / "users.json"
            atomic_write(path, [json.dumps(users, indent=1).encode()])
            os.chmod(path, 0o600)


def _end_sessions(data_dir: str | os.PathLike[str], name: str) -> None:
    from cubepacs.archive.auth.accounts import Accounts

    Accounts(Path(data_dir) / "accounts.db").end_principal(None, f"user:{name}")


def save_user(data_dir: str | os.PathLike[str], name: str, password: str, tenant: str, role: str) -> None:
    """Add a user or change one (its password, tenant, role); a changed user's sessions end."""
    from cubepacs.archive.auth.roles import check_role
    from cubepacs.archive.keys import check_tenant
    from cubepacs.errors import ConfigError

    check_tenant(tenant)
    check_role(role)
    if not name or len(name) > 128 or any(c in name for c in "\0\r\n/"):
        raise ConfigError(f"invalid user name {name[:40]!r}: 1 to 128 characters, no '/' or line breaks")
    if len(password) < 8:
        raise ConfigError("the password must have at least 8 characters")
    with _locked(data_dir) as users:
        existed = name in users
        users[name] = {"password": hash_password(password), "tenant": tenant, "role": role}
    if existed:
        _end_sessions(data_dir, name)


def remove_user(data_dir: str | os.PathLike[str], name: str) -> bool:
    """Remove a user and end its sessions; False when there was none."""
    with _locked(data_dir) as users:
        gone = users.pop(name, None) is not None
    if gone:
        _end_sessions(data_dir, name)
    return gone


def describe(users: Any, tenant: str | None = None) -> list[dict[str, str]]:
    """Name, tenant and role of each user (of ``tenant`` when given) — never a password hash."""
    return [{"name": n, "tenant": u.get("tenant", ""), "role": user_role(u)} for n, u in users.items()
            if tenant is None or u.get("tenant") == tenant]
