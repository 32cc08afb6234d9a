"""storeops itself on the real node, deployed by Argo CD from ``argocd/platform.yaml``.

The service image (``ghcr.io/storeops/storeops:<version>``, the name ``argocd/platform/deployment.yaml``
gives) is built here from Debian packages and PyPI (harness/images/service.py) and imported into the
node's containerd. The platform's own settings are what an operator creates before applying
``platform.yaml`` (docs/install.md): the Secrets ``storeops-database`` (a PostgreSQL cluster of Debian's
binaries, listening on the node's bridge gateway for the pods), ``storeops-git`` (a ``git daemon`` on the
same address holding this repository's data) and ``storeops-api`` (a token's hash). Then Argo CD syncs
``argocd/platform/`` unchanged from the remote: two replicas, the Lease's Role, the status reader's Role
in Argo CD's namespace, the PodDisruptionBudget.

Checked: both replicas Ready from the image, exactly one holds the Lease and says so on ``/readyz``; a
store asked of the follower is committed to the remote once, by the leader; deleting the leader's Pod
hands the Lease to the other replica, which commits the next request. Traffic stays between this
machine and the node's pods.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import pathlib
import secrets
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest
import yaml

from generator import publishing
from harness import demo, gitserver, postgres, stack
from harness import node as real_node
from harness.images import service
from tests.e2e.test_store_charts import _kubectl_json
from tests.e2e.test_store_node import _describe

pytestmark = [pytest.mark.e2e, pytest.mark.node]

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "storeops"
LEASE = "storeops-leader"
#: The platform's Lease timing (the Deployment's defaults: STOREOPS_LEASE_DURATION and the rest).
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0
# Importing the image and two Python processes starting on two shared cores.
READY_TIMEOUT = 600.0


@dataclasses.dataclass
class Platform:
    cluster: stack.Stack
    remote: pathlib.Path
    token: str
    synced_seconds: float

    def pods(self) -> list[dict[str, Any]]:
        found = _kubectl_json(self.cluster.kubectl, "get", "pods", "-n", NAMESPACE,
                              "-l", "app.kubernetes.io/name=storeops")["items"]  # fmt: skip
        return [p for p in found if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if p["status"].get("phase") == "Running"
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]

    def holder(self) -> str:
        """The pod name in the Lease's holderIdentity (``<hostname>_<pid>``), or ''."""
        lease = _kubectl_json(self.cluster.kubectl, "get", "lease", LEASE, "-n", NAMESPACE)
        return str((lease.get("spec") or {}).get("holderIdentity") or "").rpartition("_")[0]

    def call(self, pod: dict[str, Any], method: str, path: str, body: object = None) -> httpx.Response:
        url = f"http://{pod['status']['podIP']}:8080{path}"
        return httpx.request(method, url, json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip

    def committed(self, store_id: str) -> list[str]:
        """The remote's commits on main that added stores/<id>.yaml."""
        out = subprocess.run(["git", f"--git-dir={self.remote}", "log", "--format=%H", "--diff-filter=A", "main",
                              "--", f"stores/{store_id}.yaml"], capture_output=True, text=True, check=True).stdout
        return out.split()


def _secret(name: str, data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "Opaque", "stringData": data}  # fmt: skip


@pytest.fixture(scope="module")
def platform(argocd_node_stack: stack.Stack, tmp_path_factory: pytest.TempPathFactory,
             ) -> collections.abc.Iterator[Platform]:
    """The platform synced by Argo CD from a remote the pods reach, with its database and Secrets."""
    cluster = argocd_node_stack
    assert cluster.node is not None
    work = tmp_path_factory.mktemp("platform")
    began = time.monotonic()
    built = service.build()
    cluster.node.ctr("images", "import", str(built.image.archive), timeout=600)
    print(f"service image {built.image.ref}: {'cached' if built.cached else 'built'} in {built.seconds:.0f}s, "
          f"{built.image.archive.stat().st_size / 1e6:.0f} MB; imported at {time.monotonic() - began:.0f}s",
          flush=True)  # fmt: skip
    source = work / "source"
    for folder in publishing.SEED_FOLDERS:
        if (demo.ROOT / folder).is_dir():
            shutil.copytree(demo.ROOT / folder, source / folder, symlinks=True)
    remote = work / "repos" / "fleet.git"
    publishing.seed_remote(remote, source, "main")
    daemon = gitserver.start(work / "repos", log_dir=work / "logs", host=real_node.GATEWAY, tie_to_parent=True)
    token = secrets.token_urlsafe(24)
    tokens = {"tokens": [{"name": "platform-test", "scope": "write",
                          "sha256": hashlib.sha256(token.encode()).hexdigest()}]}  # fmt: skip
    try:
        with postgres.cluster(host=real_node.GATEWAY, clients=real_node.POD_CIDR) as database:
            url = database.create_database("storeops")
            cluster.kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            cluster.kubectl.apply(
                _secret("storeops-database", {"url": url}),
                _secret("storeops-git", {"remote": daemon.url("fleet.git")}),
                _secret("storeops-api", {"tokens.yaml": yaml.safe_dump(tokens)}),
            )
            application = yaml.safe_load((ROOT / "argocd" / "platform.yaml").read_text())
            # What an operator edits before applying it: where Argo CD reads the repository.
            application["spec"]["source"]["repoURL"] = f"file://{remote}"
            applied = time.monotonic()
            cluster.kubectl.apply(application)
            platform = Platform(cluster=cluster, remote=remote, token=token, synced_seconds=0.0)

            def synced() -> bool:
                app = _kubectl_json(cluster.kubectl, "get", "application", "storeops-platform", "-n", "argocd")
                status = app.get("status") or {}
                return ((status.get("sync") or {}).get("status") == "Synced"
                        and (status.get("health") or {}).get("status") == "Healthy"
                        and len(platform.ready_pods()) == 2)  # fmt: skip

            try:
                cluster.kubectl.wait_for("Argo CD to sync the platform with both replicas Ready", synced,
                                         timeout=READY_TIMEOUT, interval=2)  # fmt: skip
            except TimeoutError as e:
                app = cluster.kubectl.run("get", "application", "storeops-platform", "-n", "argocd", "-o", "yaml",
                                          check=False)  # fmt: skip
                raise AssertionError(f"{e}\n{app[-3000:]}\n{_describe(cluster, NAMESPACE)()}") from None
            platform.synced_seconds = time.monotonic() - applied
            print(f"platform synced with both replicas Ready {platform.synced_seconds:.0f}s after applying "
                  f"platform.yaml", flush=True)  # fmt: skip
            yield platform
    finally:
        cluster.kubectl.run("delete", "application", "storeops-platform", "-n", "argocd", "--wait=false", check=False)
        cluster.kubectl.run("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
        daemon.stop()


def _entry(store_id: str) -> dict[str, object]:
    return {"id": store_id, "name": f"Platform {store_id}", "engine": "woocommerce", "plan": "small",
            "cluster": demo.CLUSTER, "owner": {"name": "Pat Platform", "email": f"pat@{store_id}.example"}}


def _lands_once(platform: Platform, store_id: str, timeout: float = 120.0) -> float:
    """Seconds until the remote holds the store's file, asserting one commit added it."""
    began = time.monotonic()
    platform.cluster.kubectl.wait_for(f"stores/{store_id}.yaml in the remote", lambda: platform.committed(store_id),
                                      timeout=timeout, interval=0.5)  # fmt: skip
    seconds = time.monotonic() - began
    time.sleep(2)  # a second commit of the same request would follow within the writer's batch
    assert len(platform.committed(store_id)) == 1, platform.committed(store_id)
    return seconds


def _roles(platform: Platform) -> dict[str, str]:
    roles = {}
    for pod in platform.ready_pods():
        answer = platform.call(pod, "GET", "/readyz")
        assert answer.status_code == 200, answer.text
        roles[pod["metadata"]["name"]] = str(answer.json()["role"])
    return roles


def test_argo_cd_runs_two_replicas_from_the_built_image_and_one_leads(platform: Platform) -> None:
    pods = platform.ready_pods()
    assert len(pods) == 2
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"] == service.REF
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    names = {p["metadata"]["name"] for p in pods}
    holder = platform.holder()
    assert holder in names, (holder, names)
    roles = _roles(platform)
    (follower,) = names - {holder}
    assert roles == {holder: "leader", follower: "follower"}


def test_a_store_asked_of_the_follower_is_committed_once_by_the_leader(platform: Platform) -> None:
    holder = platform.holder()
    (follower,) = [p for p in platform.ready_pods() if p["metadata"]["name"] != holder]
    store_id = f"platform-{secrets.token_hex(3)}"
    answer = platform.call(follower, "POST", "/v1/stores", _entry(store_id))
    assert answer.status_code == 202, answer.text
    again = platform.call(follower, "POST", "/v1/stores", _entry(store_id))
    assert again.status_code == 409, again.text
    seconds = _lands_once(platform, store_id)
    print(f"asked of the follower, committed by the leader in {seconds:.1f}s", flush=True)


def test_deleting_the_leader_s_pod_hands_the_lease_to_the_other_replica(platform: Platform) -> None:
    holder = platform.holder()
    (other,) = [p["metadata"]["name"] for p in platform.ready_pods() if p["metadata"]["name"] != holder]
    began = time.monotonic()
    platform.cluster.kubectl.run("delete", "pod", holder, "-n", NAMESPACE, "--wait=false")
    platform.cluster.kubectl.wait_for(f"{other} to take the Lease", lambda: platform.holder() == other,
                                      timeout=LEASE_DURATION + 2 * RETRY_PERIOD + 30, interval=0.2)  # fmt: skip
    took = time.monotonic() - began
    print(f"Lease handed from {holder} to {other} {took:.1f}s after deleting the leader's Pod", flush=True)
    assert took <= LEASE_DURATION + 2 * RETRY_PERIOD + 1, took
    (leader,) = [p for p in platform.ready_pods() if p["metadata"]["name"] == other]
    store_id = f"platform-{secrets.token_hex(3)}"
    answer = platform.call(leader, "POST", "/v1/stores", _entry(store_id))
    assert answer.status_code == 202, answer.text
    _lands_once(platform, store_id)
    # The Deployment replaces the Pod; the new replica follows.
    platform.cluster.kubectl.wait_for("two Ready replicas again", lambda: len(platform.ready_pods()) == 2,
                                      timeout=READY_TIMEOUT, interval=1)  # fmt: skip
    assert platform.holder() == other


def test_the_service_account_argo_cd_applied_can_do_what_the_service_needs_and_no_more(platform: Platform) -> None:
    """The RBAC of argocd/platform/ as applied: the Lease in its own namespace, the fleet's Applications in Argo
    CD's (read, watch, and patch for a refresh), and not Argo CD's Secrets or other namespaces' Leases."""
    account = f"system:serviceaccount:{NAMESPACE}:storeops"

    def can(verb: str, resource: str, namespace: str) -> bool:
        answer = platform.cluster.kubectl.run("auth", "can-i", verb, resource, "-n", namespace, f"--as={account}",
                                              check=False).strip()  # fmt: skip
        assert answer in ("yes", "no"), answer
        return answer == "yes"

    allowed = [("get", f"leases/{LEASE}", NAMESPACE), ("update", f"leases/{LEASE}", NAMESPACE),
               ("create", "leases", NAMESPACE), ("list", "applications.argoproj.io", "argocd"),
               ("watch", "applications.argoproj.io", "argocd"), ("patch", "applications.argoproj.io", "argocd")]
    refused = [("get", "secrets", "argocd"), ("delete", "applications.argoproj.io", "argocd"),
               ("update", "leases/other", NAMESPACE), ("create", "leases", "default"),
               ("list", "secrets", NAMESPACE), ("create", "applications.argoproj.io", "argocd")]
    assert [case for case in allowed if not can(*case)] == []
    assert [case for case in refused if can(*case)] == []
