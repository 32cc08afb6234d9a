"""The harness's real node: Pods from locally built images run, serve, log, reach each other and
Services, and cannot reach beyond the machine.

Traffic goes only to the pod network the harness creates (10.250.0.0/24), Service addresses on it,
and one TEST-NET-3 address (203.0.113.1) that the boundary rule must drop before it leaves.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import urllib.request

import pytest

from harness import node, processes, stack

pytestmark = pytest.mark.node

NAMESPACE = "node-test"
OUTSIDE = "203.0.113.1"  # TEST-NET-3 (RFC 5737): never a real host


def _pod(name: str, image: str, command: str, **extra: object) -> dict[str, object]:
    container: dict[str, object] = {
        "name": name,
        "image": image,
        # Built here and imported at node start: nothing to pull from.
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", command],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
    container.update(extra)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {
            "nodeSelector": node.NODE_SELECTOR,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


@pytest.fixture(scope="module")
def pods(node_stack: stack.Stack) -> dict[str, dict[str, object]]:
    """A web Pod (busybox httpd with a readiness probe) behind a Service, and a client Pod."""
    assert node_stack.node is not None
    image = node_stack.node.images["busybox"]
    kubectl = node_stack.kubectl
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    kubectl.wait_for(
        "the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", namespace=NAMESPACE) is not None,
        timeout=60, interval=0.5,
    )  # fmt: skip
    web = _pod(
        "web",
        image,
        "echo hello-from-$(hostname) > /www/index.html; echo web serving on 8080; exec httpd -f -v -p 8080 -h /www",
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
    )
    client = _pod("client", image, "echo client up; exec sleep 3600")
    # With its ServiceAccount token (the volume needs kube-root-ca.crt, which the controller-manager publishes).
    kubectl.wait_for(
        "kube-root-ca.crt", lambda: kubectl.get("configmap", "kube-root-ca.crt", namespace=NAMESPACE) is not None,
        timeout=60, interval=0.5,
    )  # fmt: skip
    api_client = _pod("api-client", image, "exec sleep 3600")
    api_client["spec"]["automountServiceAccountToken"] = True  # type: ignore[index]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    # A hostPort on the host's loopback (CNI portmap, route_localnet on the bridge), as an ingress
    # controller reachable from the host will use.
    host_port = processes.free_port()
    published = _pod(
        "published", image, "echo published > /www/index.html; exec httpd -f -p 8080 -h /www",
        ports=[{"containerPort": 8080, "hostPort": host_port, "hostIP": "127.0.0.1"}],
    )  # fmt: skip
    kubectl.apply(web, client, api_client, published, service)
    kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "pod/web", "pod/client", "pod/api-client",
                "pod/published", "--timeout=120s", timeout=150)  # fmt: skip
    found = {}
    for name in ("web", "client"):
        got = kubectl.get("pod", name, namespace=NAMESPACE)
        assert got is not None
        found[name] = got
    svc = kubectl.get("service", "web", namespace=NAMESPACE)
    assert svc is not None
    found["service"] = svc
    found["host_port"] = {"port": host_port}
    return found


def _status(obj: dict[str, object]) -> dict[str, object]:
    status = obj["status"]
    assert isinstance(status, dict)
    return status


def _exec(node_stack: stack.Stack, *argv: str, pod: str = "client") -> str:
    return node_stack.kubectl.run("exec", "-n", NAMESPACE, pod, "--", *argv, timeout=60)


def _fetch(node_stack: stack.Stack, url: str, *, seconds: int = 5) -> str:
    """GET url from the client Pod (busybox `timeout`: Debian's busybox 1.35 wget crashes with -T)."""
    return _exec(node_stack, "timeout", str(seconds), "wget", "-q", "-O", "-", url)


def test_node_is_real_and_ready(node_stack: stack.Stack) -> None:
    got = node_stack.kubectl.get("node", node.NAME)
    assert got is not None
    info = _status(got)["nodeInfo"]
    assert isinstance(info, dict)
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kubeletVersion"] == node_stack.binaries.versions.kubernetes
    addresses = {a["type"]: a["address"] for a in _status(got)["addresses"]}  # type: ignore[attr-defined]
    assert addresses["InternalIP"] == node.GATEWAY
    assert node_stack.node_started_seconds > 0


def test_pod_runs_to_ready_with_its_probe_and_serves_the_host(
    node_stack: stack.Stack, pods: dict[str, dict[str, object]]
) -> None:
    status = _status(pods["web"])
    pod_ip = str(status["podIP"])
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(node.POD_CIDR)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]
    assert conditions["Ready"] == "True"
    # A real process in a real network namespace: the host reaches it over the harness's bridge.
    with urllib.request.urlopen(f"http://{pod_ip}:8080/index.html", timeout=5) as response:
        assert response.read().decode().strip() == "hello-from-web"


def test_host_port_on_loopback_reaches_the_pod(pods: dict[str, dict[str, object]]) -> None:
    url = f"http://127.0.0.1:{pods['host_port']['port']}/index.html"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                assert response.read().decode().strip() == "published"
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_kubectl_logs_and_exec_reach_the_kubelet(node_stack: stack.Stack, pods: dict[str, dict[str, object]]) -> None:
    logs = node_stack.kubectl.run("logs", "-n", NAMESPACE, "web")
    assert "web serving on 8080" in logs
    assert _exec(node_stack, "hostname").strip() == "client"


def test_pod_reaches_pod_and_service_through_kube_proxy(
    node_stack: stack.Stack, pods: dict[str, dict[str, object]]
) -> None:
    pod_ip = _status(pods["web"])["podIP"]
    assert _fetch(node_stack, f"http://{pod_ip}:8080/index.html").strip() == "hello-from-web"
    spec = pods["service"]["spec"]
    assert isinstance(spec, dict)
    cluster_ip = spec["clusterIP"]
    # kube-proxy writes the Service's rules once it has seen its EndpointSlice: retry briefly.
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = _fetch(node_stack, f"http://{cluster_ip}/index.html", seconds=3)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert answer.strip() == "hello-from-web"


def test_pod_cannot_reach_beyond_the_machine(node_stack: stack.Stack, pods: dict[str, dict[str, object]]) -> None:
    before = node.boundary_drops()
    result = node_stack.kubectl.run(
        "exec", "-n", NAMESPACE, "client", "--", "sh", "-c",
        f"timeout 3 wget -q -O - http://{OUTSIDE}/ && echo reached || echo blocked",
        timeout=60,
    )  # fmt: skip
    assert result.strip().splitlines()[-1] == "blocked"
    # Dropped by the boundary rule itself, not lost somewhere further on.
    assert node.boundary_drops() > before
    # And nothing masquerades pod traffic by source (the bridge plugin's ipMasq is off).
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    # (The bridge plugin's ipMasq would add `-A POSTROUTING -s <pod ip> ... -j CNI-<id>`; hostPort
    # forwarding from the host to a Pod is masqueraded to the gateway, which stays on this machine.)
    source = f"-s {node.POD_CIDR}"
    prefix = node.POD_CIDR.rsplit(".", 1)[0] + "."
    masquerading = [
        rule
        for rule in nat.splitlines()
        if rule.startswith(f"-A POSTROUTING -s {prefix}")
        or ("MASQ" in rule and source in rule and f"! {source}" not in rule)
    ]
    assert not masquerading, nat


def test_pod_reaches_the_api_server_with_its_service_account_token(
    node_stack: stack.Stack, pods: dict[str, dict[str, object]]
) -> None:
    # The API server listens on the bridge gateway and publishes it as the `kubernetes` endpoints.
    endpoints = node_stack.kubectl.get("endpoints", "kubernetes", namespace="default")
    assert endpoints is not None
    subsets = endpoints["subsets"]
    assert isinstance(subsets, list)
    assert [a["ip"] for a in subsets[0]["addresses"]] == [node.GATEWAY]
    # As an in-cluster client: the token and CA of its ServiceAccount volume, the server's certificate
    # verified for the `kubernetes` Service address; discovery refuses anonymous users, so a 200 says the
    # token was accepted.
    answer = _exec(node_stack, "apiprobe", "/api", pod="api-client")
    status, body = answer.split("\n", 1)
    assert status == "200 OK"
    assert json.loads(body)["kind"] == "APIVersions"


def test_a_machine_that_cannot_run_the_node_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(node.shutil, "which", lambda command: None if command == "runc" else f"/usr/bin/{command}")
    problems = node.host_problems()
    assert "the node needs root (containerd, network namespaces, iptables)" in problems
    assert "`runc` is not installed (Debian package runc; build.sh installs it)" in problems
