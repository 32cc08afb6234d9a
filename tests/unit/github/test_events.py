"""What storeops does with each GitHub delivery, decided from the payload alone."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.github import events

REPO = {"full_name": "acme/gitops"}


def classify(event: str, payload: dict[str, Any]) -> events.Decision:
    return events.classify(event, payload, repository="acme/gitops", branch="main")


def pull(action: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "repository": REPO,
            "pull_request": {"number": 7, "head": {"sha": "a" * 40}, "base": {"ref": "main"}, **extra}}


def push(*messages: str, ref: str = "refs/heads/main", paths: tuple[str, ...] = ("stores/x.yaml",)) -> dict[str, Any]:
    return {"ref": ref, "after": "b" * 40, "repository": REPO,
            "commits": [{"message": m, "added": list(paths), "modified": [], "removed": []} for m in messages]}


def test_pull_requests_are_validated_on_open_sync_and_reopen() -> None:
    for action in ("opened", "synchronize", "reopened"):
        assert classify("pull_request", pull(action)).work == events.VALIDATE
    assert classify("pull_request", pull("labeled")).work == ""
    merged = classify("pull_request", pull("closed", merged=True))
    assert merged.work == "" and "push to the branch publishes it" in merged.reason


def test_the_end_of_storeops_own_pull_requests_is_worked_on_and_others_are_ignored() -> None:
    own = ("storeops/request-", "storeops/issue-")

    def closed(ref: str, *, merged: bool = False, repo: object = REPO, **extra: Any) -> events.Decision:
        payload = pull("closed", merged=merged, head={"sha": "a" * 40, "ref": ref, "repo": repo},
                       **{"html_url": "https://github.example/acme/gitops/pull/7", **extra})
        return events.classify("pull_request", payload, repository="acme/gitops", branch="main", own=own)

    for merged, said in ((True, "merged"), (False, "closed without merging")):
        decision = closed("storeops/request-1", merged=merged)
        assert decision.work == events.REVIEW_ENDED
        assert decision.reason == f"#7 {said}: finishing storeops's requests on storeops/request-1"
    assert closed("storeops/issue-3").work == events.REVIEW_ENDED
    # Someone else's branch, a fork's branch named like storeops's own, a deleted fork: nothing to do.
    assert closed("feature/x", merged=True).reason == "#7 closed (merged: the push to the branch publishes it)"
    assert closed("storeops/request-1", repo={"full_name": "mallory/gitops"}).work == ""
    assert closed("storeops/request-1", repo=None).work == ""
    # Without the prefixes (the default), no branch is storeops's own.
    assert classify("pull_request", pull("closed", head={"sha": "a" * 40, "ref": "storeops/request-1",
                                                        "repo": REPO})).work == ""
    with pytest.raises(events.Malformed, match=r"pull_request\.html_url"):
        closed("storeops/request-1", html_url=None)


def test_pushes_to_the_branch_that_touch_inputs_are_published() -> None:
    assert classify("push", push("Add store x")).work == events.PUBLISH
    assert classify("push", push("Docs", paths=("README.md",))).reason.startswith("push changes nothing under")
    assert "publishes main only" in classify("push", push("x", ref="refs/heads/feature")).reason
    # Past the 20 listed commits GitHub leaves some out: publish rather than guess.
    assert classify("push", push(*["Docs"] * 20, paths=("README.md",))).work == events.PUBLISH


def test_storeops_own_commits_never_trigger_a_publish() -> None:
    own = "Render stores: add x\n\nAdded: x\n\nStoreops-Rendered-From: " + "c" * 40 + "\n"
    decision = classify("push", push(own, paths=("rendered/local/apps/x.yaml", "stores/x.yaml")))
    assert decision.work == "" and decision.reason == "storeops's own rendered commit"
    # A person's commit in the same push still counts.
    assert classify("push", push(own, "Add store y")).work == events.PUBLISH
    assert not events.own_commit("Mentions Storeops-Rendered-From: in the middle of a line")


def test_issue_forms_become_pull_requests_other_issues_are_ignored() -> None:
    form = {"number": 3, "state": "open", "labels": [{"name": "new-store"}], "body": "### Store ID\n\nx\n"}
    assert classify("issues", {"action": "opened", "issue": form, "repository": REPO}).work == events.ISSUE_TO_PULL
    assert classify("issues", {"action": "edited", "issue": form, "repository": REPO}).work == events.ISSUE_TO_PULL
    assert classify("issues", {"action": "closed", "issue": form, "repository": REPO}).work == ""
    chat = {"number": 4, "labels": [], "body": "hello"}
    assert "not a new-store request" in classify("issues", {"action": "opened", "issue": chat,
                                                           "repository": REPO}).reason


def test_other_events_and_repositories_are_ignored_with_a_reason() -> None:
    assert classify("ping", {"zen": "z"}).reason == "pong"
    assert classify("workflow_run", {"action": "completed"}).reason == "storeops does not act on workflow_run events"
    elsewhere = classify("push", {**push("x"), "repository": {"full_name": "other/repo"}})
    assert elsewhere.work == "" and "other/repo" in elsewhere.reason


@pytest.mark.parametrize(("event", "payload"), [
    ("pull_request", {"action": "opened", "repository": REPO}),
    ("pull_request", {"action": "opened", "repository": REPO, "pull_request": {"number": "7"}}),
    ("pull_request", {"action": "opened", "repository": REPO, "pull_request": {"number": 7, "head": {}}}),
    ("push", {"repository": REPO, "ref": "refs/heads/main", "after": "x", "commits": "nope"}),
    ("push", {"repository": {}, "ref": "refs/heads/main"}),
    ("issues", {"action": "opened", "repository": REPO, "issue": {"number": True}}),
    ("issues", {"action": 5, "repository": REPO}),
])
def test_malformed_payloads_are_422(event: str, payload: dict[str, Any]) -> None:
    with pytest.raises(events.Malformed) as caught:
        classify(event, payload)
    assert caught.value.status == 422
