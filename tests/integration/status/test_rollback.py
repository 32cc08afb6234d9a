"""Rollback: after a change that left the store failing, the owner puts its entry back as it was when
the store was last ``ready`` (the status reader's record, from Argo CD's Applications on the real API
server), as a new commit on the local remote that says why."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import applications, examples
from harness import stack as harness_stack
from tests.integration.status import support

JANE, SAM = support.JANE, support.SAM  # the owners of acme-outdoor and of bookworm in the example data


def test_a_failing_change_is_rolled_back_to_the_entry_the_store_was_ready_with(
        tmp_path: Path, apiserver: harness_stack.Stack) -> None:
    with support.owners_app(tmp_path, apiserver, "acme-outdoor") as running:
        http, bare, namespace, custom = running.http, running.bare, running.namespace, running.custom

        def store() -> Any:
            return http.get("/v1/stores/acme-outdoor", headers=JANE).json()

        def wait_status(*wanted: str) -> None:
            support.wait_until(f"acme-outdoor {wanted}", lambda: store()["status"] in wanted, timeout=30)

        first = examples.git(bare, "rev-parse", "main").strip()
        body = applications.application("acme-outdoor", namespace)
        body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded",
                                                  revision=first)
        custom.create_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                               applications.PLURAL, body)
        wait_status("ready")
        # Nothing to roll back to while the store was only ever ready at its latest revision.
        nothing = http.post("/v1/stores/acme-outdoor/rollback", json={"reason": "just because"}, headers=JANE)
        assert nothing.status_code == 409 and "no earlier revision" in nothing.json()["error"]

        # A change (a custom domain and a new admin password) that Argo CD then reports failing.
        changed = http.patch("/v1/stores/acme-outdoor", headers=JANE,
                             json={"domain": "shop.acme-outdoor.example", "adminPasswordRotation": 1})
        assert changed.status_code == 202, changed.text
        support.wait_until("the change in Git", lambda: examples.remote_stores(bare)["acme-outdoor"].get("domain")
                           == "shop.acme-outdoor.example")
        second = examples.git(bare, "rev-parse", "main").strip()
        applications.set_status(custom, namespace, "acme-outdoor", applications.argo_status(
            sync="Synced", health="Degraded", phase="Failed", revision=second,
            health_message="the Ingress host is taken"))
        wait_status("failed", "degraded")
        # The store's view says where a rollback goes back to.
        assert store()["rollback"]["to"] == first

        # A reason is needed; another owner does not see the store.
        assert http.post("/v1/stores/acme-outdoor/rollback", json={}, headers=JANE).status_code == 422
        assert http.post("/v1/stores/acme-outdoor/rollback", json={"reason": "x", "colour": 1},
                         headers=JANE).status_code == 422  # fmt: skip
        assert http.post("/v1/stores/acme-outdoor/rollback", json={"reason": "x"}, headers=SAM).status_code == 404
        unknown = http.post("/v1/stores/acme-outdoor/rollback", json={"reason": "x", "to": "f" * 40},
                            headers=JANE)  # fmt: skip
        assert unknown.status_code == 409 and "never reported ready" in unknown.json()["error"]
        # Argo CD is still retrying the failing sync: the rollback stops it, so the new commit is synced at once.
        retrying = applications.argo_status(sync="OutOfSync", health="Degraded", phase="Running", revision=second,
                                            health_message="the Ingress host is taken")
        retrying["operationState"]["retryCount"] = 3
        applications.set_status(custom, namespace, "acme-outdoor", retrying)
        reason = f"the new domain does not resolve yet {uuid.uuid4().hex[:6]}"
        rolled = http.post("/v1/stores/acme-outdoor/rollback", json={"reason": reason}, headers=JANE)
        assert rolled.status_code == 202, rolled.text
        app = custom.get_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                                  applications.PLURAL, "store-acme-outdoor")
        assert app["status"]["operationState"]["phase"] == "Terminating"
        support.wait_until("the rollback in Git", lambda: "domain" not in examples.remote_stores(bare)[
            "acme-outdoor"])
        entry = examples.remote_stores(bare)["acme-outdoor"]
        before = yaml.safe_load(examples.git(bare, "show", f"{first}:stores/acme-outdoor.yaml"))
        # The entry as it was, but the password count: it never goes back.
        assert entry == {**before, "adminPasswordRotation": 1}
        message = examples.git(bare, "log", "-1", "--format=%B", "main")
        assert f"Storeops-Reason: acme-outdoor: rollback to {first[:12]}: {reason}" in message
        # Asked again before Argo CD synced it: the entry is already what it was.
        again = http.post("/v1/stores/acme-outdoor/rollback", json={"reason": "again"}, headers=JANE)
        assert again.status_code == 409 and "nothing to roll back" in again.json()["error"]


def test_a_sync_retried_for_a_chart_the_spec_no_longer_names_is_stopped(
        tmp_path: Path, apiserver: harness_stack.Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Argo CD may start an automated sync at a new revision before the root Application has moved the store's
    spec to its new chart (a rollback, a release), and then retry that failing sync with the old chart for
    minutes. The status reader stops it (once), so Argo CD starts over with the spec's chart; a retrying sync of
    the spec's own chart, or a first attempt, is left alone."""
    caplog.set_level(logging.INFO, logger="webhook.status.refreshing")
    with support.owners_app(tmp_path, apiserver, "acme-outdoor") as running:
        namespace, custom = running.namespace, running.custom
        body = applications.application("acme-outdoor", namespace)
        spec_source = body["spec"]["source"]
        old_chart = "templates/releases/woocommerce/0.2.0/woocommerce"
        revision = examples.git(running.bare, "rev-parse", "main").strip()
        body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded",
                                                  revision=revision)
        custom.create_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                               applications.PLURAL, body)

        def app() -> Any:
            return custom.get_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                                       applications.PLURAL, "store-acme-outdoor")

        def running_sync(path: str, retries: int, started: str = "2026-11-28T01:00:00Z") -> dict[str, Any]:
            status = applications.argo_status(sync="OutOfSync", health="Degraded", phase="Running", revision=revision)
            status["operationState"].update(retryCount=retries, startedAt=started)
            status["operationState"]["operation"]["sync"]["source"] = {**spec_source, "path": path}
            return status

        def stopped() -> list[str]:
            return [r.getMessage() for r in caplog.records if "failing sync of" in r.getMessage()]

        def terminating() -> bool:
            return bool(app()["status"]["operationState"]["phase"] == "Terminating")

        # The spec's own chart, retried; the old chart on its first attempt; then the old chart, retried. The
        # reader sees them in this order (one watch), and only the last is stopped.
        applications.set_status(custom, namespace, "acme-outdoor", running_sync(spec_source["path"], 2))
        applications.set_status(custom, namespace, "acme-outdoor", running_sync(old_chart, 0))
        applications.set_status(custom, namespace, "acme-outdoor", running_sync(old_chart, 1))
        support.wait_until("the stale sync stopped", terminating, timeout=30)
        assert len(stopped()) == 1 and old_chart in stopped()[0], stopped()
        # The same operation seen again is not stopped twice; a later one (its own start) is.
        applications.set_status(custom, namespace, "acme-outdoor", running_sync(old_chart, 2))
        applications.set_status(custom, namespace, "acme-outdoor",
                                running_sync(old_chart, 1, started="2026-11-28T01:05:00Z"))
        support.wait_until("the later stale sync stopped", lambda: any("01:05:00" in m for m in stopped()), timeout=30)
        assert [m for m in stopped() if "01:00:00" in m] == stopped()[:1], stopped()
        assert len(stopped()) == 2, stopped()
