"""The one way into Git: the clone storeops owns, publishing to the branch, and branches for pull requests.

The intake writer and the GitHub handlers both change the GitOps repository through one
:class:`Repository`: it holds the work clone (``Settings.workdir``) under a lock, publishes
(edit, render, commit, push; never forced, redone on top when the remote moved), pushes request
branches that only move forward, and opens their pull requests through a
:class:`~webhook.types.PullRequests` (GitHub's, or :class:`LocalPullRequests`: the branch is the
review, listed in a file). Every commit it pushes to the branch is told to ``on_published``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

from generator import publishing, trees
from generator.publishing import Edit, Published
from generator.settings import Settings
from webhook.types import OnPublished, PullRequests, Review

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

    def _published(self, result: Published) -> None:
        if self.on_published is None or not result.committed:
            return
        try:
            self.on_published(result)
        except Exception:
            # Telling Argo CD early is an optimisation; its own polling still finds the commit.
            log.exception("after publishing %s: telling the status reader failed", result.sha[:12])


class LocalPullRequests:
    """Pull requests as branches on the remote, listed in ``<state_dir>/reviews.json``. Idempotent."""

    def __init__(self, *, remote: str, index: Path) -> None:
        self.remote = remote
        self.index = index
        self._lock = threading.Lock()

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        with self._lock:
            known: dict[str, dict[str, str]] = json.loads(self.index.read_text()) if self.index.exists() else {}
            if branch not in known:
                known[branch] = {"base": base, "title": title, "body": body}
                tmp = self.index.with_suffix(".tmp")
                tmp.write_text(json.dumps(known, indent=2, sort_keys=True))
                tmp.replace(self.index)
                log.info("opened local review for branch %s into %s", branch, base)
        return Review(url=f"{self.remote}#{branch}", branch=branch)
