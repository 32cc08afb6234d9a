"""Pull request validation: check the head's inputs, plan what merging changes, say so on GitHub.

For a pull request touching ``stores/``, ``clusters/`` or ``templates/``, the head is checked with
the generator's own rules; a valid head gets the plan (stores added, changed, removed and the
rendered diff against the merge base). The verdict goes to GitHub as the ``storeops/validate``
status (a check run with an App) and as one comment kept up to date in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from generator import constants, operations
from generator.errors import InvalidInput, Problem
from webhook.github.checkouts import Checkout
from webhook.github.client import GitHub

log = logging.getLogger(__name__)

#: Folders whose change makes a pull request worth validating.
INPUT_DIRS = (constants.STORES_DIR, constants.CLUSTERS_DIR, constants.TEMPLATES_DIR)
#: Hidden marker of the one comment storeops keeps on a pull request.
MARKER = "<!-- storeops:validate -->"
SUCCESS = "success"
FAILURE = "failure"
#: Longest rendered diff put in a comment; the rest is summarised (GitHub caps comments at 65,536).
MAX_DIFF = 50_000


@dataclass(frozen=True)
class Verdict:
    #: ``success``, ``failure``, or '' when the pull request touches no inputs (nothing to say).
    state: str
    description: str
    comment: str = ""
    problems: list[Problem] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def validate(checkout: Checkout, *, number: int, head_sha: str, base_ref: str) -> Verdict:
    """Check pull request ``number`` at ``head_sha`` against ``base_ref``. Git I/O; no GitHub calls."""
    checkout.fetch(f"+refs/pull/{number}/head:refs/storeops/pull/{number}",
                   f"+refs/heads/{base_ref}:refs/remotes/origin/{base_ref}")
    if not checkout.rev(head_sha):
        # The head moved on (a newer push); the event for that push validates it.
        return Verdict("", f"head {head_sha[:12]} is no longer the head of #{number}")
    base = checkout.merge_base(f"refs/remotes/origin/{base_ref}", head_sha)
    touched = checkout.changed(base, head_sha, *INPUT_DIRS)
    if not touched:
        return Verdict("", f"#{number} changes nothing under {', '.join(INPUT_DIRS)}")
    root = checkout.checkout(head_sha)
    _, problems = operations.validate(root, base)
    if problems:
        return _failed(problems, head_sha)
    try:
        plan = operations.plan(root, base)
    except InvalidInput as e:
        return _failed(e.problems, head_sha)
    changes = plan.changes
    summary = changes.summary()
    return Verdict(SUCCESS, f"valid: {summary}", plan_comment(head_sha, changes.added, changes.changed,
                                                                 changes.removed, plan.diff),
                   added=changes.added, changed=changes.changed, removed=changes.removed)


def _failed(problems: list[Problem], sha: str) -> Verdict:
    count = len(problems)
    description = f"{count} problem{'s' if count != 1 else ''}: {problems[0]}"
    return Verdict(FAILURE, description, problems_comment(sha, problems), problems=list(problems))


def problems_comment(sha: str, problems: list[Problem]) -> str:
    count = len(problems)
    lines = [f"### storeops: {count} problem{'s' if count != 1 else ''} at {sha[:12]}", "",
             "Correct these and push again; this comment updates itself.", "", "```"]
    lines.extend(str(p) for p in problems)
    lines.append("```")
    return "\n".join(lines) + "\n"


def plan_comment(sha: str, added: list[str], changed: list[str], removed: list[str], diff: str) -> str:
    lines = [f"### storeops: plan at {sha[:12]}", ""]
    for ids, word in ((added, "Added"), (changed, "Changed"), (removed, "Removed")):
        if ids:
            lines.append(f"- **{word}**: {', '.join(f'`{i}`' for i in ids)}")
    if not (added or changed or removed):
        lines.append("No store changes: the rendered output stays the same.")
    lines.append("")
    lines.append("Merging publishes this: storeops renders, commits and pushes, then Argo CD syncs.")
    if diff:
        shown = diff if len(diff) <= MAX_DIFF else diff[:MAX_DIFF] + f"\n... ({len(diff) - MAX_DIFF} more characters)\n"
        fence = "~~~~" if "```" in shown else "```"
        lines += ["", "<details><summary>Rendered diff</summary>", "", f"{fence}diff", shown.rstrip("\n"), fence,
                  "", "</details>"]
    return "\n".join(lines) + "\n"


def report(hub: GitHub, *, number: int, head_sha: str, verdict: Verdict, target_url: str = "") -> None:
    """Tell GitHub: the status (or check run) on the head, and the one comment on the pull request."""
    details = verdict.comment
    hub.report(sha=head_sha, state=verdict.state, description=verdict.description, details=details,
               target_url=target_url)
    hub.upsert_comment(number=number, marker=MARKER, body=verdict.comment)
    log.info("pull request #%d at %s: %s", number, head_sha[:12], verdict.description)
