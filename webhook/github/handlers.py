"""The work a GitHub delivery asks for, done after the answer: validate, publish, issue -> pull request.

Each handler takes the delivery's payload (already checked by :mod:`webhook.events`), works in
git and on GitHub, and returns one line saying what it did (kept with the delivery). Failures
that may pass (GitHub or the remote unreachable) raise; the worker retries them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from generator import constants, entries, fleet, publishing, trees
from generator.errors import Problem
from generator.settings import Settings
from webhook.github import events, issueforms, pullrequests
from webhook.github.checkouts import Checkout
from webhook.github.client import GitHub

log = logging.getLogger(__name__)

#: Asks Argo CD to refresh what a publish touched, e.g. ``refreshing.refresh_published`` with its API client.
Refresh = Callable[[publishing.Published], object]
#: Hidden marker of the one comment storeops keeps on a store request issue.
ISSUE_MARKER = "<!-- storeops:issue -->"
ISSUE_BRANCH_PREFIX = "storeops/issue-"
_SAFE_ID = re.compile(r"^[a-z0-9][-a-z0-9]{0,62}$")


def log_refresh(published: publishing.Published) -> None:
    changes = published.changes
    touched = sorted({*changes.added, *changes.changed, *changes.removed})
    log.info("no Argo CD refresher configured; Argo CD picks up %s at %s on its next poll", ", ".join(touched),
             published.sha[:12])


class Handlers:
    def __init__(self, *, git: Settings, hub: GitHub, refresh: Refresh = log_refresh, public_url: str = "") -> None:
        self.git = git
        self.hub = hub
        self.refresh = refresh
        self.public_url = public_url
        state = git.state_dir / "github"
        #: Publishing from push events uses its own clone: the intake writer owns ``git.workdir``.
        self.publish_settings = replace(git, state_dir=state)
        self.checkout = Checkout(path=state / "checkout", remote=publishing.remote_url(git),
                                 author_name=git.author_name, author_email=git.author_email,
                                 environment=git.git_environment)

    def handle(self, *, delivery_id: str, event: str, payload: Mapping[str, Any]) -> str:
        decision = events.classify(event, payload, repository=self.hub.settings.repository, branch=self.git.branch)
        if decision.work == events.VALIDATE:
            return self.validate(payload)
        if decision.work == events.PUBLISH:
            return self.publish(payload, delivery_id=delivery_id)
        if decision.work == events.ISSUE_TO_PULL:
            return self.issue_to_pull(payload)
        return f"ignored: {decision.reason}"

    # --- pull requests ----------------------------------------------------------------------------

    def validate(self, payload: Mapping[str, Any]) -> str:
        pull = payload["pull_request"]
        number, sha, base = int(pull["number"]), str(pull["head"]["sha"]), str(pull["base"]["ref"])
        verdict = pullrequests.validate(self.checkout, number=number, head_sha=sha, base_ref=base)
        if not verdict.state:
            return f"skipped: {verdict.description}"
        pullrequests.report(self.hub, number=number, head_sha=sha, verdict=verdict, target_url=self.public_url)
        return f"#{number} {verdict.state}: {verdict.description}"

    # --- merge -> publish -------------------------------------------------------------------------

    def publish(self, payload: Mapping[str, Any], *, delivery_id: str) -> str:
        after = str(payload["after"])
        result = publishing.publish(self.publish_settings,
                                    message_extra=f"Published for push {after[:12]} (GitHub delivery {delivery_id})")
        changes = result.changes
        if result.committed:
            try:
                self.refresh(result)
            except Exception as e:  # published already; Argo CD still finds it on its next poll
                log.warning("published %s but could not ask Argo CD to refresh: %s", result.sha[:12], e)
        if not result.committed:
            return f"nothing to publish at {result.sha[:12]}"
        return f"published {result.sha[:12]}: {changes.summary()}"

    # --- issue form -> pull request ---------------------------------------------------------------

    def issue_to_pull(self, payload: Mapping[str, Any]) -> str:
        issue = payload["issue"]
        number = int(issue["number"])
        parsed = issueforms.parse(str(issue.get("body") or ""), where=f"issue #{number}")
        problems = list(parsed.problems)
        store_id = str(parsed.data.get("id", ""))
        if not problems and not _SAFE_ID.match(store_id):
            problems.append(Problem(f"issue #{number}", 0, "id", "'Store ID' must be a lower-case DNS label"
                                    if store_id else "'Store ID' is required"))
        branch = f"{ISSUE_BRANCH_PREFIX}{number}"
        base = self.git.branch
        path = entries.path_for(store_id) if not problems else ""
        content = entries.dump(entries.with_defaults(parsed.data)).encode() if not problems else b""
        if not problems:
            self.checkout.fetch(f"+refs/heads/{base}:refs/remotes/origin/{base}")
            problems = self._entry_problems(base, branch, path, content)
        if problems:
            self.hub.upsert_comment(number=number, marker=ISSUE_MARKER, body=_issue_problems(problems))
            return f"issue #{number}: {len(problems)} problems"
        start = self.checkout.rev(f"refs/remotes/origin/{base}")
        files: dict[str, bytes | None] = {p: None for p in self._branch_entries(base, branch) if p != path}
        files[path] = content
        self.checkout.update_branch(branch=branch, start=start, files=files,
                                    message=f"Add store {store_id}\n\nRequested in issue #{number}.\n")
        pull = self.hub.open_pull(branch=branch, base=base, title=f"Add store {store_id}",
                                  body=f"Adds `{path}` as requested in #{number}.\n\nCloses #{number}\n")
        self.hub.upsert_comment(number=number, marker=ISSUE_MARKER,
                                body=f"storeops opened {pull.url} adding `{path}` (#{pull.number}). Editing this "
                                     "issue updates the pull request; merging it creates the store.\n")
        return f"issue #{number}: pull request #{pull.number} {'opened' if pull.created else 'updated'}"

    def _branch_entries(self, base: str, branch: str) -> list[str]:
        """Store files the issue's branch adds on top of ``base`` (an edit may rename the store)."""
        tip = self.checkout.rev(f"refs/remotes/origin/{branch}")
        if not tip:
            return []
        fork = self.checkout.merge_base(f"refs/remotes/origin/{base}", tip)
        return self.checkout.changed(fork, tip, f"{constants.STORES_DIR}/")

    def _entry_problems(self, base: str, branch: str, path: str, content: bytes) -> list[Problem]:
        files = trees.read_inputs_at(self.checkout.path, f"refs/remotes/origin/{base}")
        if path in files:
            return [Problem(path, 0, "id", f"store {path.split('/')[-1].removesuffix('.yaml')!r} already exists "
                                           f"on {base}; pick another Store ID")]
        current = fleet.build(files)
        return fleet.change_problems(current, current.with_store(path, content))


def _issue_problems(problems: Sequence[Problem]) -> str:
    lines = ["### storeops cannot open a pull request for this request yet", "",
             "Edit the issue to correct these; storeops checks again on every edit.", "", "```"]
    lines.extend(str(p) for p in problems)
    lines.append("```")
    return "\n".join(lines) + "\n"
