"""A rendered store through real Argo CD: Synced/Healthy, suspended to zero, deleted without a trace.

The store is rendered by the generator (AppProject, Application and values, for the local cluster
profile) into a Git repository on disk holding the real charts; Argo CD syncs it into the real API
server, where kwok runs the pods, the controller-manager's hostPath provisioner makes the volumes
and harness/ingresses.py publishes the Ingress address (Argo CD calls an Ingress healthy only then).
And as kwok runs no container, the credentials hook's script is run here, as its pod would run it.
The repository holds the charts as this checkout does, the shared library chart included: each engine
chart's charts/storeops-lib is a symlink to templates/storeops-lib, which the repo-server must follow
without building or fetching anything.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from generator import models, operations, releases, releasing, rendering, validation
from harness import stack
from tests.conftest import REPO_ROOT, copy_example, git

ENGINES = validation.engines()
LIBRARY = "templates/storeops-lib"
# The claims each chart makes: (name, which plan volume).
CLAIMS = {
    "woocommerce": (("data-mariadb-0", "database"), ("wordpress-content", "content")),
    "medusa": (("data-postgres-0", "database"), ("medusa-uploads", "content")),
}
WORKLOADS = {
    "woocommerce": (("statefulset", "mariadb"), ("deployment", "wordpress")),
    "medusa": (("statefulset", "postgres"), ("deployment", "redis"), ("deployment", "medusa")),
}
# Kinds a store could leave behind, searched cluster-wide by the store label after deletion.
LEFTOVER_KINDS = (
    "namespaces,deployments,statefulsets,jobs,pods,services,persistentvolumeclaims,configmaps,secrets,"
    "serviceaccounts,roles,rolebindings,resourcequotas,limitranges,networkpolicies,ingresses"
)


def _store(engine: str) -> models.Store:
    return models.Store(
        id=f"e2e-{engine[:3]}-{uuid.uuid4().hex[:6]}",
        name=f"E2E {engine} shop",
        engine=engine,
        plan="small",
        cluster="local",
        owner=models.Owner(name="Jane Doe", email="jane@example.test", github="janedoe"),
    )


def _repository(target: pathlib.Path) -> pathlib.Path:
    """The example repository, its charts copied with their symlinks (copy_example follows them)."""
    repo = copy_example(target, with_git=False)
    shutil.rmtree(repo / "templates")
    shutil.copytree(REPO_ROOT / "templates", repo / "templates", symlinks=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "example")
    for engine in ENGINES:
        link = f"templates/{engine}/charts/storeops-lib"
        assert git(repo, "ls-files", "--stage", "--", link).split()[:1] == ["120000"], f"{link} is not a symlink"
    return repo


def _render(repo: pathlib.Path, store: models.Store) -> dict[str, str]:
    """Write the store's generated files into the repo and commit them; returns the files."""
    fleet = operations.load(repo)
    target = rendering.Target(store, fleet.clusters[store.cluster][0], fleet.plans[store.plan])
    files = rendering.render_store(target, repo_url=f"file://{repo}")
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"store {store.id} ({store.state})")
    return files


def _wait_synced_healthy(
    argocd_stack: stack.Stack, store: models.Store, revision: str, *, timeout: float = 420.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        app = argocd_stack.application(store.app_name) or {}
        status = app.get("status") or {}  # type: ignore[assignment]
        sync, health = status.get("sync") or {}, status.get("health") or {}
        operation = (status.get("operationState") or {}).get("phase")
        if (
            sync.get("status") == "Synced"
            and sync.get("revision") == revision
            and health.get("status") == "Healthy"
            and operation == "Succeeded"
        ):
            return app
        time.sleep(2)
    raise AssertionError(f"{store.app_name} not Synced/Healthy at {revision}: {json.dumps(status, indent=1)[:6000]}")


def _kubectl_json(kubectl: Any, *args: str) -> dict[str, Any]:
    decoded = json.loads(kubectl.run(*args, "-o", "json"))
    assert isinstance(decoded, dict)
    return decoded


def _run_credentials_job(argocd_stack: stack.Stack, namespace: str, tmp_path: pathlib.Path) -> dict[str, Any]:
    """Do what the credentials hook Job's pod does (kwok runs no container): run the script Argo CD
    applied, with the Job's settings and a token of the hook's ServiceAccount. Returns the Secret."""
    kubectl = argocd_stack.kubectl
    script = _kubectl_json(kubectl, "get", "configmap", "credentials-writer", "-n", namespace)["data"]
    pod = _kubectl_json(kubectl, "get", "job", "credentials", "-n", namespace)["spec"]["template"]["spec"]
    account = tmp_path / "serviceaccount"
    account.mkdir(exist_ok=True)
    (account / "token").write_text(kubectl.run("create", "token", pod["serviceAccountName"], "-n", namespace).strip())
    (account / "ca.crt").write_bytes(argocd_stack.certs.ca_cert.read_bytes())
    # The library's script, which the repo-server read through the symlinked dependency.
    assert script["credentials.py"] == (REPO_ROOT / LIBRARY / "files" / "credentials.py").read_text()
    (tmp_path / "credentials.py").write_text(script["credentials.py"])
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "credentials.py")],
        env={**env, "PATH": "/usr/bin:/bin", "POD_NAMESPACE": namespace, "SERVICEACCOUNT_DIR": str(account),
             "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(argocd_stack.ports["apiserver"])},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return _kubectl_json(kubectl, "get", "secret", env["SECRET_NAME"], "-n", namespace)


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ENGINES)
def test_store_syncs_healthy_suspends_to_zero_and_deleting_it_leaves_nothing(
    argocd_stack: stack.Stack, engine: str, tmp_path: pathlib.Path
) -> None:
    kubectl = argocd_stack.kubectl
    repo = _repository(tmp_path / "repo")
    store = _store(engine)
    plan = operations.load(repo).plans[store.plan]
    files = _render(repo, store)
    kubectl.apply(files[rendering.app_path(store.cluster, store.id)])

    # 1. Synced and Healthy at the pushed revision, everything running.
    app = _wait_synced_healthy(argocd_stack, store, git(repo, "rev-parse", "HEAD"))
    managed = {(r["kind"], r["name"]) for r in app["status"]["resources"]}
    assert ("Namespace", store.namespace) in managed
    assert ("ResourceQuota", "store-quota") in managed
    for kind, name in WORKLOADS[engine]:
        workload = _kubectl_json(kubectl, "get", kind, name, "-n", store.namespace)
        assert workload["status"].get("readyReplicas") == 1, f"{kind}/{name}: {workload['status']}"
    namespace = _kubectl_json(kubectl, "get", "namespace", store.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    quota = _kubectl_json(kubectl, "get", "resourcequota", "store-quota", "-n", store.namespace)
    assert quota["status"]["hard"] == {
        "requests.cpu": plan.cpu, "requests.memory": plan.memory, "requests.storage": plan.storage
    }  # fmt: skip
    jobs = _kubectl_json(kubectl, "get", "jobs", "-n", store.namespace)["items"]
    assert {j["metadata"]["name"] for j in jobs} >= {"credentials"}
    assert all(j["status"].get("succeeded") == 1 for j in jobs), [j["status"] for j in jobs]
    claims = _kubectl_json(kubectl, "get", "pvc", "-n", store.namespace)["items"]
    assert sorted((c["metadata"]["name"], c["status"]["phase"]) for c in claims) == sorted(
        (claim, "Bound") for claim, _ in CLAIMS[engine]
    )
    # Provisioned by the cluster's default StorageClass at the plan's sizes.
    sizes = {claim: plan.database_volume if which == "database" else plan.content_volume
             for claim, which in CLAIMS[engine]}
    assert {c["metadata"]["name"]: c["status"]["capacity"]["storage"] for c in claims} == sizes
    volumes = [c["spec"]["volumeName"] for c in claims]
    secret = _run_credentials_job(argocd_stack, store.namespace, tmp_path)
    assert secret["metadata"]["labels"]["storeops.io/store"] == store.id

    # 2. Suspending (a new commit of the rendered store) scales to zero and keeps the volumes.
    _render(repo, dataclasses.replace(store, state="suspended"))
    _wait_synced_healthy(argocd_stack, store, git(repo, "rev-parse", "HEAD"))
    for kind, name in WORKLOADS[engine]:
        workload = _kubectl_json(kubectl, "get", kind, name, "-n", store.namespace)
        assert workload["spec"]["replicas"] == 0, f"{kind}/{name}"
    pods = _kubectl_json(kubectl, "get", "pods", "-n", store.namespace, "--field-selector=status.phase=Running")
    assert pods["items"] == []
    claims = _kubectl_json(kubectl, "get", "pvc", "-n", store.namespace)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == sorted(claim for claim, _ in CLAIMS[engine])
    # The credentials, not managed by Argo CD, went through the sync untouched.
    kept = _kubectl_json(kubectl, "get", "secret", "store-credentials", "-n", store.namespace)
    assert kept["data"] == secret["data"]
    assert kept["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

    # 3. Deleting the Application deletes the namespace and everything in it.
    kubectl.run("delete", "application", store.app_name, "-n", argocd_stack.namespace, "--wait=false")
    argocd_stack.wait_gone("application", store.app_name, namespace=argocd_stack.namespace, timeout=300)
    argocd_stack.wait_gone("namespace", store.namespace, timeout=300)
    kubectl.run("delete", "appproject", store.app_name, "-n", argocd_stack.namespace)
    left = kubectl.run("get", LEFTOVER_KINDS, "-A", "-l", f"storeops.io/store={store.id}", "-o", "name")
    assert left.strip() == ""
    assert kubectl.run("get", "all", "-n", store.namespace, "-o", "name", check=False).strip() == ""
    # The claims are gone, and so are their volumes (the StorageClass deletes on release).
    for name in volumes:
        argocd_stack.wait_gone("pv", name, timeout=120)


@pytest.mark.e2e
def test_a_store_pinned_to_a_release_runs_it_and_a_later_working_chart_change_leaves_it_alone(
    argocd_stack: stack.Stack, tmp_path: pathlib.Path
) -> None:
    """A release's folder, its library reached through the release's own symlink, rendered by the real
    repo-server; a change of the working chart reaches the stores that follow it, not a pinned one."""
    kubectl = argocd_stack.kubectl
    repo = _repository(tmp_path / "repo")
    version = releasing.release(repo, "woocommerce")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"release woocommerce {version}")
    store = dataclasses.replace(_store("woocommerce"), chart_version=version)
    files = _render(repo, store)
    kubectl.apply(files[rendering.app_path(store.cluster, store.id)])
    app = _wait_synced_healthy(argocd_stack, store, git(repo, "rev-parse", "HEAD"))
    assert app["spec"]["source"]["path"] == releases.chart_dir("woocommerce", version)
    paths = app["metadata"]["annotations"]["argocd.argoproj.io/manifest-generate-paths"].split(";")
    assert f"/{releases.release_dir('woocommerce', version)}" in paths
    assert not [p for p in paths if p.rstrip("/") in ("/templates/woocommerce", "/" + LIBRARY)]
    limits = _kubectl_json(kubectl, "get", "limitrange", "store-limits", "-n", store.namespace)
    assert limits["spec"]["limits"][0]["defaultRequest"]["memory"] == "64Mi"

    # The working chart changes a managed object of every store that follows it.
    values = repo / "templates/woocommerce/values.yaml"
    values.write_text(values.read_text().replace("    memory: 64Mi\n", "    memory: 96Mi\n", 1))
    git(repo, "commit", "-qam", "working chart: a larger default memory request")
    head = git(repo, "rev-parse", "HEAD")
    kubectl.run("annotate", "application", store.app_name, "-n", argocd_stack.namespace,
                "argocd.argoproj.io/refresh=hard", "--overwrite")  # fmt: skip
    _wait_synced_healthy(argocd_stack, store, head)
    limits = _kubectl_json(kubectl, "get", "limitrange", "store-limits", "-n", store.namespace)
    assert limits["spec"]["limits"][0]["defaultRequest"]["memory"] == "64Mi"  # the release's, unchanged
    kubectl.run("delete", "application", store.app_name, "-n", argocd_stack.namespace, "--wait=false")
    argocd_stack.wait_gone("namespace", store.namespace, timeout=300)


@pytest.mark.e2e
def test_a_store_made_before_its_database_claim_was_in_the_chart_keeps_that_claim(
    argocd_stack: stack.Stack, tmp_path: pathlib.Path
) -> None:
    """Argo CD adopts the claim an existing store's StatefulSet made when the chart starts rendering it:
    the same claim (uid) on the same volume, now tracked by the Application, the StatefulSet untouched."""
    kubectl = argocd_stack.kubectl
    repo = _repository(tmp_path / "repo")
    chart = repo / "templates/medusa/templates/postgres.yaml"
    current = chart.read_text()
    claim_object = '---\n{{ include "storeops.databaseClaim" $sel }}\n'
    assert claim_object in current
    chart.write_text(current.replace(claim_object, ""))
    git(repo, "commit", "-qam", "the chart as it was: the database claim from the StatefulSet only")
    store = _store("medusa")
    files = _render(repo, store)
    kubectl.apply(files[rendering.app_path(store.cluster, store.id)])
    app = _wait_synced_healthy(argocd_stack, store, git(repo, "rev-parse", "HEAD"))
    assert ("PersistentVolumeClaim", "data-postgres-0") not in {
        (r["kind"], r["name"]) for r in app["status"]["resources"]}
    made = _kubectl_json(kubectl, "get", "pvc", "data-postgres-0", "-n", store.namespace)
    assert made["status"]["phase"] == "Bound"
    statefulset = _kubectl_json(kubectl, "get", "statefulset", "postgres", "-n", store.namespace)

    chart.write_text(current)
    git(repo, "commit", "-qam", "the database claim is an object of the chart")
    head = git(repo, "rev-parse", "HEAD")
    kubectl.run("annotate", "application", store.app_name, "-n", argocd_stack.namespace,
                "argocd.argoproj.io/refresh=hard", "--overwrite")  # fmt: skip
    app = _wait_synced_healthy(argocd_stack, store, head)
    tracked = {(r["kind"], r["name"]): r for r in app["status"]["resources"]}
    assert tracked[("PersistentVolumeClaim", "data-postgres-0")].get("status") == "Synced"
    adopted = _kubectl_json(kubectl, "get", "pvc", "data-postgres-0", "-n", store.namespace)
    assert adopted["metadata"]["uid"] == made["metadata"]["uid"]
    assert adopted["spec"]["volumeName"] == made["spec"]["volumeName"]
    assert adopted["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
    # The StatefulSet was not touched.
    after = _kubectl_json(kubectl, "get", "statefulset", "postgres", "-n", store.namespace)
    assert (after["metadata"]["uid"], after["metadata"]["generation"]) == (
        statefulset["metadata"]["uid"], statefulset["metadata"]["generation"])
    kubectl.run("delete", "application", store.app_name, "-n", argocd_stack.namespace, "--wait=false")
    argocd_stack.wait_gone("namespace", store.namespace, timeout=300)
