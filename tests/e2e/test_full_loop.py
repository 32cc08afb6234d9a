"""The whole mission on one machine, with Argo CD at its own defaults (3-minute polling).

A store requested through the API (and through a pull request) reaches the Git remote, the real
Argo CD syncs its Application into the real API server, kwok runs its pods, and the status reader
reports ``ready`` with the store URL over SSE and to a signed callback; then it is suspended and
deleted. Every stage is printed with its time (run with ``-s`` to watch).
"""

from __future__ import annotations

import collections.abc
import json
import pathlib
import subprocess
import time
import uuid
from typing import Any

import httpx
import pytest

from generator import publishing
from harness import demo, receivers, stack
from tests.github import payloads
from tests.github.fake import FakeGitHub
from webhook.github import issueforms

pytestmark = pytest.mark.e2e

REPOSITORY = "acme/gitops"
GITHUB_TOKEN = "ghp_full_loop_token"
LEFTOVER_KINDS = "deployments,statefulsets,jobs,services,persistentvolumeclaims,configmaps,ingresses,resourcequotas"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[demo.Loop]:
    """A stack with Argo CD's defaults, the example fleet published, and ``storeops serve`` running."""
    work = tmp_path_factory.mktemp("full-loop")
    running = stack.start(work / "stack", full=True, argocd_defaults=True, tie_to_parent=True)
    receiver = receivers.CallbackReceiver(secret="full-loop-callback-secret")
    loop = demo.Loop(stack=running, work=work, callback_url=receiver.url, callback_secret=receiver.secret)
    fake = FakeGitHub(bare=loop.remote, repository=REPOSITORY, token=GITHUB_TOKEN)
    try:
        loop.prepare()
        fake.start()
        loop.extra_env.update(github_env(fake))
        loop.start_service()
        loop.receiver = receiver  # type: ignore[attr-defined]
        loop.fake = fake  # type: ignore[attr-defined]
        yield loop
    finally:
        loop.stop_service()
        fake.stop()
        receiver.close()
        running.stop()
        print((work / "service.log").read_text(errors="replace")[-4000:] if (work / "service.log").exists() else "")


def github_env(fake: FakeGitHub) -> dict[str, str]:
    """The service's settings for GitHub's API at ``fake`` (its webhook secret, token and repository)."""
    return {"STOREOPS_GITHUB_WEBHOOK_SECRET": payloads.SECRET, "STOREOPS_GITHUB_TOKEN": GITHUB_TOKEN,
            "STOREOPS_GITHUB_REPOSITORY": REPOSITORY, "STOREOPS_GITHUB_API_URL": fake.url,
            "STOREOPS_GITHUB_SECONDS_BETWEEN_WRITES": "0"}


def entry(store_id: str, **extra: object) -> dict[str, object]:
    return {"id": store_id, "name": f"Shop {store_id}", "engine": "woocommerce", "plan": "small", "cluster": "local",
            "owner": {"name": "Pat Doe", "email": f"pat@{store_id}.example"}, **extra}


def kubectl_json(loop: demo.Loop, *args: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(loop.stack.kubectl.run(*args, "-o", "json"))
    return decoded


def request_to_ready(loop: demo.Loop, store_id: str) -> tuple[float, list[dict[str, Any]]]:
    asked = time.monotonic()
    answer = loop.request_store(entry(store_id))
    view = loop.wait_request(answer["request_id"])
    assert view["status"] == "committed", view
    loop.stage(f"{store_id}: request committed in {str(view['commit'])[:12]}")
    events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=asked, timeout=600)
    return time.monotonic() - asked, events


def test_api_request_reaches_ready_then_suspends_then_deletes(loop: demo.Loop) -> None:
    store_id = f"api-{uuid.uuid4().hex[:6]}"
    receiver: receivers.CallbackReceiver = loop.receiver  # type: ignore[attr-defined]
    seconds, events = request_to_ready(loop, store_id)
    ready = events[-1]
    assert ready["status"] == "ready", events
    assert ready["url"] == f"http://{store_id}.stores.localtest.me"
    statuses = [e["status"] for e in events]
    assert statuses.index("syncing") < statuses.index("ready")
    loop.stage(f"{store_id}: ready {seconds:.1f}s after the request (instant refresh)")

    # Argo CD's view agrees, and kwok runs the store's workloads.
    app = loop.stack.application(f"store-{store_id}")
    assert app is not None
    status: dict[str, Any] = app["status"]  # type: ignore[assignment]
    assert (status["sync"]["status"], status["health"]["status"]) == ("Synced", "Healthy")
    assert status["sync"]["revision"] == ready["revision"]
    wordpress = kubectl_json(loop, "get", "deployment", "wordpress", "-n", f"store-{store_id}")
    assert wordpress["status"]["readyReplicas"] == 1

    # The callback receiver got the same news, signed.
    def called(state: str) -> receivers.Received | None:
        return receiver.of(store_id, state)

    loop.stack.kubectl.wait_for(f"ready callback for {store_id}", lambda: called("ready") is not None, timeout=60)
    got = called("ready")
    assert got is not None and got.signature_ok
    assert got.payload["url"] == ready["url"] and got.payload["revision"] == ready["revision"]
    assert set(got.payload) >= {"event_id", "store_id", "status", "url", "error", "revision", "at"}

    # Suspend: ready again at the new commit, with every workload at zero and the volumes kept.
    asked = time.monotonic()
    code, answer = loop.call("PATCH", f"/v1/stores/{store_id}", {"state": "suspended"},
                             content_type="application/merge-patch+json")
    assert code == 202, answer
    assert loop.wait_request(answer["request_id"])["status"] == "committed"
    events = loop.follow(store_id, until=("ready", "failed"), since=asked, after_revision=ready["revision"])
    assert events[-1]["status"] == "ready" and events[-1]["revision"] != ready["revision"]
    loop.stage(f"{store_id}: suspended and ready {time.monotonic() - asked:.1f}s after the change")
    for kind, name in (("deployment", "wordpress"), ("statefulset", "mariadb")):
        assert kubectl_json(loop, "get", kind, name, "-n", f"store-{store_id}")["spec"]["replicas"] == 0
    claims = kubectl_json(loop, "get", "pvc", "-n", f"store-{store_id}")["items"]
    assert len(claims) == 2 and all(c["status"]["phase"] == "Bound" for c in claims)

    # Delete: deleting, then deleted; the namespace and everything in it are gone.
    asked = time.monotonic()
    code, answer = loop.call("DELETE", f"/v1/stores/{store_id}")
    assert code == 202, answer
    assert loop.wait_request(answer["request_id"])["status"] == "committed"
    events = loop.follow(store_id, until=("deleted",), since=asked)
    assert "deleted" in [e["status"] for e in events]
    loop.stack.wait_gone("namespace", f"store-{store_id}", timeout=300)
    loop.stage(f"{store_id}: deleted, namespace gone {time.monotonic() - asked:.1f}s after the request")
    left = loop.stack.kubectl.run("get", LEFTOVER_KINDS, "-A", "-l", f"storeops.io/store={store_id}", "-o", "name")
    assert left.strip() == ""
    loop.stack.kubectl.wait_for(f"deleted callback for {store_id}", lambda: called("deleted") is not None,
                                timeout=60)
    assert receiver.statuses(store_id).count("ready") == 2


def test_issue_form_pull_request_merge_reaches_ready(loop: demo.Loop) -> None:
    fake: FakeGitHub = loop.fake  # type: ignore[attr-defined]
    store_id = f"pr-{uuid.uuid4().hex[:6]}"
    form = issueforms.render({"Store ID": store_id, "Store name": "Pull Request Shop", "Engine": "medusa",
                              "Plan": "small", "Cluster": "local", "Owner name": "Jane Doe",
                              "Owner email": "jane@pr.example", "Owner GitHub login": "", "Custom domain": ""})
    with httpx.Client(base_url=f"http://127.0.0.1:{loop.port}", timeout=30) as github_side:
        asked = time.monotonic()
        issue = fake.open_issue(title=f"New store: {store_id}", body=form, labels=["new-store"])
        assert payloads.deliver(github_side, "issues", payloads.issues(fake, issue.number, "opened")  # type: ignore[arg-type]
                                ).status_code == 202
        branch = f"storeops/issue-{issue.number}"
        pull = wait_for(lambda: next((p for p in fake.pulls.values() if p.head == branch), None))
        loop.stage(f"{store_id}: pull request #{pull.number} opened from the issue form")
        assert payloads.deliver(github_side, "pull_request",  # type: ignore[arg-type]
                                payloads.pull_request(fake, pull.number, "opened")).status_code == 202
        head = fake.branch_sha(branch)
        assert wait_for(lambda: fake.statuses_for(head))[-1]["state"] == "success"
        before = fake.branch_sha("main")
        fake.merge_pull(n=str(pull.number), body={})
        merged = fake.branch_sha("main")
        loop.stage(f"{store_id}: merged as {merged[:12]}")
        assert payloads.deliver(github_side, "push",  # type: ignore[arg-type]
                                payloads.push(fake, before=before, after=merged)).status_code == 202
    events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=asked, timeout=600)
    assert events[-1]["status"] == "ready", events
    loop.stage(f"{store_id}: ready {time.monotonic() - asked:.1f}s after the issue was opened")
    # The published commit carries the store, on top of the merge.
    log = subprocess.run(["git", "-C", str(loop.remote), "log", "--format=%H %s", f"{merged}..main"],
                         capture_output=True, text=True, check=True).stdout
    assert store_id in log


def test_instant_refresh_against_argo_cd_default_polling(loop: demo.Loop, tmp_path: pathlib.Path) -> None:
    """Measured side by side: the service's push (refresh at once) and a person's push + publish (polling)."""
    fast = f"fast-{uuid.uuid4().hex[:6]}"
    instant, events = request_to_ready(loop, fast)
    assert events[-1]["status"] == "ready"

    # A person merges an entry and CI runs `storeops publish`: nothing asks Argo CD to look.
    store_id = f"slow-{uuid.uuid4().hex[:6]}"
    clone = tmp_path / "person"
    subprocess.run(["git", "clone", "-q", str(loop.remote), str(clone)], check=True)
    (clone / "stores" / f"{store_id}.yaml").write_text(
        f"id: {store_id}\nname: Polled Shop\nengine: woocommerce\nplan: small\ncluster: local\n"
        "owner:\n  name: Pat\n  email: pat@polled.example\n")
    env = {"GIT_AUTHOR_NAME": "Pat", "GIT_AUTHOR_EMAIL": "pat@x.test", "GIT_COMMITTER_NAME": "Pat",
           "GIT_COMMITTER_EMAIL": "pat@x.test"}
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(clone), "commit", "-qm", f"Add {store_id}"], check=True,
                   env={**env, "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)})
    asked = time.monotonic()
    subprocess.run(["git", "-C", str(clone), "push", "-q", "origin", "HEAD:main"], check=True)
    published = publishing.publish(loop.settings)
    assert published.committed
    events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=asked, timeout=900)
    assert events[-1]["status"] == "ready", events
    polling = time.monotonic() - asked
    print(f"\nrequest -> ready: {instant:.1f}s with the instant refresh, {polling:.1f}s with Argo CD's "
          f"default polling (timeout.reconciliation 180s), measured in the same run", flush=True)
    assert instant < 90

    # The earlier store stays ready when Argo CD compares it at the later commit (it contains its change).
    loop.stack.refresh(f"store-{fast}")
    loop.stack.wait_application(f"store-{fast}", revision=published.sha, timeout=120)
    time.sleep(2)
    code, view = loop.call("GET", f"/v1/stores/{fast}/status")
    assert code == 200 and view["status"] == "ready", view


def wait_for(check: collections.abc.Callable[[], Any], *, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s: {check}")


def _set_review(loop: demo.Loop, clone: pathlib.Path, review: bool) -> str:
    """Push the local cluster's profile with ``review`` and tell the service (GitHub's push event)."""
    fake: FakeGitHub = loop.fake  # type: ignore[attr-defined]
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", str(loop.remote), str(clone)], check=True)
    git = ["git", "-C", str(clone), "-c", "user.name=Platform", "-c", "user.email=platform@x.test"]
    subprocess.run([*git, "pull", "-q", "--ff-only", "origin", "main"], check=True)
    profile = clone / "clusters" / "local.yaml"
    text = profile.read_text()
    profile.write_text(text.replace(f"\nreview: {str(not review).lower()}\n", f"\nreview: {str(review).lower()}\n"))
    assert profile.read_text() != text
    subprocess.run([*git, "commit", "-qam", f"local: review {review}"], check=True)
    before = fake.branch_sha("main")
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    after = fake.branch_sha("main")
    with httpx.Client(base_url=f"http://127.0.0.1:{loop.port}", timeout=30) as github_side:
        assert payloads.deliver(github_side, "push",  # type: ignore[arg-type]
                                payloads.push(fake, before=before, after=after)).status_code == 202
    # The service has the profile once it has read Git at that commit (or a later one of its own).
    log = loop.work / "service.log"
    wait_for(lambda: any(f"from git at {sha[:12]}" in log.read_text(errors="replace")
                         for sha in (after, fake.branch_sha("main"))), timeout=60)
    return after


def test_on_a_reviewed_cluster_a_merged_request_gets_ready_and_a_closed_one_frees_its_id(
        loop: demo.Loop, tmp_path: pathlib.Path) -> None:
    """Review mode through GitHub's API (the fake) and the real Argo CD: merged -> committed -> ready;
    closed without merging -> rejected, the branch deleted, and the id free for a new request."""
    fake: FakeGitHub = loop.fake  # type: ignore[attr-defined]
    clone = tmp_path / "platform"
    _set_review(loop, clone, True)
    merged_id, closed_id = f"rv-{uuid.uuid4().hex[:6]}", f"rc-{uuid.uuid4().hex[:6]}"
    try:
        def pending(store_id: str) -> tuple[dict[str, Any], Any]:
            answer = loop.request_store(entry(store_id))
            view = loop.wait_request(answer["request_id"])
            assert view["status"] == "pending-review", view
            pull = wait_for(lambda: next((p for p in fake.pulls.values() if p.state == "open"
                                          and store_id in (p.title + p.body)), None))
            return view, pull

        asked = time.monotonic()
        view, pull = pending(merged_id)
        loop.stage(f"{merged_id}: pending-review in pull request #{pull.number}")
        fake.merge_pull(n=str(pull.number), body={})
        with httpx.Client(base_url=f"http://127.0.0.1:{loop.port}", timeout=30) as github_side:
            assert payloads.deliver(github_side, "pull_request",  # type: ignore[arg-type]
                                    payloads.pull_request(fake, pull.number, "closed")).status_code == 202
        done = wait_for(lambda: (lambda v: v if v["status"] == "committed" else None)(
            loop.call("GET", f"/v1/requests/{view['request_id']}")[1]), timeout=120)
        loop.stage(f"{merged_id}: merged, request committed in {str(done['commit'])[:12]}")
        events = loop.follow(merged_id, until=("ready", "failed", "degraded"), since=asked, timeout=600)
        assert events[-1]["status"] == "ready", events
        loop.stage(f"{merged_id}: ready {time.monotonic() - asked:.1f}s after the request (review included)")
        wait_for(lambda: pull.head not in fake.git("for-each-ref", "--format=%(refname:short)", "refs/heads/"))

        view, pull = pending(closed_id)
        fake.update_pull(n=str(pull.number), body={"state": "closed"})
        with httpx.Client(base_url=f"http://127.0.0.1:{loop.port}", timeout=30) as github_side:
            assert payloads.deliver(github_side, "pull_request",  # type: ignore[arg-type]
                                    payloads.pull_request(fake, pull.number, "closed")).status_code == 202
        rejected = wait_for(lambda: (lambda v: v if v["status"] == "rejected" else None)(
            loop.call("GET", f"/v1/requests/{view['request_id']}")[1]), timeout=120)
        assert "closed" in json.dumps(rejected["problems"]), rejected
        wait_for(lambda: pull.head not in fake.git("for-each-ref", "--format=%(refname:short)", "refs/heads/"))
        # The id is free again: a new request for it is taken (and waits in a review of its own).
        again = loop.request_store(entry(closed_id))
        assert loop.wait_request(again["request_id"])["status"] == "pending-review"
        loop.stage(f"{closed_id}: closed -> rejected; requested again -> pending-review")
    finally:
        _set_review(loop, clone, False)
