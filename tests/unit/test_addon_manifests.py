"""The real node's add-on manifests (harness/addon_manifests.py): what the boundary and the stores rely on."""

from __future__ import annotations

import ipaddress

from harness import addon_manifests, components

SELECTOR = {"kubernetes.io/hostname": "storeops-node-0"}


def _kind(manifests: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [m for m in manifests if m["kind"] == kind]


def _pod_spec(workload: dict[str, object]) -> dict[str, object]:
    spec = workload["spec"]
    assert isinstance(spec, dict)
    pod = spec["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


def test_cluster_dns_has_no_upstream_and_a_fixed_address_in_the_service_range() -> None:
    manifests = addon_manifests.coredns("storeops.local/coredns:test", node_selector=SELECTOR)
    (config,) = _kind(manifests, "ConfigMap")
    corefile = config["data"]["Corefile"]  # type: ignore[index]
    assert "forward" not in corefile and "proxy" not in corefile
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    (service,) = _kind(manifests, "Service")
    address = ipaddress.ip_address(service["spec"]["clusterIP"])  # type: ignore[index]
    assert address in ipaddress.ip_network(components.SERVICE_CLUSTER_IP_RANGE)
    assert str(address) == addon_manifests.DNS_SERVICE_IP
    (deployment,) = _kind(manifests, "Deployment")
    assert _pod_spec(deployment)["nodeSelector"] == SELECTOR


def test_network_policies_run_without_nri_on_the_named_node_with_loopback_metrics() -> None:
    manifests = addon_manifests.network_policies(
        "storeops.local/kube-network-policies:test", node_name="storeops-node-0", node_selector=SELECTOR,
        metrics_port=40000,
    )  # fmt: skip
    (daemonset,) = _kind(manifests, "DaemonSet")
    pod = _pod_spec(daemonset)
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]  # type: ignore[misc]
    assert {"--disable-nri", "--hostname-override=storeops-node-0", "--metrics-bind-address=127.0.0.1:40000"} <= set(
        container["args"]
    )
    assert "NET_ADMIN" in container["securityContext"]["capabilities"]["add"]
    (role,) = _kind(manifests, "ClusterRole")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}  # type: ignore[attr-defined]
    assert verbs == {"list", "watch"}


def test_the_ingress_controller_serves_its_class_only_and_publishes_on_loopback() -> None:
    manifests = addon_manifests.traefik("storeops.local/traefik:test", node_selector=SELECTOR, ingress_port=4242)
    (ingress_class,) = _kind(manifests, "IngressClass")
    assert ingress_class["metadata"] == {"name": "traefik"}
    assert ingress_class["spec"] == {"controller": "traefik.io/ingress-controller"}
    (deployment,) = _kind(manifests, "Deployment")
    pod = _pod_spec(deployment)
    assert "hostNetwork" not in pod  # on the pod network, where store policies admit it by namespace
    (container,) = pod["containers"]  # type: ignore[misc]
    args = set(container["args"])
    assert "--providers.kubernetesingress.ingressclass=traefik" in args
    assert "--providers.kubernetesingress.ingressendpoint.ip=127.0.0.1" in args
    assert {"--global.checknewversion=false", "--global.sendanonymoususage=false"} <= args
    assert not any(arg.startswith("--api") for arg in args)
    published = [p for p in container["ports"] if "hostPort" in p]
    assert published == [{"name": "web", "containerPort": 8000, "hostPort": 4242, "hostIP": "127.0.0.1"}]
