"""The mapping from an Application (as Argo CD writes it) to the store lifecycle, one test per rule."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from webhook.status import lifecycle
from webhook.status.revisions import Revisions

NOW = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
CHANGE = "c" * 40
LATER = "d" * 40
OLDER = "a" * 40


def app(*, sync: str | None = None, health: str | None = None, revision: str = "", phase: str | None = None,
        conditions: list[dict[str, str]] | None = None, deleting: bool = False, health_message: str = "",
        health_since: str | None = None, op_revision: str = "", op_message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {}
    if sync:
        status["sync"] = {"status": sync, "revision": revision}
    if health:
        status["health"] = {"status": health, "message": health_message}
        if health_since:
            status["health"]["lastTransitionTime"] = health_since
    if phase:
        status["operationState"] = {"phase": phase, "message": op_message,
                                    "syncResult": {"revision": op_revision or revision}}
    if conditions:
        status["conditions"] = conditions
    metadata: dict[str, Any] = {
        "name": "store-acme", "namespace": "argocd",
        "labels": {"storeops.io/store": "acme", "app.kubernetes.io/part-of": "storeops"},
        "annotations": {"storeops.io/url": "http://acme.stores.example",
                        "storeops.io/callback-url": "https://hooks.example/acme"},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-22T11:59:00Z"
    return {"metadata": metadata, "status": status}


def descends_from_change(revision: str) -> bool:
    """Git's answer for the test history OLDER -> CHANGE -> LATER."""
    return revision in (CHANGE, LATER)


def assess(application: dict[str, Any] | None, *, stuck_after: float = 600.0,
           contains: lifecycle.Contains | None = descends_from_change,
           seen_since: datetime.datetime | None = None) -> lifecycle.Assessment:
    return lifecycle.assess(application, store_id="acme", now=NOW, stuck_after=stuck_after, contains=contains,
                            seen_since=seen_since)


def test_a_new_application_argo_cd_has_not_looked_at_is_rendered() -> None:
    result = assess(app())
    assert result.state == lifecycle.RENDERED
    assert result.url == "http://acme.stores.example"
    assert result.callback_url == "https://hooks.example/acme"


@pytest.mark.parametrize(("sync", "health", "phase"), [
    ("OutOfSync", "Missing", None),
    ("OutOfSync", "Healthy", None),
    ("Synced", "Progressing", "Succeeded"),
    ("Unknown", None, None),
    ("Synced", "Healthy", "Running"),
])
def test_on_the_way_is_syncing(sync: str, health: str | None, phase: str | None) -> None:
    result = assess(app(sync=sync, health=health, revision=CHANGE, phase=phase))
    assert result.state == lifecycle.SYNCING
    assert f"sync {sync}" in result.message
    assert result.error == ""


def test_synced_and_healthy_at_the_change_is_ready() -> None:
    result = assess(app(sync="Synced", health="Healthy", revision=CHANGE, phase="Succeeded"))
    assert result.state == lifecycle.READY
    assert result.revision == CHANGE
    assert result.url == "http://acme.stores.example"


def test_ready_at_a_descendant_of_the_change() -> None:
    assert assess(app(sync="Synced", health="Healthy", revision=LATER)).state == lifecycle.READY


def test_synced_and_healthy_at_a_revision_before_the_change_is_not_ready() -> None:
    result = assess(app(sync="Synced", health="Healthy", revision=OLDER))
    assert result.state == lifecycle.SYNCING
    assert "waiting for the store's latest change" in result.message


def test_without_an_awaited_change_any_revision_is_ready() -> None:
    assert assess(app(sync="Synced", health="Healthy", revision=OLDER), contains=None).state == lifecycle.READY


@pytest.mark.parametrize("kind", ["ComparisonError", "InvalidSpecError", "SyncError"])
def test_an_error_condition_is_failed_even_when_healthy(kind: str) -> None:
    broken = app(sync="Synced", health="Healthy", revision=CHANGE,
                 conditions=[{"type": "SharedResourceWarning", "message": "shared"},
                             {"type": kind, "message": "rpc error: values file not found"}])
    result = assess(broken)
    assert result.state == lifecycle.FAILED
    assert result.message == f"{kind}: rpc error: values file not found"
    assert result.error == result.message


def test_a_warning_condition_alone_is_not_failed() -> None:
    warned = app(sync="Synced", health="Healthy", revision=CHANGE,
                 conditions=[{"type": "OrphanedResourceWarning", "message": "1 orphan"}])
    assert assess(warned).state == lifecycle.READY


@pytest.mark.parametrize("phase", ["Failed", "Error"])
def test_a_failed_operation_is_failed(phase: str) -> None:
    result = assess(app(sync="OutOfSync", health="Missing", revision=CHANGE, phase=phase,
                        op_message="one or more objects failed to apply"))
    assert result.state == lifecycle.FAILED
    assert result.message == f"sync {phase}: one or more objects failed to apply"


def test_a_failed_operation_at_the_same_revision_stays_failed_while_healthy() -> None:
    result = assess(app(sync="Synced", health="Healthy", revision=CHANGE, phase="Failed", op_revision=CHANGE))
    assert result.state == lifecycle.FAILED


def test_a_failed_operation_at_an_older_revision_is_history_once_ready_at_a_newer_one() -> None:
    result = assess(app(sync="Synced", health="Healthy", revision=LATER, phase="Failed", op_revision=CHANGE))
    assert result.state == lifecycle.READY


def test_degraded_health_is_degraded_with_argo_cds_message() -> None:
    result = assess(app(sync="Synced", health="Degraded", revision=CHANGE, health_message="Back-off pulling image"))
    assert result.state == lifecycle.DEGRADED
    assert result.error == "Back-off pulling image"


def test_progressing_for_longer_than_the_limit_is_stuck_with_the_message() -> None:
    since = (NOW - datetime.timedelta(seconds=700)).isoformat().replace("+00:00", "Z")
    result = assess(app(sync="Synced", health="Progressing", revision=CHANGE, health_since=since,
                        health_message="Waiting for rollout to finish: 0 of 1 updated replicas are available"))
    assert result.state == lifecycle.STUCK
    assert result.message == ("Progressing for 700s: Waiting for rollout to finish: "
                              "0 of 1 updated replicas are available")


def test_progressing_within_the_limit_is_syncing() -> None:
    since = (NOW - datetime.timedelta(seconds=599)).isoformat().replace("+00:00", "Z")
    assert assess(app(sync="Synced", health="Progressing", health_since=since)).state == lifecycle.SYNCING


def test_without_argo_cds_transition_time_the_readers_first_sighting_counts() -> None:
    progressing = app(sync="Synced", health="Progressing", revision=CHANGE)
    assert assess(progressing, stuck_after=60, seen_since=NOW - datetime.timedelta(seconds=30)).state == "syncing"
    assert assess(progressing, stuck_after=60, seen_since=NOW - datetime.timedelta(seconds=61)).state == "stuck"
    assert assess(progressing, stuck_after=60).state == lifecycle.SYNCING


def test_a_deletion_timestamp_is_deleting_whatever_the_status() -> None:
    result = assess(app(sync="Synced", health="Healthy", revision=CHANGE, deleting=True,
                        conditions=[{"type": "SyncError", "message": "x"}]))
    assert result.state == lifecycle.DELETING


def test_a_gone_application_is_deleted() -> None:
    result = assess(None)
    assert result.state == lifecycle.DELETED
    assert result.store_id == "acme"


def test_the_store_id_comes_from_the_label_else_the_name() -> None:
    assert lifecycle.application_store_id(app()) == "acme"
    assert lifecycle.application_store_id({"metadata": {"name": "store-bookworm"}}) == "bookworm"


def test_messages_are_one_line() -> None:
    result = assess(app(sync="Synced", health="Degraded", health_message="line one\n  line two"))
    assert result.message == "line one line two"


def test_every_state_is_listed_once_in_lifecycle_order() -> None:
    assert len(set(lifecycle.STATES)) == len(lifecycle.STATES)
    assert lifecycle.STATES[0] == lifecycle.REQUESTED
    assert lifecycle.STATES[-1] == lifecycle.DELETED


def test_revisions_use_a_clone_that_appears_after_the_reader_started(tmp_path: Path) -> None:
    clone = tmp_path / "work"
    revisions = Revisions(clone)
    assert revisions.contains("b" * 40, "a" * 40) is False  # no clone: equality only
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    for n in ("one", "two"):
        subprocess.run(["git", "-C", str(clone), "commit", "-q", "--allow-empty", "-m", n], check=True,
                       env={**os.environ, **env})
    first = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD~1"], capture_output=True, text=True,
                           check=True).stdout.strip()
    second = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert revisions.contains(second, first) is True
    assert revisions.contains(first, second) is False


SETUP_FAILED = {"kind": "Job", "namespace": "store-acme", "name": "setup", "status": "Synced", "hookPhase": "Failed",
                "message": "Container setup for pod store-acme/setup-x1 failed with exit code 3 matching FailJob rule"}
APPLIED = {"kind": "Deployment", "namespace": "store-acme", "name": "wordpress", "status": "Synced",
           "message": "deployment.apps/wordpress created"}


def with_results(application: dict[str, Any], resources: list[dict[str, Any]], *, retries: int = 0) -> dict[str, Any]:
    operation = application["status"]["operationState"]
    operation["syncResult"]["resources"] = resources
    if retries:
        operation["retryCount"] = retries
    return application


def test_a_failed_hook_job_is_named_with_its_message_and_reason() -> None:
    failed = with_results(app(sync="Synced", health="Healthy", revision=CHANGE, phase="Failed",
                              op_message="one or more synchronization tasks completed unsuccessfully"),
                          [APPLIED, {**SETUP_FAILED, "reason": "setup failed: WooCommerce could not be downloaded"}])
    result = assess(failed)
    assert result.state == lifecycle.FAILED
    assert result.message == ("sync Failed: one or more synchronization tasks completed unsuccessfully; Job setup: "
                              f"{SETUP_FAILED['message']} (setup failed: WooCommerce could not be downloaded)")


def test_a_sync_argo_cd_retries_after_a_failed_hook_is_degraded_with_the_reason() -> None:
    retrying = with_results(app(sync="Synced", health="Healthy", revision=CHANGE, phase="Running",
                                op_message="one or more synchronization tasks completed unsuccessfully. "
                                           "Retrying attempt #1 at 6:01PM."), [SETUP_FAILED], retries=1)
    result = assess(retrying)
    assert result.state == lifecycle.DEGRADED
    assert "Retrying attempt #1" in result.message and "Job setup: Container setup" in result.message
    assert result.error == result.message


def test_a_first_attempt_still_running_is_syncing() -> None:
    running = with_results(app(sync="Synced", health="Healthy", revision=CHANGE, phase="Running",
                               op_message="waiting for completion of hook batch/Job/setup"), [APPLIED])
    assert assess(running).state == lifecycle.SYNCING
