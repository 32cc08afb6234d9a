"""GitHub end to end: the real app, a real bare remote, PyGithub over HTTP to the local GitHub.

issue form -> pull request (branch pushed to the remote) -> validation status and comment ->
merge -> push event -> published commit in the remote; plus the answers for bad, ignored,
malformed and replayed deliveries.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from generator import constants
from harness import examples
from tests.github import payloads
from tests.github.fake import FakeGitHub
from tests.integration.intake.test_api import wait_for
from webhook import app
from webhook.github import deliveries, hooks, issueforms
from webhook.github.client import GitHub, GitHubSettings
from webhook.github.deploys import DeploySink
from webhook.settings import ServiceSettings
from webhook.status.ledger import Event

TOKEN = "ghp_test_token"
REPOSITORY = "acme/gitops"


@dataclass
class World:
    client: TestClient
    fake: FakeGitHub
    settings: ServiceSettings
    github: GitHubSettings

    @property
    def bare(self) -> Path:
        return Path(self.settings.git.remote)

    def git(self, *args: str) -> str:
        return examples.git(self.bare, *args).strip()

    def deliver(self, event: str, payload: dict[str, Any], **kwargs: Any) -> Any:
        return payloads.deliver(self.client, event, payload, **kwargs)

    def comments(self, number: int) -> list[dict[str, Any]]:
        return self.fake.comments_on(number)

    def storeops_comment(self, number: int, marker: str) -> str:
        found = [c["body"] for c in self.comments(number) if marker in c["body"]]
        assert len(found) <= 1, found
        return found[0] if found else ""


def github_settings(fake: FakeGitHub, **overrides: Any) -> GitHubSettings:
    base: dict[str, Any] = {"webhook_secret": payloads.SECRET, "repository": REPOSITORY, "api_url": fake.url,
                            "token": TOKEN, "seconds_between_writes": 0.0, "retries": 3, "max_wait": 10.0}
    return GitHubSettings(**{**base, **overrides})


def running(settings: ServiceSettings, fake: FakeGitHub, github: GitHubSettings) -> Iterator[World]:
    with TestClient(app.create_app(settings, github=github)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield World(client, fake, settings, github)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = examples.service_settings(tmp_path)
    fake = FakeGitHub(bare=Path(settings.git.remote), repository=REPOSITORY, token=TOKEN).start()
    try:
        yield from running(settings, fake, github_settings(fake))
    finally:
        fake.stop()


def form(**answers: str) -> str:
    base = {"Store ID": "trail-mix", "Store name": "Trail Mix Snacks", "Engine": "woocommerce", "Plan": "small",
            "Cluster": "local", "Owner name": "Jane Doe", "Owner email": "jane@trail-mix.example",
            "Owner GitHub login": "", "Custom domain": ""}
    return issueforms.render({**base, **answers})


def branch_file(world: World, branch: str, path: str) -> str:
    return world.git("show", f"refs/heads/{branch}:{path}")


def test_issue_form_to_published_store(world: World) -> None:
    fake = world.fake
    issue = fake.open_issue(title="New store: trail-mix", body=form(), labels=["new-store"])
    answer = world.deliver("issues", payloads.issues(fake, issue.number, "opened"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"

    # A pull request from a branch holding stores/trail-mix.yaml, pushed to the real remote.
    branch = f"storeops/issue-{issue.number}"
    pull = wait_for(lambda: next((p for p in fake.pulls.values() if p.head == branch), None))
    entry = branch_file(world, branch, "stores/trail-mix.yaml")
    assert "id: trail-mix\n" in entry and "name: Trail Mix Snacks\n" in entry
    assert f"Closes #{issue.number}" in pull.body
    issue_comment = wait_for(lambda: world.storeops_comment(issue.number, "storeops:issue"))
    assert f"{fake.html}/pull/{pull.number}" in issue_comment

    # GitHub tells storeops about the pull request it opened: validation status and the plan comment.
    head = world.git("rev-parse", f"refs/heads/{branch}")
    assert world.deliver("pull_request", payloads.pull_request(fake, pull.number, "opened")).status_code == 202
    status = wait_for(lambda: fake.statuses_for(head))
    assert [s["state"] for s in status][-1] == "success"
    plan = wait_for(lambda: world.storeops_comment(pull.number, "storeops:validate"))
    assert "**Added**: `trail-mix`" in plan and "rendered/local/apps/trail-mix.yaml" in plan

    # Editing the issue updates the same pull request (a new commit on its branch, no second PR).
    fake.edit_issue(issue.number, body=form(**{"Store name": "Trail Mix & Co", "Plan": "medium"}))
    assert world.deliver("issues", payloads.issues(fake, issue.number, "edited")).status_code == 202
    wait_for(lambda: "name: Trail Mix & Co\n" in branch_file(world, branch, "stores/trail-mix.yaml"))
    assert len(fake.pulls) == 1
    new_head = world.git("rev-parse", f"refs/heads/{branch}")
    assert new_head != head
    assert world.deliver("pull_request", payloads.pull_request(fake, pull.number, "synchronize")).status_code == 202
    assert wait_for(lambda: fake.statuses_for(new_head))[-1]["state"] == "success"
    wait_for(lambda: new_head[:12] in world.storeops_comment(pull.number, "storeops:validate"))
    assert len([c for c in world.comments(pull.number) if "storeops:validate" in c["body"]]) == 1

    # Merge -> push event -> storeops renders and pushes one commit carrying the trailer.
    before = world.git("rev-parse", "refs/heads/main")
    fake.merge_pull(n=str(pull.number), body={})
    merged = world.git("rev-parse", "refs/heads/main")
    assert fake.issues[issue.number].state == "closed"
    answer = world.deliver("push", payloads.push(fake, before=before, after=merged))
    assert answer.status_code == 202, answer.text
    published = wait_for(lambda: (sha := world.git("rev-parse", "refs/heads/main")) != merged and sha)
    message = world.git("log", "-1", "--format=%B", published)
    assert f"{constants.COMMIT_TRAILER}: {merged}" in message
    assert world.git("rev-parse", f"{published}^") == merged
    app_file = world.git("show", f"{published}:rendered/local/apps/trail-mix.yaml")
    assert "name: store-trail-mix" in app_file

    # Its own commit comes back as a push event: answered, and not published again.
    answer = world.deliver("push", payloads.push(fake, before=merged, after=published))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert "own" in answer.json()["reason"]
    time.sleep(0.3)
    assert world.git("rev-parse", "refs/heads/main") == published


def open_pull(world: World, tmp_path: Path, branch: str, edit: Callable[[Path], object]) -> tuple[int, str]:
    """A person's pull request: clone, ``edit`` the checkout, push ``branch``, open it on GitHub."""
    clone = tmp_path / "person"
    examples.git(tmp_path, "clone", "-q", str(world.bare), str(clone))
    edit(clone)
    env = {"GIT_AUTHOR_NAME": "Sam", "GIT_AUTHOR_EMAIL": "sam@x.test", "GIT_COMMITTER_NAME": "Sam",
           "GIT_COMMITTER_EMAIL": "sam@x.test", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}
    subprocess.run(["git", "-C", str(clone), "checkout", "-qb", branch], check=True, env=env)
    subprocess.run(["git", "-C", str(clone), "add", "-A", "stores", "clusters"], check=True, env=env)
    subprocess.run(["git", "-C", str(clone), "commit", "-qm", branch], check=True, env=env)
    subprocess.run(["git", "-C", str(clone), "push", "-q", "origin", branch], check=True, env=env)
    _, created = world.fake.create_pull(body={"title": branch, "head": branch, "base": "main"})
    return int(created["number"]), str(created["head"]["sha"])


def test_bad_entry_gets_failure_status_and_problems(world: World, tmp_path: Path) -> None:
    fake = world.fake
    entry = "id: bad-plan\nname: Bad Plan\nengine: woocommerce\nplan: huge\ncluster: local\n" \
            "owner:\n  name: Sam\n  email: sam@bad.example\n"
    number, head = open_pull(world, tmp_path, "add-bad-plan",
                             lambda clone: (clone / "stores" / "bad-plan.yaml").write_text(entry))

    assert world.deliver("pull_request", payloads.pull_request(fake, number, "opened")).status_code == 202
    status = wait_for(lambda: fake.statuses_for(head))[-1]
    assert status["state"] == "failure"
    assert status["description"].startswith("1 problem: stores/bad-plan.yaml:4: plan:")
    comment = wait_for(lambda: world.storeops_comment(number, "storeops:validate"))
    assert re.search(r"^stores/bad-plan\.yaml:4: plan: .*huge", comment, re.MULTILINE), comment


def test_a_pull_request_moving_a_store_to_another_cluster_fails(world: World, tmp_path: Path) -> None:
    def move(clone: Path) -> None:
        entry = clone / "stores" / "coffee-lab.yaml"
        entry.write_text(entry.read_text().replace("cluster: prod", "cluster: local"))

    number, head = open_pull(world, tmp_path, "move-coffee-lab", move)
    assert world.deliver("pull_request", payloads.pull_request(world.fake, number, "opened")).status_code == 202
    status = wait_for(lambda: world.fake.statuses_for(head))[-1]
    assert status["state"] == "failure"
    assert "stores/coffee-lab.yaml:6: cluster: cannot change from 'prod' to 'local'" in status["description"]


def test_a_pull_request_past_the_per_owner_limit_fails_with_the_same_words(world: World, tmp_path: Path) -> None:
    def second_store_for_the_same_owner(clone: Path) -> None:
        profile = clone / "clusters" / "local.yaml"
        profile.write_text(profile.read_text().replace("  stores: 20\n", "  stores: 20\n  storesPerOwner: 1\n"))
        entry = (clone / "stores" / "acme-outdoor.yaml").read_text()
        (clone / "stores" / "acme-second.yaml").write_text(entry.replace("id: acme-outdoor", "id: acme-second"))

    number, head = open_pull(world, tmp_path, "acme-second", second_store_for_the_same_owner)
    assert world.deliver("pull_request", payloads.pull_request(world.fake, number, "opened")).status_code == 202
    status = wait_for(lambda: world.fake.statuses_for(head))[-1]
    assert status["state"] == "failure"
    comment = wait_for(lambda: world.storeops_comment(number, "storeops:validate"))
    assert "stores/acme-second.yaml:9: owner.email: jane@acme-outdoor.example would have 2 stores on cluster " \
           "'local'; each owner may have 1 there" in comment, comment


def test_invalid_issue_form_gets_problems_and_no_pull_request(world: World) -> None:
    fake = world.fake
    issue = fake.open_issue(title="New store", body=form(**{"Owner email": "not-an-email", "Cluster": "mars"}),
                            labels=["new-store"])
    assert world.deliver("issues", payloads.issues(fake, issue.number, "opened")).status_code == 202
    comment = wait_for(lambda: world.storeops_comment(issue.number, "storeops:issue"))
    assert re.search(r"^stores/trail-mix\.yaml:\d+: owner\.email: ", comment, re.MULTILINE), comment
    assert re.search(r"^stores/trail-mix\.yaml:\d+: cluster: ", comment, re.MULTILINE), comment
    assert not fake.pulls


@pytest.mark.parametrize("store_id", ["1shop", "shop-", "a" * 48])
def test_an_issue_form_id_the_schema_refuses_is_refused(world: World, store_id: str) -> None:
    """The one store-id rule: a digit first, a '-' last or more than 47 characters were once let through here."""
    fake = world.fake
    issue = fake.open_issue(title="New store", body=form(**{"Store ID": store_id}), labels=["new-store"])
    assert world.deliver("issues", payloads.issues(fake, issue.number, "opened")).status_code == 202
    comment = wait_for(lambda: world.storeops_comment(issue.number, "storeops:issue"))
    assert f"issue #{issue.number}: id: 'Store ID' must be a lower-case DNS label starting with a letter, " \
           "at most 47 characters" in comment, comment
    assert not fake.pulls


def test_ignored_events_get_2xx_with_a_reason(world: World) -> None:
    fake = world.fake
    answer = world.deliver("ping", payloads.ping(fake))
    assert answer.status_code == 200 and answer.json()["status"] == "pong"
    answer = world.deliver("star", {"action": "created", "repository": fake.repo(), "sender": fake.user("x")})
    assert answer.status_code == 200
    assert answer.json() | {"delivery": ""} == {"delivery": "", "event": "star", "action": "created",
                                               "status": "ignored",
                                               "reason": "storeops does not act on star events"}
    main = world.git("rev-parse", "refs/heads/main")
    other = world.deliver("push", {**payloads.push(fake, before=main, after=main), "ref": "refs/heads/feature"})
    assert other.status_code == 200 and "publishes main only" in other.json()["reason"]
    chat = fake.open_issue(title="Question", body="How do I get a store?")
    answer = world.deliver("issues", payloads.issues(fake, chat.number, "opened"))
    assert answer.status_code == 200 and "not a new-store request" in answer.json()["reason"]
    time.sleep(0.2)
    assert not fake.comments and not fake.pulls


def test_signature_and_malformed_deliveries_get_4xx(world: World) -> None:
    fake = world.fake
    body = b'{"zen": "x"}'
    unsigned = {k: v for k, v in payloads.headers("ping", body).items() if k != "X-Hub-Signature-256"}
    assert world.client.post("/v1/webhooks/github", content=body, headers=unsigned).status_code == 401
    wrong = payloads.headers("ping", body, secret="not-the-secret")
    assert world.client.post("/v1/webhooks/github", content=body, headers=wrong).status_code == 401
    for raw, event in ((b"{not json", "push"), (b"\xff\xfe", "push"), (b"[1, 2]", "push"), (b'"x"', "issues"),
                       (b'{"action": "opened"}', "pull_request"),
                       (b'{"action": "opened", "repository": {"full_name": "acme/gitops"}, "pull_request": 7}',
                        "pull_request"),
                       (b'{"repository": {"full_name": "acme/gitops"}, "ref": 1, "after": "x", "commits": []}',
                        "push"),
                       (b'{"action": 3}', "issues"), (b'{"n": 1' + b"9" * 5000 + b"}", "push"),
                       (b'{"n": NaN}', "push")):
        answer = world.client.post("/v1/webhooks/github", content=raw, headers=payloads.headers(event, raw))
        assert 400 <= answer.status_code < 500, (raw, answer.status_code, answer.text)
    no_id = payloads.headers("ping", body)
    del no_id["X-GitHub-Delivery"]
    assert world.client.post("/v1/webhooks/github", content=body, headers=no_id).status_code == 400
    assert not fake.writes()


def test_bodies_are_refused_early_and_only_a_few_are_read_at_once(world: World) -> None:
    service = world.client.app.state.github  # type: ignore[attr-defined]
    headers = payloads.headers("ping", b"{}")
    # Declared too large: 413 before a byte is read. Unsigned: 401 before a byte is read.
    huge = {**headers, "Content-Length": str(service.settings.max_body_bytes + 1)}
    assert world.client.post("/v1/webhooks/github", content=b"{}", headers=huge).status_code == 413
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert world.client.post("/v1/webhooks/github", content=b"{}", headers=unsigned).status_code == 401
    # Every reading slot taken: a delivery waits its turn, then gets 503 (and GitHub can redeliver).
    service.bodies = anyio.CapacityLimiter(1)
    holder = object()
    world.client.portal.call(service.bodies.acquire_on_behalf_of, holder)  # type: ignore[union-attr]
    started = time.monotonic()
    busy = world.client.post("/v1/webhooks/github", content=b"{}", headers=headers)
    assert busy.status_code == 503 and time.monotonic() - started >= hooks.BODY_WAIT - 0.5
    world.client.portal.call(service.bodies.release_on_behalf_of, holder)  # type: ignore[union-attr]
    assert world.client.post("/v1/webhooks/github", content=b"{}", headers=headers).status_code == 200


def test_replayed_delivery_is_acted_on_once_across_a_restart(tmp_path: Path) -> None:
    settings = examples.service_settings(tmp_path)
    fake = FakeGitHub(bare=Path(settings.git.remote), repository=REPOSITORY, token=TOKEN).start()
    try:
        github = github_settings(fake)
        examples.git(Path(settings.git.remote), "branch", "change", "main")
        _, created = fake.create_pull(body={"title": "No-op", "head": "change", "base": "main"})
        payload = payloads.pull_request(fake, created["number"], "opened")
        world = running(settings, fake, github)
        first = next(world)
        assert first.deliver("pull_request", payload, delivery="d-1").json()["status"] == "queued"
        again = first.deliver("pull_request", payload, delivery="d-1")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        wait_for(lambda: first.client.app.state.github.deliveries.get("d-1").status == "done")  # type: ignore
        with pytest.raises(StopIteration):
            next(world)
        # A new process on the same state directory still knows the delivery.
        restarted = running(settings, fake, github)
        second = next(restarted)
        replay = second.deliver("pull_request", payload, delivery="d-1")
        assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
        with pytest.raises(StopIteration):
            next(restarted)
    finally:
        fake.stop()


def test_review_mode_opens_a_pull_request_on_github(world: World) -> None:
    """A request for a cluster that needs review becomes a branch and a pull request linking back."""
    answer = world.client.post("/v1/stores", json=examples.store_payload("review-me", cluster="prod"),
                               headers={"Authorization": f"Bearer {examples.WRITE_TOKEN}"})
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    pull = wait_for(lambda: next(iter(world.fake.pulls.values()), None))
    assert pull.head == f"storeops/request-{request_id}" and pull.base == "main"
    assert request_id in pull.body
    assert "id: review-me" in branch_file(world, pull.head, "stores/review-me.yaml")
    view = wait_for(lambda: (v := world.client.get(f"/v1/requests/{request_id}", headers={
        "Authorization": f"Bearer {examples.READ_TOKEN}"}).json())["status"] == "pending-review" and v)
    assert view["review_url"] == f"{world.fake.html}/pull/{pull.number}"


def test_deploy_reports_go_on_the_commit_and_the_requesting_pull_request(world: World) -> None:
    """The GitHub status sink: storeops/deploy status, and a comment on the store's pull request."""
    fake = world.fake
    issue = fake.open_issue(title="New store: trail-mix", body=form(), labels=["new-store"])
    world.deliver("issues", payloads.issues(fake, issue.number, "opened"))
    pull = wait_for(lambda: next(iter(fake.pulls.values()), None))
    fake.merge_pull(n=str(pull.number), body={})
    merged = world.git("rev-parse", "refs/heads/main")
    sink = DeploySink(hub=GitHub(settings=world.github), branch="main")
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    sink.deliver(Event(1, "trail-mix", "ready", "", "https://trail-mix.stores.localtest.me", "", merged, at), "")
    sink.update_comment(store_id="trail-mix", body="Store `trail-mix` is ready: https://trail-mix.example/")
    deploy = fake.statuses_for(merged, context="storeops/deploy")
    assert [(s["state"], s["target_url"]) for s in deploy] == [("success", "https://trail-mix.stores.localtest.me")]
    comments = [c["body"] for c in world.comments(pull.number) if "storeops:deploy:trail-mix" in c["body"]]
    assert comments == ["<!-- storeops:deploy:trail-mix -->\nStore `trail-mix` is ready: https://trail-mix.example/"]
    # A store that came in by a direct commit has no pull request: nothing to comment on, no error.
    sink.update_comment(store_id="acme-outdoor", body="ready")
    assert not [c for c in fake.comments.values() if "acme-outdoor" in c["body"]]


def test_the_answer_comes_before_slow_work_and_github_back_off(world: World) -> None:
    """GitHub asks storeops to slow down (429 + Retry-After): the delivery is answered at once, the status follows."""
    fake = world.fake
    examples.git(world.bare, "branch", "slow", "main")
    _, created = fake.create_pull(body={"title": "Slow", "head": "slow", "base": "main"})
    fake.fail_next("POST", r"/statuses/", 429, headers={"Retry-After": "2"})
    # The pull request touches no inputs yet; give it one so there is something to report.
    clone = world.settings.git.state_dir.parent / "slow-clone"
    examples.git(world.bare.parent, "clone", "-q", "-b", "slow", str(world.bare), str(clone))
    (clone / "stores" / "bookworm.yaml").write_text(
        (clone / "stores" / "bookworm.yaml").read_text().replace("Bookworm Books", "Bookworm"))
    examples.git(clone, "-c", "user.name=t", "-c", "user.email=t@x.test", "commit", "-qam", "Rename bookworm")
    examples.git(clone, "push", "-q", "origin", "slow")
    head = world.git("rev-parse", "refs/heads/slow")
    started = time.monotonic()
    answer = world.deliver("pull_request", payloads.pull_request(fake, created["number"], "synchronize"))
    answered = time.monotonic() - started
    assert answer.status_code == 202 and answered < 1.0
    assert not fake.statuses_for(head)
    status = wait_for(lambda: fake.statuses_for(head))
    assert status[-1]["state"] == "success" and time.monotonic() - started >= 2.0
    assert [r.status for r in fake.requests if "/statuses/" in r.path] == [429, 201]


def test_deliveries_recorded_before_a_crash_are_worked_after_the_restart(tmp_path: Path) -> None:
    settings = examples.service_settings(tmp_path)
    fake = FakeGitHub(bare=Path(settings.git.remote), repository=REPOSITORY, token=TOKEN).start()
    try:
        issue = fake.open_issue(title="New store", body=form(), labels=["new-store"])
        # The previous process answered 202 (the row is on disk) and died before doing the work.
        log = deliveries.Deliveries(path=settings.git.state_dir / hooks.DELIVERIES_FILE)
        body = json.dumps(payloads.issues(fake, issue.number, "opened")).encode()
        assert log.record(delivery_id="before-crash", event="issues", action="opened", payload=body)
        log.close()
        world = running(settings, fake, github_settings(fake))
        started = next(world)
        pull = wait_for(lambda: next(iter(fake.pulls.values()), None))
        assert pull.head == f"storeops/issue-{issue.number}"
        state = wait_for(lambda: (d := started.client.app.state.github.deliveries.get("before-crash"))  # type: ignore
                         and d.status == "done" and d)
        assert "pull request #" in state.outcome
        with pytest.raises(StopIteration):
            next(world)
    finally:
        fake.stop()


def test_editing_the_store_id_moves_the_entry_on_the_same_pull_request(world: World) -> None:
    fake = world.fake
    issue = fake.open_issue(title="New store", body=form(), labels=["new-store"])
    world.deliver("issues", payloads.issues(fake, issue.number, "opened"))
    pull = wait_for(lambda: next(iter(fake.pulls.values()), None))
    branch = pull.head
    fake.edit_issue(issue.number, body=form(**{"Store ID": "trail-mix-two"}))
    world.deliver("issues", payloads.issues(fake, issue.number, "edited"))
    wait_for(lambda: pull.title == "Add store trail-mix-two")
    files = world.git("ls-tree", "--name-only", f"refs/heads/{branch}", "stores/").split()
    assert "stores/trail-mix-two.yaml" in files and "stores/trail-mix.yaml" not in files
    assert len(fake.pulls) == 1
    wait_for(lambda: "stores/trail-mix-two.yaml" in world.storeops_comment(issue.number, "storeops:issue"))
