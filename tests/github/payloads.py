"""Webhook deliveries as GitHub sends them, built from the local GitHub's state and the real git history.

Each builder follows the payload GitHub documents for its event
(https://docs.github.com/en/webhooks/webhook-events-and-payloads): ``ping``, ``pull_request``,
``push`` and ``issues``. ``deliver`` signs and posts one to the app the way GitHub does.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.testclient import TestClient

from tests.github.fake import FakeGitHub, Json
from webhook.github import signatures

SECRET = "test-github-webhook-secret"


def headers(event: str, body: bytes, *, secret: str = SECRET, delivery: str | None = None) -> dict[str, str]:
    """The headers of a delivery (https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers)."""
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "123456", "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": "4242", "User-Agent": "GitHub-Hookshot/044aadd",
            "Content-Type": "application/json", signatures.HEADER: signatures.sign(secret=secret, body=body)}


def deliver(client: TestClient, event: str, payload: Json, *, delivery: str | None = None,
            secret: str = SECRET) -> Any:
    body = json.dumps(payload).encode()
    return client.post("/v1/webhooks/github", content=body, headers=headers(event, body, secret=secret,
                                                                             delivery=delivery))


def ping(fake: FakeGitHub) -> Json:
    # https://docs.github.com/en/webhooks/webhook-events-and-payloads#ping
    return {"zen": "Keep it logically awesome.", "hook_id": 123456,
            "hook": {"type": "Repository", "id": 123456, "name": "web", "active": True,
                     "events": ["issues", "pull_request", "push"],
                     "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://storeops.example/v1/webhooks/github"},
                     "updated_at": "2026-11-21T10:00:00Z", "created_at": "2026-11-21T10:00:00Z"},
            "repository": fake.repo(), "sender": fake.user("jane")}


def pull_request(fake: FakeGitHub, number: int, action: str) -> Json:
    # https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request
    fake.sync()
    pull = fake.pull_json(fake.pulls[number])
    return {"action": action, "number": number, "pull_request": pull, "repository": fake.repo(),
            "sender": fake.user("jane")}


def issues(fake: FakeGitHub, number: int, action: str, *, old_body: str | None = None) -> Json:
    # https://docs.github.com/en/webhooks/webhook-events-and-payloads#issues
    payload: Json = {"action": action, "issue": fake.issue_json(fake.issues[number]), "repository": fake.repo(),
                     "sender": fake.user("jane")}
    if action == "edited" and old_body is not None:
        payload["changes"] = {"body": {"from": old_body}}
    return payload


def push(fake: FakeGitHub, *, before: str, after: str, branch: str = "main") -> Json:
    # https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
    shas = fake.git("rev-list", "--reverse", f"{before}..{after}").split()
    commits = [_commit(fake, sha) for sha in shas[-20:]]
    return {"ref": f"refs/heads/{branch}", "before": before, "after": after, "created": False, "deleted": False,
            "forced": False, "base_ref": None, "compare": f"{fake.html}/compare/{before[:12]}...{after[:12]}",
            "commits": commits, "head_commit": commits[-1] if commits else None,
            "repository": fake.repo(), "pusher": {"name": "jane", "email": "jane@example.test"},
            "sender": fake.user("jane")}


def _commit(fake: FakeGitHub, sha: str) -> Json:
    message = fake.git("log", "-1", "--format=%B", sha)
    name, email, stamp = fake.git("log", "-1", "--format=%an%x00%ae%x00%aI", sha).split("\0")
    changes: dict[str, list[str]] = {"added": [], "modified": [], "removed": []}
    parents = fake.git("log", "-1", "--format=%P", sha).split()
    if parents:
        for line in fake.git("diff-tree", "-r", "--no-commit-id", "--name-status", "--no-renames",
                             parents[0], sha).splitlines():
            kind, _, path = line.partition("\t")
            changes[{"A": "added", "D": "removed"}.get(kind[:1], "modified")].append(path)
    return {"id": sha, "tree_id": fake.git("rev-parse", f"{sha}^{{tree}}"), "distinct": True, "message": message,
            "timestamp": stamp, "url": f"{fake.html}/commit/{sha}",
            "author": {"name": name, "email": email}, "committer": {"name": name, "email": email}, **changes}
