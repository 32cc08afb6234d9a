"""The intake service end to end: the real app in-process, a real bare Git remote on disk."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from generator import publishing
from harness import examples
from webhook import app, auth
from webhook.settings import ServiceSettings, Token

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}


def wait_for(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    """``check()`` once it is truthy (polled every 50 ms), or an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s: {check}")


class Running:
    def __init__(self, client: TestClient, settings: ServiceSettings) -> None:
        self.client = client
        self.settings = settings

    @property
    def bare(self) -> Path:
        return Path(self.settings.git.remote)

    def status(self, request_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/requests/{request_id}", headers=READ)
        assert answer.status_code == 200
        result: dict[str, Any] = answer.json()
        return result

    def settled(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = wait_for(lambda: (s := self.status(request_id))["status"] != "requested" and s)
        return result

    def create(self, store_id: str, **extra: object) -> dict[str, Any]:
        answer = self.client.post("/v1/stores", json=examples.store_payload(store_id, **extra), headers=WRITE)
        assert answer.status_code == 202, answer.text
        result: dict[str, Any] = answer.json()
        return result


def start(tmp_path: Path, *, settings: ServiceSettings | None = None, **overrides: object) -> Iterator[Running]:
    settings = settings or examples.service_settings(tmp_path, **overrides)
    with TestClient(app.create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield Running(client, settings)


@pytest.fixture
def service(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """The service, its state in SQLite; or in PostgreSQL for a test parametrized with ``postgresql``."""
    yield from start(tmp_path, **_backend(request, getattr(request, "param", "sqlite")))


def _backend(request: pytest.FixtureRequest, backend: str) -> dict[str, object]:
    return {"database_url": request.getfixturevalue("database_url")} if backend == "postgresql" else {}


BOTH = pytest.mark.parametrize("service", ["sqlite", "postgresql"], indirect=True)


# --- POST /v1/stores ------------------------------------------------------------------------------

def test_a_store_request_lands_in_the_remote_with_the_schema_comment(service: Running) -> None:
    accepted = service.create("alpine-gear")
    assert accepted["store_id"] == "alpine-gear"
    assert accepted["status_url"].endswith(f"/v1/requests/{accepted['request_id']}")
    done = service.settled(accepted["request_id"])
    assert done["status"] == "committed"
    stores = examples.remote_stores(service.bare)
    assert stores["alpine-gear"]["owner"] == {"name": "Test Owner", "email": "owner@alpine-gear.example"}
    text = examples.git(service.bare, "show", "main:stores/alpine-gear.yaml")
    assert text.startswith("# yaml-language-server: $schema=../generator/schemas/store.schema.json\nid: alpine-gear\n")
    assert examples.git(service.bare, "rev-parse", "main").strip() == done["commit"]
    assert "rendered/local/apps/alpine-gear.yaml" in examples.git(service.bare, "ls-tree", "-r", "--name-only", "main")


def test_invalid_fields_get_422_naming_each_field_and_write_nothing(service: Running) -> None:
    before = examples.git(service.bare, "rev-parse", "main")
    body = examples.store_payload("Bad_Id", plan="huge", color="red")
    answer = service.client.post("/v1/stores", json=body, headers=WRITE)
    assert answer.status_code == 422
    fields = {p["field"]: p["message"] for p in answer.json()["problems"]}
    assert set(fields) == {"id", "plan", "color"}
    assert "is not one of small, medium, large" in fields["plan"]
    assert "unknown field" in fields["color"]
    assert service.client.post("/v1/stores", json=["not", "an", "object"], headers=WRITE).status_code == 422
    assert service.client.post("/v1/stores", content=b"{nope", headers={**WRITE, "content-type": "application/json"}
                               ).status_code == 400
    time.sleep(0.3)
    assert examples.git(service.bare, "rev-parse", "main") == before
    assert not list((service.settings.git.workdir / "stores").glob("*Bad*"))


def test_an_unknown_cluster_and_an_over_capacity_cluster_are_422(service: Running) -> None:
    answer = service.client.post("/v1/stores", json=examples.store_payload("nowhere", cluster="mars"), headers=WRITE)
    assert answer.status_code == 422
    assert answer.json()["problems"][0]["field"] == "cluster"
    # The local cluster takes 20 stores (cpu 40: 40 small ones); it holds 2. Fill it up.
    for i in range(18):
        service.create(f"filler-{i}")
    full = service.client.post("/v1/stores", json=examples.store_payload("one-too-many"), headers=WRITE)
    assert full.status_code == 422
    assert full.json()["problems"][0]["field"] == "capacity.stores"


def test_an_id_taken_in_git_is_409(service: Running) -> None:
    answer = service.client.post("/v1/stores", json=examples.store_payload("acme-outdoor"), headers=WRITE)
    assert answer.status_code == 409
    assert "already taken in Git" in answer.json()["error"]


def test_a_domain_taken_in_git_is_409_told_from_the_request_side(service: Running) -> None:
    body = examples.store_payload("knits-two", cluster="prod", domain="shop.nordicknits.example")
    answer = service.client.post("/v1/stores", json=body, headers=WRITE)
    assert answer.status_code == 409
    problem = answer.json()["problems"][0]
    assert problem["field"] == "domain"
    assert problem["path"] == "stores/knits-two.yaml"
    assert "stores/nordic-knits.yaml" in problem["message"]


def test_unreachable_remote_keeps_requests_queued_then_lands_them_in_one_commit(service: Running) -> None:
    bare = service.bare
    hidden = bare.with_name("remote-away.git")
    commits = examples.commit_count(bare)
    bare.rename(hidden)
    try:
        accepted = [service.create(f"batch-{i}") for i in range(12)]
        # Same id while the first is still queued: taken "by a queued request".
        again = service.client.post("/v1/stores", json=examples.store_payload("batch-3"), headers=WRITE)
        assert again.status_code == 409
        assert "queued request" in again.json()["error"]
        same_domain = service.client.post("/v1/stores", json=examples.store_payload("other", domain="x.example.com"),
                                          headers=WRITE)
        assert same_domain.status_code == 202
        clash = service.client.post("/v1/stores", json=examples.store_payload("other-two", domain="x.example.com"),
                                    headers=WRITE)
        assert clash.status_code == 409
        wait_for(lambda: service.client.get("/readyz").json()["writer"] == "retrying")
        assert all(service.status(a["request_id"])["status"] == "requested" for a in accepted)
    finally:
        hidden.rename(bare)
    results = [service.settled(a["request_id"]) for a in accepted]
    assert {r["status"] for r in results} == {"committed"}
    assert len({r["commit"] for r in results}) == 1, "everything pending goes in one commit"
    assert examples.commit_count(bare) == commits + 1
    assert {f"batch-{i}" for i in range(12)} <= set(examples.remote_stores(bare))
    metrics = service.client.get("/metrics").text
    assert "storeops_writer_failures_total" in metrics


def test_a_store_taken_in_git_while_queued_is_rejected_late(service: Running, tmp_path: Path) -> None:
    bare = service.bare
    hidden = bare.with_name("remote-away.git")
    bare.rename(hidden)
    try:
        accepted = service.create("raced")
        # Someone else lands stores/raced.yaml directly meanwhile.
        clone = tmp_path / "other"
        examples.git(tmp_path, "clone", "-q", str(hidden), str(clone))
        entry = (clone / "stores/raced.yaml")
        entry.write_text("id: raced\nname: Raced elsewhere\nengine: medusa\nplan: small\ncluster: local\n"
                         "owner:\n  name: Other\n  email: other@example.com\n")
        examples.git(clone, "add", "-A")
        examples.git(clone, "-c", "user.name=o", "-c", "user.email=o@example.com", "commit", "-qm", "other")
        examples.git(clone, "push", "-q", "origin", "HEAD:main")
    finally:
        hidden.rename(bare)
    result = service.settled(accepted["request_id"])
    assert result["status"] == "rejected"
    assert "taken in Git" in result["problems"][0]["message"]
    assert examples.remote_stores(bare)["raced"]["name"] == "Raced elsewhere"


# --- auth, limits, content -----------------------------------------------------------------------

def test_tokens_401_without_or_unknown_and_403_when_read_only(service: Running) -> None:
    body = examples.store_payload("authz")
    assert service.client.post("/v1/stores", json=body).status_code == 401
    assert service.client.post("/v1/stores", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert service.client.post("/v1/stores", json=body, headers={"Authorization": "Basic x"}).status_code == 401
    denied = service.client.post("/v1/stores", json=body, headers=READ)
    assert denied.status_code == 403
    assert service.client.delete("/v1/stores/acme-outdoor", headers=READ).status_code == 403
    assert service.client.get("/v1/stores").status_code == 401
    assert service.client.get("/v1/stores", headers=READ).status_code == 200


def test_too_large_is_413_and_wrong_type_is_415(service: Running) -> None:
    big = json.dumps(examples.store_payload("big", name="x" * 70_000)).encode()
    answer = service.client.post("/v1/stores", content=big, headers={**WRITE, "content-type": "application/json"})
    assert answer.status_code == 413
    wrong = service.client.post("/v1/stores", content=b"id=x", headers={**WRITE, "content-type": "text/plain"})
    assert wrong.status_code == 415
    assert "application/json" in wrong.json()["error"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_over_the_rate_is_429_with_retry_after(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    for running in start(tmp_path, rate=0.5, burst=3, **_backend(request, backend)):
        codes = [running.client.get("/v1/stores", headers=READ).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert codes[3:] == [429, 429]
        limited = running.client.get("/v1/stores", headers=READ)
        assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("trusted", [False, True])
def test_the_form_rate_limit_believes_forwarded_addresses_only_from_trusted_proxies(tmp_path: Path,
                                                                                   trusted: bool) -> None:
    """A sidecar on the same host cannot escape the limit by rotating X-Forwarded-For; behind a trusted
    ingress, every user has a bucket of their own instead of sharing the ingress's one."""
    settings = examples.service_settings(tmp_path, rate=0.01, burst=2,
                                         trusted_proxies=("127.0.0.0/8",) if trusted else ())
    with TestClient(app.create_app(settings), client=("127.0.0.1", 40000)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        token = csrf_token(client.get("/").text)

        def post(forwarded: str) -> int:
            answer = client.post("/", data={"id": "x", "csrf_token": token}, headers={"X-Forwarded-For": forwarded})
            return answer.status_code

        rotating = [post(f"198.51.100.{i}") for i in range(4)]
        assert rotating == ([422] * 4 if trusted else [422, 422, 429, 429]), rotating
        same = [post("203.0.113.5") for _ in range(3)]
        assert same == ([422, 422, 429] if trusted else [429, 429, 429]), same


@BOTH
def test_an_idempotency_key_returns_the_first_answer(service: Running) -> None:
    body = examples.store_payload("once-only")
    headers = {**WRITE, "Idempotency-Key": "k-1"}
    first = service.client.post("/v1/stores", json=body, headers=headers)
    second = service.client.post("/v1/stores", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["request_id"] == second.json()["request_id"]
    reused = service.client.post("/v1/stores", json=examples.store_payload("not-once"), headers=headers)
    assert reused.status_code == 409
    service.settled(first.json()["request_id"])
    assert examples.additions(service.bare)["stores/once-only.yaml"] == 1


@BOTH
def test_an_idempotency_key_names_one_request_on_one_target(service: Running) -> None:
    headers = {**WRITE, "Idempotency-Key": "k-suspend"}
    first = service.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=headers)
    assert first.status_code == 202
    # The same key and body on another store: refused, saying so, instead of answering with the first.
    other = service.client.patch("/v1/stores/acme-outdoor", json={"state": "suspended"}, headers=headers)
    assert other.status_code == 422, other.text
    assert "first used for PATCH /v1/stores/bookworm" in other.json()["error"]
    deleted = service.client.delete("/v1/stores/bookworm", headers=headers)
    assert deleted.status_code == 422 and "PATCH /v1/stores/bookworm" in deleted.json()["error"]
    # The first request itself may be retried with its key.
    again = service.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=headers)
    assert again.status_code == 202 and again.json()["request_id"] == first.json()["request_id"]
    service.settled(first.json()["request_id"])
    stores = examples.remote_stores(service.bare)
    assert stores["bookworm"].get("state") == "suspended" and stores["acme-outdoor"].get("state") != "suspended"


def test_an_owner_token_reaches_its_owners_stores_only(tmp_path: Path) -> None:
    owner = {"Authorization": "Bearer jane-secret"}
    tokens = (*examples.service_settings(tmp_path / "t").tokens,
              Token("jane-secret", name="jane", owner="jane@acme-outdoor.example"))
    for running in start(tmp_path, tokens=tokens):
        # acme-outdoor is Jane's (in the example data); bookworm is not.
        assert running.client.get("/v1/stores/acme-outdoor", headers=owner).status_code == 200
        assert [s["id"] for s in running.client.get("/v1/stores", headers=owner).json()["stores"]] == ["acme-outdoor"]
        for answer in (running.client.get("/v1/stores/bookworm", headers=owner),
                       running.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=owner),
                       running.client.delete("/v1/stores/bookworm", headers=owner)):
            assert answer.status_code == 404, answer.text
        foreign = running.client.post("/v1/stores", headers=owner, json=examples.store_payload("janes-other"))
        assert foreign.status_code == 403
        own = running.client.post("/v1/stores", headers=owner, json=examples.store_payload(
            "janes-second", owner={"name": "Jane", "email": "JANE@acme-outdoor.example"}))
        assert own.status_code == 202
        assert running.client.get(f"/v1/requests/{own.json()['request_id']}", headers=owner).status_code == 200
        by_operator = running.create("not-janes")
        assert running.client.get(f"/v1/requests/{by_operator['request_id']}", headers=owner).status_code == 404
        given_away = running.client.patch("/v1/stores/acme-outdoor", headers=owner,
                                          json={"owner": {"email": "someone@else.example"}})
        assert given_away.status_code == 403
        assert running.settled(own.json()["request_id"])["status"] == "committed"
        # Metrics are counts by kind, never by store or owner: nothing of anyone's store shows there.
        metrics = running.client.get("/metrics").text
        assert "storeops_requests_accepted_total" in metrics
        assert not {"acme-outdoor", "bookworm", "janes-second", "not-janes", "@"} & set(
            re.findall(r"[a-z0-9-]+|@", metrics)), metrics


def test_a_stores_history_names_who_asked_from_where_and_the_commit_says_so_without_emails(tmp_path: Path) -> None:
    ci = {"Authorization": "Bearer ci-secret"}
    tokens = (*examples.service_settings(tmp_path / "t").tokens, Token("ci-secret", name="ci-bot"))
    for running in start(tmp_path, tokens=tokens):
        created = running.client.post("/v1/stores", json=examples.store_payload("audited"), headers=ci)
        assert running.settled(created.json()["request_id"])["status"] == "committed"
        changed = running.client.patch("/v1/stores/audited", json={"name": "Audited Shop"}, headers=WRITE)
        assert running.settled(changed.json()["request_id"])["status"] == "committed"
        history = running.client.get("/v1/stores/audited/history", headers=READ).json()
        assert [(r["action"], r["by"], r["source"]) for r in history["requests"]] == [
            ("create", "token:ci-bot", "api"), ("update", auth.client_of(examples.service_settings(
                tmp_path / "u").tokens[0]), "api")]
        assert all(r["commit"] for r in history["requests"])
        message = examples.git(running.bare, "log", "--format=%B", "-2", "main")
        assert "Storeops-Requested-By: token:ci-bot" in message
        assert "@" not in "".join(line for line in message.splitlines() if line.startswith("Storeops-"))
        assert running.client.get("/v1/stores/nope/history", headers=READ).status_code == 404


# --- reading and deleting ------------------------------------------------------------------------

@BOTH
def test_list_and_get_stores_and_requests(service: Running) -> None:
    accepted = service.create("listed")
    service.settled(accepted["request_id"])
    listing = service.client.get("/v1/stores", headers=READ).json()
    ids = {s["id"]: s for s in listing["stores"]}
    assert {"acme-outdoor", "bookworm", "coffee-lab", "nordic-knits", "listed"} <= set(ids)
    assert ids["listed"]["status"] == "committed"
    one = service.client.get("/v1/stores/listed", headers=READ).json()
    assert one["entry"]["owner"]["email"] == "owner@listed.example"
    assert service.client.get("/v1/stores/nope", headers=READ).status_code == 404
    assert service.client.get("/v1/requests/nope", headers=READ).status_code == 404


def test_the_store_list_filters_pages_and_says_one_status(service: Running) -> None:
    service.settled(service.create("zz-medusa", engine="medusa")["request_id"])
    listing = service.client.get("/v1/stores", headers=READ).json()
    by_id = {s["id"]: s for s in listing["stores"]}
    assert by_id["zz-medusa"]["engine"] == "medusa" and by_id["zz-medusa"]["status"] == "committed"
    assert by_id["zz-medusa"]["created"] and by_id["acme-outdoor"]["created"] is None  # came in through Git
    assert by_id["acme-outdoor"]["owner"] == "jane@acme-outdoor.example"
    medusa = service.client.get("/v1/stores?engine=medusa", headers=READ).json()["stores"]
    assert {s["id"] for s in medusa} == {"bookworm", "coffee-lab", "zz-medusa"}
    assert [s["id"] for s in service.client.get("/v1/stores?cluster=prod", headers=READ).json()["stores"]] == [
        "coffee-lab", "nordic-knits"]
    first = service.client.get("/v1/stores?limit=2", headers=READ).json()
    second = service.client.get(f"/v1/stores?limit=2&after={first['next']}", headers=READ).json()
    assert [s["id"] for s in first["stores"] + second["stores"]] == sorted(by_id)[:4]
    assert service.client.get("/v1/stores?colour=red", headers=READ).status_code == 400
    assert service.client.get("/v1/stores?limit=0", headers=READ).status_code == 400
    # A store on its way has that status in the list and in its record, one answer to one question.
    suspended = service.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=WRITE)
    record = service.client.get("/v1/stores/bookworm", headers=READ).json()
    assert record["status"] in ("requested", "committed") and record["deployment"] is None
    service.settled(suspended.json()["request_id"])


@BOTH
def test_delete_removes_the_entry_and_its_rendered_files(service: Running) -> None:
    answer = service.client.delete("/v1/stores/bookworm", headers=WRITE)
    assert answer.status_code == 202
    again = service.client.delete("/v1/stores/bookworm", headers=WRITE)
    assert again.status_code in (404, 409)  # already being deleted (409), or already gone (404)
    assert service.settled(answer.json()["request_id"])["status"] == "committed"
    assert "bookworm" not in examples.remote_stores(service.bare)
    tree = examples.git(service.bare, "ls-tree", "-r", "--name-only", "main")
    assert "rendered/local/apps/bookworm.yaml" not in tree
    assert service.client.delete("/v1/stores/bookworm", headers=WRITE).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_mass_delete_guard_counts_a_window_across_requests_and_restarts(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    settings = examples.service_settings(tmp_path, capacity=20, **_backend(request, backend))
    for running in start(tmp_path, settings=settings):
        for i in range(6):
            running.settled(running.create(f"fleet-{i}")["request_id"])
        # Eight stores on cluster local, share 0.25: two may go within the window, one at a time or not.
        for store_id in ("fleet-0", "fleet-1"):
            gone = running.client.delete(f"/v1/stores/{store_id}", headers=WRITE)
            assert gone.status_code == 202
            assert running.settled(gone.json()["request_id"])["status"] == "committed"
        third = running.client.delete("/v1/stores/fleet-2", headers=WRITE)
        assert third.status_code == 409
        assert "2 stores of cluster 'local' were removed in the last 3600 s (limit 2)" in third.json()["error"]
        # Another cluster has its own count.
        assert running.client.delete("/v1/stores/coffee-lab", headers=WRITE).status_code == 202
    # The window is in the database: a restart does not reset it.
    for running in start(tmp_path, settings=settings):
        assert running.client.delete("/v1/stores/fleet-2", headers=WRITE).status_code == 409
        reason = {**WRITE, "X-Storeops-Mass-Delete-Reason": "closing the spring pop-up shops (ticket OPS-42)"}
        forced = running.client.delete("/v1/stores/fleet-2", headers=reason)
        assert forced.status_code == 202
        view = running.settled(forced.json()["request_id"])
        assert view["status"] == "committed" and view["mass_delete_reason"].startswith("closing the spring")
        message = examples.git(running.bare, "log", "-1", "--format=%B", "main")
        assert "Mass delete reason: closing the spring pop-up shops (ticket OPS-42)" in message
        assert "fleet-2" not in examples.remote_stores(running.bare)


@BOTH
def test_patch_suspends_a_store_keeping_the_files_comments(service: Running) -> None:
    # A person's comment in the entry survives a change made through the API.
    seeded = examples.git(service.bare, "show", "main:stores/bookworm.yaml")
    assert "# yaml-language-server" in seeded
    patched = service.client.patch("/v1/stores/bookworm", content=json.dumps({"state": "suspended"}),
                                   headers={**WRITE, "Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 202, patched.text
    assert patched.json()["status"] == "requested"
    done = service.settled(patched.json()["request_id"])
    assert done["status"] == "committed" and done["action"] == "update"
    text = examples.git(service.bare, "show", "main:stores/bookworm.yaml")
    assert text == seeded.replace("state: active", "state: suspended")
    values = examples.git(service.bare, "show", "main:rendered/local/values/bookworm.yaml")
    assert "suspended: true" in values
    # Unchanged: a second identical patch is accepted and lands as no change.
    again = service.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=WRITE)
    assert again.status_code == 202
    assert service.settled(again.json()["request_id"])["status"] == "committed"
    assert examples.git(service.bare, "show", "main:stores/bookworm.yaml") == text


def test_patch_answers_for_bad_changes(service: Running) -> None:
    def patch(store_id: str, body: object, **headers: str) -> Any:
        return service.client.patch(f"/v1/stores/{store_id}", content=json.dumps(body),
                                    headers={**WRITE, "Content-Type": "application/json", **headers})

    head = examples.git(service.bare, "rev-parse", "main")
    assert patch("nope", {"state": "suspended"}).status_code == 404
    wrong = patch("bookworm", {"plan": "huge"})
    assert wrong.status_code == 422
    assert wrong.json()["problems"][0]["field"] == "plan"
    renamed = patch("bookworm", {"id": "other"})
    assert renamed.status_code == 422 and renamed.json()["problems"][0]["field"] == "id"
    assert patch("bookworm", {}).status_code == 422
    assert patch("bookworm", ["state"]).status_code == 422
    taken = patch("bookworm", {"domain": "shop.nordicknits.example"})
    assert taken.status_code == 409
    unknown = patch("bookworm", {"colour": "red"})
    assert unknown.status_code == 422 and unknown.json()["problems"][0]["field"] == "colour"
    shrunk = patch("bookworm", {"plan": "small"})  # medium -> small: smaller volumes
    assert shrunk.status_code == 422 and "would shrink the store's volumes" in shrunk.json()["problems"][0]["message"]
    lowered = patch("bookworm", {"adminPasswordRotation": -1})
    assert lowered.status_code == 422 and lowered.json()["problems"][0]["field"] == "adminPasswordRotation"
    assert service.client.patch("/v1/stores/bookworm", content="x", headers={**WRITE, "Content-Type": "text/plain"}
                                ).status_code == 415
    assert service.client.patch("/v1/stores/bookworm", json={"state": "suspended"}, headers=READ).status_code == 403
    # A field set to null is removed (merge patch), here the optional GitHub login.
    removed = patch("acme-outdoor", {"owner": {"github": None}})
    assert removed.status_code == 202
    service.settled(removed.json()["request_id"])
    assert "github" not in examples.remote_stores(service.bare)["acme-outdoor"]["owner"]
    assert examples.git(service.bare, "rev-list", "--count", f"{head.strip()}..main").strip() == "1"


@pytest.mark.parametrize("raw", [b'{"id": 1' + b"0" * 5000 + b"}", b'{"id": NaN}', b'{"id": -Infinity}',
                                 b"[" * 60_000, b"\xff\xfe", b"{", b'{"id": "a"} x'])
def test_every_malformed_body_is_a_400_on_every_json_route(service: Running, raw: bytes) -> None:
    head = examples.git(service.bare, "rev-parse", "main")
    json_headers = {**WRITE, "Content-Type": "application/json"}
    answers = [service.client.post("/v1/stores", content=raw, headers=json_headers),
               service.client.patch("/v1/stores/bookworm", content=raw, headers=json_headers),
               service.client.post("/v1/webhooks/form", content=raw, headers={
                   "Content-Type": "application/json", "X-Storeops-Signature": auth.sign(
                       secret=examples.FORM_SECRET, body=raw)})]
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.status_code, answer.text)
        assert answer.json()["error"].startswith("the body")
    assert examples.git(service.bare, "rev-parse", "main") == head


def test_a_trailing_newline_is_refused_in_every_checked_field(service: Running) -> None:
    head = examples.git(service.bare, "rev-parse", "main")
    for payload in (examples.store_payload("abc\n"), examples.store_payload("abc", domain="abc.example.com\n"),
                    examples.store_payload("abc", owner={"name": "A", "email": "a@b.co\n"})):
        answer = service.client.post("/v1/stores", json=payload, headers=WRITE)
        assert answer.status_code == 422, (payload, answer.text)
    patched = service.client.patch("/v1/stores/bookworm", json={"domain": "books.example.com\n"}, headers=WRITE)
    assert patched.status_code == 422 and patched.json()["problems"][0]["field"] == "domain"
    assert examples.git(service.bare, "rev-parse", "main") == head


def test_a_callback_url_inside_the_platform_is_refused_on_create_and_change(service: Running) -> None:
    head = examples.git(service.bare, "rev-parse", "main")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://2130706433/", "http://kubernetes.default.svc/"):
        created = service.client.post("/v1/stores", json=examples.store_payload("hooked", callbackUrl=url),
                                      headers=WRITE)
        assert created.status_code == 422, created.text
        problem = created.json()["problems"][0]
        assert problem["field"] == "callbackUrl" and "points inside the platform" in problem["message"]
        patched = service.client.patch("/v1/stores/bookworm", json={"callbackUrl": url}, headers=WRITE)
        assert patched.status_code == 422
    assert examples.git(service.bare, "rev-parse", "main") == head
    fine = service.client.patch("/v1/stores/bookworm", json={"callbackUrl": "https://hooks.bookworm.example/x"},
                                headers=WRITE)
    assert fine.status_code == 202


def test_a_per_owner_limit_is_the_same_refusal_on_the_api_as_in_a_pull_request(tmp_path: Path) -> None:
    repo = examples.example_repo(tmp_path / "repo")
    profile = repo / "clusters" / "local.yaml"
    profile.write_text(profile.read_text().replace("  stores: 20\n", "  stores: 20\n  storesPerOwner: 1\n"))
    publishing.seed_remote(tmp_path / "remote.git", repo, "main")
    settings = examples.service_settings(tmp_path / "other")
    settings = replace(settings, git=replace(settings.git, repo=repo, remote=str(tmp_path / "remote.git")))
    for running in start(tmp_path, settings=settings):
        first = running.create("owned-one", owner={"name": "Ann", "email": "ann@owner.example"})
        assert running.settled(first["request_id"])["status"] == "committed"
        second = running.client.post("/v1/stores", headers=WRITE, json=examples.store_payload(
            "owned-two", owner={"name": "Ann", "email": "ANN@owner.example"}))
        assert second.status_code == 422
        problem = second.json()["problems"][0]
        assert problem["message"] == ("ANN@owner.example would have 2 stores on cluster 'local'; "
                                      "each owner may have 1 there")
        other = running.create("owned-three", owner={"name": "Bo", "email": "bo@owner.example"})
        assert running.settled(other["request_id"])["status"] == "committed"


def test_a_review_cluster_gets_a_branch_not_a_commit_on_main(service: Running) -> None:
    accepted = service.create("reviewed-shop", cluster="prod")
    result = service.settled(accepted["request_id"])
    assert result["status"] == "pending-review"
    assert result["mode"] == "review"
    branch = f"storeops/request-{accepted['request_id']}"
    assert result["review_url"].endswith("#" + branch)
    assert "reviewed-shop" in examples.remote_stores(service.bare, branch)
    assert "reviewed-shop" not in examples.remote_stores(service.bare)
    # Still held: nobody else can take the id while the pull request is open.
    assert service.client.post("/v1/stores", json=examples.store_payload("reviewed-shop"), headers=WRITE
                               ).status_code == 409


def test_a_reviewed_cluster_is_reached_only_through_review_and_a_store_keeps_engine_and_cluster(
        service: Running) -> None:
    def patch(store_id: str, body: object) -> Any:
        return service.client.patch(f"/v1/stores/{store_id}", json=body, headers=WRITE)

    head = examples.git(service.bare, "rev-parse", "main").strip()
    # Moving a store off or onto a reviewed cluster, or changing its engine, would delete its data.
    for store_id, body, field in (("coffee-lab", {"cluster": "local"}, "cluster"),
                                  ("bookworm", {"cluster": "prod"}, "cluster"),
                                  ("bookworm", {"engine": "woocommerce"}, "engine")):
        refused = patch(store_id, body)
        assert refused.status_code == 422, (store_id, body, refused.text)
        problems = refused.json()["problems"]
        assert [p["field"] for p in problems] == [field]
        assert "delete the store's namespace and its data" in problems[0]["message"]
    # A change or a delete of a store on a reviewed cluster becomes a pull request.
    resized = patch("coffee-lab", {"plan": "large"})
    deleted = service.client.delete("/v1/stores/nordic-knits", headers=WRITE)
    # A store waiting in review, then changed: the change goes to review too, never to the branch.
    created = service.create("prod-new", cluster="prod")
    assert service.settled(created["request_id"])["status"] == "pending-review"
    suspended = patch("prod-new", {"state": "suspended"})
    for answer in (resized, deleted, suspended):
        assert answer.status_code == 202, answer.text
        assert service.settled(answer.json()["request_id"])["status"] == "pending-review"
    # A direct change of another store lands alone.
    direct = patch("bookworm", {"state": "suspended"})
    assert service.settled(direct.json()["request_id"])["status"] == "committed"
    on_main = examples.remote_stores(service.bare)
    assert on_main["coffee-lab"]["plan"] == "small" and "nordic-knits" in on_main and "prod-new" not in on_main
    assert on_main["bookworm"]["state"] == "suspended"
    touched = examples.git(service.bare, "diff", "--name-only", head, "main").split()
    assert touched and all("bookworm" in path for path in touched), touched


# --- the form-service webhook --------------------------------------------------------------------

def test_form_webhook_maps_fields_and_checks_the_signature(tmp_path: Path) -> None:
    mapping = {"answers.slug": "id", "answers.title": "name", "answers.software": "engine", "tier": "plan",
               "where": "cluster", "contact.name": "owner.name", "contact.email": "owner.email"}
    for running in start(tmp_path, form_fields=mapping):
        delivery = {"answers": {"slug": "form-shop", "title": "Form Shop", "software": "medusa"}, "tier": "small",
                    "where": "local", "contact": {"name": "Ann", "email": "ann@example.com"}, "meta": {"x": 1}}
        body = json.dumps(delivery).encode()
        headers = {"content-type": "application/json", "X-Delivery-Id": "d-1",
                   "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=body)}
        first = running.client.post("/v1/webhooks/form", content=body, headers=headers)
        assert first.status_code == 202, first.text
        redelivered = running.client.post("/v1/webhooks/form", content=body, headers=headers)
        assert redelivered.json()["request_id"] == first.json()["request_id"]
        assert running.settled(first.json()["request_id"])["status"] == "committed"
        assert examples.remote_stores(running.bare)["form-shop"]["owner"]["email"] == "ann@example.com"

        unsigned = running.client.post("/v1/webhooks/form", content=body, headers={"content-type": "application/json"})
        assert unsigned.status_code == 401
        forged = running.client.post("/v1/webhooks/form", content=body + b" ",
                                     headers={**headers, "X-Delivery-Id": "d-2"})
        assert forged.status_code == 403
        bad = json.dumps({**delivery, "answers": {"slug": "Bad Slug"}}).encode()
        signed = {"content-type": "application/json",
                  "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=bad)}
        invalid = running.client.post("/v1/webhooks/form", content=bad, headers=signed)
        assert invalid.status_code == 422
        assert {"id", "name", "engine"} <= {p["field"] for p in invalid.json()["problems"]}


def test_a_replayed_form_delivery_never_recreates_a_deleted_store(tmp_path: Path) -> None:
    for running in start(tmp_path):
        body = json.dumps(examples.store_payload("replayed") | {"owner_name": "Ann",
                                                                 "owner_email": "ann@example.com"}).encode()
        signed = {"content-type": "application/json", "X-Delivery-Id": "d-1",
                  "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=body)}
        first = running.client.post("/v1/webhooks/form", content=body, headers=signed)
        assert first.status_code == 202 and running.settled(first.json()["request_id"])["status"] == "committed"
        gone = running.client.delete("/v1/stores/replayed", headers=WRITE)
        assert running.settled(gone.json()["request_id"])["status"] == "committed"
        # The captured delivery, sent again with another (unsigned) delivery id header.
        replay = running.client.post("/v1/webhooks/form", content=body, headers={**signed, "X-Delivery-Id": "d-2"})
        assert replay.status_code == 202 and replay.json()["request_id"] == first.json()["request_id"]
        time.sleep(0.3)
        assert "replayed" not in examples.remote_stores(running.bare)


def test_a_form_delivery_outside_its_submission_window_is_refused(tmp_path: Path) -> None:
    for running in start(tmp_path, form_submitted_at="meta.submitted_at", form_max_age=600):
        def deliver(store_id: str, submitted: object, running: Running = running) -> Any:
            data: dict[str, Any] = {**examples.store_payload(store_id), "owner_name": "Ann",
                                    "owner_email": "ann@example.com"}
            if submitted is not None:
                data["meta"] = {"submitted_at": submitted}
            body = json.dumps(data).encode()
            return running.client.post("/v1/webhooks/form", content=body, headers={
                "content-type": "application/json",
                "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=body)})

        now = time.time()
        assert deliver("fresh", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))).status_code == 202
        assert deliver("fresh-epoch", now - 30).status_code == 202
        for store_id, submitted, words in (("stale", now - 3600, "outside the 600 s window"),
                                            ("future", now + 3600, "outside the 600 s window"),
                                            ("undated", None, "no submission time"),
                                            ("garbled", "yesterday", "is not a time")):
            answer = deliver(store_id, submitted)
            assert answer.status_code == 400 and words in answer.json()["error"], (store_id, answer.text)


def test_form_webhook_takes_urlencoded_and_is_off_without_a_secret(tmp_path: Path) -> None:
    for running in start(tmp_path):
        body = (b"id=url-shop&name=Url+Shop&engine=woocommerce&plan=small&cluster=local"
                b"&owner_name=Bo&owner_email=bo%40example.com")
        headers = {"content-type": "application/x-www-form-urlencoded",
                   "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=body)}
        answer = running.client.post("/v1/webhooks/form", content=body, headers=headers)
        assert answer.status_code == 202
        xml = running.client.post("/v1/webhooks/form", content=b"<x/>", headers={
            "content-type": "text/xml", "X-Storeops-Signature": auth.sign(secret=examples.FORM_SECRET, body=b"<x/>")})
        assert xml.status_code == 415


def test_form_webhook_is_403_when_no_secret_is_configured(tmp_path: Path) -> None:
    for running in start(tmp_path, form_secret=""):
        answer = running.client.post("/v1/webhooks/form", content=b"{}", headers={
            "content-type": "application/json", "X-Storeops-Signature": auth.sign(secret="", body=b"{}")})
        assert answer.status_code == 403


# --- the request page -----------------------------------------------------------------------------

def test_the_form_labels_its_fields_shows_errors_beside_them_and_then_a_status_page(service: Running) -> None:
    page = service.client.get("/")
    assert page.status_code == 200
    for name in ("id", "name", "engine", "plan", "cluster", "owner_name", "owner_email"):
        assert f'<label for="{name}">' in page.text
        assert f'id="{name}" name="{name}"' in page.text
    assert '<option value="local">' in page.text
    form = {"id": "Nope!", "name": "Shop", "engine": "woocommerce", "plan": "small", "cluster": "local",
            "owner_name": "Ann", "owner_email": "ann@example.com", "owner_github": "", "domain": "",
            "csrf_token": csrf_token(page.text)}
    bad = service.client.post("/", data=form)
    assert bad.status_code == 422
    assert 'id="id-error"' in bad.text and 'aria-invalid="true" aria-describedby="id-error"' in bad.text
    assert 'value="Nope!"' in bad.text
    good = service.client.post("/", data={**form, "id": "form-page-shop"}, follow_redirects=False)
    assert good.status_code == 303
    status_page = service.client.get(good.headers["location"])
    assert status_page.status_code == 200
    assert "form-page-shop" in status_page.text
    wait_for(lambda: '<dd id="status">committed</dd>' in service.client.get(good.headers["location"]).text)
    assert "form-page-shop" in examples.remote_stores(service.bare)


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the form carries its CSRF token"
    return found[1]


def test_the_form_refuses_posts_without_its_token_or_from_another_site(service: Running) -> None:
    page = service.client.get("/")
    token = csrf_token(page.text)
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]
    form = {"id": "csrf-shop", "name": "Shop", "engine": "woocommerce", "plan": "small", "cluster": "local",
            "owner_name": "Ann", "owner_email": "ann@example.com"}
    head = examples.git(service.bare, "rev-parse", "main")
    refused = [
        service.client.post("/", data=form),  # no token at all
        service.client.post("/", data={**form, "csrf_token": "forged.0000"}),  # not the cookie's
        service.client.post("/", data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}),
        service.client.post("/", data={**form, "csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}),
    ]
    stranger = TestClient(service.client.app)  # another browser (no lifespan of its own): no cookie
    refused.append(stranger.post("/", data={**form, "csrf_token": token}))
    assert [r.status_code for r in refused] == [403] * 5, [r.text for r in refused]
    assert examples.git(service.bare, "rev-parse", "main") == head
    same_site = service.client.post("/", data={**form, "csrf_token": token}, follow_redirects=False,
                                    headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 303


def test_every_answer_carries_the_security_headers(service: Running) -> None:
    for path in ("/", "/healthz", "/v1/stores", "/openapi.json", "/requests/nope"):
        answer = service.client.get(path, headers=READ)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
    page = service.client.get("/").headers["content-security-policy"]
    assert "style-src 'sha256-" in page and "script-src" not in page and "default-src 'none'" in page


def test_the_form_is_off_by_default_on_a_non_local_address(tmp_path: Path) -> None:
    local = examples.service_settings(tmp_path / "a")
    exposed = examples.service_settings(tmp_path / "b", host="0.0.0.0")
    chosen = examples.service_settings(tmp_path / "c", host="0.0.0.0", form_page=True)
    assert local.form_page_on and not exposed.form_page_on and chosen.form_page_on
    assert ServiceSettings.from_env({"STOREOPS_HOST": "10.1.2.3"}).form_page_on is False
    assert ServiceSettings.from_env({"STOREOPS_HOST": "10.1.2.3", "STOREOPS_FORM_PAGE": "on"}).form_page_on
    for running in start(tmp_path / "b", settings=exposed):
        assert running.client.get("/").status_code == 404


# --- operations -----------------------------------------------------------------------------------

def test_health_ready_metrics_and_openapi(service: Running) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["git_loaded"] is True
    assert ready["role"] == "single", "one replica, no election: it is its own writer"
    service.settled(service.create("metered")["request_id"])
    text = service.client.get("/metrics").text
    assert 'storeops_http_requests_total{code="202",route="create_store"} 1' in text
    assert 'storeops_requests_accepted_total{action="create",source="api"} 1' in text
    assert "storeops_pushes_total 1" in text
    assert 'storeops_queue_requests{status="committed"} 1' in text
    spec = service.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = {"/v1/stores", "/v1/stores/{store_id}", "/v1/requests/{request_id}", "/v1/webhooks/form", "/healthz"}
    assert paths <= set(spec["paths"])
    assert spec["components"]["schemas"]["Store"]["properties"]["id"]["pattern"]
    callback = spec["webhooks"]["storeStatus"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert callback == {"$ref": "#/components/schemas/StatusCallback"}
    assert "event_id" in spec["components"]["schemas"]["StatusCallback"]["required"]
