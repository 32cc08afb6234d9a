"""State the service keeps across requests and restarts, in SQLite: rate-limit buckets, CSRF secret.

Idempotency keys and the mass-delete window live with the requests they belong to (the intake
queue), GitHub delivery ids with the deliveries; this file holds what belongs to no request. Each
``storeops serve`` process opens it; one database is what several replicas would share (the
design's PostgreSQL for that case speaks the same statements).

Buckets are written on every request, so the file runs with ``synchronous=NORMAL``: a crash of
the process loses nothing, a power loss at worst refills a bucket.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["SharedState", "connect"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (client TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_updated ON buckets (updated);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Idle buckets are swept this often (takes); a bucket idle past burst/rate is full, the same as none.
_SWEEP_EVERY = 500


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """The service's database at ``path`` (WAL, waits for other writers), with ``schema`` made if missing;
    autocommit, shared between threads behind the caller's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db


class SharedState:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._db = connect(path, _SCHEMA)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._takes = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def take(self, client: str, *, rate: float, burst: int) -> float:
        """Take one token from ``client``'s bucket; returns 0, or the seconds until one is there (refused)."""
        now = self.clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT tokens, updated FROM buckets WHERE client = ?", (client,)).fetchone()
                tokens = float(burst) if row is None else min(float(burst), row[0] + (now - row[1]) * rate)
                wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
                self._db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)",
                                 (client, tokens if wait else tokens - 1, now))
                self._takes += 1
                if self._takes % _SWEEP_EVERY == 0:
                    self._db.execute("DELETE FROM buckets WHERE updated < ?", (now - burst / rate,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return wait

    def expire(self, *, idle_for: float) -> int:
        """Forget buckets untouched for ``idle_for`` seconds; returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM buckets WHERE updated < ?", (self.clock() - idle_for,))
            return cursor.rowcount

    def buckets(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM buckets").fetchone()[0])

    def secret(self, name: str) -> str:
        """A random secret kept under ``name`` (made on first use), shared by every process on this database."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, secrets.token_urlsafe(32)))
            return str(self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])
