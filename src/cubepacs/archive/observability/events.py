"""The recent failures an operator looks for — instances refused, associations rejected or aborted, instances
the builder could not put in a cube — kept where every process of the archive can read them, next to the
Prometheus counters that count them.

Each process that receives or builds (the DIMSE SCP, its worker processes, the web, the builder) calls
:func:`configure` with the accounts database (``data_dir/accounts.db``, :mod:`cubepacs.archive.auth.accounts`);
:func:`record` then adds a row to its ``events`` table (at most :data:`KEEP` rows are kept, the oldest dropped)
and never fails the request it describes: a database that cannot be written is one warning. :func:`recent`
reads them back for the operations page (``web/opsui.py``). The counts themselves come from ``/metrics``
(``cubepacs_instances_refused_total``, ``cubepacs_associations_refused_total``,
``cubepacs_instances_not_compacted_total``), so that the page and a Prometheus scrape agree.

Example
-------
>>> import tempfile
>>> db = tempfile.mkdtemp() + "/accounts.db"
>>> configure(db)
>>> record("refused-instance", "alpha", "STOW-RS key:1a2b", "part 1: no SOP Instance UID")
>>> [(e["kind"], e["tenant"], e["detail"]) for e in recent(db, "refused-instance")]
[('refused-instance', 'alpha', 'part 1: no SOP Instance UID')]
>>> configure(None)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Any

log = logging.getLogger("cubepacs.events")

KEEP = 1000  # rows kept (each kind shares them)
KINDS = ("refused-instance", "failed-association", "not-compacted")
_SCHEMA = """CREATE TABLE IF NOT EXISTS events (at REAL NOT NULL, kind TEXT NOT NULL, tenant TEXT,
  source TEXT, detail TEXT, address TEXT);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, at)"""
_state: dict[str, Any] = {"path": None}
_local = threading.local()


def configure(path: str | os.PathLike[str] | None) -> None:
    """Record this process' events in the accounts database at ``path`` (None: record nothing)."""
    _state["path"] = None if path is None else str(path)
    _local.db = None


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=5, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _db() -> sqlite3.Connection | None:
    path = _state["path"]
    if path is None:
        return None
    db: sqlite3.Connection | None = getattr(_local, "db", None)
    if db is None or getattr(_local, "path", None) != path:
        db = _connect(path)
        _local.db, _local.path = db, path
    return db


def record(kind: str, tenant: str | None, source: str, detail: str, address: str = "") -> None:
    """Keep one event (``kind``: one of :data:`KINDS`); a failure to write it is logged, never raised."""
    try:
        db = _db()
        if db is None:
            return
        now = time.time()
        db.execute("INSERT INTO events VALUES (?,?,?,?,?,?)",
                   (now, kind, tenant or None, source[:200], detail[:500], address[:100] or None))
        if int(now * 1000) % 50 == 0:  # now and then: only the newest KEEP rows stay
            db.execute("DELETE FROM events WHERE rowid <= (SELECT max(rowid) FROM events) - ?", (KEEP,))
    except (sqlite3.Error, OSError) as exc:
        log.warning("events: %s: %s", type(exc).__name__, exc)


def refused(tenant: str, source: str, reason: str) -> None:
    """An instance was refused: counted (``cubepacs_instances_refused_total``, by tenant and protocol) and kept.
    ``source``: ``C-STORE``, or the STOW-RS part (``part 3``) it was."""
    from cubepacs.archive.observability import metrics

    protocol = "C-STORE" if source == "C-STORE" else "STOW-RS"
    metrics.REFUSED.labels(tenant=tenant, protocol=protocol).inc()
    record("refused-instance", tenant, protocol, reason)


def not_compacted(tenant: str, series: str, sop: str, reason: str) -> None:
    """The builder left an instance out of its series' cube (it is served from its file): kept (its count is
    ``cubepacs_instances_not_compacted_total``)."""
    record("not-compacted", tenant, f"series {series}", f"instance {sop}: {reason}")


def association_failed(reason: str, calling: str, address: str, tenant: str | None = None) -> None:
    """An association was rejected (``reason`` says why) or aborted: kept (its count is
    ``cubepacs_associations_refused_total``, by reason)."""
    record("failed-association", tenant, f"AE {calling}", reason, address)


def recent(path: str | os.PathLike[str], kind: str, tenant: str | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    """The newest events of ``kind`` (of ``tenant`` and those of no tenant, when given), newest first."""
    if not os.path.exists(path):
        return []
    db = _connect(str(path))
    try:
        where, args = "kind = ?", [kind]
        if tenant is not None:
            where += " AND (tenant = ? OR tenant IS NULL)"
            args.append(tenant)
        rows = db.execute(f"SELECT at, kind, tenant, source, detail, address FROM events WHERE {where} "
                          "ORDER BY at DESC, rowid DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        db.close()
    names = ("time", "kind", "tenant", "source", "detail", "address")
    return [dict(zip(names, r, strict=True)) for r in rows]
