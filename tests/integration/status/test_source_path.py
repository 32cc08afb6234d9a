"""A change of a store's Application itself (its chart path, as moving to a chart release does) reaches
the cluster through the root Application. Until it has, Argo CD reports the store Synced at the new
commit with its old source: the status reader must not call that ``ready``."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness import applications, examples
from harness import stack as harness_stack
from tests.integration.status import support

STORE = "acme-outdoor"


def test_a_store_is_ready_at_its_change_only_once_argo_cd_compares_the_application_the_change_renders(
        tmp_path: Path, apiserver: harness_stack.Stack) -> None:
    with support.owners_app(tmp_path, apiserver, STORE) as running:
        http, bare, namespace, custom = running.http, running.bare, running.namespace, running.custom

        def state() -> str:
            return str(http.get(f"/v1/stores/{STORE}", headers=support.JANE).json()["status"])

        def rendered_path(revision: str) -> str:
            docs = yaml.safe_load_all(examples.git(bare, "show", f"{revision}:rendered/local/apps/{STORE}.yaml"))
            return next(d for d in docs if d["kind"] == "Application")["spec"]["source"]["path"]

        changed = http.patch(f"/v1/stores/{STORE}", json={"name": "Acme Outdoor, renamed"}, headers=support.JANE)
        assert changed.status_code == 202, changed.text
        support.wait_until("the change in Git", lambda: examples.remote_stores(bare)[STORE]["name"]
                           == "Acme Outdoor, renamed")
        head = examples.git(bare, "rev-parse", "main").strip()
        wanted = rendered_path(head)
        body = applications.application(STORE, namespace)
        body["metadata"]["labels"]["storeops.io/cluster"] = "local"
        # Synced and Healthy at the change, but comparing an Application with another chart path.
        body["spec"]["source"]["path"] = "templates/releases/woocommerce/0.0.1/woocommerce"
        body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded", revision=head)
        body["status"]["sync"]["comparedTo"]["source"]["path"] = body["spec"]["source"]["path"]
        custom.create_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                               applications.PLURAL, body)
        support.wait_until("the store seen", lambda: state() == "syncing", timeout=30)
        # The root Application applies the new spec; Argo CD has not compared it yet: still not ready.
        custom.patch_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                              applications.PLURAL, f"store-{STORE}",
                                              {"spec": {"source": {"path": wanted}}},
                                              _content_type="application/merge-patch+json")  # fmt: skip
        status_now = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded", revision=head)
        status_now["sync"]["comparedTo"]["source"]["path"] = "templates/releases/woocommerce/0.0.1/woocommerce"
        applications.set_status(custom, namespace, STORE, status_now)
        support.wait_until("the reader has seen the new spec", lambda: state() == "syncing", timeout=30)
        assert state() == "syncing"
        # Compared as the change renders it: ready.
        status_now["sync"]["comparedTo"]["source"]["path"] = wanted
        applications.set_status(custom, namespace, STORE, status_now)
        support.wait_until("ready", lambda: state() == "ready", timeout=30)
