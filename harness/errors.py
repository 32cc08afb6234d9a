"""The harness's error hierarchy."""

from __future__ import annotations

__all__ = ["CommandError", "HarnessError", "MissingBinariesError", "StartupError"]


class HarnessError(Exception):
    """Root of every error the harness raises."""


class MissingBinariesError(HarnessError):
    """The binaries pinned in harness/versions.env are not in the cache; build.sh makes them."""


class StartupError(HarnessError):
    """A component did not start or did not become ready in time."""


class CommandError(HarnessError):
    """A helper command (kubectl, openssl, git) exited non-zero."""
