"""The interfaces between the service's parts, stated once.

``webhook.intake``, ``webhook.github`` and ``webhook.status`` do not import one another; where one
part needs another, it names one of these and ``webhook.app`` hands it the implementation
(docs/architecture.md draws the picture).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from generator.publishing import Published

__all__ = ["CLOSED", "MERGED", "OPEN", "Branch", "Branches", "Notify", "OnPublished", "OnReviewed", "OwnerOf",
           "PullRequests", "Review", "ReviewOutcome", "StatusView"]

#: The owner email of a store (the intake's view of Git and the queue), None when unknown: what the
#: status part asks before it shows an owner-scoped caller a store's status.
OwnerOf = Callable[[str], "str | None"]
#: Told of every commit storeops pushes (the status reader: wait for it, ask Argo CD to refresh).
OnPublished = Callable[[Published], object]


#: Posts a signed JSON message to a receiver's URL, with the callback rules (the status part's callbacks):
#: ``notify(url, payload)``; raises on refusal or failure. The intake tells a form's callback why a
#: request was refused with it.
Notify = Callable[[str, dict[str, object]], object]


#: Where a review stands: still open, merged into the base, or closed without merging.
OPEN = "open"
MERGED = "merged"
CLOSED = "closed"


@dataclass(frozen=True)
class Review:
    """An open pull request (or its local stand-in): where people look at it."""

    url: str
    branch: str
    #: The commit storeops pushed to the branch ('' when not known): a local review whose branch is gone
    #: was merged when the base holds this commit.
    head: str = ""


@dataclass(frozen=True)
class ReviewOutcome:
    """Where a review stands (``OPEN``, ``MERGED`` or ``CLOSED``); ``merge_commit`` is the commit that
    brought a merged review into the base, '' when not known."""

    state: str
    merge_commit: str = ""


#: Told what a review backend reported of a review's end (a GitHub ``pull_request`` ``closed`` event):
#: ``on_reviewed(review, outcome)``; the intake finishes the review's requests.
OnReviewed = Callable[[Review, ReviewOutcome], object]


@dataclass(frozen=True)
class Branch:
    """A branch as the remote shows it."""

    name: str
    #: Its commit on the remote, '' when the branch is gone.
    tip: str
    #: The commit on the base branch that brought the branch in (the tip, or when the branch is gone the
    #: commit storeops pushed to it): a merge commit, or that commit itself when it was fast-forwarded;
    #: '' when the base does not hold it.
    merged_by: str


class Branches(Protocol):
    """The remote's branches as Git shows them (``webhook.repository.Repository``): what a review backend
    whose reviews are plain branches reads and deletes."""

    def remote_branch(self, name: str, *, pushed: str = "") -> Branch:
        """Branch ``name`` as of the last fetch; ``pushed`` is the commit storeops pushed to it."""
        ...

    def delete_remote_branch(self, name: str) -> None:
        """Delete branch ``name`` from the remote; nothing when it is gone already."""
        ...


class PullRequests(Protocol):
    """Opens pull requests and tells what became of them: GitHub's
    (``webhook.github.client.GitHubPullRequests``) or local branches listed in a file
    (``webhook.repository.LocalPullRequests``)."""

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        """Open a pull request from ``branch`` into ``base``, or return the one already open for it."""
        ...

    def outcomes(self, reviews: Sequence[Review], *, git: Branches) -> dict[str, ReviewOutcome]:
        """Where each of ``reviews`` stands, by URL; one left out could not be told (ask again later).
        ``git`` was fetched just before, for a backend that reads the branches themselves."""
        ...

    def delete_branch(self, branch: str, *, git: Branches) -> None:
        """Delete the branch of a review that has ended from the remote; nothing when it is gone already."""
        ...


class StatusView(Protocol):
    """What the intake side asks of the status reader (``webhook.status.reader.StatusReader``)."""

    def store_status(self, store_id: str) -> dict[str, object] | None:
        """The store's last reported deployment status, or None when no Application was seen."""
        ...

    def metrics_text(self) -> str:
        """The reader's metrics in Prometheus text, to append to ``/metrics``."""
        ...

    @property
    def seq(self) -> int:
        """The number of the last recorded transition: changes whenever any status does."""
        ...

    def transitions(self, store_id: str) -> list[dict[str, object]]:
        """The store's reported transitions, oldest first (state, message, revision, at)."""
        ...
