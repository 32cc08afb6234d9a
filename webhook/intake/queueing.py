"""The durable intake queue: one SQLite file in WAL mode, every row committed before the 2xx.

A row is a request and, after it is done, the ledger entry of what became of it. The writer reads
``requested`` rows in order and marks them only after their commit is pushed, so a crash between
the push and the mark makes the writer apply them again, which changes nothing (see ``writer``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.errors import Problem
from webhook.state import connect

log = logging.getLogger(__name__)

REQUESTED = "requested"
PENDING_REVIEW = "pending-review"
COMMITTED = "committed"
REJECTED = "rejected"
#: Requests that still hold their store id (queued, or waiting in a pull request).
ACTIVE = (REQUESTED, PENDING_REVIEW)
#: The code of the problem a request carries when its review was closed without merging.
REVIEW_CLOSED = "review-closed"

CREATE = "create"
#: Change fields of an existing store (a JSON merge patch, applied when the request is accepted).
UPDATE = "update"
DELETE = "delete"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    store_id TEXT NOT NULL,
    action TEXT NOT NULL,
    content TEXT,
    cluster TEXT NOT NULL,
    review INTEGER NOT NULL,
    source TEXT NOT NULL,
    client TEXT NOT NULL,
    idempotency_key TEXT,
    body_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    commit_sha TEXT,
    review_url TEXT,
    problems TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    override TEXT NOT NULL DEFAULT '',
    review_branch TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS requests_idempotency
    ON requests (client, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, seq);
"""
#: Made after the columns an older queue may lack are added.
_INDEXES = """
CREATE INDEX IF NOT EXISTS requests_review_branch ON requests (review_branch) WHERE review_branch != '';
"""


@dataclass(frozen=True)
class Request:
    """One accepted request. ``content`` is the exact desired ``stores/<id>.yaml`` (None to delete)."""

    id: str
    store_id: str
    action: str
    content: str | None
    cluster: str
    review: bool
    source: str
    client: str
    idempotency_key: str | None
    body_hash: str
    status: str = REQUESTED
    commit_sha: str | None = None
    review_url: str | None = None
    problems: tuple[Problem, ...] = ()
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    seq: int = 0
    #: What the idempotency key was given for: the method and path (``PATCH /v1/stores/a``).
    scope: str = ""
    #: Why a deletion beyond the mass-delete limit was wanted (the caller's stated reason; audited).
    override: str = ""
    #: The branch of the request's review ('' for a direct change, and in queues older than this field).
    review_branch: str = ""

    @property
    def path(self) -> str:
        return f"stores/{self.store_id}.yaml"

    @property
    def requester(self) -> str:
        """Who asked, as the audit trail and commit trailers name it: a token's or a form's name, never an
        address or an email (Git history is forever)."""
        return "request form" if self.client.startswith("form:addr:") else self.client


_COLUMNS = ("seq", "id", "store_id", "action", "content", "cluster", "review", "source", "client",
            "idempotency_key", "body_hash", "status", "commit_sha", "review_url", "problems", "created", "updated",
            "scope", "override", "review_branch")


def _row(row: tuple[Any, ...]) -> Request:
    values = dict(zip(_COLUMNS, row, strict=True))
    problems = tuple(Problem(**p) for p in json.loads(values.pop("problems") or "[]"))
    values["review"] = bool(values["review"])
    return Request(problems=problems, **values)


class Queue:
    """The SQLite queue. Safe to share between threads; each call is one transaction."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = connect(path, _SCHEMA)
        # FULL: a committed row survives power loss too, not only a crash of the process.
        self._db.execute("PRAGMA synchronous=FULL")
        #: Grows with every change this process makes: a cheap key for views built from the queue.
        self.version = 0
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
        for added in ("scope", "override", "review_branch"):  # a queue written by an older version
            if added not in columns:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {added} TEXT NOT NULL DEFAULT ''")
        self._db.executescript(_INDEXES)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _select(self, where: str, args: Iterable[Any] = ()) -> list[Request]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM requests {where}", tuple(args)).fetchall()
        return [_row(r) for r in rows]

    def add(self, request: Request) -> Request:
        """Store ``request`` durably; returns it with its sequence number."""
        with self._transaction() as db:
            cursor = db.execute(
                f"INSERT INTO requests ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})",
                (request.id, request.store_id, request.action, request.content, request.cluster, int(request.review),
                 request.source, request.client, request.idempotency_key, request.body_hash, request.status,
                 request.commit_sha, request.review_url, "[]", request.created, request.updated, request.scope,
                 request.override, request.review_branch))
            seq = cursor.lastrowid or 0
            self.version += 1
        log.info("queued request %s: %s %s", request.id, request.action, request.store_id)
        return Request(**{**request.__dict__, "seq": seq})

    def get(self, request_id: str) -> Request | None:
        found = self._select("WHERE id = ?", (request_id,))
        return found[0] if found else None

    def by_idempotency_key(self, *, client: str, key: str) -> Request | None:
        found = self._select("WHERE client = ? AND idempotency_key = ?", (client, key))
        return found[0] if found else None

    def active(self) -> list[Request]:
        """Requests that still hold their store id, oldest first."""
        return self._select(f"WHERE status IN ({', '.join('?' * len(ACTIVE))}) ORDER BY seq", ACTIVE)

    def pending(self, *, limit: int) -> list[Request]:
        """Requests the writer has not landed yet, oldest first."""
        return self._select("WHERE status = ? ORDER BY seq LIMIT ?", (REQUESTED, limit))

    def deletions(self, *, cluster: str, since: float) -> int:
        """Deletions of stores on ``cluster`` accepted since ``since`` (and not rejected): the mass-delete window."""
        with self._lock:
            found = self._db.execute("SELECT COUNT(*) FROM requests WHERE action = ? AND cluster = ? AND created >= ? "
                                     "AND status != ?", (DELETE, cluster, since, REJECTED)).fetchone()
        return int(found[0])

    def times(self) -> dict[str, tuple[float, float]]:
        """Per store: when its first request came, and when its latest changed (one query for the fleet)."""
        with self._lock:
            rows = self._db.execute("SELECT store_id, MIN(created), MAX(updated) FROM requests "
                                    "WHERE status != ? GROUP BY store_id", (REJECTED,)).fetchall()
        return {str(r[0]): (float(r[1]), float(r[2])) for r in rows}

    def recent(self, *, limit: int) -> list[Request]:
        """The latest requests of the fleet, newest first."""
        return self._select("ORDER BY seq DESC LIMIT ?", (limit,))

    def for_store(self, store_id: str) -> list[Request]:
        return self._select("WHERE store_id = ? ORDER BY seq", (store_id,))

    def in_review(self) -> list[Request]:
        """Requests waiting in a pull request, oldest first."""
        return self._select("WHERE status = ? ORDER BY seq", (PENDING_REVIEW,))

    def by_review_branch(self, branch: str) -> list[Request]:
        """The requests whose review is (or was) on ``branch``."""
        return self._select("WHERE review_branch = ? ORDER BY seq", (branch,))

    def finish(self, *, request_ids: Iterable[str], status: str, commit_sha: str | None = None,
               review_url: str | None = None, review_branch: str = "", problems: Iterable[Problem] = ()) -> None:
        """Record what became of requests (one transaction for all of them)."""
        encoded = json.dumps([p.as_dict() for p in problems])
        now = time.time()
        ids = list(request_ids)
        with self._transaction() as db:
            db.executemany("UPDATE requests SET status = ?, commit_sha = ?, review_url = ?, review_branch = ?, "
                           "problems = ?, updated = ? WHERE id = ?",
                           [(status, commit_sha, review_url, review_branch, encoded, now, i) for i in ids])
            self.version += 1

    def end_review(self, *, request_id: str, status: str, commit_sha: str | None = None,
                   problems: Iterable[Problem] = ()) -> bool:
        """Record the end of a request's review (``committed`` or ``rejected``), keeping where the review was.

        Only a request still ``pending-review`` changes, so telling an end twice records it once;
        returns whether this call recorded it.
        """
        encoded = json.dumps([p.as_dict() for p in problems])
        with self._transaction() as db:
            cursor = db.execute("UPDATE requests SET status = ?, commit_sha = ?, problems = ?, updated = ? "
                                "WHERE id = ? AND status = ?",
                                (status, commit_sha, encoded, time.time(), request_id, PENDING_REVIEW))
            self.version += 1
        return cursor.rowcount == 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in rows}
