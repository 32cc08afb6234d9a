"""The generator's errors: one root, one subclass per kind of failure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from generator import remotes


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, printed as ``path:line: field: message``."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        location = f"{self.path}:{self.line}" if self.line else self.path
        return f"{location}: {self.field}: {self.message}" if self.field else f"{location}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "field": self.field, "message": self.message}


class StoreopsError(Exception):
    """Root of every error the generator raises on purpose; the CLI prints these in one line."""


class InvalidInput(StoreopsError):
    """The inputs (stores, clusters, plans) break the schema or a cross-entry rule."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the inputs"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class MassDeleteRefused(StoreopsError):
    """A render would remove more stores than the configured share allows."""

    def __init__(self, removed: list[str], existing: int, limit: int) -> None:
        self.removed = removed
        self.existing = existing
        self.limit = limit
        shown = ", ".join(removed[:10]) + (f" and {len(removed) - 10} more" if len(removed) > 10 else "")
        if len(removed) == existing:
            what = f"no store entries are left; refusing to remove all {existing} stores ({shown})"
        else:
            what = f"refusing to remove {len(removed)} of {existing} stores at once (limit {limit}): {shown}"
        super().__init__(what + ". Pass --allow-mass-delete if this is intended.")


class StaleOutput(StoreopsError):
    """The committed ``rendered/`` tree differs from what the inputs render to."""


class GitError(StoreopsError):
    """A git operation failed (clone, fetch, commit or push). The message never shows URL credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(remotes.redact(message))


class PushConflict(GitError):
    """The remote moved on while publishing and retries ran out."""


class ConfigError(StoreopsError):
    """A ``STOREOPS_*`` setting has a value storeops cannot use."""
