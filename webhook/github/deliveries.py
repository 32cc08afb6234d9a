"""GitHub deliveries, durably: recorded in the service's database before they are answered, worked on after.

A delivery is keyed by its ``X-GitHub-Delivery`` id, so one that arrives twice (a replay, a
redelivery, a retry after a lost answer) is recorded once, across restarts. The row keeps the
payload until the work is done, so a crash between the answer and the work loses nothing: the
next start picks up what is still ``pending``.

Several processes on one database share the log: a process takes pending deliveries for a while
(:meth:`Deliveries.claim`, a lease in the row), so two do not work one delivery at once, and the work
of a process that died is taken over by another once its lease has run out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from webhook import state

log = logging.getLogger(__name__)

PENDING = "pending"
DONE = "done"
FAILED = "failed"
#: Seconds a process holds the deliveries it took before another may take them over.
CLAIM_LEASE = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    action TEXT NOT NULL,
    payload BLOB,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    received REAL NOT NULL,
    updated REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (status, received);
"""


@dataclass(frozen=True)
class Delivery:
    id: str
    event: str
    action: str
    payload: bytes
    status: str
    attempts: int
    outcome: str


class Deliveries:
    """The delivery log; safe to share between the event loop's threads, and between processes on one database."""

    def __init__(self, *, path: state.Location) -> None:
        self.path = path
        self._db = state.connect(path, _SCHEMA)
        if "claimed_until" not in self._db.columns("deliveries"):  # a log from before claims
            self._db.execute("ALTER TABLE deliveries ADD COLUMN claimed_until REAL NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def record(self, *, delivery_id: str, event: str, action: str, payload: bytes) -> bool:
        """Store a delivery (committed to disk on return); False when its id was seen before."""
        now = time.time()
        return self._db.execute(
            "INSERT INTO deliveries (id, event, action, payload, status, received, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (delivery_id, event, action, payload, PENDING, now, now)).rowcount == 1

    def pending(self, *, limit: int = 20) -> list[Delivery]:
        rows = self._db.execute(
            "SELECT id, event, action, payload, status, attempts, outcome FROM deliveries"
            " WHERE status = ? ORDER BY received LIMIT ?", (PENDING, limit)).rows
        return [Delivery(r[0], r[1], r[2], bytes(r[3] or b""), r[4], r[5], r[6]) for r in rows]

    def claim(self, *, limit: int = 20, lease: float = CLAIM_LEASE) -> list[Delivery]:
        """Pending deliveries no other process is working on, oldest first, taken for ``lease`` seconds (or
        until finished or put back with :meth:`retry_later`)."""
        now = time.time()
        with self._db.transaction("deliveries:claim") as db:
            rows = db.execute(
                "SELECT id, event, action, payload, status, attempts, outcome FROM deliveries"
                " WHERE status = ? AND claimed_until <= ? ORDER BY received LIMIT ?", (PENDING, now, limit)).rows
            db.executemany("UPDATE deliveries SET claimed_until = ? WHERE id = ?", [(now + lease, r[0]) for r in rows])
        return [Delivery(r[0], r[1], r[2], bytes(r[3] or b""), r[4], r[5], r[6]) for r in rows]

    def get(self, delivery_id: str) -> Delivery | None:
        r = self._db.execute("SELECT id, event, action, payload, status, attempts, outcome FROM deliveries"
                             " WHERE id = ?", (delivery_id,)).one()
        return None if r is None else Delivery(r[0], r[1], r[2], bytes(r[3] or b""), r[4], r[5], r[6])

    def finish(self, delivery_id: str, *, status: str, outcome: str) -> None:
        """Mark a delivery done or failed; its payload is dropped (the id stays, for de-duplication)."""
        self._db.execute("UPDATE deliveries SET status = ?, outcome = ?, payload = NULL, updated = ?,"
                         " attempts = attempts + 1, claimed_until = 0 WHERE id = ?",
                         (status, outcome[:2000], time.time(), delivery_id))

    def retry_later(self, delivery_id: str, *, outcome: str) -> int:
        """Count a failed attempt, keeping the delivery pending; returns the attempts so far."""
        found = self._db.execute("UPDATE deliveries SET attempts = attempts + 1, outcome = ?, updated = ?,"
                                 " claimed_until = 0 WHERE id = ? RETURNING attempts",
                                 (outcome[:2000], time.time(), delivery_id)).scalar()
        return int(found or 0)

    def forget(self, *, older_than: float) -> int:
        """Drop finished deliveries received more than ``older_than`` seconds ago (GitHub keeps 3 days)."""
        return self._db.execute("DELETE FROM deliveries WHERE status != ? AND received < ?",
                                (PENDING, time.time() - older_than)).rowcount
