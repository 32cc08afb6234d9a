"""The example stores' charts on the real node, through Argo CD: Pods that really run.

The stores are rendered by the generator for the local cluster profile, which names the images the
harness builds here from Debian packages (harness/images/debian.py) and Traefik's ingress class.
Argo CD syncs them into the API server; the real node runs the databases, the cache and WordPress
with the charts' own probes; the credentials Job runs as a Pod and reaches the API server through
``kubernetes.default.svc``; Traefik serves the store's host on 127.0.0.1; the chart's
NetworkPolicies hold against a Pod of another namespace. (The WooCommerce setup and the Medusa
server are the shops' part and are not asserted here.)
"""

from __future__ import annotations

import base64
import http.client
import pathlib
import time
from typing import Any

import pytest

from generator import operations, rendering
from harness import addons, node, stack
from harness.images import debian
from tests.conftest import git
from tests.e2e.test_store_charts import _kubectl_json, _render, _repository, _store

pytestmark = [pytest.mark.e2e, pytest.mark.node]

OUTSIDER = "outsider"
# busybox's nc has no -z: connect with nothing to send, and tell a refusal or a timeout (CLOSED) from
# a name that does not resolve (NONAME) and from a connection (OPEN, whatever the server then does).
# It waits a little first: the policy agent learns a new Pod's address from the API server, and a
# connection the Pod opens before that is judged without knowing its namespace (kubernetes#85966).
PROBE = """sleep 5; err=$(timeout 5 nc -w 3 {target} {port} </dev/null 2>&1 >/dev/null)
case "$err" in
  *"bad address"*) echo NONAME ;;
  *"can't connect"*|*"timed out"*|*timeout*) echo CLOSED ;;
  *) echo OPEN ;;
esac"""
#: What each engine runs on the node in this issue's scope: (kind, name) that must become Ready.
READY = {
    "woocommerce": (("statefulset", "mariadb"), ("deployment", "wordpress")),
    "medusa": (("statefulset", "postgres"), ("deployment", "redis")),
}
# Pulling the images, first starts and the probes' periods: minutes on two shared cores.
TIMEOUT = 600.0


@pytest.fixture(scope="module")
def cluster(argocd_node_stack: stack.Stack) -> stack.Stack:
    """The stack with the local store images imported into the node's containerd."""
    assert argocd_node_stack.node is not None
    for built in debian.build_all().values():
        argocd_node_stack.node.ctr("images", "import", str(built.image.archive), timeout=600)
    return argocd_node_stack


def _ready(kubectl: Any, kind: str, name: str, namespace: str) -> bool:
    workload = kubectl.get(kind, name, namespace=namespace) or {}
    return bool((workload.get("status") or {}).get("readyReplicas") == 1)


def _wait(what: str, check: Any, *, timeout: float = TIMEOUT, describe: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{describe()}" if describe else ""))


def _deploy(cluster: stack.Stack, engine: str, tmp_path: pathlib.Path) -> tuple[Any, str]:
    """Render one example-like store of `engine`, apply its Application; the store and its host."""
    repo = _repository(tmp_path / "repo")
    store = _store(engine)
    files = _render(repo, store)
    assert git(repo, "rev-parse", "HEAD")
    values = files[rendering.values_path(store.cluster, store.id)]
    assert "storeops.local/" in values, "the local profile's images did not reach the values"
    cluster.kubectl.apply(files[rendering.app_path(store.cluster, store.id)])
    fleet = operations.load(repo)
    host = fleet.clusters[store.cluster][0].host_for(store)
    return store, host


def _describe(cluster: stack.Stack, namespace: str) -> Any:
    """What the namespace holds and the logs of its Pods (this and the previous container run)."""

    def describe() -> str:
        kubectl = cluster.kubectl
        text = kubectl.run("get", "pods,jobs,pvc,ingress", "-n", namespace, "-o", "wide", check=False)
        text += kubectl.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)[-3000:]
        for pod in _kubectl_json(kubectl, "get", "pods", "-n", namespace)["items"]:
            name = pod["metadata"]["name"]
            for previous in ("--previous=true", "--previous=false"):
                logs = kubectl.run("logs", name, "-n", namespace, "--all-containers", previous, "--tail=25",
                                   check=False)  # fmt: skip
                text += f"\n--- {name} {previous}\n{logs}"
        return text

    return describe


def _on_real_node(cluster: stack.Stack, namespace: str) -> set[str]:
    pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace)["items"]
    return {p["spec"].get("nodeName", "") for p in pods if p["status"].get("phase") == "Running"}


def _reaches(cluster: stack.Stack, target: str, port: int, *, source: str = OUTSIDER) -> bool:
    """Whether a Pod in namespace `source` opens a TCP connection to target:port within 3 s."""
    kubectl, image = cluster.kubectl, cluster.node.images["busybox"]  # type: ignore[union-attr]
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": source}})
    name = f"probe-{time.monotonic_ns() % 100000}"
    kubectl.wait_for(
        f"the default ServiceAccount of {source}",
        lambda: kubectl.get("serviceaccount", "default", namespace=source) is not None, timeout=60, interval=0.5,
    )  # fmt: skip
    kubectl.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": source},
        "spec": {
            "nodeSelector": node.NODE_SELECTOR, "automountServiceAccountToken": False, "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", PROBE.format(target=target, port=port)],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
            }],
        },
    })  # fmt: skip
    def finished() -> bool:
        pod: dict[str, Any] = kubectl.get("pod", name, namespace=source) or {}
        return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    _wait(f"probe pod {name} to finish", finished, timeout=120)
    out = kubectl.run("logs", name, "-n", source).strip()
    kubectl.run("delete", "pod", name, "-n", source, "--wait=false")
    assert out in ("OPEN", "CLOSED"), out
    return out == "OPEN"


def _through_ingress(cluster: stack.Stack, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    assert cluster.node is not None and cluster.node.ingress_port
    conn = http.client.HTTPConnection("127.0.0.1", cluster.node.ingress_port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_woocommerce_runs_on_the_real_node_and_answers_through_the_ingress(
    cluster: stack.Stack, tmp_path: pathlib.Path
) -> None:
    kubectl = cluster.kubectl
    store, host = _deploy(cluster, "woocommerce", tmp_path)
    namespace = store.namespace
    describe = _describe(cluster, namespace)
    began = time.monotonic()
    for kind, name in READY["woocommerce"]:
        _wait(f"{kind}/{name} Ready", lambda k=kind, n=name: _ready(kubectl, k, n, namespace), describe=describe)
    print(f"woocommerce: MariaDB and WordPress Ready {time.monotonic() - began:.0f}s after the Application")
    assert _on_real_node(cluster, namespace) == {node.NAME}

    # The credentials Job ran as a Pod, reached the API server by kubernetes.default.svc, made its Secret.
    _wait("the credentials Secret", lambda: kubectl.get("secret", "store-credentials", namespace=namespace) is not None,
          timeout=180, describe=describe)  # fmt: skip
    secret = _kubectl_json(kubectl, "get", "secret", "store-credentials", "-n", namespace)
    assert len(base64.b64decode(secret["data"]["admin-password"])) >= 16
    job = _kubectl_json(kubectl, "get", "job", "credentials", "-n", namespace)
    assert job["status"].get("succeeded") == 1

    # Traefik serves the store's host from 127.0.0.1 and reaches WordPress (not yet installed: it
    # sends the browser to its installer), and publishes the Ingress address Argo CD's health needs.
    def wordpress_answers() -> bool:
        status, headers, _ = _through_ingress(cluster, host, "/wp-login.php")
        return status in (200, 302) and "php" in headers.get("x-powered-by", "").lower() + headers.get(
            "location", ""
        )

    _wait(f"WordPress through Traefik as {host}", wordpress_answers, timeout=120, describe=describe)
    status, headers, _ = _through_ingress(cluster, "not-a-store.example", "/wp-login.php")
    assert status == 404, (status, headers)
    ingress = _kubectl_json(kubectl, "get", "ingress", "-n", namespace)["items"][0]
    assert ingress["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]

    # The chart's NetworkPolicies hold: a Pod of another namespace reaches neither the database nor
    # the web server; one in the ingress controller's namespace reaches the web port (so the name
    # resolves and the Pods answer: the refusals are the policies') but not the database.
    web, database = f"wordpress.{namespace}.svc.cluster.local", f"mariadb.{namespace}.svc.cluster.local"
    assert _reaches(cluster, web, 80, source=addons.INGRESS_NAMESPACE)
    assert not _reaches(cluster, database, 3306, source=addons.INGRESS_NAMESPACE)
    assert not _reaches(cluster, web, 80)
    assert not _reaches(cluster, database, 3306)


def test_medusa_database_and_cache_run_on_the_real_node(cluster: stack.Stack, tmp_path: pathlib.Path) -> None:
    kubectl = cluster.kubectl
    store, _ = _deploy(cluster, "medusa", tmp_path)
    namespace = store.namespace
    describe = _describe(cluster, namespace)
    began = time.monotonic()
    for kind, name in READY["medusa"]:
        _wait(f"{kind}/{name} Ready", lambda k=kind, n=name: _ready(kubectl, k, n, namespace), describe=describe)
    print(f"medusa: PostgreSQL and Redis Ready {time.monotonic() - began:.0f}s after the Application")
    claims = _kubectl_json(kubectl, "get", "pvc", "-n", namespace)["items"]
    assert {c["metadata"]["name"]: c["status"]["phase"] for c in claims}["data-postgres-0"] == "Bound"
    database = f"postgres.{namespace}.svc.cluster.local"
    assert not _reaches(cluster, database, 5432)
    # From inside the store's namespace the same name and port answer.
    assert _reaches(cluster, database, 5432, source=namespace)
