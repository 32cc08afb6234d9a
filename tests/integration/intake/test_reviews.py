"""Reviews that end, with the local review backend: the real app, a real bare remote, a reviewer using git.

A request for a cluster with ``review: true`` waits on its branch; the reviewer merges the branch
into main (or deletes it to close the review) with plain git, and storeops notices on its poll:
merged -> ``committed`` and the store in Git, closed -> ``rejected`` and the id free again; the
branch is deleted either way, and a restart in between loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import examples
from tests.integration.intake.test_api import READ, WRITE, Running, start, wait_for
from webhook.settings import ServiceSettings

running = contextlib.contextmanager(start)


def review_settings(tmp_path: Path) -> ServiceSettings:
    return examples.service_settings(tmp_path, review_poll_interval=0.2)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path, settings=review_settings(tmp_path)) as service:
        yield service


class Reviewer:
    """A person with a clone of the remote, merging or closing review branches with git."""

    def __init__(self, tmp_path: Path, bare: Path) -> None:
        self.clone = tmp_path / "reviewer"
        self.env = {"GIT_AUTHOR_NAME": "Rita Reviewer", "GIT_AUTHOR_EMAIL": "rita@example.test",
                    "GIT_COMMITTER_NAME": "Rita Reviewer", "GIT_COMMITTER_EMAIL": "rita@example.test",
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        subprocess.run(["git", "clone", "-q", str(bare), str(self.clone)], check=True, env=self.env)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.clone), *args], check=True, capture_output=True, text=True,
                              env=self.env).stdout.strip()

    def merge(self, branch: str, *how: str) -> str:
        """Merge ``branch`` into main (``how``: git merge's options) and push main; returns main's new commit."""
        self.git("fetch", "-q", "origin")
        self.git("checkout", "-q", "main")
        self.git("reset", "-q", "--hard", "origin/main")
        self.git("merge", "-q", *how, f"origin/{branch}")
        if "--squash" in how:
            self.git("commit", "-q", "-m", f"Squashed {branch}")
        self.git("push", "-q", "origin", "main")
        return self.git("rev-parse", "HEAD")

    def close(self, branch: str) -> None:
        self.git("push", "-q", "origin", "--delete", branch)


def remote_branch(bare: Path, branch: str) -> str:
    return examples.git(bare, "ls-remote", "--heads", str(bare), f"refs/heads/{branch}").strip()


def request_status(service: Running, request_id: str, status: str) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(lambda: (s := service.status(request_id))["status"] == status and s)
    return result


def in_review(service: Running, store_id: str) -> tuple[str, str]:
    """Request ``store_id`` on the reviewed cluster; returns the request id and its branch, once in review."""
    request_id = service.create(store_id, cluster="prod")["request_id"]
    waiting = request_status(service, request_id, "pending-review")
    branch = f"storeops/request-{request_id}"
    assert waiting["review_url"] == f"{service.bare}#{branch}"
    assert remote_branch(service.bare, branch)
    return request_id, branch


def reviews_file(service: Running) -> dict[str, dict[str, str]]:
    index: dict[str, dict[str, str]] = json.loads((service.settings.git.state_dir / "reviews.json").read_text())
    return index


@pytest.mark.parametrize("how", ["merge", "fast-forward"])
def test_a_merged_review_commits_its_request_at_the_merge(service: Running, tmp_path: Path, how: str) -> None:
    request_id, branch = in_review(service, "reviewed-shop")
    pushed = service.status(request_id)["commit"]
    assert "reviewed-shop" not in examples.remote_stores(service.bare)

    merged = Reviewer(tmp_path, service.bare).merge(branch, "--no-ff" if how == "merge" else "--ff-only")
    done = request_status(service, request_id, "committed")

    # A merge commit is the commit; a fast-forward puts the branch's own commit on main.
    assert done["commit"] == (merged if how == "merge" else pushed)
    assert (how == "merge") == (merged != pushed)
    assert done["problems"] == [] and done["review_url"] == f"{service.bare}#{branch}"
    assert examples.remote_stores(service.bare)["reviewed-shop"]["cluster"] == "prod"
    assert "rendered/prod/apps/reviewed-shop.yaml" in examples.git(service.bare, "ls-tree", "-r", "--name-only",
                                                                   "main")
    wait_for(lambda: not remote_branch(service.bare, branch))
    assert reviews_file(service)[branch]["state"] == "merged"
    assert reviews_file(service)[branch]["merge_commit"] == done["commit"]
    # The service's view of Git has the store: it is committed, and its id is taken in Git.
    store = service.client.get("/v1/stores/reviewed-shop", headers=READ).json()
    assert store["in_git"] is True and store["status"] == "committed" and store["requests"] == []
    again = service.client.post("/v1/stores", json=examples.store_payload("reviewed-shop"), headers=WRITE)
    assert again.status_code == 409 and "already taken in Git" in again.json()["error"]


def test_a_squash_merge_then_deleting_the_branch_counts_as_merged(service: Running, tmp_path: Path) -> None:
    request_id, branch = in_review(service, "squashed-shop")
    reviewer = Reviewer(tmp_path, service.bare)
    squashed = reviewer.merge(branch, "--squash")
    # The branch's own commit is not on main, so only deleting the branch ends the review.
    time.sleep(1.0)  # five polls
    assert service.status(request_id)["status"] == "pending-review"
    reviewer.close(branch)
    done = request_status(service, request_id, "committed")
    assert done["commit"] is None and done["problems"] == []
    assert examples.git(service.bare, "rev-parse", "main").strip() == squashed
    assert "squashed-shop" in examples.remote_stores(service.bare)


def test_a_closed_review_rejects_its_request_and_frees_the_id(service: Running, tmp_path: Path) -> None:
    request_id, branch = in_review(service, "unwanted-shop")
    main = examples.git(service.bare, "rev-parse", "main").strip()
    taken = service.client.post("/v1/stores", json=examples.store_payload("unwanted-shop"), headers=WRITE)
    assert taken.status_code == 409

    Reviewer(tmp_path, service.bare).close(branch)
    done = request_status(service, request_id, "rejected")

    review_url = f"{service.bare}#{branch}"
    assert done["review_url"] == review_url and done["commit"] is None
    assert [(p["path"], p["field"], p["message"]) for p in done["problems"]] == [
        ("stores/unwanted-shop.yaml", "review", f"the review pull request {review_url} was closed without merging")]
    assert examples.git(service.bare, "rev-parse", "main").strip() == main
    assert "unwanted-shop" not in examples.remote_stores(service.bare)
    assert reviews_file(service)[branch]["state"] == "closed"
    # Gone from the service's stores, and the id can be requested again (here directly, on the local cluster).
    wait_for(lambda: service.client.get("/v1/stores/unwanted-shop", headers=READ).status_code == 404)
    again = service.create("unwanted-shop")
    assert again["store_id"] == "unwanted-shop"
    assert request_status(service, again["request_id"], "committed")["commit"]
    assert examples.remote_stores(service.bare)["unwanted-shop"]["cluster"] == "local"


def test_an_open_review_stays_pending_while_main_moves_on(service: Running, tmp_path: Path) -> None:
    request_id, branch = in_review(service, "patient-shop")
    direct = service.create("hasty-shop")
    assert request_status(service, direct["request_id"], "committed")
    for _ in range(10):  # a good many polls (every 0.2 s)
        time.sleep(0.2)
        assert service.status(request_id)["status"] == "pending-review"
    assert remote_branch(service.bare, branch)
    assert reviews_file(service)[branch]["state"] == "open"


def test_review_ends_while_the_service_is_down_are_found_and_kept(tmp_path: Path) -> None:
    settings = review_settings(tmp_path)
    with running(tmp_path, settings=settings) as service:
        forwarded, forwarded_branch = in_review(service, "forwarded-shop")
        kept, kept_branch = in_review(service, "kept-shop")
        dropped, dropped_branch = in_review(service, "dropped-shop")
        pushed = service.status(forwarded)["commit"]
    reviewer = Reviewer(tmp_path, Path(settings.git.remote))
    # A fast-forward, then a merge on top of it: each request is committed at what brought it in.
    assert reviewer.merge(forwarded_branch, "--ff-only") == pushed
    merged = reviewer.merge(kept_branch, "--no-ff")
    reviewer.close(dropped_branch)

    with running(tmp_path, settings=settings) as service:
        assert request_status(service, forwarded, "committed")["commit"] == pushed
        assert request_status(service, kept, "committed")["commit"] == merged
        assert "was closed without merging" in request_status(service, dropped, "rejected")["problems"][0]["message"]
        ended = (forwarded_branch, kept_branch, dropped_branch)
        wait_for(lambda: not any(remote_branch(service.bare, branch) for branch in ended))

    # Another restart: the outcomes are in the queue's database, and the freed id is still free.
    with running(tmp_path, settings=settings) as service:
        assert service.status(kept)["status"] == "committed" and service.status(kept)["commit"] == merged
        assert service.status(dropped)["status"] == "rejected"
        assert service.client.post("/v1/stores", json=examples.store_payload("kept-shop"), headers=WRITE
                                   ).status_code == 409
        assert service.create("dropped-shop", cluster="prod")["store_id"] == "dropped-shop"


def test_a_branch_the_remote_would_not_delete_is_deleted_on_a_later_poll(service: Running, tmp_path: Path) -> None:
    hook = service.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n"
                    "while read old new ref; do\n"
                    "  if [ \"$new\" = 0000000000000000000000000000000000000000 ] && [ -e refuse-deletes ]; then\n"
                    "    echo 'deleting branches is paused' >&2; exit 1\n"
                    "  fi\n"
                    "done\n")
    hook.chmod(0o755)
    request_id, branch = in_review(service, "sticky-shop")
    (service.bare / "refuse-deletes").touch()
    Reviewer(tmp_path, service.bare).merge(branch, "--no-ff")
    request_status(service, request_id, "committed")
    time.sleep(1.0)  # five polls
    assert remote_branch(service.bare, branch), "the remote refused the deletion"
    (service.bare / "refuse-deletes").unlink()
    wait_for(lambda: not remote_branch(service.bare, branch))
