"""The PyGithub client over real HTTP to the local GitHub: back-off, write spacing, token and App auth."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.examples import git
from tests.github.fake import FakeGitHub
from webhook.github.client import GitHub, GitHubError, GitHubSettings

TOKEN = "ghp_client_test"


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    repo = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(repo))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "-c", "user.name=t", "-c", "user.email=t@x.test", "commit", "-q", "--allow-empty", "-m", "first")
    git(work, "push", "-q", str(repo), "main")
    return repo


@pytest.fixture
def fake(bare: Path) -> Iterator[FakeGitHub]:
    server = FakeGitHub(bare=bare, token=TOKEN).start()
    server.open_issue(title="Request", body="body")
    yield server
    server.stop()


def hub(fake: FakeGitHub, **overrides: object) -> GitHub:
    settings = GitHubSettings(**{"webhook_secret": "s", "repository": fake.full_name, "api_url": fake.url,
                                 "token": TOKEN, "seconds_between_writes": 0.0, "retries": 3, "max_wait": 5.0,
                                 **overrides})  # type: ignore[arg-type]
    return GitHub(settings=settings)


def head(fake: FakeGitHub) -> str:
    return fake.branch_sha("main")


def gaps(fake: FakeGitHub, method: str, fragment: str) -> list[float]:
    times = [r.at for r in fake.requests if r.method == method and fragment in r.path]
    return [b - a for a, b in itertools.pairwise(times)]


def test_429_with_retry_after_is_waited_out(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/statuses/", 429, headers={"Retry-After": "1"})
    hub(fake).report(sha=head(fake), state="success", description="ok")
    assert [r.status for r in fake.requests if "/statuses/" in r.path] == [429, 201]
    assert gaps(fake, "POST", "/statuses/")[0] >= 0.95
    assert fake.statuses_for(head(fake))[0]["state"] == "success"


def test_403_secondary_limit_with_retry_after_is_waited_out(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/issues/\d+/comments", 403, headers={"Retry-After": "1"},
                   message="You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
    hub(fake).upsert_comment(number=1, marker="<!-- m -->", body="hello")
    assert [r.status for r in fake.requests if r.method == "POST"] == [403, 201]
    assert gaps(fake, "POST", "/comments")[0] >= 0.95
    assert [c["body"] for c in fake.comments_on(1)] == ["<!-- m -->\nhello"]


def test_exhausted_primary_limit_waits_for_the_reset(fake: FakeGitHub) -> None:
    reset = int(time.time()) + 1
    fake.fail_next("GET", r"/issues/1/comments", 429, headers={"X-RateLimit-Remaining": "0",
                                                              "X-RateLimit-Reset": str(reset)})
    hub(fake).upsert_comment(number=1, marker="<!-- m -->", body="hello")
    listed = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/comments")]
    assert [r.status for r in listed] == [429, 200]
    assert listed[1].at - listed[0].at >= 0.95


def test_a_wait_longer_than_allowed_fails_instead_of_hanging(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/statuses/", 429, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(GitHubError, match="asks to wait 3600s"):
        hub(fake).report(sha=head(fake), state="success", description="ok")
    assert time.monotonic() - started < 5
    assert not fake.statuses


def test_plain_403_is_not_retried(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/statuses/", 403, message="Resource not accessible by integration")
    with pytest.raises(GitHubError, match="403 Resource not accessible"):
        hub(fake).report(sha=head(fake), state="success", description="ok")
    assert len([r for r in fake.requests if "/statuses/" in r.path]) == 1


def test_writes_are_spaced(fake: FakeGitHub) -> None:
    client = hub(fake, seconds_between_writes=0.4)
    for n in range(3):
        client.report(sha=head(fake), state="pending", description=f"step {n}")
    assert min(gaps(fake, "POST", "/statuses/")) >= 0.35


def test_comment_is_kept_up_to_date_in_place(fake: FakeGitHub) -> None:
    client = hub(fake)
    first = client.upsert_comment(number=1, marker="<!-- storeops:x -->", body="one")
    second = client.upsert_comment(number=1, marker="<!-- storeops:x -->", body="two")
    assert first == second
    assert [c["body"] for c in fake.comments_on(1)] == ["<!-- storeops:x -->\ntwo"]


def test_long_status_description_is_cut_to_githubs_limit(fake: FakeGitHub) -> None:
    hub(fake).report(sha=head(fake), state="failure", description="x" * 500)
    assert len(fake.statuses_for(head(fake))[0]["description"]) == 140


def test_bad_token_is_a_clear_error(fake: FakeGitHub) -> None:
    with pytest.raises(GitHubError, match="401 Bad credentials"):
        hub(fake, token="wrong").report(sha=head(fake), state="success", description="ok")


def test_app_auth_uses_an_installation_token_and_check_runs(bare: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake = FakeGitHub(bare=bare, app_id="31337", app_public_key=public, installation_id=77).start()
    try:
        client = hub(fake, token="", app_id="31337", private_key=private)
        sha = head(fake)
        client.report(sha=sha, state="failure", description="1 problem", details="stores/x.yaml:3: plan: bad")
        client.report(sha=sha, state="success", description="valid")
        kinds = [(r.method, r.path, r.auth) for r in fake.requests]
        assert kinds[0] == ("GET", "/repos/acme/gitops/installation", "jwt")
        assert kinds[1] == ("POST", "/app/installations/77/access_tokens", "jwt")
        assert [k for k in kinds[2:]] == [("POST", "/repos/acme/gitops/check-runs", "installation")] * 2
        assert [(r["name"], r["conclusion"]) for r in fake.check_runs] == [("storeops/validate", "failure"),
                                                                          ("storeops/validate", "success")]
        assert fake.check_runs[0]["output"]["summary"] == "stores/x.yaml:3: plan: bad"
        assert not fake.statuses
    finally:
        fake.stop()


def test_app_with_a_wrong_key_is_refused(bare: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    wrong = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    fake = FakeGitHub(bare=bare, app_id="31337", app_public_key=public).start()
    try:
        with pytest.raises(GitHubError, match=r"not installed on acme/gitops: 401"):
            hub(fake, token="", app_id="31337", private_key=wrong).report(sha=head(fake), state="success",
                                                                          description="ok")
        assert not fake.check_runs
    finally:
        fake.stop()
