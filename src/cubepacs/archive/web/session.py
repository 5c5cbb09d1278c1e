"""Browser sessions: an API key or a user's password exchanged for a signed, expiring session cookie.

The cookie (``cubepacs_session``) is HttpOnly, SameSite=Strict, Secure when the site is served over HTTPS, and
holds a JWT (HS256, PyJWT) with the tenant, an expiry and a CSRF token. Requests authenticated by the cookie that
change state (STOW, DELETE, send) must also carry that token in ``X-CSRF-Token``; the viewer's configuration,
served only to a signed-in browser, adds it to its requests. Passwords are stored as Argon2id hashes
(argon2-cffi), never in clear.

Example
-------
>>> keys = SessionKeys("s3cret-for-the-doctest-0123456789")
>>> token, csrf = keys.issue("tenant-a", hours=1)
>>> keys.verify(token) == ("tenant-a", csrf)
True
>>> keys.verify(token + "x") is None
True
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

COOKIE = "cubepacs_session"
CSRF_HEADER = "x-csrf-token"


class SessionKeys:
    """Signs and checks session tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the session secret must be at least 32 characters")
        self.secret = secret

    def issue(self, tenant: str, hours: float) -> tuple[str, str]:
        """A session token for ``tenant`` valid ``hours``, and its CSRF token."""
        import jwt

        csrf = secrets.token_urlsafe(24)
        now = int(time.time())
        claims = {"sub": tenant, "csrf": csrf, "iat": now, "exp": now + int(hours * 3600), "aud": "cubepacs-web"}
        return jwt.encode(claims, self.secret, algorithm="HS256"), csrf

    def verify(self, token: str) -> tuple[str, str] | None:
        """(tenant, CSRF token) of a valid, unexpired session token; None otherwise."""
        import jwt

        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], audience="cubepacs-web",
                                options={"require": ["exp", "sub", "csrf"]})
        except jwt.PyJWTError:
            return None
        return str(claims["sub"]), str(claims["csrf"])


def load_secret(configured: str, data_dir: str) -> str:
    """The configured session secret, or one kept in ``data_dir/session-secret`` (created once, mode 0600), so
    that web processes sharing the folder accept each other's sessions."""
    if configured:
        return configured
    path = Path(data_dir) / "session-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        except FileExistsError:
            pass  # another process made it first
    return path.read_text().strip()


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


def load_users(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The users kept in ``data_dir/users.json`` (``{name: {password: argon2 hash, tenant}}``; none: ``{}``)."""
    import json

    path = Path(data_dir) / "users.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}
