"""The harness's real node: Pods from locally built images run, serve, log, reach each other and
Services, and cannot reach beyond the machine. Its add-ons: cluster DNS (CoreDNS, no upstream),
NetworkPolicy (kube-network-policies) and the ingress controller (Traefik on 127.0.0.1); volumes
and quotas.

Traffic goes only to the pod network the harness creates (10.250.0.0/24), Service addresses on it,
loopback (the ingress controller's hostPort), and one TEST-NET-3 address (203.0.113.1) that the
boundary rule must drop before it leaves.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness import addons, errors, nftables, node, processes, stack

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
    print(f"node: kubelet, containerd, kube-proxy and the add-ons ready in {node_stack.node_started_seconds:.1f}s")


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


def test_an_image_not_built_here_is_never_pulled_from_outside(node_stack: stack.Stack) -> None:
    """The node's containerd sends every pull to a closed port on loopback: it fails at once, and
    the error names that address, not a registry's."""
    kubectl = node_stack.kubectl
    kubectl.apply(_pod("elsewhere", "registry.example.org/some/image:1", "true", imagePullPolicy="IfNotPresent"))

    def pull_failed() -> str:
        pod: dict[str, Any] = kubectl.get("pod", "elsewhere", namespace=NAMESPACE) or {}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting.get("message"):
                return str(waiting["message"])
        return ""

    kubectl.wait_for("the pull to fail", lambda: bool(pull_failed()), timeout=60, interval=0.5)
    message = pull_failed()
    kubectl.run("delete", "pod", "elsewhere", "-n", NAMESPACE, "--wait=false")
    assert "127.0.0.1:9" in message, message


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


# --- the add-ons: cluster DNS, NetworkPolicy enforcement, the ingress controller -------------------

STORE_NAMESPACE = "node-test-store"
STORE_HOST = "shop.storeops.test"


def _in(namespace: str, manifest: dict[str, object]) -> dict[str, object]:
    metadata = manifest["metadata"]
    assert isinstance(metadata, dict)
    metadata["namespace"] = namespace
    return manifest


def _namespace(node_stack: stack.Stack, name: str) -> None:
    kubectl = node_stack.kubectl
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kubectl.wait_for(
        f"the default ServiceAccount of {name}",
        lambda: kubectl.get("serviceaccount", "default", namespace=name) is not None, timeout=60, interval=0.5,
    )  # fmt: skip


def _can_fetch(node_stack: stack.Stack, namespace: str, pod: str, url: str) -> bool:
    out = node_stack.kubectl.run(
        "exec", "-n", namespace, pod, "--", "sh", "-c",
        f"timeout 3 wget -q -O - {url} >/dev/null && echo reached || echo blocked", timeout=60,
    )  # fmt: skip
    return out.strip().splitlines()[-1] == "reached"


def _isolation(namespace: str, *, web_labels: dict[str, str]) -> list[dict[str, object]]:
    """The store charts' isolation (templates/storeops-lib, "storeops.isolation"): default deny, except from
    this namespace, and from the ingress controller's namespace to the web Pods."""
    deny: dict[str, object] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-ingress", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
    }
    controller: dict[str, object] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-ingress-controller", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": web_labels},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": addons.INGRESS_NAMESPACE}
                            }
                        }
                    ]
                }
            ],
        },
    }
    return [deny, controller]


@pytest.fixture(scope="module")
def store(node_stack: stack.Stack, pods: dict[str, dict[str, object]]) -> dict[str, object]:
    """An isolated namespace like a store's (the charts' policies): a web Pod behind a Service,
    a neighbour Pod in the same namespace, and a Pod in the ingress controller's namespace."""
    assert node_stack.node is not None
    image = node_stack.node.images["busybox"]
    kubectl = node_stack.kubectl
    _namespace(node_stack, STORE_NAMESPACE)
    shop = _in(STORE_NAMESPACE, _pod(
        "shop", image, "echo hello-from-shop > /www/index.html; exec httpd -f -p 8080 -h /www",
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
    ))  # fmt: skip
    neighbour = _in(STORE_NAMESPACE, _pod("neighbour", image, "exec sleep 3600"))
    controller_side = _in(addons.INGRESS_NAMESPACE, _pod("node-test-probe", image, "exec sleep 3600"))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "namespace": STORE_NAMESPACE},
        "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    kubectl.apply(shop, neighbour, controller_side, service)
    kubectl.run("wait", "-n", STORE_NAMESPACE, "--for=condition=Ready", "pod/shop", "pod/neighbour",
                "--timeout=120s", timeout=150)  # fmt: skip
    kubectl.run("wait", "-n", addons.INGRESS_NAMESPACE, "--for=condition=Ready", "pod/node-test-probe",
                "--timeout=120s", timeout=150)  # fmt: skip
    got = kubectl.get("pod", "shop", namespace=STORE_NAMESPACE)
    assert got is not None
    url = f"http://{_status(got)['podIP']}:8080/index.html"
    # Before any policy, the other namespace's client reaches the shop: a block later is the policy's.
    reached_before = _can_fetch(node_stack, NAMESPACE, "client", url)
    kubectl.apply(*_isolation(STORE_NAMESPACE, web_labels={"app": "shop"}))
    return {"url": url, "reached_before": reached_before}


def _http(port: int, host: str, path: str = "/index.html") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_pods_resolve_services_by_name_and_nothing_outside(
    node_stack: stack.Stack, pods: dict[str, dict[str, object]]
) -> None:
    resolv = _exec(node_stack, "cat", "/etc/resolv.conf")
    assert f"nameserver {addons.DNS_SERVICE_IP}" in resolv
    assert f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    spec = pods["service"]["spec"]
    assert isinstance(spec, dict)
    fqdn = f"web.{NAMESPACE}.svc.cluster.local"
    assert f"Address: {spec['clusterIP']}" in _exec(node_stack, "nslookup", fqdn)
    # The short name through the search list (wget resolves with the C library; busybox nslookup uses none).
    for name in (fqdn, "web", f"web.{NAMESPACE}"):
        assert _fetch(node_stack, f"http://{name}/index.html").strip() == "hello-from-web"
    # No forward plugin: CoreDNS answers (it is reachable), but never with an address outside the cluster.
    outside = node_stack.kubectl.run(
        "exec", "-n", NAMESPACE, "client", "--", "sh", "-c", "nslookup example.com 2>&1; echo exit=$?", timeout=60
    )
    assert "can't find example.com" in outside, outside
    assert "Name:" not in outside and "exit=0" not in outside, outside


def test_network_policy_admits_the_namespace_and_the_ingress_controller_only(
    node_stack: stack.Stack, store: dict[str, object]
) -> None:
    url = str(store["url"])
    assert store["reached_before"] is True
    # kube-network-policies sees the policies through its informers: give it a moment.
    deadline = time.monotonic() + 30
    while _can_fetch(node_stack, NAMESPACE, "client", url):
        assert time.monotonic() < deadline, "a Pod of another namespace still reaches the isolated shop"
        time.sleep(1)
    assert _can_fetch(node_stack, STORE_NAMESPACE, "neighbour", url)
    assert _can_fetch(node_stack, addons.INGRESS_NAMESPACE, "node-test-probe", url)
    assert not _can_fetch(node_stack, NAMESPACE, "client", url)


def test_ingress_through_traefik_reaches_the_isolated_web_pod(
    node_stack: stack.Stack, store: dict[str, object]
) -> None:
    assert node_stack.node is not None and node_stack.node.ingress_port is not None
    port = node_stack.node.ingress_port

    def ingress(name: str, host: str, ingress_class: str) -> dict[str, object]:
        rule = {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "shop", "port": {"number": 80}}}}]}}  # fmt: skip
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": STORE_NAMESPACE},
            "spec": {"ingressClassName": ingress_class, "rules": [rule]},
        }

    node_stack.kubectl.apply(
        ingress("shop", STORE_HOST, addons.INGRESS_CLASS), ingress("elsewhere", "other.storeops.test", "other")
    )
    deadline = time.monotonic() + 60
    while (answer := _http(port, STORE_HOST))[0] != 200:
        assert time.monotonic() < deadline, f"Traefik never served {STORE_HOST}: {answer}"
        time.sleep(1)
    assert answer[1].strip() == "hello-from-shop"
    # Routed by Host, and only Ingresses of its own class.
    assert _http(port, "unknown.storeops.test")[0] == 404
    assert _http(port, "other.storeops.test")[0] == 404

    def address() -> list[object]:
        got = node_stack.kubectl.get("ingress", "shop", namespace=STORE_NAMESPACE) or {}
        return list(((got.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])  # type: ignore[attr-defined]

    node_stack.kubectl.wait_for("the Ingress's status address", lambda: bool(address()), timeout=30)
    assert address() == [{"ip": "127.0.0.1"}]
    other = node_stack.kubectl.get("ingress", "elsewhere", namespace=STORE_NAMESPACE) or {}
    assert not ((other.get("status") or {}).get("loadBalancer") or {}).get("ingress")  # type: ignore[attr-defined]


def test_claim_binds_and_its_data_outlives_the_pod(node_stack: stack.Stack, pods: dict[str, dict[str, object]]) -> None:
    assert node_stack.node is not None
    kubectl = node_stack.kubectl
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }

    def writer(name: str, command: str) -> dict[str, object]:
        pod = _pod(name, node_stack.node.images["busybox"], command)  # type: ignore[union-attr]
        spec = pod["spec"]
        assert isinstance(spec, dict)
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        return pod

    kubectl.apply(claim, writer("keeper", "date > /data/stamp; cat /data/stamp; exec sleep 3600"))
    try:
        kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "pod/keeper", "--timeout=120s", timeout=150)
        bound = kubectl.get("persistentvolumeclaim", "data", namespace=NAMESPACE)
        assert bound is not None and _status(bound)["phase"] == "Bound"
        written = _exec(node_stack, "cat", "/data/stamp", pod="keeper").strip()
        assert written
        kubectl.run("delete", "-n", NAMESPACE, "pod", "keeper", "--wait=true", timeout=90)
        kubectl.apply(writer("keeper", "exec sleep 3600"))
        kubectl.run("wait", "-n", NAMESPACE, "--for=condition=Ready", "pod/keeper", "--timeout=120s", timeout=150)
        assert _exec(node_stack, "cat", "/data/stamp", pod="keeper").strip() == written
    finally:
        kubectl.run("delete", "-n", NAMESPACE, "pod/keeper", "pvc/data", "--ignore-not-found", "--wait=true",
                    timeout=120, check=False)  # fmt: skip


def test_resource_quota_rejects_a_pod_over_it(node_stack: stack.Stack, pods: dict[str, dict[str, object]]) -> None:
    assert node_stack.node is not None
    kubectl = node_stack.kubectl
    namespace = "node-test-quota"
    _namespace(node_stack, namespace)
    kubectl.apply({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "store-quota", "namespace": namespace},
        "spec": {"hard": {"requests.cpu": "100m", "requests.memory": "64Mi"}},
    })  # fmt: skip

    def counted() -> bool:
        quota = kubectl.get("resourcequota", "store-quota", namespace=namespace) or {}
        return bool((quota.get("status") or {}).get("hard"))  # type: ignore[attr-defined]

    kubectl.wait_for("the quota's status", counted, timeout=60, interval=0.5)
    image = node_stack.node.images["busybox"]
    small = _in(namespace, _pod("small", image, "exec sleep 3600"))  # 10m, 16Mi: fits
    big = _in(namespace, _pod("big", image, "exec sleep 3600"))
    big["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "200m"  # type: ignore[index]
    kubectl.run("create", "--dry-run=server", "-f", "-", input=json.dumps(small))
    with pytest.raises(errors.CommandError, match=r"exceeded quota: store-quota.*requested: requests\.cpu=200m"):
        kubectl.run("create", "-f", "-", input=json.dumps(big))
    assert kubectl.get("pod", "big", namespace=namespace) is None


def test_the_ingress_controller_and_dns_are_recorded_on_the_node(node_stack: stack.Stack) -> None:
    assert node_stack.node is not None
    loaded = node.load(node_stack.state)
    assert loaded is not None and loaded.ingress_port == node_stack.ports[node.INGRESS_PORT]
    assert set(loaded.addons) == {"coredns", "kube-network-policies", "traefik"}
    service = node_stack.kubectl.get("service", "kube-dns", namespace=addons.SYSTEM_NAMESPACE)
    assert service is not None and service["spec"]["clusterIP"] == addons.DNS_SERVICE_IP  # type: ignore[index]
    # kube-network-policies' own nftables rules, or the harness's NFQUEUE chain where the kernel lacks nft queue.
    assert nftables.table_exists(addons.NFT_TABLES[0]) or addons.queue_rules_installed()
