"""The review seam: how a change that needs review becomes a pull request.

The writer pushes the change to its own branch and then asks a :class:`Reviews` to open a pull
request for it. The GitHub client implements this interface; :class:`LocalReviews` is the stand-in
that needs nothing but the remote: the pushed branch is the review, recorded in a file.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Review:
    """An open review: where people look at it."""

    url: str
    branch: str


class Reviews(Protocol):
    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        """Open a pull request from ``branch`` into ``base``, or return the one already open for it."""
        ...


class LocalReviews:
    """Reviews as branches on the remote, listed in ``<state_dir>/reviews.json``. Idempotent."""

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
