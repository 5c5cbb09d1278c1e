"""A durable queue in one SQLite file: nothing else to install.

Connection string
-----------------
``embedded:///srv/cubepacs/queue.db`` (or ``embedded://./queue.db``).

Options
-------
None. Each group keeps its own acknowledged position per topic; unacknowledged messages are delivered again after
a restart. SQLite runs in WAL mode with ``synchronous=FULL``: ``publish`` returns after the commit is on disk;
messages published by several threads at once share one commit (group commit), made on one connection kept for
publishing (a thread-local one cost every storing association a new connection and its PRAGMAs).
Several processes may share the file (SQLite locking); one consumer per group is the embedded use.

Example
-------
>>> import tempfile, os
>>> q = EmbeddedQueue(os.path.join(tempfile.mkdtemp(), "q.db"))
>>> q.publish("storage_queue", {"n": 1})
>>> msgs = q.poll("storage_queue", "indexer", timeout=0)
>>> [m.payload for m in msgs]; q.ack("indexer", msgs); q.poll("storage_queue", "indexer", timeout=0)
[{'n': 1}]
[]
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cubepacs._group import GroupCommit
from cubepacs.archive.queue.base import Message, Queue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                     payload TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_topic ON messages (topic, id);
CREATE TABLE IF NOT EXISTS offsets (grp TEXT NOT NULL, topic TEXT NOT NULL, acked INTEGER NOT NULL,
                                    PRIMARY KEY (grp, topic));
"""


class EmbeddedQueue(Queue):
    """Messages in a SQLite table, positions per consumer group."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._cond = threading.Condition()
        self._group: GroupCommit[tuple[str, str, float]] = GroupCommit(self._insert)
        self._publisher: sqlite3.Connection | None = None  # used by one flush at a time (the group commit's)
        self._conn().executescript(_SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> EmbeddedQueue:
        parts = urlsplit(url)
        return cls(parts.netloc + parts.path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self._group.run((topic, json.dumps(payload, separators=(",", ":")), time.time()))
        with self._cond:
            self._cond.notify_all()

    def _insert(self, rows: list[tuple[str, str, float]]) -> None:
        """One transaction, one fsync of the WAL, for every message published meanwhile (group commit)."""
        if self._publisher is None:
            self._publisher = self._connect()
        conn = self._publisher
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO messages (topic, payload, created) VALUES (?, ?, ?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def poll(self, topic: str, group: str, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            conn = self._conn()
            row = conn.execute("SELECT acked FROM offsets WHERE grp = ? AND topic = ?", (group, topic)).fetchone()
            acked = row[0] if row else 0
            rows = conn.execute("SELECT id, payload FROM messages WHERE topic = ? AND id > ? ORDER BY id LIMIT ?",
                                (topic, acked, max_messages)).fetchall()
            if rows or time.monotonic() >= deadline:
                return [Message(i, topic, json.loads(p)) for i, p in rows]
            with self._cond:  # woken by a publish in this process; other processes are seen by polling
                self._cond.wait(min(0.05, max(deadline - time.monotonic(), 0)))

    def ack(self, group: str, messages: list[Message]) -> None:
        if not messages:
            return
        topic = messages[0].topic
        last = max(m.id for m in messages)
        conn = self._conn()
        # An acknowledgement need not survive a power cut: lost, it only makes the (idempotent) consumer see the
        # events again. So it is committed without the fsync that publishing keeps (synchronous=NORMAL in WAL).
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute(
                "INSERT INTO offsets (grp, topic, acked) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, topic) DO UPDATE SET acked = max(acked, excluded.acked)", (group, topic, last))
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def ping(self) -> None:
        self._conn().execute("SELECT 1").fetchone()

    def lag(self, topic: str, group: str) -> tuple[int, float] | None:
        conn = self._conn()
        row = conn.execute("SELECT acked FROM offsets WHERE grp = ? AND topic = ?", (group, topic)).fetchone()
        acked = row[0] if row else 0
        count, oldest = conn.execute("SELECT count(*), min(created) FROM messages WHERE topic = ? AND id > ?",
                                     (topic, acked)).fetchone()
        return int(count), (time.time() - oldest) if oldest else 0.0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
