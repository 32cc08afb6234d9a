"""Reviews that end, on GitHub: the real app, a real bare remote, PyGithub over HTTP to the local GitHub.

A request for a cluster with ``review: true`` opens a pull request; a person merges or closes it
on GitHub (PyGithub here, as a script or the web page would), GitHub sends the ``pull_request``
``closed`` event, and storeops finishes the request: merged -> ``committed`` at the merge commit,
closed -> ``rejected`` with the pull request named and the id free again; the branch is deleted
through GitHub's API. Without the event, the poll finds the same ends, also across restarts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import github
import pytest

from harness import examples
from tests.github import payloads
from tests.github.fake import FakeGitHub
from tests.integration.github.test_flow import REPOSITORY, TOKEN, World, form, github_settings, running
from tests.integration.intake.test_api import wait_for
from webhook.settings import ServiceSettings

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}

world_running = contextlib.contextmanager(running)


@contextlib.contextmanager
def local_github(settings: ServiceSettings) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(bare=Path(settings.git.remote), repository=REPOSITORY, token=TOKEN).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The app with a poll too slow to matter here: what ends a review in these tests is GitHub's event."""
    settings = examples.service_settings(tmp_path, review_poll_interval=3600.0)
    with local_github(settings) as fake, world_running(settings, fake, github_settings(fake)) as world:
        yield world


def person(fake: FakeGitHub) -> Any:
    """The repository as a person with a token sees it through PyGithub."""
    return github.Github(base_url=fake.url, auth=github.Auth.Token(TOKEN)).get_repo(REPOSITORY)


def request_status(world: World, request_id: str, status: str | None = None) -> dict[str, Any]:
    def current() -> dict[str, Any]:
        answer = world.client.get(f"/v1/requests/{request_id}", headers=READ)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result
    if status is None:
        return current()
    found: dict[str, Any] = wait_for(lambda: (s := current())["status"] == status and s)
    return found


def in_review(world: World, store_id: str) -> tuple[str, int, str]:
    """Request ``store_id`` on the reviewed cluster; its request id, pull request number and branch."""
    answer = world.client.post("/v1/stores", json=examples.store_payload(store_id, cluster="prod"), headers=WRITE)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    branch = f"storeops/request-{request_id}"
    pull = wait_for(lambda: next((p for p in world.fake.pulls.values() if p.head == branch), None))
    waiting = request_status(world, request_id, "pending-review")
    assert waiting["review_url"] == f"{world.fake.html}/pull/{pull.number}"
    assert world.fake.branch_sha(branch)
    return request_id, pull.number, branch


def deletions(fake: FakeGitHub, branch: str) -> list[int]:
    return [r.status for r in fake.requests if r.method == "DELETE" and r.path.endswith(f"/git/refs/heads/{branch}")]


def test_a_merged_pull_request_commits_its_request_at_the_merge_commit(world: World) -> None:
    fake = world.fake
    request_id, number, branch = in_review(world, "reviewed-shop")
    assert "reviewed-shop" not in examples.remote_stores(world.bare)

    assert person(fake).get_pull(number).merge().merged
    merge_commit = fake.pulls[number].merge_commit_sha
    assert merge_commit and world.git("rev-parse", "refs/heads/main") == merge_commit
    time.sleep(0.5)
    assert request_status(world, request_id)["status"] == "pending-review"  # nothing polls: the event tells
    answer = world.deliver("pull_request", payloads.pull_request(fake, number, "closed"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["reason"] == f"#{number} merged: finishing storeops's requests on {branch}"

    done = request_status(world, request_id, "committed")
    assert done["commit"] == merge_commit and done["problems"] == []
    assert done["review_url"] == f"{fake.html}/pull/{number}"
    assert examples.remote_stores(world.bare)["reviewed-shop"]["cluster"] == "prod"
    assert "rendered/prod/apps/reviewed-shop.yaml" in world.git("ls-tree", "-r", "--name-only", "main").split()
    store = world.client.get("/v1/stores/reviewed-shop", headers=READ).json()
    assert store["in_git"] is True and store["status"] == "committed"
    # The branch goes through GitHub's API (DELETE /repos/{o}/{r}/git/refs/heads/{branch}).
    wait_for(lambda: not fake.branch_sha(branch))
    assert deletions(fake, branch) == [204]
    again = world.client.post("/v1/stores", json=examples.store_payload("reviewed-shop"), headers=WRITE)
    assert again.status_code == 409


def test_a_closed_pull_request_rejects_its_request_and_frees_the_id(world: World) -> None:
    fake = world.fake
    request_id, number, branch = in_review(world, "unwanted-shop")
    main = world.git("rev-parse", "refs/heads/main")

    person(fake).get_pull(number).edit(state="closed")
    assert fake.pulls[number].state == "closed" and not fake.pulls[number].merged
    answer = world.deliver("pull_request", payloads.pull_request(fake, number, "closed"))
    assert answer.status_code == 202
    assert "closed without merging" in answer.json()["reason"]

    done = request_status(world, request_id, "rejected")
    url = f"{fake.html}/pull/{number}"
    assert [(p["field"], p["message"]) for p in done["problems"]] == [
        ("review", f"the review pull request {url} was closed without merging")]
    assert done["review_url"] == url and done["commit"] is None
    wait_for(lambda: not fake.branch_sha(branch))
    assert deletions(fake, branch) == [204]
    assert world.git("rev-parse", "refs/heads/main") == main
    assert "unwanted-shop" not in examples.remote_stores(world.bare)

    # The id is free: a new request is accepted and gets a pull request of its own.
    wait_for(lambda: world.client.get("/v1/stores/unwanted-shop", headers=READ).status_code == 404)
    again = world.client.post("/v1/stores", json=examples.store_payload("unwanted-shop", cluster="prod"),
                              headers=WRITE)
    assert again.status_code == 202, again.text
    second = wait_for(lambda: next((p for p in fake.pulls.values()
                                    if p.head == f"storeops/request-{again.json()['request_id']}"), None))
    assert second.number != number and second.state == "open"
    # GitHub redelivering the event (a new delivery id) changes nothing: the review has ended already.
    redelivered = world.deliver("pull_request", payloads.pull_request(fake, number, "closed"))
    assert redelivered.status_code == 202
    wait_for(lambda: world.client.app.state.github.deliveries.get(  # type: ignore[attr-defined]
        redelivered.json()["delivery"]).status == "done")
    time.sleep(0.3)
    assert request_status(world, request_id) == done
    assert deletions(fake, branch) == [204]


def test_pull_requests_that_are_not_storeops_own_are_left_alone(world: World) -> None:
    fake = world.fake
    examples.git(world.bare, "branch", "someone/else", "main")
    _, created = fake.create_pull(body={"title": "Someone else's", "head": "someone/else", "base": "main"})
    person(fake).get_pull(created["number"]).edit(state="closed")
    answer = world.deliver("pull_request", payloads.pull_request(fake, created["number"], "closed"))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    # A fork's branch named like storeops's own is someone else's too.
    forked = payloads.pull_request(fake, created["number"], "closed")
    forked["pull_request"]["head"] = {**forked["pull_request"]["head"], "ref": "storeops/request-x",
                                      "repo": {**fake.repo(), "full_name": "mallory/gitops"}}
    answer = world.deliver("pull_request", forked)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    time.sleep(0.3)
    assert fake.branch_sha("someone/else") and not [r for r in fake.requests if r.method == "DELETE"]


def test_an_issue_form_pull_request_closed_loses_its_branch(world: World) -> None:
    fake = world.fake
    issue = fake.open_issue(title="New store: trail-mix", body=form(), labels=["new-store"])
    world.deliver("issues", payloads.issues(fake, issue.number, "opened"))
    branch = f"storeops/issue-{issue.number}"
    pull = wait_for(lambda: next((p for p in fake.pulls.values() if p.head == branch), None))
    person(fake).get_pull(pull.number).edit(state="closed")
    answer = world.deliver("pull_request", payloads.pull_request(fake, pull.number, "closed"))
    assert answer.status_code == 202
    delivery = answer.json()["delivery"]
    state = wait_for(lambda: (d := world.client.app.state.github.deliveries.get(delivery))  # type: ignore
                     and d.status == "done" and d)
    assert state.outcome == f"#{pull.number} closed without merging: deleted branch {branch}"
    assert not fake.branch_sha(branch)
    assert deletions(fake, branch) == [204]


def test_without_the_event_the_poll_finds_ends_and_a_restart_keeps_them(tmp_path: Path) -> None:
    settings = examples.service_settings(tmp_path, review_poll_interval=0.3)
    with local_github(settings) as fake:
        github_config = github_settings(fake)
        with world_running(settings, fake, github_config) as world:
            kept, kept_number, kept_branch = in_review(world, "kept-shop")
            dropped, dropped_number, dropped_branch = in_review(world, "dropped-shop")
            open_one, _, open_branch = in_review(world, "waiting-shop")
        # While the service is down, one pull request is merged and one closed; no event reaches storeops.
        repo = person(fake)
        assert repo.get_pull(kept_number).merge().merged
        repo.get_pull(dropped_number).edit(state="closed")
        merge_commit = fake.pulls[kept_number].merge_commit_sha
        asked_before = len(fake.requests)

        with world_running(settings, fake, github_config) as world:
            assert request_status(world, kept, "committed")["commit"] == merge_commit
            assert "was closed without merging" in request_status(world, dropped, "rejected")["problems"][0][
                "message"]
            wait_for(lambda: not fake.branch_sha(kept_branch) and not fake.branch_sha(dropped_branch))
            time.sleep(0.6)  # two more polls
            assert request_status(world, open_one)["status"] == "pending-review" and fake.branch_sha(open_branch)
            # The poll read each ended pull request once, and listed the open ones.
            reads = [r.path for r in fake.requests[asked_before:] if r.method == "GET" and r.path.endswith(
                (f"/pulls/{kept_number}", f"/pulls/{dropped_number}"))]
            assert sorted(path.rsplit("/", 1)[1] for path in reads) == sorted([str(kept_number), str(dropped_number)])

        with world_running(settings, fake, github_config) as world:
            assert request_status(world, kept)["status"] == "committed"
            assert request_status(world, dropped)["status"] == "rejected"
            assert world.client.post("/v1/stores", json=examples.store_payload("kept-shop"), headers=WRITE
                                     ).status_code == 409
            again = world.client.post("/v1/stores", json=examples.store_payload("dropped-shop"), headers=WRITE)
            assert again.status_code == 202, again.text


def test_a_github_that_asks_storeops_to_wait_does_not_hold_back_other_requests(tmp_path: Path) -> None:
    settings = examples.service_settings(tmp_path, review_poll_interval=0.3)
    with local_github(settings) as fake, world_running(settings, fake, github_settings(fake)) as world:
        request_id, number, _ = in_review(world, "patient-shop")
        # Every listing of the pull requests is answered "slow down" for a while: each poll backs off for seconds.
        fake.fail_next("GET", r"/pulls$", 429, headers={"Retry-After": "4"}, times=1000)
        wait_for(lambda: any(r.status == 429 for r in fake.requests))

        started = time.monotonic()
        direct = world.client.post("/v1/stores", json=examples.store_payload("quick-shop"), headers=WRITE)
        assert direct.status_code == 202
        assert request_status(world, direct.json()["request_id"], "committed")["commit"]
        assert time.monotonic() - started < 3.0, "a direct request waited for GitHub"
        assert request_status(world, request_id)["status"] == "pending-review"

        # Once GitHub answers again, the poll finds what happened meanwhile.
        person(fake).get_pull(number).edit(state="closed")
        fake.failures.clear()
        request_status(world, request_id, "rejected")
