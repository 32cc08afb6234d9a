"""The status sink on GitHub: the ``storeops/deploy`` commit status and a comment on the store's pull request.

The status goes on the commit that changed the store (or, before any publish was noted, the
revision Argo CD synced); the comment goes on the pull request that brought the store's entry in
(found from the entry's history), one per store, kept up to date in place. Durable: the reporter
owes it one delivery per transition to a state GitHub shows (see :mod:`webhook.status.sinks`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from generator import constants
from webhook.github.client import GitHub
from webhook.status.sinks import Assessment, Event, lifecycle

__all__ = ["CONTEXT", "STATES", "DeploySink"]

log = logging.getLogger(__name__)

#: The commit status context storeops sets on the commit that changed a store.
CONTEXT = "storeops/deploy"
#: Lifecycle state -> GitHub commit status state.
STATES = {lifecycle.READY: "success", lifecycle.FAILED: "failure", lifecycle.DEGRADED: "failure",
          lifecycle.STUCK: "error", lifecycle.DELETED: "success"}


class DeploySink:
    name = "github"
    durable = True

    def __init__(self, *, hub: GitHub, branch: str) -> None:
        self.hub = hub
        self.branch = branch

    def targets(self, assessment: Assessment) -> Sequence[str]:
        return [""] if assessment.state in STATES else []

    def deliver(self, event: Event, target: str) -> None:
        sha = event.change or event.revision
        text = event.message or event.state
        if sha:
            self.hub.report(sha=sha, state=STATES.get(event.state, "pending"),
                            description=f"{event.store_id}: {text}"[:140], target_url=event.url, context=CONTEXT)
        if event.state == lifecycle.READY:
            self.update_comment(store_id=event.store_id, body=f"Store `{event.store_id}` is ready: {event.url}")
        elif event.state == lifecycle.FAILED:
            self.update_comment(store_id=event.store_id,
                                body=f"Store `{event.store_id}` failed to deploy: {event.message}")

    def update_comment(self, *, store_id: str, body: str) -> None:
        """Create or update storeops' comment on the pull request that requested ``store_id``, if any."""
        path = f"{constants.STORES_DIR}/{store_id}{constants.ENTRY_SUFFIX}"
        number = self.hub.pull_for_path(path=path, branch=self.branch)
        if number is None:
            log.info("store %s came in without a pull request; no comment to update", store_id)
            return
        self.hub.upsert_comment(number=number, marker=f"<!-- storeops:deploy:{store_id} -->", body=body)
