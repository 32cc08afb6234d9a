"""Where a store stands, from Argo CD's view of its Application: a pure mapping, no I/O.

The states after ``committed`` in the lifecycle (``../shared/DESIGN.md``) come from the store's
Application; the earlier ones (``requested``, ``pending-review``, ``committed``) come from the intake
queue and are listed here so every part of storeops spells them the same way.

Order of the rules, first match wins:

1. no Application: ``deleted``; ``metadata.deletionTimestamp`` set: ``deleting``;
2. a condition whose type ends in ``Error`` (ComparisonError, InvalidSpecError, SyncError, ...):
   ``failed`` even when health says Healthy - Argo CD keeps the last health it computed;
3. the last operation ``Failed``/``Error``: ``failed``, unless the app has since become Synced and
   Healthy at another revision (then that failure is history); an operation Argo CD is retrying after
   a failed attempt: ``degraded``. Both name each resource of the attempt that failed (a hook Job:
   its own message, and the reason its Pod gave when the reader could read it);
4. health ``Degraded``: ``degraded``;
5. Synced and Healthy at a revision that contains the store's latest change: ``ready``;
6. Progressing for longer than ``stuck_after``: ``stuck``, with Argo CD's message;
7. never compared yet: ``rendered``; anything else on the way: ``syncing``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from generator import constants

__all__ = [
    "ACTIVE",
    "DELETED",
    "DELETING",
    "FAILED",
    "INTAKE_STATES",
    "READY",
    "STATES",
    "STUCK",
    "Assessment",
    "application_store_id",
    "assess",
]

REQUESTED = "requested"
PENDING_REVIEW = "pending-review"
COMMITTED = "committed"
RENDERED = "rendered"
SYNCING = "syncing"
READY = "ready"
DEGRADED = "degraded"
STUCK = "stuck"
FAILED = "failed"
DELETING = "deleting"
DELETED = "deleted"

#: Every state, in lifecycle order.
STATES = (REQUESTED, PENDING_REVIEW, COMMITTED, RENDERED, SYNCING, READY, DEGRADED, STUCK, FAILED, DELETING,
          DELETED)
#: States known before an Application exists: the intake side reports them.
INTAKE_STATES = (REQUESTED, PENDING_REVIEW, COMMITTED)
#: States in which a store is still on its way (time-to-ready keeps running).
ACTIVE = (RENDERED, SYNCING, STUCK)

FAILED_OPERATION_PHASES = ("Failed", "Error")
RUNNING_OPERATION_PHASES = ("Running", "Terminating")

#: Answers "does revision ``revision`` contain the store's latest change?"
Contains = Callable[[str], bool]


@dataclass(frozen=True)
class Assessment:
    """A store's state with what a person needs next to it."""

    store_id: str
    state: str
    message: str = ""
    #: The Git revision Argo CD last compared or synced the store at ('' when none yet).
    revision: str = ""
    #: The store's URL (from the ``storeops.io/url`` annotation), '' when unknown.
    url: str = ""
    #: Where this store's status changes go besides the global callback (annotation), '' when none.
    callback_url: str = ""

    @property
    def error(self) -> str:
        """The message when something is wrong, '' otherwise (the callback's ``error`` field)."""
        return self.message if self.state in (FAILED, DEGRADED, STUCK) else ""


def application_store_id(app: Mapping[str, Any]) -> str:
    """The store an Application belongs to: its ``storeops.io/store`` label, else its name minus ``store-``."""
    metadata = app.get("metadata") or {}
    labels = metadata.get("labels") or {}
    store_id = labels.get(constants.LABEL_STORE)
    if store_id:
        return str(store_id)
    name = str(metadata.get("name") or "")
    return name.removeprefix(constants.NAMESPACE_PREFIX)


def assess(
    app: Mapping[str, Any] | None,
    *,
    store_id: str,
    now: datetime.datetime,
    stuck_after: float,
    contains: Contains | None = None,
    seen_since: datetime.datetime | None = None,
) -> Assessment:
    """The lifecycle state of the store whose Application is ``app`` (``None``: the Application is gone).

    ``contains`` says whether a revision holds the store's latest change; ``None`` means no change is
    awaited, so any revision will do. ``seen_since`` is when the caller first saw the app Progressing,
    used when Argo CD did not record ``status.health.lastTransitionTime``.
    """
    if app is None:
        return Assessment(store_id, DELETED, "the Application is gone")
    metadata = app.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    operation = status.get("operationState") or {}
    revision = str(sync.get("revision") or "")
    base = {"revision": revision, "url": str(annotations.get(constants.ANNOTATION_URL) or ""),
            "callback_url": str(annotations.get(constants.ANNOTATION_CALLBACK_URL) or "")}

    def result(state: str, message: str = "") -> Assessment:
        return Assessment(store_id, state, " ".join(message.split()), **base)

    if metadata.get("deletionTimestamp"):
        return result(DELETING, "Argo CD is deleting the store's resources")
    errors = [c for c in status.get("conditions") or [] if str(c.get("type", "")).endswith("Error")]
    if errors:
        return result(FAILED, "; ".join(f"{c.get('type')}: {c.get('message', '')}" for c in errors))
    sync_status, health_status = sync.get("status"), health.get("status")
    synced_healthy = sync_status == "Synced" and health_status == "Healthy"
    phase = operation.get("phase")
    failed_resources = _failed_resources(operation)
    if phase in FAILED_OPERATION_PHASES:
        failed_at = str((operation.get("syncResult") or {}).get("revision") or "")
        if not (synced_healthy and failed_at and failed_at != revision):
            return result(FAILED, f"sync {phase}: {operation.get('message', '')}{failed_resources}")
    if phase == "Running" and int(operation.get("retryCount") or 0) > 0:
        return result(DEGRADED, f"sync retrying: {operation.get('message', '')}{failed_resources}")
    if health_status == "Degraded":
        return result(DEGRADED, str(health.get("message") or "a resource of the store is Degraded"))
    if synced_healthy and phase not in RUNNING_OPERATION_PHASES:
        if contains is None or (revision and contains(revision)):
            return result(READY)
        return result(SYNCING, f"Synced at {revision[:12] or '(none)'}, waiting for the store's latest change")
    if health_status == "Progressing":
        since = _timestamp(health.get("lastTransitionTime")) or seen_since
        if since is not None and (now - since).total_seconds() > stuck_after:
            waited = int((now - since).total_seconds())
            return result(STUCK, f"Progressing for {waited}s: {health.get('message') or 'no message from Argo CD'}")
    if not sync_status and not health_status and not phase:
        return result(RENDERED, "the Application exists; Argo CD has not compared it yet")
    return result(SYNCING, _progress(sync_status, health_status, phase, health.get("message")))


#: Hook phases and sync results of a resource that failed in the last sync attempt.
FAILED_RESOURCE_PHASES = ("Failed", "Error")
FAILED_RESOURCE_STATUS = "SyncFailed"


def failed_resources(operation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of ``operation``'s last attempt that failed (a hook that failed, an apply that did)."""
    resources = (operation.get("syncResult") or {}).get("resources") or []
    return [r for r in resources
            if r.get("hookPhase") in FAILED_RESOURCE_PHASES or r.get("status") == FAILED_RESOURCE_STATUS]


def _failed_resources(operation: Mapping[str, Any]) -> str:
    """``; <Kind> <name>: <message> (<reason>)`` for each failed resource, '' when none."""
    out = ""
    for resource in failed_resources(operation):
        message = resource.get("message") or resource.get("hookPhase")
        out += f"; {resource.get('kind')} {resource.get('name')}: {message}"
        if resource.get("reason"):
            out += f" ({resource['reason']})"
    return out


def _progress(sync_status: object, health_status: object, phase: object, message: object) -> str:
    parts = [f"sync {sync_status or 'Unknown'}", f"health {health_status or 'Unknown'}"]
    if phase:
        parts.append(f"operation {phase}")
    text = ", ".join(parts)
    return f"{text}: {message}" if message else text


def _timestamp(value: object) -> datetime.datetime | None:
    """An RFC 3339 time as Kubernetes writes it (``2026-01-02T03:04:05Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
