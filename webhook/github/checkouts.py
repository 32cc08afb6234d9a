"""A storeops-owned clone where pull request heads are checked out to be validated. Read only.

Separate from the clone storeops publishes from (``webhook.repository``), so validating a pull
request never waits for, or disturbs, a publish.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from generator.errors import GitError

log = logging.getLogger(__name__)


class Checkout:
    def __init__(self, *, path: Path, remote: str, author_name: str, author_email: str,
                 environment: Mapping[str, str] | None = None) -> None:
        """``environment`` is what git runs with beside the identity (the remote's credential helper)."""
        self.path = path
        self.remote = remote
        self._env = {**(environment or {}), "GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
                     "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email,
                     "GIT_TERMINAL_PROMPT": "0"}

    def git(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True,
                                check=False, env={**_base_env(), **self._env})
        if check and result.returncode != 0:
            raise GitError(f"git {args[0]} failed in {self.path}: {' '.join(result.stderr.split())}")
        return result.stdout.strip()

    def ensure(self) -> None:
        if not (self.path / ".git").is_dir():
            self.path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q")
            self.git("remote", "add", "origin", self.remote)
        elif self.git("remote", "get-url", "origin") != self.remote:
            self.git("remote", "set-url", "origin", self.remote)
        for lock in (self.path / ".git").glob("*.lock"):
            # Only this process's one worker uses the clone: a lock here is a crash's leftover.
            lock.unlink(missing_ok=True)

    def fetch(self, *refspecs: str) -> None:
        self.ensure()
        self.git("fetch", "-q", "--no-tags", "--prune", "origin", *refspecs)

    def rev(self, ref: str) -> str:
        """The commit ``ref`` names, or '' when it does not exist."""
        return self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)

    def checkout(self, sha: str) -> Path:
        """Make the work tree exactly commit ``sha``; returns the work tree."""
        self.git("checkout", "-q", "-f", "--detach", sha)
        self.git("clean", "-q", "-ffdx")
        return self.path

    def merge_base(self, a: str, b: str) -> str:
        return self.git("merge-base", a, b, check=False) or a

    def changed(self, base: str, head: str, *paths: str) -> list[str]:
        listing = self.git("diff", "--name-only", "--no-renames", base, head, "--", *paths)
        return [line for line in listing.splitlines() if line]


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
