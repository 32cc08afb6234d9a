"""The service's state in a real PostgreSQL (Debian's server, started by the fixtures): several processes on
one database, and the move of a state dir's SQLite files into it."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from generator import trees
from harness import examples
from webhook import app, cli, credentials, signin, state
from webhook.errors import Conflict
from webhook.github import deliveries
from webhook.intake import queueing, rollouts
from webhook.intake.admission import Caller, Intake
from webhook.settings import ServiceSettings
from webhook.status import ledger

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}


def wait_for(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s: {check}")


def _replica(settings: ServiceSettings, folder: Path) -> ServiceSettings:
    """Another process of the same service: the same remote and database, its own state dir and work clone."""
    return replace(settings, git=replace(settings.git, state_dir=folder / "state"))


@pytest.fixture
def two(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, TestClient, ServiceSettings]]:
    first = examples.service_settings(tmp_path / "a", database_url=database_url)
    second = _replica(first, tmp_path / "b")
    with ExitStack() as stack:
        clients = [stack.enter_context(TestClient(app.create_app(s))) for s in (first, second)]
        for client in clients:
            wait_for(lambda c=client: c.get("/readyz").status_code == 200)
        yield clients[0], clients[1], first


def test_two_services_on_one_database_give_one_202_and_one_409_for_the_same_new_id(
        two: tuple[TestClient, TestClient, ServiceSettings]) -> None:
    a, b, settings = two
    ids = [f"race-{i}" for i in range(12)]
    answers: dict[str, list[tuple[int, str]]] = {}

    def ask(client: TestClient, store_id: str, barrier: threading.Barrier) -> tuple[int, str]:
        barrier.wait()
        answer = client.post("/v1/stores", json=examples.store_payload(store_id), headers=WRITE)
        return answer.status_code, answer.text

    with ThreadPoolExecutor(max_workers=2) as pool:
        for store_id in ids:
            barrier = threading.Barrier(2)
            asked = [pool.submit(ask, client, store_id, barrier) for client in (a, b)]
            answers[store_id] = sorted(f.result() for f in asked)
    for store_id, (accepted, refused) in answers.items():
        assert (accepted[0], refused[0]) == (202, 409), (store_id, accepted, refused)
        assert repr(store_id) in json.loads(refused[1])["error"], refused
    # Every accepted request lands in Git once, whichever process's writer took it.
    bare = Path(settings.git.remote)
    wait_for(lambda: set(ids) <= set(examples.remote_stores(bare)), timeout=60)
    added = examples.additions(bare)
    assert all(added[f"stores/{store_id}.yaml"] == 1 for store_id in ids), added
    # Both processes see the one queue: each request, and what became of it.
    for store_id in ids:
        for client in (a, b):
            listed = client.get(f"/v1/stores/{store_id}", headers=READ)
            assert listed.status_code == 200, listed.text


def test_an_idempotency_key_sent_to_two_services_at_once_is_one_request(
        two: tuple[TestClient, TestClient, ServiceSettings]) -> None:
    a, b, settings = two
    barrier = threading.Barrier(2)

    def ask(client: TestClient) -> tuple[int, Any]:
        barrier.wait()
        answer = client.post("/v1/stores", json=examples.store_payload("keyed"),
                             headers={**WRITE, "Idempotency-Key": "k-1"})
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(max_workers=2) as pool:
        found = [f.result() for f in [pool.submit(ask, client) for client in (a, b)]]
    assert [code for code, _ in found] == [202, 202], found
    assert found[0][1]["request_id"] == found[1][1]["request_id"]
    queue = queueing.Queue(path=settings.database_url)
    try:
        assert len(queue.for_store("keyed")) == 1
    finally:
        queue.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_intakes_of_two_processes_racing_for_ids_and_changes_queue_each_once(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """Two intakes (as two processes: each its own connection and overlay) on one queue, many threads each."""
    where = tmp_path / "queue.sqlite3" if backend == "sqlite" else str(request.getfixturevalue("database_url"))
    repo = examples.example_repo(tmp_path / "repo")
    files = trees.read_inputs(repo)
    queues = [queueing.Queue(path=where) for _ in range(2)]
    intakes = [Intake(queue=q, mass_delete_share=0.25) for q in queues]
    for intake in intakes:
        intake.load_git(files=files, sha="0" * 40)
    caller = Caller(client="test", source="api")

    def create(i: int, store_id: str) -> str:
        try:
            intakes[i % 2].create(data=examples.store_payload(store_id), caller=caller,
                                  body=store_id.encode())
        except Conflict as e:
            assert repr(store_id) in e.message, e.message
            return "409"
        return "202"

    def change(i: int) -> str:
        intakes[i % 2].update(store_id="acme-outdoor", patch={"name": f"Name {i}"}, caller=caller,
                              body=str(i).encode())
        return "202"

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            created = list(pool.map(lambda n: create(n, f"id-{n // 4}"), range(40)))
            changed = list(pool.map(change, range(20)))
        assert created.count("202") == 10 and created.count("409") == 30
        assert changed == ["202"] * 20
        # The changes of one store form one chain: each was checked after the one before, none lost.
        chain = [r for r in queues[0].for_store("acme-outdoor") if r.status in queueing.ACTIVE]
        assert len(chain) == 20
        assert [r.follows for r in chain[1:]] == [r.seq for r in chain[:-1]]
        for n in range(10):
            assert len(queues[1].for_store(f"id-{n}")) == 1
    finally:
        for queue in queues:
            queue.close()


def test_the_queue_refuses_a_second_request_checked_against_the_same_state(
        state_at: Callable[[str], state.Location]) -> None:
    first, second = (queueing.Queue(path=state_at("queue.sqlite3")) for _ in range(2))

    def request(request_id: str, *, follows: int = 0, key: str | None = None) -> queueing.Request:
        return queueing.Request(id=request_id, store_id="shop", action=queueing.CREATE, content="id: shop\n",
                                cluster="local", review=False, source="api", client="c", idempotency_key=key,
                                body_hash="h", follows=follows)

    try:
        added = first.add(request("r1", key="k"))
        with pytest.raises(queueing.Stale) as raced:
            second.add(request("r2"))
        assert raced.value.store_id == "shop" and not raced.value.key
        with pytest.raises(queueing.Stale) as replayed:
            second.add(request("r3", follows=added.seq, key="k"))
        assert replayed.value.key
        # After the one it follows, a request is taken; and once that one is done, the chain goes on from it.
        then = second.add(request("r4", follows=added.seq))
        first.finish(request_ids=["r1"], status=queueing.COMMITTED, commit_sha="c" * 40)
        assert second.add(request("r5", follows=then.seq)).seq > then.seq
        assert first.version == second.version > 0
    finally:
        first.close()
        second.close()


def test_a_state_dir_moves_into_postgresql_and_the_service_goes_on_from_it(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = examples.service_settings(tmp_path)
    bare = Path(settings.git.remote)
    with TestClient(app.create_app(settings)) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200)
        landed = http.post("/v1/stores", json=examples.store_payload("moved"),
                           headers={**WRITE, "Idempotency-Key": "m"})
        assert landed.status_code == 202
        wait_for(lambda: "moved" in examples.remote_stores(bare))
        first = landed.json()["request_id"]
        wait_for(lambda: http.get(f"/v1/requests/{first}", headers=READ).json()["status"] == "committed")
    # The rest of the state, as the service's parts write it.
    links = credentials.Links(settings.state_location)
    link = links.issue("moved", "owner@moved.example")
    links.close()
    kept = rollouts.Rollouts(settings.state_location)
    kept.save(rollouts.Rollout(id="r-1", engine="woocommerce", version="0.1.0", cluster=None, waves=[["moved"]],
                               timeout=60, by="test", created=1.0, state=rollouts.HALTED))
    kept.close()
    sessions = signin.Sessions(settings.state_location)
    cookie = sessions.open(signin.Session("sub-1", "olga@example.com", signin.OPERATOR))
    sessions.close()
    book = ledger.Ledger(settings.git.state_dir / "status.sqlite3")
    now = datetime.datetime.now(datetime.UTC)
    book.record(ledger.Row("moved", "ready", "c" * 40, "", "r" * 40, "http://moved.example", now, None),
                deliveries=[("callback", "http://hooks.example/x")])
    book.close()
    log = deliveries.Deliveries(path=settings.git.state_dir / "github-deliveries.sqlite3")
    log.record(delivery_id="gh-1", event="push", action="", payload=b"{}")
    log.close()

    monkeypatch.setenv("STOREOPS_STATE_DIR", str(settings.git.state_dir))
    monkeypatch.setenv("STOREOPS_REPO", str(settings.git.repo))
    monkeypatch.delenv("STOREOPS_DATABASE_URL", raising=False)
    monkeypatch.delenv("STOREOPS_STATUS_DB", raising=False)
    assert cli.main(["migrate-state", "--to", database_url]) == 0
    printed = capsys.readouterr().out
    for line in ("requests: 1 rows", "credential_links: 1 rows", "rollouts: 1 rows", "sessions: 1 rows",
                 "events: 1 rows", "outbox: 1 rows", "deliveries: 1 rows", "secrets: 1 rows"):
        assert line in printed, printed
    # A target that holds rows is refused; --force replaces them.
    assert cli.main(["migrate-state", "--to", database_url]) == 1
    assert "holds rows already" in capsys.readouterr().err
    assert cli.main(["migrate-state", "--to", database_url, "--force"]) == 0
    capsys.readouterr()

    on_postgres = replace(settings, database_url=database_url)
    with TestClient(app.create_app(on_postgres)) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200)
        found = http.get(f"/v1/requests/{first}", headers=READ).json()
        assert (found["status"], found["store_id"]) == ("committed", "moved")
        # The idempotency key from before the move still names that request.
        again = http.post("/v1/stores", json=examples.store_payload("moved"), headers={**WRITE, "Idempotency-Key": "m"})
        assert again.json()["request_id"] == first
        shown = http.get("/v1/rollouts/r-1", headers=WRITE)
        assert shown.status_code == 200 and shown.json()["state"] == "halted"
        later = http.post("/v1/stores", json=examples.store_payload("after"), headers=WRITE)
        assert later.status_code == 202, later.text
        wait_for(lambda: "after" in examples.remote_stores(bare))
    links = credentials.Links(database_url)
    assert links.redeem("moved", link.token, owner="owner@moved.example", read=lambda: ("pw", 0)) == "pw"
    links.close()
    sessions = signin.Sessions(database_url)
    assert sessions.get(cookie) == signin.Session("sub-1", "olga@example.com", signin.OPERATOR)
    sessions.close()
    book = ledger.Ledger(database_url)
    assert [d.target for d in book.due(now=time.time())] == ["http://hooks.example/x"]
    assert book.record(ledger.Row("moved", "degraded", "c" * 40, "x", "r" * 40, "", now, None),
                       deliveries=[]).seq == 2
    book.close()
    log = deliveries.Deliveries(path=database_url)
    assert log.record(delivery_id="gh-1", event="push", action="", payload=b"{}") is False
    log.close()
    queue = queueing.Queue(path=database_url)
    assert [r.store_id for r in queue.recent(limit=5)] == ["after", "moved"]
    queue.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_mass_delete_window_holds_for_deletions_sent_to_two_processes_at_once(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    where = tmp_path / "queue.sqlite3" if backend == "sqlite" else str(request.getfixturevalue("database_url"))
    repo = examples.example_repo(tmp_path / "repo", capacity=20)
    files = trees.read_inputs(repo)
    queues = [queueing.Queue(path=where) for _ in range(2)]
    intakes = [Intake(queue=q, mass_delete_share=0.25) for q in queues]
    caller = Caller(client="test", source="api")
    intakes[0].load_git(files=files, sha="0" * 40)
    try:
        for n in range(6):  # eight stores on cluster local: two may go within the window
            intakes[0].create(data=examples.store_payload(f"fleet-{n}"), caller=caller, body=str(n).encode())
        committed = queues[0].pending(limit=100)
        queues[0].finish(request_ids=[r.id for r in committed], status=queueing.COMMITTED, commit_sha="c" * 40)
        landed = dict(files)
        for r in committed:
            landed[r.path] = (r.content or "").encode()
        for intake in intakes:
            intake.load_git(files=landed, sha="1" * 40)
        barrier = threading.Barrier(6)

        def delete(n: int) -> str:
            barrier.wait()
            try:
                intakes[n % 2].delete(store_id=f"fleet-{n}", caller=caller, body=b"")
            except Conflict as e:
                assert "removed in the last" in e.message, e.message
                return "409"
            return "202"

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = sorted(pool.map(delete, range(6)))
        assert answers == ["202", "202", "409", "409", "409", "409"]
        assert queues[1].deletions(cluster="local", since=0) == 2
    finally:
        for queue in queues:
            queue.close()
