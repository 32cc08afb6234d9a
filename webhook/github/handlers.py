"""The work a GitHub delivery asks for, done after the answer: validate, publish, issue -> pull request,
and the end of storeops's own pull requests.

Each handler takes the delivery's payload (already checked by :mod:`webhook.events`), works in
git and on GitHub, and returns one line saying what it did (kept with the delivery). Failures
that may pass (GitHub or the remote unreachable) raise; the worker retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from generator import constants, entries, errors, fleet, publishing, trees, validation
from generator.errors import Problem
from webhook.github import events, issueforms, pullrequests
from webhook.github.checkouts import Checkout
from webhook.github.client import GitHub
from webhook.repository import Repository
from webhook.types import CLOSED, MERGED, Review, ReviewOutcome

log = logging.getLogger(__name__)

#: Hidden marker of the one comment storeops keeps on a store request issue.
ISSUE_MARKER = "<!-- storeops:issue -->"
ISSUE_BRANCH_PREFIX = "storeops/issue-"


class Handlers:
    def __init__(self, *, repository: Repository, hub: GitHub, public_url: str = "",
                 review_branch_prefix: str = "storeops/request-") -> None:
        self.repository = repository
        self.git = repository.git
        self.hub = hub
        self.public_url = public_url
        self.review_branch_prefix = review_branch_prefix
        #: Name prefixes of the branches storeops opens pull requests from (requests in review, issue forms).
        self.own = (review_branch_prefix, ISSUE_BRANCH_PREFIX)
        #: Pull request heads are checked out here to be validated; nothing is pushed from it.
        self.checkout = Checkout(path=self.git.state_dir / "github" / "checkout",
                                 remote=publishing.remote_url(self.git), author_name=self.git.author_name,
                                 author_email=self.git.author_email, environment=self.git.git_environment)

    def handle(self, *, delivery_id: str, event: str, payload: Mapping[str, Any]) -> str:
        decision = events.classify(event, payload, repository=self.hub.settings.repository, branch=self.git.branch,
                                   own=self.own)
        if decision.work == events.VALIDATE:
            return self.validate(payload)
        if decision.work == events.PUBLISH:
            return self.publish(payload, delivery_id=delivery_id)
        if decision.work == events.ISSUE_TO_PULL:
            return self.issue_to_pull(payload)
        if decision.work == events.REVIEW_ENDED:
            return self.review_ended(payload)
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

    def review_ended(self, payload: Mapping[str, Any]) -> str:
        """One of storeops's pull requests was merged or closed: the intake finishes the requests in it (and
        deletes their branch once it has); an issue form's branch is deleted here."""
        pull = payload["pull_request"]
        number, branch, url = int(pull["number"]), str(pull["head"]["ref"]), str(pull["html_url"])
        merged = pull.get("merged") is True
        outcome = ReviewOutcome(MERGED, str(pull.get("merge_commit_sha") or "")) if merged else ReviewOutcome(CLOSED)
        said = f"#{number} {'merged' if merged else 'closed without merging'}"
        if branch.startswith(ISSUE_BRANCH_PREFIX):
            deleted = self.hub.delete_branch(branch)
            return f"{said}: {'deleted' if deleted else 'no longer any'} branch {branch}"
        self.repository.reviewed(Review(url=url, branch=branch), outcome)
        return f"{said}: told the intake to finish the requests on {branch}"

    # --- merge -> publish -------------------------------------------------------------------------

    def publish(self, payload: Mapping[str, Any], *, delivery_id: str) -> str:
        after = str(payload["after"])
        result, _ = self.repository.publish(message=f"Published for push {after[:12]} (GitHub delivery {delivery_id})")
        if not result.committed:
            return f"nothing to publish at {result.sha[:12]}"
        return f"published {result.sha[:12]}: {result.changes.summary()}"

    # --- issue form -> pull request ---------------------------------------------------------------

    def issue_to_pull(self, payload: Mapping[str, Any]) -> str:
        issue = payload["issue"]
        number = int(issue["number"])
        parsed = issueforms.parse(str(issue.get("body") or ""), where=f"issue #{number}")
        problems = list(parsed.problems)
        store_id = str(parsed.data.get("id", ""))
        if not problems and not validation.is_store_id(store_id):
            rule = f"'Store ID' must be a lower-case DNS label starting with a letter, at most " \
                   f"{validation.MAX_STORE_ID} characters"
            problems.append(Problem(f"issue #{number}", 0, "id", rule if store_id else "'Store ID' is required",
                                    errors.SCHEMA))
        branch = f"{ISSUE_BRANCH_PREFIX}{number}"
        path = entries.path_for(store_id) if not problems else ""
        content = entries.dump(entries.with_defaults(parsed.data)).encode() if not problems else b""
        if not problems:
            files, _ = self.repository.read()
            problems = _entry_problems(files, path, content, base=self.git.branch)
        if problems:
            self.hub.upsert_comment(number=number, marker=ISSUE_MARKER, body=_issue_problems(problems))
            return f"issue #{number}: {len(problems)} problems"
        base = self.git.branch

        def edit(root: Path) -> list[str]:
            # An edited issue may rename the store: entries the branch added before give way to this one.
            added = set(trees.read_inputs(root)) - set(trees.read_inputs_at(root, f"origin/{base}"))
            stale = [p for p in added if p.startswith(f"{constants.STORES_DIR}/") and p != path]
            for old in stale:
                (root / old).unlink()
            (root / path).write_bytes(content)
            return [*stale, path]

        self.repository.push_branch(branch, edit=edit, message=f"Add store {store_id}\n\nRequested in issue #{number}.",
                                    render=False)
        pull = self.hub.open_pull(branch=branch, base=base, title=f"Add store {store_id}",
                                  body=f"Adds `{path}` as requested in #{number}.\n\nCloses #{number}\n")
        self.hub.upsert_comment(number=number, marker=ISSUE_MARKER,
                                body=f"storeops opened {pull.url} adding `{path}` (#{pull.number}). Editing this "
                                     "issue updates the pull request; merging it creates the store.\n")
        return f"issue #{number}: pull request #{pull.number} {'opened' if pull.created else 'updated'}"


def _entry_problems(files: Mapping[str, bytes], path: str, content: bytes, *, base: str) -> list[Problem]:
    if path in files:
        return [Problem(path, 0, "id", f"store {path.split('/')[-1].removesuffix('.yaml')!r} already exists "
                                       f"on {base}; pick another Store ID", errors.ID_TAKEN)]
    current = fleet.build(files)
    return fleet.change_problems(current, current.with_store(path, content))


def _issue_problems(problems: Sequence[Problem]) -> str:
    lines = ["### storeops cannot open a pull request for this request yet", "",
             "Edit the issue to correct these; storeops checks again on every edit.", "", "```"]
    lines.extend(str(p) for p in problems)
    lines.append("```")
    return "\n".join(lines) + "\n"
