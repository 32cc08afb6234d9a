"""The GitHub edge: settings, a PyGithub client (token or GitHub App) with back-off, and the calls storeops makes.

Everything storeops says on GitHub goes through :class:`GitHub`: commit statuses (check runs when
a GitHub App is configured), one comment per pull request or issue kept up to date in place,
pull requests opened once per branch, what became of them, and the deletion of their branches.
The client retries 403/429 answers that say "slow down", waiting as long as ``Retry-After`` or the
``X-RateLimit-Reset`` header asks, and spaces writes (GitHub's secondary limits ask for about one
second between content-creating calls).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import github
from github import Auth, GithubIntegration, GithubRetry

from generator import environment
from webhook.errors import SettingsError, WebhookError
from webhook.types import CLOSED, MERGED, OPEN, Branches, Review, ReviewOutcome

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
#: Statuses and check runs storeops sets on pull requests.
VALIDATE_CONTEXT = "storeops/validate"
#: Longest text GitHub takes in a comment body and in a check run's output fields.
MAX_BODY = 65_536
MAX_STATUS_DESCRIPTION = 140
#: States of a commit status, and the check-run conclusion each maps to.
CONCLUSIONS = {"success": "success", "failure": "failure", "error": "failure", "pending": ""}


class GitHubError(WebhookError):
    """A GitHub call failed for good (after the retries the answer allowed)."""


@dataclass(frozen=True)
class GitHubSettings:
    """GitHub settings, from ``STOREOPS_GITHUB_*``. ``webhook_secret`` empty turns the GitHub webhook off."""

    webhook_secret: str = ""
    #: ``owner/name`` of the GitOps repository on GitHub.
    repository: str = ""
    api_url: str = DEFAULT_API_URL
    token: str = ""
    app_id: str = ""
    private_key: str = ""
    #: The App's installation on ``repository``; looked up when 0.
    installation_id: int = 0
    #: Spacing of content-creating calls (GitHub asks for about a second) and of all calls.
    seconds_between_writes: float = 1.0
    seconds_between_requests: float = 0.0
    #: How many times one call is retried, and the longest wait storeops accepts for one retry.
    retries: int = 5
    max_wait: float = 900.0
    timeout: int = 15
    #: Largest webhook body accepted (GitHub caps payloads at 25 MB).
    max_body_bytes: int = 25 * 1024 * 1024

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_secret)

    @property
    def uses_app(self) -> bool:
        return bool(self.app_id)

    @property
    def owner(self) -> str:
        return self.repository.partition("/")[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GitHubSettings:
        env = os.environ if environ is None else environ
        d = cls()
        key = env.get("STOREOPS_GITHUB_PRIVATE_KEY", "")
        key_file = env.get("STOREOPS_GITHUB_PRIVATE_KEY_FILE", "")
        if key_file:
            try:
                key = Path(key_file).read_text()
            except OSError as e:
                raise SettingsError(f"STOREOPS_GITHUB_PRIVATE_KEY_FILE has value {key_file!r}. "
                                    f"Cannot read it ({e.strerror}).") from None
        settings = cls(
            webhook_secret=env.get("STOREOPS_GITHUB_WEBHOOK_SECRET", d.webhook_secret),
            repository=env.get("STOREOPS_GITHUB_REPOSITORY", d.repository),
            api_url=env.get("STOREOPS_GITHUB_API_URL", d.api_url).rstrip("/"),
            token=env.get("STOREOPS_GITHUB_TOKEN", d.token),
            app_id=env.get("STOREOPS_GITHUB_APP_ID", d.app_id),
            private_key=key,
            installation_id=environment.integer(env, "STOREOPS_GITHUB_INSTALLATION_ID", d.installation_id, low=0,
                                                error=SettingsError),
            seconds_between_writes=environment.number(env, "STOREOPS_GITHUB_SECONDS_BETWEEN_WRITES",
                                                      d.seconds_between_writes, low=0, error=SettingsError),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not self.enabled:
            return
        if self.repository.count("/") != 1 or not all(self.repository.split("/")):
            raise SettingsError(f"STOREOPS_GITHUB_REPOSITORY has value {self.repository!r}. Use owner/name.")
        if self.app_id and not self.private_key:
            raise SettingsError("STOREOPS_GITHUB_APP_ID is set but STOREOPS_GITHUB_PRIVATE_KEY(_FILE) is not.")
        if not self.app_id and not self.token:
            raise SettingsError("STOREOPS_GITHUB_WEBHOOK_SECRET is set but neither STOREOPS_GITHUB_TOKEN nor "
                                "STOREOPS_GITHUB_APP_ID is: storeops cannot answer on GitHub.")



class Backoff(GithubRetry):
    """PyGithub's retry, also on 429, waiting for ``Retry-After`` or, failing that, ``X-RateLimit-Reset``."""

    def get_retry_after(self, response: Any) -> float | None:
        headers = response.headers
        wait: float | None = super().get_retry_after(response)
        if wait is None and headers.get("X-RateLimit-Remaining") == "0":
            reset = headers.get("X-RateLimit-Reset", "")
            if reset.isdigit():
                wait = max(1.0, int(reset) - time.time() + 1)
        if wait is not None:
            log.info("GitHub answered %s; waiting %.1fs before retrying", response.status, wait)
            if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                raise GitHubError(f"GitHub asks to wait {wait:.0f}s, longer than the {self.max_rate_limit_wait:.0f}s "
                                  "storeops accepts")
        return wait


def retry_policy(settings: GitHubSettings) -> Backoff:
    return Backoff(total=settings.retries, backoff_factor=0.5, max_rate_limit_wait=settings.max_wait,
                   secondary_rate_wait=min(60.0, settings.max_wait), raise_on_status=False,
                   status_forcelist=[429, *range(500, 600)],
                   allowed_methods=frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"}))


def connect(settings: GitHubSettings) -> github.Github:
    """A PyGithub client: the token, or the App's installation token (JWT -> installation token)."""
    common: dict[str, Any] = {"base_url": settings.api_url, "timeout": settings.timeout,
                              "retry": retry_policy(settings),
                              "seconds_between_requests": settings.seconds_between_requests or None,
                              "seconds_between_writes": settings.seconds_between_writes or None}
    auth: Auth.Auth
    if settings.uses_app:
        app = Auth.AppAuth(settings.app_id, settings.private_key)
        installation = settings.installation_id
        if not installation:
            integration = GithubIntegration(auth=app, **common)
            try:
                installation = integration.get_repo_installation(*settings.repository.split("/")).id
            except github.GithubException as e:
                raise GitHubError(f"the GitHub App {settings.app_id} is not installed on {settings.repository}: "
                                  f"{e.status} {_message(e)}") from e
        auth = app.get_installation_auth(int(installation))
    else:
        auth = Auth.Token(settings.token)
    return github.Github(auth=auth, lazy=True, **common)


def _message(error: github.GithubException) -> str:
    data = error.data
    if isinstance(data, dict):
        return str(data.get("message", ""))
    return str(data)


@dataclass(frozen=True)
class Pull:
    number: int
    url: str
    head_sha: str
    created: bool


class GitHub:
    """The calls storeops makes on one repository; every failure becomes a :class:`GitHubError`."""

    def __init__(self, *, settings: GitHubSettings, client: github.Github | None = None) -> None:
        self.settings = settings
        self._client = client
        self._repo: Any = None

    @property
    def repo(self) -> Any:
        """The repository, connecting on first use (an App looks its installation up then, not at start)."""
        if self._repo is None:
            if self._client is None:
                self._client = connect(self.settings)
            self._repo = self._client.get_repo(self.settings.repository)
        return self._repo

    def report(self, *, sha: str, state: str, description: str, details: str = "", target_url: str = "",
               context: str = VALIDATE_CONTEXT) -> None:
        """A commit status on ``sha``, or a check run when storeops runs as a GitHub App."""
        description = description if len(description) <= MAX_STATUS_DESCRIPTION else description[:137] + "..."
        try:
            if self.settings.uses_app:
                output: dict[str, Any] = {"title": description, "summary": _clip(details or description)}
                extra: dict[str, Any] = {"details_url": target_url} if target_url else {}
                if state == "pending":
                    self.repo.create_check_run(name=context, head_sha=sha, status="in_progress", output=output,
                                               **extra)
                else:
                    self.repo.create_check_run(name=context, head_sha=sha, status="completed",
                                               conclusion=CONCLUSIONS[state], output=output, **extra)
            else:
                commit = self.repo.get_commit(sha)
                commit.create_status(state=state, description=description, context=context,
                                     **({"target_url": target_url} if target_url else {}))
        except github.GithubException as e:
            raise GitHubError(f"cannot report {context}={state} on {sha[:12]}: {e.status} {_message(e)}") from e
        log.info("reported %s=%s on %s", context, state, sha[:12])

    def upsert_comment(self, *, number: int, marker: str, body: str) -> int:
        """Keep one comment carrying ``marker`` on issue or pull request ``number``; returns its id."""
        text = _clip(f"{marker}\n{body}")
        try:
            issue = self.repo.get_issue(number)
            for comment in issue.get_comments():
                if marker in (comment.body or ""):
                    if comment.body != text:
                        comment.edit(text)
                    log.info("updated comment %d on #%d", comment.id, number)
                    return int(comment.id)
            created = issue.create_comment(text)
        except github.GithubException as e:
            raise GitHubError(f"cannot comment on #{number}: {e.status} {_message(e)}") from e
        log.info("commented on #%d (comment %d)", number, created.id)
        return int(created.id)

    def open_pull(self, *, branch: str, base: str, title: str, body: str) -> Pull:
        """The open pull request from ``branch`` into ``base``, opened when there is none (title kept current)."""
        try:
            for pull in self.repo.get_pulls(state="open", head=f"{self.settings.owner}:{branch}", base=base):
                if pull.title != title or pull.body != body:
                    pull.edit(title=title, body=body)
                return Pull(pull.number, pull.html_url, pull.head.sha, False)
            pull = self.repo.create_pull(base=base, head=branch, title=title, body=body)
        except github.GithubException as e:
            raise GitHubError(f"cannot open a pull request from {branch} into {base}: {e.status} {_message(e)}") from e
        log.info("opened pull request #%d from %s into %s", pull.number, branch, base)
        return Pull(pull.number, pull.html_url, pull.head.sha, True)

    def open_pull_urls(self) -> set[str]:
        """The web addresses of the repository's open pull requests."""
        try:
            return {str(pull.html_url) for pull in self.repo.get_pulls(state="open")}
        except github.GithubException as e:
            raise GitHubError(f"cannot list the open pull requests: {e.status} {_message(e)}") from e

    def pull_outcome(self, number: int) -> ReviewOutcome:
        """Where pull request ``number`` stands: open, merged (with its merge commit) or closed without merging."""
        try:
            pull = self.repo.get_pull(number)
            state, merged, merge_commit = pull.state, pull.merged, pull.merge_commit_sha
        except github.GithubException as e:
            raise GitHubError(f"cannot read pull request #{number}: {e.status} {_message(e)}") from e
        if merged:
            return ReviewOutcome(MERGED, merge_commit or "")
        return ReviewOutcome(CLOSED if state == "closed" else OPEN)

    def delete_branch(self, branch: str) -> bool:
        """Delete ``branch`` (its ``refs/heads`` ref); False when it is gone already."""
        ref = f"refs/heads/{branch}"
        try:
            found = [r for r in self.repo.get_git_matching_refs(f"heads/{branch}") if r.ref == ref]
            for match in found:
                match.delete()
        except github.GithubException as e:
            if e.status == 422 and "Reference does not exist" in _message(e):
                return False  # deleted meanwhile (GitHub deletes merged head branches when the repository says so)
            raise GitHubError(f"cannot delete branch {branch}: {e.status} {_message(e)}") from e
        if found:
            log.info("deleted branch %s", branch)
        return bool(found)

    def pull_for_path(self, *, path: str, branch: str) -> int | None:
        """The pull request that brought the last change of ``path`` on ``branch`` (None: it came directly)."""
        try:
            for commit in self.repo.get_commits(sha=branch, path=path):
                for pull in commit.get_pulls():
                    return int(pull.number)
                return None
        except github.GithubException as e:
            raise GitHubError(f"cannot find the pull request that changed {path}: {e.status} {_message(e)}") from e
        return None


def _clip(text: str) -> str:
    if len(text) <= MAX_BODY:
        return text
    note = "\n\n... (cut: GitHub takes 65,536 characters)\n"
    return text[:MAX_BODY - len(note)] + note


class GitHubPullRequests:
    """:class:`webhook.types.PullRequests` on GitHub: one pull request per branch.

    GitHub says what became of a pull request (merged - also squashed or rebased - or closed), so
    the branches in Git are not read; one listing of the open pull requests answers for all that are
    still open, and each of the others is read once.
    """

    def __init__(self, *, hub: GitHub) -> None:
        self.hub = hub

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        pull = self.hub.open_pull(branch=branch, base=base, title=title, body=body)
        return Review(url=pull.url, branch=branch)

    def outcomes(self, reviews: Sequence[Review], *, git: Branches) -> dict[str, ReviewOutcome]:
        if not reviews:
            return {}
        still_open = self.hub.open_pull_urls()
        found: dict[str, ReviewOutcome] = {}
        for review in reviews:
            number = pull_number(review.url)
            if review.url in still_open:
                found[review.url] = ReviewOutcome(OPEN)
            elif number is not None:
                found[review.url] = self.hub.pull_outcome(number)
            else:
                log.warning("review %s is not a GitHub pull request address; cannot tell what became of it",
                            review.url)
        return found

    def delete_branch(self, branch: str, *, git: Branches) -> None:
        self.hub.delete_branch(branch)


def pull_number(url: str) -> int | None:
    """The number of the pull request at web address ``url`` (``.../pull/<number>``), None when it is not one."""
    head, _, number = url.rstrip("/").rpartition("/")
    return int(number) if head.endswith("/pull") and number.isdigit() else None
