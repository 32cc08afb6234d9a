"""A local GitHub: the REST endpoints storeops calls, over real HTTP, backed by a real bare git repository.

PyGithub is pointed at it with ``base_url``. Each answer has the shape GitHub documents for that
endpoint (the doc is named beside each handler); only the fields a client reads or a person would
look at are filled in. Git data is real: pull request heads are ``refs/pull/<n>/head`` in the bare
repository, and merging makes a real merge commit on the base branch.

Tests can make the next answers fail (``fail_next``) to exercise back-off, and read what was asked
(``requests``) and what is there (``pulls``, ``issues``, ``comments``, ``statuses``, ``check_runs``).
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import secrets
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

DOCS = "https://docs.github.com/rest"
Json = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    at: float
    auth: str


@dataclass
class Failure:
    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: Json
    times: int


@dataclass
class Pull:
    number: int
    title: str
    body: str
    head: str
    base: str
    user: str
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    #: The base branch's commit when the pull request was opened (its commits are the ones after it).
    base_at_open: str = ""
    created_at: str = ""
    updated_at: str = ""
    closed_at: str | None = None


@dataclass
class Issue:
    number: int
    title: str
    body: str
    user: str
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    state_reason: str | None = None
    created_at: str = ""
    updated_at: str = ""
    closed_at: str | None = None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Answer(Exception):
    def __init__(self, status: int, body: Json | list[Json] | None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found() -> Answer:
    return Answer(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


def invalid(resource: str, field_name: str, code: str, message: str = "") -> Answer:
    error = {"resource": resource, "field": field_name, "code": code, **({"message": message} if message else {})}
    return Answer(422, {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS, "status": "422"})


class FakeGitHub:
    """One repository (``owner/name``) on a local GitHub, authenticated by a token or as a GitHub App."""

    def __init__(self, *, bare: Path, repository: str = "acme/gitops", token: str = "",
                 app_id: str = "", app_public_key: str = "", installation_id: int = 77,
                 bot: str = "storeops-bot") -> None:
        self.bare = bare
        self.full_name = repository
        self.owner, self.name = repository.split("/")
        self.token = token
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.installation_id = installation_id
        self.bot = bot
        self.installation_tokens: set[str] = set()
        self.pulls: dict[int, Pull] = {}
        self.issues: dict[int, Issue] = {}
        self.comments: dict[int, Json] = {}
        self.statuses: list[Json] = []
        self.check_runs: list[Json] = []
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any]]]] = []
        repo = rf"/repos/{re.escape(self.owner)}/{re.escape(self.name)}"
        for method, pattern, handler in (
            ("GET", rf"{repo}", self.get_repo),
            ("GET", rf"{repo}/installation", self.get_installation),
            ("POST", r"/app/installations/(?P<iid>\d+)/access_tokens", self.create_access_token),
            ("GET", rf"{repo}/pulls", self.list_pulls),
            ("POST", rf"{repo}/pulls", self.create_pull),
            ("GET", rf"{repo}/pulls/(?P<n>\d+)", self.get_pull),
            ("PATCH", rf"{repo}/pulls/(?P<n>\d+)", self.update_pull),
            ("PUT", rf"{repo}/pulls/(?P<n>\d+)/merge", self.merge_pull),
            ("GET", rf"{repo}/issues/(?P<n>\d+)", self.get_issue),
            ("GET", rf"{repo}/issues/(?P<n>\d+)/comments", self.list_comments),
            ("POST", rf"{repo}/issues/(?P<n>\d+)/comments", self.create_comment),
            ("PATCH", rf"{repo}/issues/comments/(?P<cid>\d+)", self.update_comment),
            ("POST", rf"{repo}/statuses/(?P<sha>[0-9a-f]{{40}})", self.create_status),
            ("GET", rf"{repo}/commits/(?P<ref>[^/]+)/statuses", self.list_statuses),
            ("GET", rf"{repo}/commits", self.list_commits),
            ("GET", rf"{repo}/commits/(?P<sha>[0-9a-f]{{40}})/pulls", self.list_commit_pulls),
            ("POST", rf"{repo}/check-runs", self.create_check_run),
            ("GET", rf"{repo}/git/matching-refs/(?P<ref>.+)", self.list_matching_refs),
            ("DELETE", rf"{repo}/git/refs/(?P<ref>.+)", self.delete_ref),
        ):
            self.routes.append((method, re.compile(pattern + r"/?$"), handler))

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                fake.serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def html(self) -> str:
        return f"https://github.example/{self.full_name}"

    def fail_next(self, method: str, path: str, status: int, *, headers: dict[str, str] | None = None,
                  message: str = "", times: int = 1) -> None:
        """The next ``times`` requests matching ``method`` and the ``path`` regex get this answer."""
        body = {"message": message or ("API rate limit exceeded" if status == 429 else "Forbidden"),
                "documentation_url": DOCS + "/using-the-rest-api/rate-limits-for-the-rest-api"}
        with self._lock:
            self.failures.append(Failure(method, re.compile(path), status, headers or {}, body, times))

    # --- the HTTP edge ----------------------------------------------------------------------------

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        split = urlsplit(request.path)
        path, query = unquote(split.path), {k: v[-1] for k, v in parse_qs(split.query).items()}
        method = request.command
        auth = "none"
        try:
            auth = self._authenticate(request.headers.get("Authorization", ""), path)
            failure = self._failure(method, path)
            if failure is not None:
                raise Answer(failure.status, failure.body, failure.headers)
            for route_method, pattern, handler in self.routes:
                match = pattern.match(path)
                if match and route_method == method:
                    body = json.loads(raw) if raw else {}
                    with self._lock:
                        status, result = handler(body=body, query=query, auth=auth, **match.groupdict())
                    break
            else:
                raise not_found()
            headers: dict[str, str] = {}
        except Answer as answer:
            status, result, headers = answer.status, answer.body, answer.headers
        with self._lock:
            self.requests.append(Recorded(method, path, status, time.monotonic(), auth))
        data = b"" if result is None else json.dumps(result).encode()
        request.send_response(status)
        reset = str(int(time.time()) + 3600)
        base = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(data)),
                "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": reset,
                "X-RateLimit-Used": "1", "X-RateLimit-Resource": "core", "X-GitHub-Media-Type": "github.v3"}
        for key, value in {**base, **headers}.items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(data)

    def _failure(self, method: str, path: str) -> Failure | None:
        with self._lock:
            for failure in self.failures:
                if failure.times > 0 and failure.method == method and failure.path.search(path):
                    failure.times -= 1
                    return failure
        return None

    def _authenticate(self, header: str, path: str) -> str:
        """Tokens as ``token <t>``/``Bearer <t>``; ``/app/...`` takes the App's JWT (RS256, iss = App id)."""
        scheme, _, value = header.partition(" ")
        bad = Answer(401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"})
        if path.startswith("/app/") or path.endswith("/installation"):
            if scheme.lower() != "bearer" or not self.app_id:
                raise bad
            try:
                claims = jwt.decode(value, self.app_public_key, algorithms=["RS256"])
            except jwt.PyJWTError:
                raise bad from None
            if str(claims.get("iss")) != self.app_id:
                raise bad
            return "jwt"
        if scheme.lower() not in ("token", "bearer"):
            raise Answer(401, {"message": "Requires authentication", "documentation_url": DOCS, "status": "401"})
        if self.token and secrets.compare_digest(value, self.token):
            return "token"
        if value in self.installation_tokens:
            return "installation"
        raise bad

    # --- JSON shapes ------------------------------------------------------------------------------

    def user(self, login: str) -> Json:
        # https://docs.github.com/en/rest/users/users#get-a-user (simple-user)
        bot = login.endswith("[bot]") or login == self.bot
        return {"login": login, "id": zlib.crc32(login.encode()) % 10**7, "node_id": f"U_{login}",
                "type": "Bot" if bot else "User",
                "url": f"{self.url}/users/{login}", "html_url": f"https://github.example/{login}",
                "avatar_url": f"https://avatars.example/{login}", "site_admin": False}

    def repo(self) -> Json:
        # https://docs.github.com/en/rest/repos/repos#get-a-repository
        return {"id": 4242, "node_id": "R_gitops", "name": self.name, "full_name": self.full_name,
                "private": True, "owner": self.user(self.owner), "html_url": self.html,
                "url": f"{self.url}/repos/{self.full_name}", "default_branch": "main", "fork": False,
                "clone_url": str(self.bare), "visibility": "private"}

    def pull_json(self, pull: Pull) -> Json:
        # https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request
        api = f"{self.url}/repos/{self.full_name}"
        head_sha = self.git("rev-parse", f"refs/pull/{pull.number}/head")
        base_sha = self.git("rev-parse", f"refs/heads/{pull.base}")
        return {"url": f"{api}/pulls/{pull.number}", "id": 500 + pull.number, "node_id": f"PR_{pull.number}",
                "html_url": f"{self.html}/pull/{pull.number}", "issue_url": f"{api}/issues/{pull.number}",
                "comments_url": f"{api}/issues/{pull.number}/comments",
                "statuses_url": f"{api}/statuses/{head_sha}", "number": pull.number, "state": pull.state,
                "locked": False, "title": pull.title, "body": pull.body, "user": self.user(pull.user),
                "labels": [], "draft": False, "created_at": pull.created_at, "updated_at": pull.updated_at,
                "closed_at": pull.closed_at, "merged_at": pull.closed_at if pull.merged else None,
                "merge_commit_sha": pull.merge_commit_sha, "merged": pull.merged,
                "mergeable": None if pull.merged else True, "author_association": "MEMBER",
                "head": {"label": f"{self.owner}:{pull.head}", "ref": pull.head, "sha": head_sha,
                         "user": self.user(self.owner), "repo": self.repo()},
                "base": {"label": f"{self.owner}:{pull.base}", "ref": pull.base, "sha": base_sha,
                         "user": self.user(self.owner), "repo": self.repo()}}

    def issue_json(self, issue: Issue) -> Json:
        # https://docs.github.com/en/rest/issues/issues#get-an-issue
        api = f"{self.url}/repos/{self.full_name}"
        count = sum(1 for c in self.comments.values() if c["issue_url"].endswith(f"/issues/{issue.number}"))
        return {"url": f"{api}/issues/{issue.number}", "repository_url": api, "id": 900 + issue.number,
                "node_id": f"I_{issue.number}", "html_url": f"{self.html}/issues/{issue.number}",
                "number": issue.number, "state": issue.state, "state_reason": issue.state_reason,
                "title": issue.title, "body": issue.body, "user": self.user(issue.user),
                "labels": [{"id": zlib.crc32(n.encode()) % 10**6, "node_id": f"L_{n}", "name": n, "color": "0e8a16",
                            "default": False, "description": ""} for n in issue.labels],
                "assignees": [], "locked": False, "comments": count, "created_at": issue.created_at,
                "updated_at": issue.updated_at, "closed_at": issue.closed_at, "author_association": "MEMBER"}

    # --- git --------------------------------------------------------------------------------------

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(["git", "-C", str(self.bare), *args], capture_output=True, text=True, check=False,
                                env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(self.bare), **(env or {})})
        if result.returncode != 0:
            raise Answer(422, {"message": f"git {args[0]}: {result.stderr.strip()}", "documentation_url": DOCS})
        return result.stdout.strip()

    def branch_sha(self, branch: str) -> str:
        try:
            return self.git("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")
        except Answer:
            return ""

    def sync(self) -> None:
        """What GitHub does on every push: ``refs/pull/<n>/head`` follows the open pull request's branch."""
        with self._lock:
            for pull in self.pulls.values():
                sha = self.branch_sha(pull.head)
                if pull.state == "open" and sha:
                    self.git("update-ref", f"refs/pull/{pull.number}/head", sha)

    # --- test-side actions (what people do on github.com) ----------------------------------------

    def open_issue(self, *, title: str, body: str, user: str = "jane", labels: list[str] | None = None) -> Issue:
        with self._lock:
            issue = Issue(next(self._numbers), title, body, user, labels or [], created_at=now(), updated_at=now())
            self.issues[issue.number] = issue
            return issue

    def edit_issue(self, number: int, *, body: str) -> Issue:
        with self._lock:
            issue = self.issues[number]
            issue.body, issue.updated_at = body, now()
            return issue

    def comments_on(self, number: int) -> list[Json]:
        with self._lock:
            return [c for c in self.comments.values() if c["issue_url"].endswith(f"/issues/{number}")]

    def statuses_for(self, sha: str, context: str = "storeops/validate") -> list[Json]:
        with self._lock:
            return [s for s in self.statuses if s["sha"] == sha and s["context"] == context]

    def writes(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    # --- endpoints --------------------------------------------------------------------------------

    def get_repo(self, **_: Any) -> tuple[int, Any]:
        return 200, self.repo()

    def get_installation(self, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
        return 200, {"id": self.installation_id, "account": self.user(self.owner), "app_id": int(self.app_id),
                     "app_slug": "storeops", "target_id": 1, "target_type": "Organization",
                     "repository_selection": "selected",
                     "access_tokens_url": f"{self.url}/app/installations/{self.installation_id}/access_tokens",
                     "repositories_url": f"{self.url}/installation/repositories",
                     "html_url": f"https://github.example/settings/installations/{self.installation_id}",
                     "permissions": {"checks": "write", "contents": "write", "issues": "write",
                                     "pull_requests": "write", "statuses": "write"},
                     "events": ["issues", "pull_request", "push"], "created_at": now(), "updated_at": now(),
                     "single_file_name": None}

    def create_access_token(self, *, iid: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
        if int(iid) != self.installation_id:
            raise not_found()
        token = "ghs_" + secrets.token_hex(18)
        self.installation_tokens.add(token)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return 201, {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "permissions": {"checks": "write", "contents": "write", "issues": "write"},
                     "repository_selection": "selected"}

    def list_pulls(self, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/pulls/pulls#list-pull-requests (head is "user:ref-name")
        self.sync()
        state = query.get("state", "open")
        head = query.get("head", "")
        found = []
        for pull in sorted(self.pulls.values(), key=lambda p: -p.number):
            if state != "all" and pull.state != state:
                continue
            if head and head != f"{self.owner}:{pull.head}":
                continue
            if query.get("base") and query["base"] != pull.base:
                continue
            found.append(self.pull_json(pull))
        return 200, found

    def create_pull(self, *, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request
        head = str(body.get("head", "")).split(":")[-1]
        base = str(body.get("base", ""))
        if not body.get("title"):
            raise invalid("PullRequest", "title", "missing_field")
        if not self.branch_sha(head):
            raise invalid("PullRequest", "head", "invalid")
        if not self.branch_sha(base):
            raise invalid("PullRequest", "base", "invalid")
        if any(p.head == head and p.base == base and p.state == "open" for p in self.pulls.values()):
            raise invalid("PullRequest", "", "custom", f"A pull request already exists for {self.owner}:{head}.")
        pull = Pull(next(self._numbers), str(body["title"]), str(body.get("body") or ""), head, base, self.bot,
                    created_at=now(), updated_at=now())
        pull.base_at_open = self.branch_sha(base)
        self.pulls[pull.number] = pull
        self.git("update-ref", f"refs/pull/{pull.number}/head", self.branch_sha(head))
        return 201, self.pull_json(pull)

    def _pull(self, n: str) -> Pull:
        pull = self.pulls.get(int(n))
        if pull is None:
            raise not_found()
        return pull

    def get_pull(self, *, n: str, **_: Any) -> tuple[int, Any]:
        self.sync()
        return 200, self.pull_json(self._pull(n))

    def update_pull(self, *, n: str, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/pulls/pulls#update-a-pull-request (state: open or closed)
        pull = self._pull(n)
        pull.title = str(body.get("title", pull.title))
        pull.body = str(body.get("body", pull.body))
        state = body.get("state", pull.state)
        if state not in ("open", "closed"):
            raise invalid("PullRequest", "state", "invalid")
        if state != pull.state:
            if pull.merged:
                raise invalid("PullRequest", "state", "custom", "Cannot change the state of a merged pull request")
            if state == "open" and not self.branch_sha(pull.head):
                raise invalid("PullRequest", "state", "custom", "The head branch is gone; it cannot be reopened")
            pull.state, pull.closed_at = state, now() if state == "closed" else None
        pull.updated_at = now()
        return 200, self.pull_json(pull)

    def merge_pull(self, *, n: str, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request
        self.sync()
        pull = self._pull(n)
        if pull.state != "open":
            raise Answer(405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS})
        base_sha, head_sha = self.branch_sha(pull.base), self.branch_sha(pull.head)
        try:
            tree = self.git("merge-tree", "--write-tree", base_sha, head_sha).splitlines()[0]
        except Answer:
            raise Answer(405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS}) from None
        title = body.get("commit_title") or f"Merge pull request #{pull.number} from {self.owner}/{pull.head}"
        message = f"{title}\n\n{body.get('commit_message') or pull.title}\n"
        identity = {"GIT_AUTHOR_NAME": "Jane Doe", "GIT_AUTHOR_EMAIL": "jane@example.test",
                    "GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.example"}
        sha = self.git("commit-tree", tree, "-p", base_sha, "-p", head_sha, "-m", message, env=identity)
        self.git("update-ref", f"refs/heads/{pull.base}", sha, base_sha)
        pull.state, pull.merged, pull.merge_commit_sha, pull.closed_at = "closed", True, sha, now()
        for closed in re.findall(r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s+#(\d+)", pull.body):
            issue = self.issues.get(int(closed))
            if issue is not None:
                issue.state, issue.state_reason, issue.closed_at = "closed", "completed", now()
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def _issue(self, n: str) -> Issue:
        issue = self.issues.get(int(n))
        if issue is None:
            raise not_found()
        return issue

    def get_issue(self, *, n: str, **_: Any) -> tuple[int, Any]:
        if int(n) in self.pulls:
            # Every pull request is an issue too (GitHub answers /issues/<n> for it).
            pull = self.pulls[int(n)]
            return 200, {**self.issue_json(Issue(pull.number, pull.title, pull.body, pull.user)),
                         "pull_request": {"url": f"{self.url}/repos/{self.full_name}/pulls/{pull.number}"}}
        return 200, self.issue_json(self._issue(n))

    def _issue_or_pull(self, n: str) -> None:
        if int(n) not in self.issues and int(n) not in self.pulls:
            raise not_found()

    def list_comments(self, *, n: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/issues/comments#list-issue-comments
        self._issue_or_pull(n)
        return 200, sorted(self.comments_on(int(n)), key=lambda c: int(c["id"]))

    def create_comment(self, *, n: str, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
        self._issue_or_pull(n)
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise invalid("IssueComment", "body", "missing_field")
        if len(body["body"]) > 65536:
            raise invalid("IssueComment", "body", "custom", "Body is too long (maximum is 65536 characters)")
        cid = next(self._ids)
        api = f"{self.url}/repos/{self.full_name}"
        comment = {"id": cid, "node_id": f"IC_{cid}", "url": f"{api}/issues/comments/{cid}",
                   "html_url": f"{self.html}/issues/{n}#issuecomment-{cid}", "body": body["body"],
                   "user": self.user(self.bot), "created_at": now(), "updated_at": now(),
                   "issue_url": f"{api}/issues/{n}", "author_association": "NONE"}
        self.comments[cid] = comment
        return 201, comment

    def update_comment(self, *, cid: str, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/issues/comments#update-an-issue-comment
        comment = self.comments.get(int(cid))
        if comment is None:
            raise not_found()
        comment["body"], comment["updated_at"] = body["body"], now()
        return 200, comment

    def create_status(self, *, sha: str, body: Json, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
        if body.get("state") not in ("error", "failure", "pending", "success"):
            raise invalid("Status", "state", "custom", "state is not included in the list")
        if len(str(body.get("description") or "")) > 140:
            raise invalid("Status", "description", "custom", "description is too long (maximum is 140 characters)")
        try:
            self.git("cat-file", "-e", f"{sha}^{{commit}}")
        except Answer:
            raise invalid("Status", "sha", "custom", f"No commit found for SHA: {sha}") from None
        sid = next(self._ids)
        status = {"url": f"{self.url}/repos/{self.full_name}/statuses/{sha}", "id": sid, "node_id": f"SC_{sid}",
                  "state": body["state"], "description": body.get("description"),
                  "target_url": body.get("target_url"), "context": body.get("context") or "default",
                  "created_at": now(), "updated_at": now(), "creator": self.user(self.bot), "sha": sha}
        self.statuses.append(status)
        return 201, {k: v for k, v in status.items() if k != "sha"}

    def list_statuses(self, *, ref: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/commits/statuses#list-commit-statuses-for-a-reference
        sha = self.branch_sha(ref) or ref
        return 200, [{k: v for k, v in s.items() if k != "sha"} for s in reversed(self.statuses) if s["sha"] == sha]

    def commit_json(self, sha: str) -> Json:
        # https://docs.github.com/en/rest/commits/commits#get-a-commit (the "commit" schema)
        fields = self.git("log", "-1", "--format=%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%T%x00%P%x00%B", sha)
        an, ae, ad, cn, ce, cd, tree, parents, message = fields.split("\0", 8)
        api = f"{self.url}/repos/{self.full_name}"
        return {"url": f"{api}/commits/{sha}", "sha": sha, "node_id": f"C_{sha[:10]}",
                "html_url": f"{self.html}/commit/{sha}", "comments_url": f"{api}/commits/{sha}/comments",
                "commit": {"url": f"{api}/git/commits/{sha}", "author": {"name": an, "email": ae, "date": ad},
                           "committer": {"name": cn, "email": ce, "date": cd}, "message": message.strip(),
                           "tree": {"url": f"{api}/git/trees/{tree}", "sha": tree}, "comment_count": 0},
                "author": None, "committer": None,
                "parents": [{"url": f"{api}/commits/{p}", "sha": p} for p in parents.split()]}

    def list_commits(self, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/commits/commits#list-commits (sha: where to start; path: only these)
        start = query.get("sha") or "main"
        args = ["log", "--format=%H", "-n", query.get("per_page", "30"), self.branch_sha(start) or start]
        if query.get("path"):
            args += ["--", query["path"]]
        return 200, [self.commit_json(sha) for sha in self.git(*args).split()]

    def list_commit_pulls(self, *, sha: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/commits/commits#list-pull-requests-associated-with-a-commit
        def contains(tip: str, commit: str) -> bool:
            return subprocess.run(["git", "-C", str(self.bare), "merge-base", "--is-ancestor", commit, tip],
                                  check=False).returncode == 0
        found = [self.pull_json(p) for p in sorted(self.pulls.values(), key=lambda p: -p.number)
                 if contains(f"refs/pull/{p.number}/head", sha) and not contains(p.base_at_open, sha)]
        return 200, found

    def ref_json(self, ref: str, sha: str) -> Json:
        # https://docs.github.com/en/rest/git/refs#get-a-reference (the "git-ref" schema)
        api = f"{self.url}/repos/{self.full_name}"
        return {"ref": ref, "node_id": f"REF_{zlib.crc32(ref.encode())}", "url": f"{api}/git/{ref}",
                "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"}}

    def list_matching_refs(self, *, ref: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/git/refs#list-matching-references (refs whose names start with ref)
        listing = self.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/tags/")
        found = [line.split() for line in listing.splitlines()]
        return 200, [self.ref_json(name, sha) for name, sha in found if name.startswith(f"refs/{ref}")]

    def delete_ref(self, *, ref: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/git/refs#delete-a-reference (204; 422 when there is no such ref)
        try:
            self.git("rev-parse", "--verify", f"refs/{ref}")
        except Answer:
            raise Answer(422, {"message": "Reference does not exist", "documentation_url": DOCS,
                               "status": "422"}) from None
        self.git("update-ref", "-d", f"refs/{ref}")
        return 204, None

    def create_check_run(self, *, body: Json, auth: str, **_: Any) -> tuple[int, Any]:
        # https://docs.github.com/en/rest/checks/runs#create-a-check-run (GitHub Apps only)
        if auth != "installation":
            raise Answer(403, {"message": "You must authenticate via a GitHub App.", "documentation_url": DOCS})
        if not body.get("name") or not body.get("head_sha"):
            raise invalid("CheckRun", "name" if not body.get("name") else "head_sha", "missing_field")
        rid = next(self._ids)
        output = body.get("output") or {}
        run = {"id": rid, "head_sha": body["head_sha"], "node_id": f"CR_{rid}", "external_id": "",
               "url": f"{self.url}/repos/{self.full_name}/check-runs/{rid}",
               "html_url": f"{self.html}/runs/{rid}", "details_url": body.get("details_url"),
               "status": body.get("status", "queued"), "conclusion": body.get("conclusion"),
               "started_at": now(), "completed_at": now() if body.get("conclusion") else None,
               "output": {"title": output.get("title"), "summary": output.get("summary"),
                          "text": output.get("text"), "annotations_count": 0,
                          "annotations_url": f"{self.url}/repos/{self.full_name}/check-runs/{rid}/annotations"},
               "name": body["name"], "check_suite": {"id": 1}, "app": {"id": int(self.app_id or 0),
                                                                     "slug": "storeops"},
               "pull_requests": []}
        self.check_runs.append(run)
        return 201, run
