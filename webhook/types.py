"""The interfaces between the service's parts, stated once.

``webhook.intake``, ``webhook.github`` and ``webhook.status`` do not import one another; where one
part needs another, it names one of these and ``webhook.app`` hands it the implementation
(docs/architecture.md draws the picture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from generator.publishing import Published

__all__ = ["Notify", "OnPublished", "OwnerOf", "PullRequests", "Review", "StatusView"]

#: The owner email of a store (the intake's view of Git and the queue), None when unknown: what the
#: status part asks before it shows an owner-scoped caller a store's status.
OwnerOf = Callable[[str], "str | None"]
#: Told of every commit storeops pushes (the status reader: wait for it, ask Argo CD to refresh).
OnPublished = Callable[[Published], object]


#: Posts a signed JSON message to a receiver's URL, with the callback rules (the status part's callbacks):
#: ``notify(url, payload)``; raises on refusal or failure. The intake tells a form's callback why a
#: request was refused with it.
Notify = Callable[[str, dict[str, object]], object]


@dataclass(frozen=True)
class Review:
    """An open pull request (or its local stand-in): where people look at it."""

    url: str
    branch: str


class PullRequests(Protocol):
    """Opens pull requests: GitHub's (``webhook.github.client.GitHubPullRequests``) or local branches
    listed in a file (``webhook.intake.reviews.LocalPullRequests``)."""

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        """Open a pull request from ``branch`` into ``base``, or return the one already open for it."""
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
