"""GitHub events: what a delivery asks of storeops, decided from its headers and payload. Pure.

``classify`` reads only what it needs and says either what to do (work done after the answer) or
why storeops ignores the delivery (answered 2xx with that reason, so GitHub shows it green). A
payload that lacks what its event must carry is :class:`Malformed` (a 4xx, never a 5xx).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from generator import constants
from webhook.errors import Rejected
from webhook.github import issueforms, pullrequests

PING = "ping"
PULL_REQUEST = "pull_request"
PUSH = "push"
ISSUES = "issues"

VALIDATE = "validate"
PUBLISH = "publish"
ISSUE_TO_PULL = "issue-to-pull"
#: A pull request from one of storeops' own branches was merged or closed.
REVIEW_ENDED = "review-ended"

PULL_ACTIONS = ("opened", "synchronize", "reopened")
ISSUE_ACTIONS = ("opened", "edited")
#: A push payload lists at most this many commits; past it, assume the inputs changed.
PUSH_COMMITS_LISTED = 20

_TRAILER = re.compile(rf"^{re.escape(constants.COMMIT_TRAILER)}:", re.MULTILINE)


class Malformed(Rejected):
    """The payload lacks a field its event always carries (422)."""

    status = 422


@dataclass(frozen=True)
class Decision:
    """``work`` is what to do after answering ('' to ignore); ``reason`` says why, for the answer and logs."""

    work: str
    reason: str
    action: str = ""


def ignore(reason: str, action: str = "") -> Decision:
    return Decision("", reason, action)


def classify(event: str, payload: Mapping[str, Any], *, repository: str, branch: str,
             own: tuple[str, ...] = ()) -> Decision:
    """What storeops does with ``event``; ``repository`` (owner/name) and ``branch`` are the GitOps repo's,
    ``own`` the name prefixes of the branches storeops opens pull requests from."""
    action = _optional_str(payload, "action")
    if event == PING:
        return Decision("", "pong", action)
    if event not in (PULL_REQUEST, PUSH, ISSUES):
        return ignore(f"storeops does not act on {event or '(no event)'} events", action)
    full_name = _str(_obj(payload, "repository"), "full_name", "repository.full_name")
    if full_name.lower() != repository.lower():
        return ignore(f"delivery for {full_name}; storeops serves {repository}", action)
    if event == PULL_REQUEST:
        return _pull_request(payload, action, repository=repository, own=own)
    if event == PUSH:
        return _push(payload, branch)
    return _issue(payload, action)


def _pull_request(payload: Mapping[str, Any], action: str, *, repository: str, own: tuple[str, ...]) -> Decision:
    pull = _obj(payload, "pull_request")
    number = _int(pull, "number", "pull_request.number")
    head = _obj(pull, "head", "pull_request.head")
    _str(head, "sha", "pull_request.head.sha")
    _str(_obj(pull, "base", "pull_request.base"), "ref", "pull_request.base.ref")
    if action == "closed":
        merged = pull.get("merged") is True
        if own_branch(head, repository=repository, own=own):
            _str(pull, "html_url", "pull_request.html_url")
            return Decision(REVIEW_ENDED, f"#{number} {'merged' if merged else 'closed without merging'}: "
                                          f"finishing storeops's requests on {head['ref']}", action)
        return ignore(f"#{number} closed{' (merged: the push to the branch publishes it)' if merged else ''}", action)
    if action not in PULL_ACTIONS:
        return ignore(f"pull_request action {action or '(none)'} needs nothing from storeops", action)
    return Decision(VALIDATE, f"validating #{number}", action)


def _push(payload: Mapping[str, Any], branch: str) -> Decision:
    ref = _str(payload, "ref", "ref")
    _str(payload, "after", "after")
    commits = payload.get("commits")
    if not isinstance(commits, list):
        raise Malformed("push payload: commits must be a list")
    if ref != f"refs/heads/{branch}":
        return ignore(f"push to {ref}; storeops publishes {branch} only")
    if payload.get("deleted") is True:
        return ignore(f"{ref} was deleted")
    theirs = [c for c in commits if isinstance(c, Mapping) and not own_commit(str(c.get("message", "")))]
    if commits and not theirs:
        return ignore("storeops's own rendered commit")
    if not commits:
        return ignore("push without commits")
    if len(commits) < PUSH_COMMITS_LISTED and not touches_inputs(theirs):
        return ignore(f"push changes nothing under {', '.join(pullrequests.INPUT_DIRS)}")
    return Decision(PUBLISH, f"publishing {branch} at {str(payload['after'])[:12]}")


def _issue(payload: Mapping[str, Any], action: str) -> Decision:
    issue = _obj(payload, "issue")
    number = _int(issue, "number", "issue.number")
    if action not in ISSUE_ACTIONS:
        return ignore(f"issues action {action or '(none)'} needs nothing from storeops", action)
    if issue.get("state", "open") != "open":
        return ignore(f"issue #{number} is closed", action)
    labels = issue.get("labels") or []
    named = {str(label.get("name", "")) for label in labels if isinstance(label, Mapping)}
    body = issue.get("body") or ""
    if not isinstance(body, str):
        raise Malformed("issues payload: issue.body must be a string or null")
    if issueforms.ISSUE_LABEL not in named and f"### {next(iter(issueforms.LABELS))}" not in body:
        return ignore(f"issue #{number} is not a new-store request", action)
    return Decision(ISSUE_TO_PULL, f"turning issue #{number} into a pull request", action)


def own_branch(head: Mapping[str, Any], *, repository: str, own: tuple[str, ...]) -> bool:
    """Whether a pull request's ``head`` is a branch storeops made: named with one of ``own``, in the repository
    itself (a fork's branch of the same name is someone else's)."""
    ref, repo = head.get("ref"), head.get("repo")
    return (isinstance(ref, str) and ref.startswith(own) and isinstance(repo, Mapping)
            and str(repo.get("full_name", "")).lower() == repository.lower())


def own_commit(message: str) -> bool:
    """Whether a commit is one storeops made (it carries the ``Storeops-Rendered-From:`` trailer)."""
    return bool(_TRAILER.search(message))


def touches_inputs(commits: Sequence[Mapping[str, Any]]) -> bool:
    prefixes = tuple(f"{d}/" for d in pullrequests.INPUT_DIRS)
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths = commit.get(key) or []
            if any(isinstance(p, str) and p.startswith(prefixes) for p in paths):
                return True
    return False


def _obj(data: Mapping[str, Any], key: str, name: str | None = None) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise Malformed(f"the payload has no {name or key} object")
    return value


def _str(data: Mapping[str, Any], key: str, name: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(f"the payload has no {name} string")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise Malformed(f"the payload's {key} must be a string")
    return value


def _int(data: Mapping[str, Any], key: str, name: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Malformed(f"the payload has no {name} number")
    return value
