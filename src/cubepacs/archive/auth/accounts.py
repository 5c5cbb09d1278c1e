"""Server-side state of accounts, shared by every process of an archive: browser sessions, failed sign-ins and
the audit log, in one SQLite database (``data_dir/accounts.db``, mode 0600, WAL: several web processes read and
write it at once).

* A session is a random token (the cookie) of which only the SHA-256 is stored, with its tenant, role, who it is
  (``user:NAME`` or ``key:ID``), a fingerprint of the credential it was made from, its CSRF token and expiry.
  Ending it — sign-out, user removal, password or role change, an admin's "end all sessions" — deletes the row,
  so a copy of the cookie answers 401 from then on, in every process.
* Failed sign-ins are counted per user name and per client address over a window (:data:`WINDOW` seconds); over
  :data:`PER_USER` or :data:`PER_ADDRESS` failures the sign-in is refused (429) until the window has passed.
* The audit log: who (``user:…``/``key:…``/``oidc:…``), role, tenant, action (``view``, ``download``,
  ``upload``, ``send``, ``export``, ``delete``, account changes), study, status, address. The same
  (who, action, study) within :data:`AUDIT_REPEAT` seconds is kept once per process (a viewer asks for hundreds
  of frames of one study).

Example
-------
>>> import tempfile
>>> db = Accounts(tempfile.mkdtemp() + "/accounts.db")
>>> token, csrf = db.issue("alpha", "viewer", "user:ann", "fp", hours=1)
>>> s = db.get(token); (s.tenant, s.role, s.principal, s.csrf == csrf)
('alpha', 'viewer', 'user:ann', True)
>>> db.end(token), db.get(token)
(1, None)
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW = 900.0  # seconds over which failed sign-ins count
PER_USER = 5  # failed sign-ins of one user name in the window before its sign-ins are refused
PER_ADDRESS = 20  # … of one client address
AUDIT_REPEAT = 60.0  # seconds within which the same (who, action, study) is recorded once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL,
  principal TEXT NOT NULL, fingerprint TEXT NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL,
  expires REAL NOT NULL, address TEXT);
CREATE INDEX IF NOT EXISTS sessions_principal ON sessions (tenant, principal);
CREATE TABLE IF NOT EXISTS signin_failures (subject TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS signin_failures_subject ON signin_failures (subject, at);
CREATE TABLE IF NOT EXISTS audit (at REAL NOT NULL, tenant TEXT NOT NULL, principal TEXT NOT NULL, role TEXT,
  action TEXT NOT NULL, study_uid TEXT, detail TEXT, status INTEGER, address TEXT);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant, at);
"""


@dataclass(frozen=True)
class Session:
    """A live session."""

    id: str  # the stored id (SHA-256 of the token), never the token itself
    tenant: str
    role: str
    principal: str
    fingerprint: str
    csrf: str
    created: float
    expires: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """The accounts database at ``path`` (created, mode 0600)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._local = threading.local()
        self._recent: dict[tuple[str, str, str, str], float] = {}
        self._recent_lock = threading.Lock()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # sessions
    def issue(self, tenant: str, role: str, principal: str, fingerprint: str, hours: float,
              address: str = "") -> tuple[str, str]:
        """A new session: (token for the cookie, CSRF token)."""
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), time.time()
        self._db().execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?)",
                           (_digest(token), tenant, role, principal, fingerprint, csrf, now, now + hours * 3600,
                            address))
        return token, csrf

    def get(self, token: str) -> Session | None:
        """The live session of a cookie's token (None: unknown, ended or expired)."""
        row = self._db().execute("SELECT id, tenant, role, principal, fingerprint, csrf, created, expires "
                                 "FROM sessions WHERE id = ?", (_digest(token),)).fetchone()
        if row is None or row[7] < time.time():
            return None
        return Session(*row)

    def end(self, token: str) -> int:
        """End the session of a token (sign-out); how many ended (0 or 1)."""
        return self._db().execute("DELETE FROM sessions WHERE id = ?", (_digest(token),)).rowcount

    def end_id(self, tenant: str, session_id: str) -> int:
        """End a tenant's session by its stored id (or a prefix of at least 12 characters)."""
        if len(session_id) < 12:
            return 0
        return self._db().execute("DELETE FROM sessions WHERE tenant = ? AND substr(id, 1, ?) = ?",
                                  (tenant, len(session_id), session_id)).rowcount

    def end_principal(self, tenant: str | None, principal: str) -> int:
        """End every session of ``principal`` (of ``tenant``; None: of any tenant)."""
        if tenant is None:
            return self._db().execute("DELETE FROM sessions WHERE principal = ?", (principal,)).rowcount
        return self._db().execute("DELETE FROM sessions WHERE tenant = ? AND principal = ?",
                                  (tenant, principal)).rowcount

    def end_tenant(self, tenant: str) -> int:
        """End every session of a tenant (an admin's "end all sessions")."""
        return self._db().execute("DELETE FROM sessions WHERE tenant = ?", (tenant,)).rowcount

    def sessions(self, tenant: str) -> list[Session]:
        """The live sessions of a tenant, newest first (expired ones are removed)."""
        db = self._db()
        db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
        rows = db.execute("SELECT id, tenant, role, principal, fingerprint, csrf, created, expires FROM sessions "
                          "WHERE tenant = ? ORDER BY created DESC", (tenant,)).fetchall()
        return [Session(*r) for r in rows]

    # failed sign-ins
    def blocked(self, user: str | None, address: str) -> float:
        """Seconds until a sign-in of ``user`` from ``address`` may be tried again (0: it may now)."""
        now = time.time()
        wait = 0.0
        for subject, limit in ((f"user:{user}", PER_USER) if user else ("", 0), (f"addr:{address}", PER_ADDRESS)):
            if not subject:
                continue
            rows = self._db().execute("SELECT at FROM signin_failures WHERE subject = ? AND at > ? ORDER BY at",
                                      (subject, now - WINDOW)).fetchall()
            if len(rows) >= limit:
                wait = max(wait, rows[len(rows) - limit][0] + WINDOW - now)
        return wait

    def failed(self, user: str | None, address: str) -> None:
        """Count a failed sign-in against the user name and the address."""
        now = time.time()
        db = self._db()
        db.execute("DELETE FROM signin_failures WHERE at < ?", (now - WINDOW,))
        subjects = [f"addr:{address}"] + ([f"user:{user}"] if user else [])
        db.executemany("INSERT INTO signin_failures VALUES (?, ?)", [(s, now) for s in subjects])

    def succeeded(self, user: str) -> None:
        """A user signed in: its failures no longer count (the address's still do)."""
        self._db().execute("DELETE FROM signin_failures WHERE subject = ?", (f"user:{user}",))

    # audit log
    def audit(self, tenant: str, principal: str, role: str, action: str, study: str = "", detail: str = "",
              status: int = 200, address: str = "") -> bool:
        """Record an action (False when the same was recorded by this process within :data:`AUDIT_REPEAT`)."""
        now = time.time()
        key = (tenant, principal, action, study)
        if action in ("view", "download", "search"):
            with self._recent_lock:
                if now - self._recent.get(key, 0.0) < AUDIT_REPEAT:
                    return False
                if len(self._recent) > 10_000:
                    self._recent.clear()
                self._recent[key] = now
        self._db().execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)",
                           (now, tenant, principal, role, action, study or None, detail or None, status,
                            address or None))
        return True

    def audit_rows(self, tenant: str, study: str = "", principal: str = "", action: str = "", limit: int = 100,
                   offset: int = 0) -> list[dict[str, Any]]:
        """A tenant's audit rows, newest first, filtered by study, who and action when given."""
        where, args = ["tenant = ?"], [tenant]
        for column, value in (("study_uid", study), ("principal", principal), ("action", action)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._db().execute(
            "SELECT at, principal, role, action, study_uid, detail, status, address FROM audit "
            f"WHERE {' AND '.join(where)} ORDER BY at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*args, limit, offset)).fetchall()
        names = ("time", "who", "role", "action", "study", "detail", "status", "address")
        return [dict(zip(names, r, strict=True)) for r in rows]
