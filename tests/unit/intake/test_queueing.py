"""The intake queue's own rules, on SQLite and PostgreSQL: the chain of a store's active requests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from webhook.intake import queueing

#: The requests table as versions before ``follows`` made it.
OLDER = """
CREATE TABLE requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, store_id TEXT NOT NULL, action TEXT NOT NULL,
    content TEXT, cluster TEXT NOT NULL, review INTEGER NOT NULL, source TEXT NOT NULL, client TEXT NOT NULL,
    idempotency_key TEXT, body_hash TEXT NOT NULL, status TEXT NOT NULL, commit_sha TEXT, review_url TEXT,
    problems TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
"""


def test_a_queue_from_before_the_chain_gets_one_for_its_active_requests(tmp_path: Path) -> None:
    path = tmp_path / "intake.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLDER)
    for n, (store_id, status) in enumerate([("shop", "committed"), ("shop", "requested"), ("cafe", "requested"),
                                            ("shop", "pending-review"), ("shop", "requested")], start=1):
        db.execute("INSERT INTO requests (id, store_id, action, content, cluster, review, source, client, "
                   "body_hash, status, created, updated) VALUES (?, ?, 'update', '', 'local', 0, 'api', 'c', 'h', ?, "
                   "0, 0)", (f"r{n}", store_id, status))
    db.commit()
    db.close()
    queue = queueing.Queue(path=path)
    try:
        shop = {r.id: r.follows for r in queue.for_store("shop")}
        assert shop == {"r1": 0, "r2": 0, "r4": 2, "r5": 4}
        assert [r.follows for r in queue.for_store("cafe")] == [0]
        assert queue.heads() == ({"shop": 5, "cafe": 3}, 5)
    finally:
        queue.close()
