"""The generator's errors: one root, one subclass per kind of failure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from generator import remotes

#: Machine-readable kinds of problem (``Problem.code``), for callers that act on the kind, not the words.
PARSE = "parse"  # not YAML, or YAML storeops refuses (aliases, tags, duplicate keys, too large)
SCHEMA = "schema"  # breaks the JSON Schema (a field missing, unknown, of the wrong type or value)
FILE_NAME = "file-name"  # the file is not named for its id (or name), or has the wrong suffix
NAME_LENGTH = "name-length"  # a name derived from the id would not fit its Kubernetes limit
MISSING = "missing"  # a file every fleet needs (templates/plans.yaml) is not there
ID_TAKEN = "id-taken"  # another entry, in Git or queued, has the id
HOST_TAKEN = "host-taken"  # another entry serves the host (custom domain or <id>.<baseDomain>)
UNKNOWN_CLUSTER = "unknown-cluster"
UNKNOWN_PLAN = "unknown-plan"
CAPACITY = "capacity"  # the cluster's stores, CPU or memory would run over
OWNER_LIMIT = "owner-limit"  # the owner would have more stores on the cluster than its profile allows
IMMUTABLE = "immutable"  # an existing store's engine or cluster would change
VOLUME_GROWTH = "volume-growth"  # a plan would grow volumes on a cluster whose StorageClass cannot expand them
NEEDS_REVIEW = "needs-review"  # the change touches a cluster with review: true and came without review
GONE = "gone"  # the store was removed before the change landed
REQUEST = "request"  # the request itself is malformed (not a mapping, nested too deeply)
RELEASE = "release"  # a chart version that is not released, or a released snapshot that was edited
CALLBACK_URL = "callback-url"  # a callback URL that points inside the platform (or carries credentials)
BACKUP = "backup"  # a store restored from a backup on a cluster that keeps none
#: The codes that mean "someone else has it" (409) rather than "it is wrong" (422).
TAKEN = (ID_TAKEN, HOST_TAKEN)


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, printed as ``path:line: field: message``; ``code`` names its kind."""

    path: str
    line: int
    field: str
    message: str
    code: str = SCHEMA

    def __str__(self) -> str:
        location = f"{self.path}:{self.line}" if self.line else self.path
        return f"{location}: {self.field}: {self.message}" if self.field else f"{location}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "field": self.field, "message": self.message, "code": self.code}


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


class PushRefused(GitError):
    """The remote refused the push for a reason of its own (a server-side hook, a protected branch)."""


class ConfigError(StoreopsError):
    """A ``STOREOPS_*`` setting has a value storeops cannot use."""
