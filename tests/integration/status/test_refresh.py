"""After a publish: ready waits for a revision containing the change (real git), Argo CD is asked to
refresh at once, and the reader works with exactly the rights argocd/platform/status-reader-rbac.yaml gives."""

from __future__ import annotations

import collections.abc
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from generator import planning, trees
from generator.publishing import Published
from harness import stack as harness_stack
from tests.conftest import REPO_ROOT, git
from tests.integration.status import support
from webhook.settings import StatusSettings
from webhook.status import reader as statusreader
from webhook.status import refreshing
from webhook.status.watching import GROUP, PLURAL, VERSION

RBAC = REPO_ROOT / "argocd" / "platform" / "status-reader-rbac.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:storeops:storeops"


@pytest.fixture(scope="module")
def apiserver(kube_apiserver: harness_stack.Stack) -> harness_stack.Stack:
    support.install_application_crd(kube_apiserver)
    for name in ("argocd", "storeops"):
        if kube_apiserver.kubectl.get("namespace", name) is None:
            kube_apiserver.kubectl.run("create", "namespace", name)
    kube_apiserver.kubectl.run("apply", "-f", str(RBAC))
    return kube_apiserver


@pytest.fixture
def admin(apiserver: harness_stack.Stack) -> collections.abc.Iterator[client.CustomObjectsApi]:
    api = support.api_client(apiserver.kubeconfig)
    yield client.CustomObjectsApi(api)
    support.close(api)


def service_account_client(apiserver: harness_stack.Stack) -> client.ApiClient:
    """The admin's client impersonating the storeops ServiceAccount: RBAC is checked as for the Pod."""
    api = support.api_client(apiserver.kubeconfig)
    headers: Any = api
    headers.set_default_header("Impersonate-User", SERVICE_ACCOUNT)
    headers.set_default_header("Impersonate-Group", "system:serviceaccounts")
    return api


def published(sha: str, *, changed: list[str]) -> Published:
    changes = planning.ChangeSet(added=[], changed=changed, removed=[],
                                 files=trees.Changes([f"rendered/local/values/{s}.yaml" for s in changed], []))
    return Published(sha=sha, changes=changes, committed=True, attempts=1)


def test_ready_waits_for_the_published_change_and_argo_cd_is_asked_to_refresh(
        tmp_path: Path, apiserver: harness_stack.Stack, admin: client.CustomObjectsApi, example_repo: Path,
        receiver: support.Receiver) -> None:
    sid = f"r{uuid.uuid4().hex[:6]}"
    namespace = "argocd"
    before = git(example_repo, "rev-parse", "HEAD")
    git(example_repo, "commit", "--allow-empty", "-qm", f"Render stores: update {sid}")
    change = git(example_repo, "rev-parse", "HEAD")
    git(example_repo, "commit", "--allow-empty", "-qm", "Render stores: update another")
    later = git(example_repo, "rev-parse", "HEAD")

    root = support.application(f"root-{sid}", namespace)
    root["metadata"]["name"] = f"storeops-{sid}"
    root["metadata"]["labels"] = {"app.kubernetes.io/part-of": "storeops", "app.kubernetes.io/component": "root"}
    admin.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, root)
    store = support.application(sid, namespace)
    store["status"] = support.argo_status(sync="Synced", health="Healthy", revision=before)
    admin.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, store)

    config = StatusSettings(namespace=namespace, ledger=tmp_path / "status.sqlite3", workdir=example_repo,
                            callback_url=receiver.url, callback_allow="127.0.0.1", callback_secret=support.SECRET,
                            backoff_min=0.1, retry_min=0.1, tick=0.1,
                            root_selector="app.kubernetes.io/component=root,app.kubernetes.io/part-of=storeops")
    reader = statusreader.build(config, api=service_account_client(apiserver))
    stop = threading.Event()
    reader.start(stop=stop)
    try:
        support.wait_until("ready at the revision before any publish",
                           lambda: receiver.statuses(sid) == ["ready"])
        patched = reader.note_published(published(change, changed=[sid]))
        assert f"store-{sid}" in patched and f"storeops-{sid}" in patched
        for name in (f"store-{sid}", f"storeops-{sid}"):
            app: Any = admin.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            assert app["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "normal"
        # The refresh annotation is itself a change the watch sees: the app at `before` is not ready any more.
        support.wait_until("syncing while Argo CD is still at the old revision",
                           lambda: receiver.statuses(sid) == ["ready", "syncing"])
        support.set_status(admin, namespace, sid, support.argo_status(sync="Synced", health="Healthy",
                                                                      revision=change))
        support.wait_until("ready at the change", lambda: receiver.statuses(sid) == ["ready", "syncing", "ready"])
        support.set_status(admin, namespace, sid, support.argo_status(sync="Synced", health="Healthy",
                                                                      revision=later))
        support.wait_until("the later revision to be seen",
                           lambda: reader.fleet.apps[sid]["status"]["sync"]["revision"] == later)
        assert reader.fleet.assessment(sid).state == "ready"  # a descendant of the change is ready too
        assert receiver.statuses(sid) == ["ready", "syncing", "ready"]
        ready = [r.payload for r in receiver.all() if r.payload["store_id"] == sid][-1]
        assert ready["revision"] == change
        row = reader.reporter.row(sid)
        assert row is not None and row.change == change
    finally:
        stop.set()
        reader.join()
        reader.close()


def test_the_reader_role_allows_reading_and_refreshing_applications_and_nothing_else(
        apiserver: harness_stack.Stack) -> None:
    api = service_account_client(apiserver)
    custom = client.CustomObjectsApi(api)
    try:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, "argocd", PLURAL)
        assert isinstance(listed, dict) and "items" in listed
        with pytest.raises(client.ApiException) as other_namespace:
            custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
        assert other_namespace.value.status == 403
        with pytest.raises(client.ApiException) as create:
            custom.create_namespaced_custom_object(GROUP, VERSION, "argocd", PLURAL,
                                                   support.application("nope", "argocd"))
        assert create.value.status == 403
        with pytest.raises(client.ApiException) as secrets:
            client.CoreV1Api(api).list_namespaced_secret("argocd")
        assert secrets.value.status == 403
        assert refreshing.refresh(api, namespace="argocd", names=["store-does-not-exist"]) == []
    finally:
        support.close(api)
