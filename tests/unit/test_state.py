"""The service's database layer on both backends: SQLite files, and a real PostgreSQL (from the fixtures).

Two ``Database`` (or part) objects on one location stand for two processes: each has its own connection.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import postgres
from webhook import credentials, signin, state
from webhook.auth import RateLimiter
from webhook.errors import RateLimited
from webhook.status import ledger

Where = Callable[[str], state.Location]
SCHEMA = "CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE, v REAL, b BLOB);"


def test_statements_parameters_and_types_are_the_same_on_both(state_at: Where) -> None:
    db = state.connect(state_at("t.sqlite3"), SCHEMA)
    try:
        first = db.execute("INSERT INTO t (k, v, b) VALUES (?, ?, ?) RETURNING seq", ("a", 1.5, b"\x00\xff")).scalar()
        second = db.execute("INSERT INTO t (k, v, b) VALUES (?, ?, ?) RETURNING seq", ("100%", 2, None)).scalar()
        assert (first, second) == (1, 2)
        # A literal % in the SQL stays one (PostgreSQL's driver takes %s for parameters).
        assert db.execute("SELECT k, v, b FROM t WHERE k = ? || '%'", ("100",)).rows == [("100%", 2.0, None)]
        assert db.execute("SELECT b FROM t WHERE seq = ?", (1,)).scalar() == b"\x00\xff"
        assert db.execute("UPDATE t SET v = v + 1").rowcount == 2
        assert db.columns("t") == {"seq", "k", "v", "b"} and "t" in db.tables()
        with pytest.raises(state.Duplicate):
            db.execute("INSERT INTO t (k) VALUES (?)", ("a",))
        # A transaction that fails leaves nothing behind; the connection goes on.
        with pytest.raises(state.Duplicate), db.transaction("t") as tx:
            tx.execute("INSERT INTO t (k) VALUES (?)", ("c",))
            tx.execute("INSERT INTO t (k) VALUES (?)", ("a",))
        assert db.execute("SELECT COUNT(*) FROM t").scalar() == 2
    finally:
        db.close()


def test_a_transaction_holds_its_lock_against_another_process(state_at: Where) -> None:
    where = state_at("t.sqlite3")
    one, two = state.connect(where, SCHEMA), state.connect(where, SCHEMA)
    one.execute("INSERT INTO t (k, v) VALUES ('n', 0)")

    def add(db: state.Database) -> None:
        for _ in range(25):
            with db.transaction("counter") as tx:  # read, then write what was read plus one
                value = tx.execute("SELECT v FROM t WHERE k = 'n'").scalar()
                tx.execute("UPDATE t SET v = ? WHERE k = 'n'", (value + 1,))

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(add, [one, two]))
        assert one.execute("SELECT v FROM t WHERE k = 'n'").scalar() == 50  # no update lost
    finally:
        one.close()
        two.close()


def test_a_bucket_shared_by_two_processes_gives_out_its_burst_once(state_at: Where) -> None:
    shared = [state.SharedState(state_at("service.sqlite3"), clock=lambda: 1000.0) for _ in range(2)]
    limiters = [RateLimiter(rate=0.001, burst=10, state=s) for s in shared]
    barrier = threading.Barrier(8)

    def take(i: int) -> bool:
        barrier.wait()
        try:
            limiters[i % 2].take("client")
        except RateLimited:
            return False
        return True

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            taken = list(pool.map(take, range(24)))
        assert taken.count(True) == 10
        assert shared[0].secret("csrf") == shared[1].secret("csrf")
    finally:
        for s in shared:
            s.close()


def test_a_credentials_link_is_used_once_when_two_processes_open_it_at_once(state_at: Where) -> None:
    links = [credentials.Links(state_at("service.sqlite3"), ttl=60) for _ in range(2)]
    link = links[0].issue("shop", "owner@example.com")
    barrier = threading.Barrier(2)

    def redeem(i: int) -> str:
        barrier.wait()
        try:
            return links[i].redeem("shop", link.token, owner="owner@example.com", read=lambda: ("pw", 0))
        except credentials.Gone:
            return "gone"

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert sorted(pool.map(redeem, range(2))) == ["gone", "pw"]
        assert links[1].state("shop") == "revealed"
    finally:
        for each in links:
            each.close()


def test_sessions_and_sign_ins_hold_across_processes(state_at: Where) -> None:
    one, two = (signin.Sessions(state_at("service.sqlite3")) for _ in range(2))
    try:
        begun, _, _ = one.begin(back="/stores")
        assert two.take(begun) is not None and one.take(begun) is None  # a sign-in's state is used once
        key = one.open(signin.Session("sub", "olga@example.com", signin.OPERATOR))
        assert two.get(key) == signin.Session("sub", "olga@example.com", signin.OPERATOR)
        two.end(key)
        assert one.get(key) is None
    finally:
        one.close()
        two.close()


def test_the_ledger_numbers_events_and_keeps_the_outbox_on_both(state_at: Where) -> None:
    where = state_at("status.sqlite3")
    book = ledger.Ledger(where)
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    try:
        first = book.record(ledger.Row("shop", "syncing", "c1", "", "r1", "", at, at), deliveries=[("callback", "u")])
        second = book.record(ledger.Row("shop", "ready", "c1", "", "r1", "http://shop", at, None),
                             deliveries=[("callback", "u"), ("github", "")])
        assert (first.seq, second.seq) == (1, 2)
        row = book.row("shop")
        assert row is not None and (row.state, row.since, row.pending_since) == ("ready", at, None)
        book.expect(["shop", "other"], "sha-1", at=at)
        book.expect(["shop"], "sha-2", at=at)
        assert book.changes() == {"shop": "sha-2", "other": "sha-1"}
        due = book.due(now=0)
        assert [(d.event.seq, d.sink) for d in due] == [(1, "callback"), (2, "callback"), (2, "github")]
        book.delivered(due[0].id)
        book.retry(due[1].id, next_at=10.0, error="refused", dead=False)
        assert [d.event.seq for d in book.due(now=5)] == [2] and book.next_due() == 0.0
        book.close()
        book = ledger.Ledger(where)  # what a restart (or another replica) reads
        assert book.pending() == 2 and book.last_seq() == 2
        assert [e.state for e in book.events(store_id="shop")] == ["syncing", "ready"]
    finally:
        book.close()


def test_a_url_that_is_not_postgresql_is_a_settings_error() -> None:
    from webhook.errors import SettingsError
    from webhook.settings import ServiceSettings

    with pytest.raises(SettingsError, match="Not a PostgreSQL URL"):
        ServiceSettings.from_env({"STOREOPS_DATABASE_URL": "mysql://u:secret@h/db"})
    assert "secret" not in state.redacted("postgresql://u:secret@h:5432/db")
    configured = ServiceSettings.from_env({"STOREOPS_DATABASE_URL": "postgresql://u:p@h/db"})
    assert configured.queue_location == configured.state_location == "postgresql://u:p@h/db"
    assert "p@h" not in repr(configured)


def test_a_connection_the_server_ended_is_made_again(database_url: str, postgres_cluster: postgres.Cluster) -> None:
    db = state.connect(database_url, SCHEMA)
    try:
        db.execute("INSERT INTO t (k) VALUES ('kept')")
        name = database_url.rsplit("/", 1)[1]
        postgres_cluster.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        assert db.execute("SELECT k FROM t").rows == [("kept",)]  # a read is asked again on a new connection
        postgres_cluster.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        with db.transaction("t") as tx:  # a transaction begins on a new connection
            tx.execute("INSERT INTO t (k) VALUES ('more')")
        assert db.execute("SELECT COUNT(*) FROM t").scalar() == 2
    finally:
        db.close()
