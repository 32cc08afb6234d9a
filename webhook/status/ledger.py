"""What the status reader has reported, kept in the service's database (SQLite, or PostgreSQL) so a restart
repeats nothing and loses nothing.

Tables:

* ``stores``: per store, the last reported state (and the change it was reported for), when it
  entered that state, and since when it has been on its way to ``ready`` (time-to-ready);
* ``events``: every reported transition, numbered; SSE clients resume from a number;
* ``outbox``: deliveries still owed (callback URL, GitHub), written in the same transaction as the
  event, removed once delivered - a crash between the two re-delivers, never drops;
* ``changes``: per store, the commit that last changed it (from publishes); ``ready`` waits for it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from generator import remotes
from webhook import state

__all__ = ["Delivery", "Event", "Ledger", "Row"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    store_id TEXT PRIMARY KEY, state TEXT NOT NULL, change TEXT NOT NULL, message TEXT NOT NULL,
    revision TEXT NOT NULL, url TEXT NOT NULL, since TEXT NOT NULL, pending_since TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, store_id TEXT NOT NULL, state TEXT NOT NULL,
    message TEXT NOT NULL, url TEXT NOT NULL, revision TEXT NOT NULL, change TEXT NOT NULL, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_store ON events (store_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, sink TEXT NOT NULL, target TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (dead, next_at);
CREATE TABLE IF NOT EXISTS changes (store_id TEXT PRIMARY KEY, sha TEXT NOT NULL, at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    """The last reported state of one store."""

    store_id: str
    state: str
    change: str
    message: str
    revision: str
    url: str
    since: datetime.datetime
    pending_since: datetime.datetime | None


@dataclass(frozen=True)
class Event:
    """One reported transition."""

    seq: int
    store_id: str
    state: str
    message: str
    url: str
    revision: str
    change: str
    at: datetime.datetime

    def as_dict(self) -> dict[str, object]:
        return {"id": self.seq, "store_id": self.store_id, "status": self.state, "message": self.message,
                "url": self.url, "revision": self.revision, "change": self.change, "at": _iso(self.at)}


@dataclass(frozen=True)
class Delivery:
    """A report still owed to one sink (``callback`` with a URL as target, or ``github``)."""

    id: int
    event: Event
    sink: str
    target: str
    attempts: int


class Ledger:
    """Thread-safe: the reader, the deliverer and HTTP handlers share one connection under a lock."""

    def __init__(self, path: state.Location) -> None:
        self.path = path
        # Not durable (SQLite's synchronous=NORMAL): a committed transaction survives the process crashing
        # (not the OS; the reader then re-derives state from the API server and re-reports at most that tail).
        self._db = state.connect(path, SCHEMA, durable=False)

    def close(self) -> None:
        self._db.close()

    # --- stores and events ---------------------------------------------------------------------

    def rows(self) -> dict[str, Row]:
        found = self._db.execute("SELECT store_id, state, change, message, revision, url, since, pending_since "
                                 "FROM stores").rows
        return {r[0]: _row(r) for r in found}

    def row(self, store_id: str) -> Row | None:
        found = self._db.execute("SELECT store_id, state, change, message, revision, url, since, pending_since "
                                 "FROM stores WHERE store_id = ?", (store_id,)).one()
        return _row(found) if found else None

    def record(self, row: Row, *, deliveries: Iterable[tuple[str, str]]) -> Event:
        """Store ``row`` as the store's state, append its event and queue its deliveries, atomically."""
        # One lock for every writer of events: their numbers become visible in order (SSE clients resume by them).
        with self._db.transaction("ledger:events") as db:
            db.execute("INSERT INTO stores VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store_id) DO UPDATE SET "
                       "state = excluded.state, change = excluded.change, message = excluded.message, "
                       "revision = excluded.revision, url = excluded.url, since = excluded.since, "
                       "pending_since = excluded.pending_since",
                       (row.store_id, row.state, row.change, row.message, row.revision, row.url,
                        _iso(row.since), _iso(row.pending_since) if row.pending_since else None))
            seq = int(db.execute("INSERT INTO events (store_id, state, message, url, revision, change, at) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                                 (row.store_id, row.state, row.message, row.url, row.revision, row.change,
                                  _iso(row.since))).scalar())
            db.executemany("INSERT INTO outbox (seq, sink, target) VALUES (?, ?, ?)",
                           [(seq, sink, target) for sink, target in deliveries])
        return Event(seq, row.store_id, row.state, row.message, row.url, row.revision, row.change, row.since)

    def events(self, *, store_id: str | None = None, after: int = 0, limit: int = 1000) -> list[Event]:
        query = "SELECT seq, store_id, state, message, url, revision, change, at FROM events WHERE seq > ?"
        args: tuple[object, ...] = (after,)
        if store_id is not None:
            query += " AND store_id = ?"
            args += (store_id,)
        found = self._db.execute(query + " ORDER BY seq LIMIT ?", (*args, limit)).rows
        return [_event(r) for r in found]

    def last_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").scalar())

    # --- the changes ready waits for ------------------------------------------------------------

    def expect(self, store_ids: Iterable[str], sha: str, *, at: datetime.datetime) -> None:
        """Record ``sha`` as the latest change of each store (a publish pushed it)."""
        with self._db.transaction() as db:
            db.executemany("INSERT INTO changes VALUES (?, ?, ?) ON CONFLICT (store_id) DO UPDATE SET "
                           "sha = excluded.sha, at = excluded.at",
                           [(store_id, sha, _iso(at)) for store_id in store_ids])

    def changes(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._db.execute("SELECT store_id, sha FROM changes").rows}

    # --- the outbox ---------------------------------------------------------------------------

    def due(self, *, now: float, limit: int = 100) -> list[Delivery]:
        found = self._db.execute(
            "SELECT o.id, o.sink, o.target, o.attempts, e.seq, e.store_id, e.state, e.message, e.url, "
            "e.revision, e.change, e.at FROM outbox o JOIN events e ON e.seq = o.seq "
            "WHERE o.dead = 0 AND o.next_at <= ? ORDER BY o.id LIMIT ?", (now, limit)).rows
        return [Delivery(r[0], _event(r[4:]), r[1], r[2], r[3]) for r in found]

    def next_due(self) -> float | None:
        value = self._db.execute("SELECT MIN(next_at) FROM outbox WHERE dead = 0").scalar()
        return None if value is None else float(value)

    def delivered(self, delivery_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (delivery_id,))

    def retry(self, delivery_id: int, *, next_at: float, error: str, dead: bool) -> None:
        self._db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?, dead = ? "
                         "WHERE id = ?", (next_at, remotes.redact(error)[:500], int(dead), delivery_id))

    def pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE dead = 0").scalar())


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _row(r: tuple[str, ...]) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], _time(r[6]), _time(r[7]) if r[7] else None)


def _event(r: tuple[object, ...]) -> Event:
    return Event(int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]),
                 _time(str(r[7])))
