"""Send jobs: a study, series or instance sent to a configured peer in the background, its progress and each
instance's result kept in a SQLite file beside the accounts database (``data_dir/jobs.db``), so that every web
process of the archive lists them (the admin UI's ``/ui/jobs``, ``/api/jobs``).

A job runs in a thread of the process that started it (``manage.send``: C-STORE, one association; or STOW-RS,
``stowsend.py``), at most :data:`RUNNING` at once (the others wait, ``queued``); its rows say ``running`` until it
ends ``done`` (every instance sent or refused by the peer: the per-instance statuses say which)
or ``failed`` (the association could not be made or broke: the error says why). A job whose process ended while
it ran is ``interrupted`` the next time jobs are listed.

Example
-------
>>> import tempfile, os
>>> jobs = Jobs(os.path.join(tempfile.mkdtemp(), "jobs.db"))
>>> job = jobs.create("t", "user:ada", "DEST", "study", "1.2", 2)
>>> jobs.result(job, "1.2.3", 0, "1.2.840.10008.1.2.1", "", True); jobs.finish(job, "")
>>> j = jobs.get("t", job); j["state"], j["sent"], j["failed"], [r["sop_uid"] for r in j["results"]]
('done', 1, 0, ['1.2.3'])
>>> jobs.get("other tenant", job) is None
True
>>> memory = Jobs(":memory:"); job = memory.create("t", "key:1", "DEST", "study", "1.2", 0)
>>> memory.run(job, lambda: []).join(); memory.get("t", job)["state"]  # the job's thread sees the same database
'done'

A job cancelled while it runs stops after the instance it is sending, and its sender is closed:

>>> import threading
>>> from cubepacs.archive.dimse.scu import SendResult
>>> going, closed = threading.Event(), []
>>> def slow():
...     try:
...         for n in range(100):
...             going.set(); yield SendResult(f"1.2.{n}", 0, "as stored"); threading.Event().wait(0.05)
...     finally:
...         closed.append(True)
>>> job = jobs.create("t", "user:ada", "DEST", "study", "1.2", 100); thread = jobs.run(job, slow)
>>> going.wait(5) and jobs.cancel("t", job); thread.join(); j = jobs.get("t", job)
True
>>> j["state"], 0 < j["sent"] < 100, closed, jobs.cancel("t", job)
('cancelled', True, [True], False)

"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, principal TEXT NOT NULL,
  kind TEXT NOT NULL, target TEXT NOT NULL, level TEXT NOT NULL, uid TEXT NOT NULL, total INTEGER NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, error TEXT,
  created REAL NOT NULL, finished REAL, host TEXT, pid INTEGER);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, created);
CREATE TABLE IF NOT EXISTS job_results (job TEXT NOT NULL, n INTEGER NOT NULL, sop_uid TEXT NOT NULL,
  status INTEGER, sent_as TEXT, comment TEXT, PRIMARY KEY (job, n));
"""
KEEP = 500  # jobs kept per tenant (older finished ones are dropped when a new one starts)
RUNNING = 4  # jobs one process runs at once; the others are ``queued`` until one ends
WAITING = 64  # jobs one process holds, running or queued (each waits in a thread): :meth:`Jobs.full` beyond


F = TypeVar("F", bound=Callable[..., Any])


def _serialized(method: F) -> F:
    """One statement or transaction of this process at a time: a shared in-memory database answers a concurrent
    write with "database table is locked" at once (no busy timeout in shared-cache mode)."""

    @functools.wraps(method)
    def locked(self: Jobs, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Jobs:
    """The jobs database at ``path`` (created, mode 0600)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._uri = False
        if self.path == ":memory:":  # one database shared by this object's threads (an archive without a data dir)
            self.path, self._uri = f"file:cubepacs-jobs-{secrets.token_hex(8)}?mode=memory&cache=shared", True
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if not os.path.exists(self.path):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._local = threading.local()
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(RUNNING)
        self._held = 0  # jobs of this object running or queued
        self._keep = self._db()  # (a shared in-memory database lives while a connection to it is open)
        self._keep.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False, uri=self._uri)
            if not self._uri:
                db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    @_serialized
    def create(self, tenant: str, principal: str, target: str, level: str, uid: str, total: int) -> str:
        """A new send job (``queued`` until :meth:`run` starts it); its id."""
        job = secrets.token_hex(8)
        db = self._db()
        db.execute("INSERT INTO jobs (id, tenant, principal, kind, target, level, uid, total, state, created, host, "
                   "pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (job, tenant, principal, "send", target, level, uid,
                                                              total, "queued", time.time(), socket.gethostname(),
                                                              os.getpid()))
        old = [r[0] for r in db.execute("SELECT id FROM jobs WHERE tenant = ? AND state NOT IN ('queued', 'running') "
                                        "ORDER BY created DESC LIMIT -1 OFFSET ?", (tenant, KEEP))]
        for gone in old:
            db.execute("DELETE FROM job_results WHERE job = ?", (gone,))
            db.execute("DELETE FROM jobs WHERE id = ?", (gone,))
        return job

    @_serialized
    def result(self, job: str, sop_uid: str, status: int | None, sent_as: str, comment: str, ok: bool) -> None:
        """One instance's result (``status``: the peer's; None: not sent; ``ok``: stored, maybe with a warning)."""
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")  # (a deferred one upgraded to write fails at once when another wrote)
            n = db.execute("SELECT sent + failed FROM jobs WHERE id = ?", (job,)).fetchone()[0]
            db.execute("INSERT INTO job_results VALUES (?,?,?,?,?,?)", (job, n, sop_uid, status, sent_as, comment))
            db.execute(f"UPDATE jobs SET {'sent = sent' if ok else 'failed = failed'} + 1 WHERE id = ?", (job,))

    @_serialized
    def finish(self, job: str, error: str, cancelled: bool = False) -> None:
        """End a job: ``done``, ``failed`` with ``error``, or ``cancelled``."""
        state = "cancelled" if cancelled else "failed" if error else "done"
        self._db().execute("UPDATE jobs SET state = ?, error = ?, finished = ? WHERE id = ?",
                           (state, error or None, time.time(), job))

    @_serialized
    def cancel(self, tenant: str, job: str) -> bool:
        """Ask a queued or running job of the tenant to stop (it ends ``cancelled`` after the instance it is
        sending); False when there is no such job still going."""
        return bool(self._db().execute("UPDATE jobs SET state = 'cancelling' WHERE tenant = ? AND id = ? AND state "
                                       "IN ('queued', 'running')", (tenant, job)).rowcount)

    @_serialized
    def _running(self, job: str) -> None:
        self._db().execute("UPDATE jobs SET state = 'running' WHERE id = ? AND state = 'queued'", (job,))

    @_serialized
    def _cancelling(self, job: str) -> bool:
        row = self._db().execute("SELECT state FROM jobs WHERE id = ?", (job,)).fetchone()
        return row is not None and row[0] == "cancelling"

    @_serialized
    def _reap(self, tenant: str) -> None:
        """Running jobs of this host whose process is gone: ``interrupted``."""
        db = self._db()
        for job, pid in db.execute("SELECT id, pid FROM jobs WHERE tenant = ? AND state IN ('queued', 'running', "
                                   "'cancelling') "
                                   "AND host = ?", (tenant, socket.gethostname())).fetchall():
            if pid != os.getpid() and not _alive(int(pid)):
                db.execute("UPDATE jobs SET state = 'interrupted', finished = ? WHERE id = ?", (time.time(), job))

    @_serialized
    def list(self, tenant: str, limit: int = 200) -> list[dict[str, Any]]:
        """The tenant's jobs, newest first (without their per-instance results)."""
        self._reap(tenant)
        cur = self._db().execute("SELECT * FROM jobs WHERE tenant = ? ORDER BY created DESC LIMIT ?", (tenant, limit))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    @_serialized
    def get(self, tenant: str, job: str) -> dict[str, Any] | None:
        """One job of the tenant with its per-instance ``results`` (None: no such job in this tenant)."""
        self._reap(tenant)
        db = self._db()
        cur = db.execute("SELECT * FROM jobs WHERE tenant = ? AND id = ?", (tenant, job))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip(names, row, strict=True))
        rc = db.execute("SELECT sop_uid, status, sent_as, comment FROM job_results WHERE job = ? ORDER BY n", (job,))
        out["results"] = [dict(zip(("sop_uid", "status", "sent_as", "comment"), r, strict=True)) for r in rc]
        return out

    def full(self) -> bool:
        """Whether :data:`WAITING` jobs are running or queued here already (a caller refuses a new one: each
        waits in a thread of its own, and requests without end would exhaust them)."""
        with self._lock:
            return self._held >= WAITING

    def run(self, job: str, results: Callable[[], Iterable[Any]]) -> threading.Thread:
        """Run a send in a thread: every ``SendResult`` of ``results()`` recorded as it comes, then the end."""

        def work() -> None:
            try:
                send()
            finally:
                with self._lock:
                    self._held -= 1

        def send() -> None:
            error, cancelled = "", False
            with self._slots:
                self._running(job)
                sending = iter(results())
                try:
                    while not (cancelled := self._cancelling(job)):
                        r = next(sending, None)
                        if r is None:
                            break
                        self.result(job, r.sop_uid, r.status, r.sent_as, r.comment or "", r.ok)
                except Exception as exc:  # the association failed: the job says why
                    error = f"{type(exc).__name__}: {str(exc)[:300]}"
                finally:
                    close = getattr(sending, "close", None)
                    if close is not None:  # a generator ends there: its association is released
                        close()
                self.finish(job, error, cancelled)

        thread = threading.Thread(target=work, name=f"send-job-{job}", daemon=True)
        with self._lock:
            self._held += 1
        thread.start()
        return thread
