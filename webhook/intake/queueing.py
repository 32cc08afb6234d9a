"""The durable intake queue: a SQLite file in WAL mode, or PostgreSQL; every row committed before the 2xx.

A row is a request and, after it is done, the ledger entry of what became of it. The writer reads
``requested`` rows in order and marks them only after their commit is pushed, so a crash between
the push and the mark makes the writer apply them again, which changes nothing (see ``writer``).

The active requests of a store form one chain: each names the request it was checked after
(``follows``, 0 for the first), and a unique index lets only one active request follow any one
request of a store. Two processes that each checked a request against the same state (the same new
store id, or two changes of one store) cannot both queue it: the second insert fails on the index
(:class:`Stale`), and its intake checks again against what the first queued. Idempotency keys are
unique per client the same way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from generator.errors import Problem
from webhook import state

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
    review_branch TEXT NOT NULL DEFAULT '',
    follows INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS requests_idempotency
    ON requests (client, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, seq);
CREATE INDEX IF NOT EXISTS requests_store ON requests (store_id, seq);
CREATE TABLE IF NOT EXISTS queue_version (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT INTO queue_version VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""
#: Made after the columns an older queue may lack are added.
_INDEXES = """
CREATE INDEX IF NOT EXISTS requests_review_branch ON requests (review_branch) WHERE review_branch != '';
CREATE UNIQUE INDEX IF NOT EXISTS requests_one_active ON requests (store_id, follows)
    WHERE status IN ('requested', 'pending-review');
"""
#: Columns a queue written by an older version lacks.
_ADDED = {"scope": "TEXT NOT NULL DEFAULT ''", "override": "TEXT NOT NULL DEFAULT ''",
          "review_branch": "TEXT NOT NULL DEFAULT ''", "follows": "INTEGER NOT NULL DEFAULT 0"}


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
    #: The ``seq`` of the store's latest active request when this one was checked (0: none was).
    follows: int = 0

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
            "scope", "override", "review_branch", "follows")


def _row(row: tuple[Any, ...]) -> Request:
    values = dict(zip(_COLUMNS, row, strict=True))
    problems = tuple(Problem(**p) for p in json.loads(values.pop("problems") or "[]"))
    values["review"] = bool(values["review"])
    return Request(problems=problems, **values)


class Stale(Exception):
    """The request was checked against a queue that has changed since: another request of the store
    (``store_id``), or one with the same idempotency key (``key``), was queued first."""

    def __init__(self, *, store_id: str, key: bool) -> None:
        super().__init__(f"another request {'with this idempotency key' if key else 'of ' + store_id} "
                         f"was queued first")
        self.store_id = store_id
        self.key = key


class Queue:
    """The queue, in SQLite or PostgreSQL (``where``). Safe to share between threads and between processes
    on one database; each call is one transaction."""

    def __init__(self, *, path: state.Location) -> None:
        self.path = path
        self._db = state.connect(path, _SCHEMA)
        columns = self._db.columns("requests")
        for name, kind in _ADDED.items():  # a queue written by an older version
            if name not in columns:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
                if name == "follows":
                    self._chain_active()
        self._db.script(_INDEXES)

    def _chain_active(self) -> None:
        """Give the active requests of an older queue their ``follows`` (each store's, in order)."""
        with self._db.transaction("queue") as db:
            last: dict[str, int] = {}
            for seq, store_id in db.execute(f"SELECT seq, store_id FROM requests WHERE status IN "
                                            f"({', '.join('?' * len(ACTIVE))}) ORDER BY seq", ACTIVE).rows:
                db.execute("UPDATE requests SET follows = ? WHERE seq = ?", (last.get(store_id, 0), seq))
                last[store_id] = seq

    @property
    def version(self) -> int:
        """Grows with every change of the queue, by any process on the database: a cheap key for views built
        from it, and how an intake knows that its view of the queue is out of date."""
        return int(self._db.execute("SELECT n FROM queue_version WHERE id = 1").scalar() or 0)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self, *locks: str) -> Iterator[state.Database]:
        """A write transaction; it counts as a change of the queue (``version``).

        The version row is written first: on PostgreSQL it is the queue's write lock, so writes of the
        queue follow one another as they do under SQLite's ``BEGIN IMMEDIATE``.
        """
        with self._db.transaction(*locks) as db:
            db.execute("UPDATE queue_version SET n = n + 1 WHERE id = 1")
            yield db

    def _select(self, where: str, args: Iterable[Any] = ()) -> list[Request]:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM requests {where}", tuple(args)).rows
        return [_row(r) for r in rows]

    def add(self, request: Request, *, check: Callable[[], None] | None = None) -> Request:
        """Store ``request`` durably; returns it with its sequence number. ``check`` runs first, in the same
        transaction (what it reads cannot change before the insert); :class:`Stale` when another active
        request of the store follows the same one, or one of the client's has the same idempotency key."""
        return self.add_counted(request, check=check)[0]

    def add_counted(self, request: Request, *, check: Callable[[], None] | None = None) -> tuple[Request, int]:
        """:meth:`add`, and the queue's ``version`` this change made."""
        try:
            with self._transaction() as db:
                version = int(db.execute("SELECT n FROM queue_version WHERE id = 1").scalar())
                if check is not None:
                    check()
                seq = db.execute(
                    f"INSERT INTO requests ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})"
                    " RETURNING seq",
                    (request.id, request.store_id, request.action, request.content, request.cluster,
                     int(request.review), request.source, request.client, request.idempotency_key, request.body_hash,
                     request.status, request.commit_sha, request.review_url, "[]", request.created, request.updated,
                     request.scope, request.override, request.review_branch, request.follows)).scalar()
        except state.Duplicate as e:
            raise Stale(store_id=request.store_id, key="idempotency" in (e.constraint + str(e))) from None
        log.info("queued request %s: %s %s", request.id, request.action, request.store_id)
        return Request(**{**request.__dict__, "seq": int(seq or 0)}), version

    def after(self, seq: int) -> list[Request]:
        """Every request queued after ``seq``, oldest first."""
        return self._select("WHERE seq > ? ORDER BY seq", (seq,))

    def heads(self) -> tuple[dict[str, int], int]:
        """Per store, the ``seq`` of its latest request; and the latest ``seq`` of all."""
        rows = self._db.execute("SELECT store_id, MAX(seq) FROM requests GROUP BY store_id").rows
        heads = {str(store_id): int(seq) for store_id, seq in rows}
        return heads, max(heads.values(), default=0)

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
        found = self._db.execute("SELECT COUNT(*) FROM requests WHERE action = ? AND cluster = ? AND created >= ? "
                                 "AND status != ?", (DELETE, cluster, since, REJECTED)).scalar()
        return int(found)

    def times(self) -> dict[str, tuple[float, float]]:
        """Per store: when its first request came, and when its latest changed (one query for the fleet)."""
        rows = self._db.execute("SELECT store_id, MIN(created), MAX(updated) FROM requests "
                                "WHERE status != ? GROUP BY store_id", (REJECTED,)).rows
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

    def end_review(self, *, request_id: str, status: str, commit_sha: str | None = None,
                   problems: Iterable[Problem] = ()) -> bool:
        """Record the end of a request's review (``committed`` or ``rejected``), keeping where the review was.

        Only a request still ``pending-review`` changes, so telling an end twice records it once;
        returns whether this call recorded it.
        """
        encoded = json.dumps([p.as_dict() for p in problems])
        with self._transaction() as db:
            changed = db.execute("UPDATE requests SET status = ?, commit_sha = ?, problems = ?, updated = ? "
                                 "WHERE id = ? AND status = ?",
                                 (status, commit_sha, encoded, time.time(), request_id, PENDING_REVIEW)).rowcount
        return changed == 1

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").rows
        return {str(status): int(count) for status, count in rows}
