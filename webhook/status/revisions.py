"""Does a revision Argo CD synced contain a store's latest change? Answered by git in the publish clone.

Argo CD reports ``status.sync.revision`` (the commit it compared and synced); storeops knows the
commit that last changed each store (``Published.sha``). The store is at its change when that
revision is the change or a descendant of it (``git merge-base --is-ancestor``), and when Argo CD
compares the store's Application as the change renders it: a change of the Application itself (its
chart path, as a rollout to a release makes) reaches the cluster through the root Application, so until
then the store's Application is Synced at the new commit with its old source. Answers are cached:
thousands of stores share a handful of (revision, change) pairs.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import yaml

from generator import constants

__all__ = ["Revisions"]

log = logging.getLogger(__name__)

CACHE_LIMIT = 10_000


class Revisions:
    """Ancestry questions against the git clone at ``workdir`` (equality only when there is none)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._cache: dict[tuple[str, str], bool] = {}
        self._paths: dict[tuple[str, str], str | None] = {}
        self._fetched: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def _usable(self) -> bool:
        """Whether the clone is there; looked at on each question, as the writer may clone it later."""
        if (self.workdir / ".git").exists() or (self.workdir / "HEAD").exists():
            return True
        if not self._warned:
            self._warned = True
            log.warning("no git clone at %s (yet): until there is, a store is ready only at exactly the commit "
                        "that changed it", self.workdir)
        return False

    def contains(self, revision: str, change: str) -> bool:
        """True when ``revision`` is ``change`` or a descendant of it."""
        if not change or revision == change:
            return True
        if not revision or not self._usable():
            return False
        key = (revision, change)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        answer = self._is_ancestor(change, revision)
        if answer is None and revision not in self._fetched:
            self._fetched.add(revision)  # an unknown commit: someone pushed after our last fetch
            self._git("fetch", "--quiet", "origin")
            answer = self._is_ancestor(change, revision)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            if answer is not None:
                self._cache[key] = answer
        return bool(answer)

    def source_path(self, change: str, cluster: str, store_id: str) -> str | None:
        """The chart path the store's Application has in ``change`` (``rendered/<cluster>/apps/<id>.yaml``):
        what Argo CD must be comparing before the store counts as at the change. None when unknown."""
        if not change or not cluster or not self._usable():
            return None
        key = (change, f"{cluster}/{store_id}")
        with self._lock:
            if key in self._paths:
                return self._paths[key]
        try:
            shown = subprocess.run(["git", "-C", str(self.workdir), "show",
                                    f"{change}:{constants.RENDERED_DIR}/{cluster}/apps/{store_id}.yaml"],
                                   capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        path: str | None = None
        if shown.returncode == 0:
            for doc in yaml.safe_load_all(shown.stdout):
                if isinstance(doc, dict) and doc.get("kind") == constants.APPLICATION_KIND:
                    path = str(((doc.get("spec") or {}).get("source") or {}).get("path") or "") or None
        with self._lock:
            if len(self._paths) >= CACHE_LIMIT:
                self._paths.clear()
            self._paths[key] = path
        return path

    def _is_ancestor(self, ancestor: str, descendant: str) -> bool | None:
        code = self._git("merge-base", "--is-ancestor", ancestor, descendant)
        return True if code == 0 else False if code == 1 else None

    def _git(self, *args: str) -> int:
        try:
            result = subprocess.run(["git", "-C", str(self.workdir), *args], capture_output=True, text=True,
                                    timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("git %s in %s failed: %s", args[0], self.workdir, e)
            return -1
        if result.returncode not in (0, 1):
            log.info("git %s in %s: %s", " ".join(args), self.workdir, result.stderr.strip()[:200])
        return result.returncode
