"""The one way into Git: the clone storeops owns, publishing to the branch, and branches for pull requests.

The intake writer and the GitHub handlers both change the GitOps repository through one
:class:`Repository`: it holds the work clone (``Settings.workdir``) under a lock, publishes
(edit, render, commit, push; never forced, redone on top when the remote moved), pushes request
branches that only move forward, opens their pull requests through a
:class:`~webhook.types.PullRequests` (GitHub's, or :class:`LocalPullRequests`: the branch is the
review, listed in a file), asks it what became of them, and deletes the branches of reviews that
ended. Every commit it pushes to the branch is told to ``on_published``; the end of a review a
backend reports by itself (a GitHub event) is told to ``on_reviewed``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import git as gitpython

from generator import publishing, trees
from generator.errors import GitError
from generator.publishing import Edit, Published
from generator.settings import Settings
from webhook.types import (
    CLOSED,
    MERGED,
    OPEN,
    Branch,
    Branches,
    OnPublished,
    OnReviewed,
    PullRequests,
    Review,
    ReviewOutcome,
)

__all__ = ["LocalPullRequests", "Repository", "log_published"]

log = logging.getLogger(__name__)


def log_published(published: Published) -> None:
    """``on_published`` without a status reader: Argo CD finds the commit on its own poll."""
    changes = published.changes
    touched = sorted({*changes.added, *changes.changed, *changes.removed})
    log.info("no Argo CD refresher configured; Argo CD picks up %s at %s on its next poll", ", ".join(touched),
             published.sha[:12])


class Repository:
    def __init__(self, *, git: Settings, pulls: PullRequests, on_published: OnPublished | None = None) -> None:
        self.git = git
        self.pulls = pulls
        #: Told of every commit published to the branch (the status reader: refresh Argo CD, wait for it).
        self.on_published = on_published
        #: Told when a backend reports a review's end by itself (the intake's writer, wired by ``service.build``).
        self.on_reviewed: OnReviewed | None = None
        self._lock = threading.RLock()

    def read(self) -> tuple[dict[str, bytes], str]:
        """The inputs on the remote's branch and its commit ('' when the branch is empty)."""
        with self._lock:
            repo = publishing.open_workdir(self.git, publishing.remote_url(self.git))
            sha = publishing.sync(repo, self.git.branch)
            return trees.read_inputs(self.git.workdir), sha

    def publish(self, *, edit: Edit | None = None, message: str = "",
                allow_mass_delete: bool = False) -> tuple[Published, dict[str, bytes]]:
        """Apply ``edit`` on the branch, render, commit and push; returns the result and the inputs after it."""
        with self._lock:
            result = publishing.publish(self.git, edit=edit, message_extra=message,
                                        allow_mass_delete=allow_mass_delete)
            files = trees.read_inputs(self.git.workdir)
        self._published(result)
        return result, files

    def push_branch(self, branch: str, *, edit: Edit, message: str, render: bool = True) -> Published:
        """Apply ``edit`` on ``branch`` (made from the branch's base when new), render, commit and push it.

        The branch only moves forward: a later call continues from its tip. With ``render=False``
        the branch carries the edit alone and the publish after the merge renders it.
        """
        with self._lock:
            repo = publishing.open_workdir(self.git, publishing.remote_url(self.git))
            base = publishing.sync(repo, self.git.branch)
            if not str(repo.git.ls_remote("--heads", "origin", f"refs/heads/{branch}")).strip():
                repo.git.push("origin", f"{base}:refs/heads/{branch}")
            return publishing.publish(replace(self.git, branch=branch), edit=edit, message_extra=message,
                                      render=render)

    def open_pull(self, branch: str, *, title: str, body: str) -> Review:
        """Open the pull request of ``branch`` into the branch storeops publishes to (or find the open one)."""
        review = self.pulls.open(branch=branch, base=self.git.branch, title=title, body=body)
        log.info("branch %s is in review at %s", branch, review.url)
        return review

    # --- the end of reviews ----------------------------------------------------------------------

    def review_outcomes(self, reviews: Sequence[Review]) -> dict[str, ReviewOutcome]:
        """Where each review stands, by URL, as its backend tells (the remote is fetched first)."""
        if not reviews:
            return {}
        with self._lock:
            _fetch(self._clone())
        return self.pulls.outcomes(reviews, git=self)

    def reviewed(self, review: Review, outcome: ReviewOutcome) -> None:
        """Pass on the end of a review its backend reported by itself (GitHub's ``pull_request`` event)."""
        log.info("review %s (branch %s) is %s", review.url, review.branch, outcome.state)
        if self.on_reviewed is not None:
            self.on_reviewed(review, outcome)

    def end_review(self, review: Review) -> None:
        """Delete the branch of a review that has ended (through its backend: GitHub's API, or Git)."""
        self.pulls.delete_branch(review.branch, git=self)
        log.info("deleted branch %s of review %s", review.branch, review.url)

    def branches(self, prefix: str) -> list[str]:
        """The remote's branches whose names start with ``prefix``, as of the last fetch."""
        with self._lock:
            repo = self._clone()
            listing = str(repo.git.for_each_ref("--format=%(refname)", "refs/remotes/origin/"))
        names = (line.removeprefix("refs/remotes/origin/") for line in listing.splitlines())
        return sorted(name for name in names if name.startswith(prefix))

    def remote_branch(self, name: str, *, pushed: str = "") -> Branch:
        """Branch ``name`` as of the last fetch (:class:`~webhook.types.Branches`)."""
        with self._lock:
            repo = self._clone()
            tip = _rev(repo, f"refs/remotes/origin/{name}")
            brought = tip or pushed
            merged_by = _merged_by(repo, brought, f"refs/remotes/origin/{self.git.branch}") if brought else ""
        return Branch(name=name, tip=tip, merged_by=merged_by)

    def delete_remote_branch(self, name: str) -> None:
        """Delete branch ``name`` from the remote with Git; nothing when it is gone already."""
        with self._lock:
            repo = self._clone()
            try:
                repo.git.push("origin", "--delete", f"refs/heads/{name}")
            except gitpython.GitCommandError as e:
                if "remote ref does not exist" not in str(e.stderr):
                    raise GitError(f"cannot delete branch {name} from {repo.remotes.origin.url}: "
                                   f"{' '.join(str(e.stderr).split())}") from e
            repo.git.update_ref("-d", f"refs/remotes/origin/{name}")

    def _clone(self) -> gitpython.Repo:
        return publishing.open_workdir(self.git, publishing.remote_url(self.git))

    def merged(self, result: Published) -> None:
        """A review's merge put ``result.changes`` on the branch at ``result.sha`` (already rendered there):
        told like a publish of them (the status reader waits for that commit and asks Argo CD to look)."""
        self._published(result)

    def _published(self, result: Published) -> None:
        if self.on_published is None or not result.committed:
            return
        try:
            self.on_published(result)
        except Exception:
            # Telling Argo CD early is an optimisation; its own polling still finds the commit.
            log.exception("after publishing %s: telling the status reader failed", result.sha[:12])


def _fetch(repo: gitpython.Repo) -> None:
    try:
        repo.git.fetch("origin", "--prune")
    except gitpython.GitCommandError as e:
        raise GitError(f"cannot fetch from {repo.remotes.origin.url}: {' '.join(str(e.stderr).split())}") from e


def _rev(repo: gitpython.Repo, ref: str) -> str:
    try:
        return str(repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
    except gitpython.GitCommandError:
        return ""


def _merged_by(repo: gitpython.Repo, sha: str, base: str) -> str:
    """The commit on ``base``'s first-parent line that brought ``sha`` in: a merge commit, or ``sha`` itself
    when it was fast-forwarded; '' when ``base`` does not hold ``sha`` (or it is unknown here)."""
    try:
        repo.git.merge_base("--is-ancestor", sha, base)
    except gitpython.GitCommandError:
        return ""
    line = str(repo.git.rev_list("--first-parent", "--reverse", f"{sha}..{base}")).split()
    after = set(str(repo.git.rev_list("--ancestry-path", f"{sha}..{base}")).split())
    first = next((commit for commit in line if commit in after), "")
    if not first or _rev(repo, f"{first}^1") == sha:
        return sha
    return first


class LocalPullRequests:
    """Pull requests as branches on the remote, listed in ``<state_dir>/reviews.json``. Idempotent.

    The branch is the review. A reviewer merges it by merging the branch into the base and pushing
    the base (a merge, a fast-forward; a squash or rebase counts when it leaves the request's change on
    the base), and closes it without merging by deleting the branch from the remote. The file keeps
    each review's ``state`` (``open``, ``merged`` with its ``merge_commit``, ``closed``).
    """

    def __init__(self, *, remote: str, index: Path) -> None:
        self.remote = remote
        self.index = index
        self._lock = threading.Lock()

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        with self._lock:
            known = self._read()
            if branch not in known:
                known[branch] = {"base": base, "title": title, "body": body, "state": OPEN}
                self._write(known)
                log.info("opened local review for branch %s into %s", branch, base)
        return Review(url=f"{self.remote}#{branch}", branch=branch)

    def outcomes(self, reviews: Sequence[Review], *, git: Branches) -> dict[str, ReviewOutcome]:
        found: dict[str, ReviewOutcome] = {}
        for review in reviews:
            branch = git.remote_branch(review.branch, pushed=review.head)
            if branch.merged_by:
                found[review.url] = ReviewOutcome(MERGED, branch.merged_by)
            elif not branch.tip:
                found[review.url] = ReviewOutcome(CLOSED)
            else:
                found[review.url] = ReviewOutcome(OPEN)
        with self._lock:
            known = self._read()
            changed = False
            for review in reviews:
                entry, outcome = known.get(review.branch), found[review.url]
                if entry is not None and outcome.state != OPEN and entry.get("state") != outcome.state:
                    entry["state"] = outcome.state
                    if outcome.merge_commit:
                        entry["merge_commit"] = outcome.merge_commit
                    changed = True
            if changed:
                self._write(known)
        return found

    def delete_branch(self, branch: str, *, git: Branches) -> None:
        git.delete_remote_branch(branch)

    def _read(self) -> dict[str, dict[str, str]]:
        known: dict[str, dict[str, str]] = json.loads(self.index.read_text()) if self.index.exists() else {}
        return known

    def _write(self, known: dict[str, dict[str, str]]) -> None:
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2, sort_keys=True))
        tmp.replace(self.index)
