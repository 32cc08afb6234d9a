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


def test_the_object_store_serves_s3_in_its_namespace_and_on_the_hosts_loopback_only() -> None:
    manifests = addon_manifests.object_store(
        "storeops.local/seaweedfs:test", node_selector=SELECTOR, host_port=45678, bucket="storeops-backups",
        access_key="ak", secret_key="sk", s3_config='{"identities": []}',
    )  # fmt: skip
    namespace = addon_manifests.OBJECT_STORE_NAMESPACE
    assert {(m["kind"], m["metadata"]["name"]) for m in manifests} == {  # type: ignore[index]
        ("Namespace", namespace), ("Secret", "seaweedfs-credentials"), ("Service", "seaweedfs"),
        ("Deployment", "seaweedfs")}  # fmt: skip
    (secret,) = _kind(manifests, "Secret")
    # The keys under the names a store's backup Secret uses, so storeops can copy them as they are.
    assert secret["stringData"] == {"s3.json": '{"identities": []}', "AWS_ACCESS_KEY_ID": "ak",  # type: ignore[comparison-overlap]
                                    "AWS_SECRET_ACCESS_KEY": "sk"}  # fmt: skip
    (service,) = _kind(manifests, "Service")
    assert service["spec"]["ports"] == [{"name": "s3", "port": 8333, "targetPort": "s3"}]  # type: ignore[index]
    (deployment,) = _kind(manifests, "Deployment")
    pod = _pod_spec(deployment)
    assert pod["nodeSelector"] == SELECTOR and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]  # type: ignore[misc]
    assert container["ports"] == [{"name": "s3", "containerPort": 8333, "hostPort": 45678, "hostIP": "127.0.0.1"}]
    assert "-bucket=storeops-backups" in container["args"] and "-master.telemetry=false" in container["args"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert addon_manifests.object_store_host_port(deployment) == 45678
